//! The gateway's shared state: the live config snapshot behind an `ArcSwap`, and what lives
//! longer than one snapshot (the silent-refresh cache, later the session store).
//!
//! Each request `load`s the snapshot once and uses it to the end, so a reload never changes
//! the rules in the middle of a request.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::config::Config;
use crate::pipeline::refresh::SilentRefresher;
use crate::proxy::UpstreamClient;

/// One validated config with everything built from it (upstream clients, prebuilt values).
pub struct Live {
    pub config: Config,
    /// Same order as `config.upstreams`; routes index into it.
    pub upstreams: Vec<UpstreamClient>,
    /// `Access-Control-Expose-Headers` value naming the refresh header.
    pub expose_refresh: HeaderValue,
}

impl Live {
    pub fn new(config: Config) -> Self {
        let upstreams = config.upstreams.iter().map(UpstreamClient::new).collect();
        let expose_refresh = HeaderValue::from_str(config.token.refresh_header.as_str())
            // A HeaderName is always a valid HeaderValue.
            .unwrap_or(HeaderValue::from_static("refresh-token"));
        Self { config, upstreams, expose_refresh }
    }
}

/// State shared by every connection and request.
pub struct App {
    live: ArcSwap<Live>,
    pub refresher: SilentRefresher,
}

impl App {
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            live: ArcSwap::from_pointee(Live::new(config)),
            refresher: SilentRefresher::new(),
        })
    }

    /// The current snapshot.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in a new, already validated config.
    pub fn swap(&self, config: Config) {
        self.live.store(Arc::new(Live::new(config)));
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
