//! The gateway's shared state: the live config snapshot behind an `ArcSwap`, and what lives
//! longer than one snapshot (the silent-refresh cache, later the session store).
//!
//! Each request `load`s the snapshot once and uses it to the end, so a reload never changes
//! the rules in the middle of a request.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::config::{Config, StoreKind};
use crate::login::lockout::{FloodGuard, Lockout};
use crate::login::Authenticator;
use crate::pipeline::live_streams::{self, Registry};
use crate::pipeline::refresh::SilentRefresher;
use crate::proxy::UpstreamClient;
use crate::session::{
    Lifetimes, MemoryStore, Millis, RedisStore, RedisTarget, RefreshKey, SessionStore, StoreError,
    StoreSettings,
};

/// One validated config with everything built from it (upstream clients, prebuilt values).
pub struct Live {
    pub config: Config,
    /// Same order as `config.upstreams`; routes index into it.
    pub upstreams: Vec<UpstreamClient>,
    /// `Access-Control-Expose-Headers` value naming the refresh header.
    pub expose_refresh: HeaderValue,
    /// The credential backend of `[login]`.
    pub login: Authenticator,
    /// The lock-out policy of `[login.lockout]`.
    pub lockout: Lockout,
    /// `refresh_ttl` and `max_lifetime`, as the store wants them.
    pub lifetimes: Lifetimes,
    /// `authgate_upstream_duration_seconds`, registered once.
    pub upstream_duration: metrics::Histogram,
    /// `authgate_requests_total{route,status}` handles by [`Counted::slot`], each registered
    /// on first use: the hot path then costs a read lock and a short scan instead of building
    /// a metric key (or hashing the label) per request.
    request_counters: Box<[RwLock<StatusCounters>]>,
}

/// One series per status code seen, in the order first seen.
type StatusCounters = Vec<(u16, metrics::Counter)>;

/// Which `authgate_requests_total` series a request counts in: one route's, the `/auth`
/// endpoints', or that of requests no route took (`-`).
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    pub label: &'a str,
    slot: usize,
}

impl<'a> Counted<'a> {
    pub const UNROUTED: Counted<'static> = Counted {
        label: "-",
        slot: 0,
    };
    pub const AUTH: Counted<'static> = Counted {
        label: "auth",
        slot: 1,
    };

    pub fn route(route: &'a crate::pipeline::route::Route) -> Self {
        Self {
            label: &route.label,
            slot: 2 + route.index,
        }
    }
}

impl Live {
    pub fn new(config: Config) -> Self {
        // The metric handles below bind to the recorder installed at that moment.
        crate::endpoints::admin::prometheus();
        let upstreams = config.upstreams.iter().map(UpstreamClient::new).collect();
        let expose_refresh = HeaderValue::from_str(config.token.refresh_header.as_str())
            // A HeaderName is always a valid HeaderValue.
            .unwrap_or(HeaderValue::from_static("refresh-token"));
        let login = Authenticator::new(&config.login);
        let lockout = Lockout::new(&config.login.lockout);
        let routes = config
            .routes
            .routes()
            .iter()
            .map(|r| r.index + 1)
            .max()
            .unwrap_or(0);
        let lifetimes = Lifetimes {
            refresh_ttl: config.token.refresh_ttl,
            max_lifetime: config.token.max_lifetime,
        };
        Self {
            config,
            upstreams,
            expose_refresh,
            login,
            lockout,
            lifetimes,
            upstream_duration: metrics::histogram!("authgate_upstream_duration_seconds"),
            request_counters: (0..2 + routes).map(|_| RwLock::new(Vec::new())).collect(),
        }
    }

    /// Counts one answer in `authgate_requests_total{route,status}`. `counted` must come from
    /// this `Live`'s own routes (a slot is a position in its route table).
    pub fn count_request(&self, counted: Counted<'_>, status: http::StatusCode) {
        let code = status.as_u16();
        let Some(slot) = self.request_counters.get(counted.slot) else {
            return Self::new_request_counter(counted.label, status).increment(1);
        };
        {
            let seen = slot.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, c)) = seen.iter().find(|(s, _)| *s == code) {
                return c.increment(1);
            }
        }
        let mut seen = slot.write().unwrap_or_else(|p| p.into_inner());
        // Another request may have registered it between the two locks.
        if let Some((_, c)) = seen.iter().find(|(s, _)| *s == code) {
            return c.increment(1);
        }
        let counter = Self::new_request_counter(counted.label, status);
        counter.increment(1);
        seen.push((code, counter));
    }

    fn new_request_counter(route: &str, status: http::StatusCode) -> metrics::Counter {
        metrics::counter!(
            "authgate_requests_total",
            "route" => route.to_owned(),
            "status" => status.as_str().to_owned()
        )
    }
}

/// State shared by every connection and request.
pub struct App {
    live: ArcSwap<Live>,
    pub refresher: SilentRefresher,
    /// Fixed at start: a reload does not change the store.
    pub store: SessionStore,
    /// Per-IP login flood guard in front of Argon2 (fixed memory).
    pub flood: FloodGuard,
    /// Open WebSocket tunnels and streaming responses, closed when their session ends.
    pub streams: Arc<Registry>,
}

impl App {
    /// An app with the store its config names (Redis is connected lazily: an unreachable
    /// server shows in `/readyz` and as 503s, and is picked up once it answers).
    pub async fn build(config: Config) -> Result<Arc<Self>, StoreError> {
        let store = open_store(&config).await?;
        Ok(Self::with_store(config, store))
    }

    /// An app with the memory store, whatever the config says (tests, demo).
    pub fn new(config: Config) -> Arc<Self> {
        let store = MemoryStore::new(store_settings(&config)).into();
        Self::with_store(config, store)
    }

    /// An app with the given store. Inside a Tokio runtime it also starts following the
    /// store's revocations (to close the streams of ended sessions).
    pub fn with_store(config: Config, store: SessionStore) -> Arc<Self> {
        let app = Arc::new(Self {
            live: ArcSwap::from_pointee(Live::new(config)),
            refresher: SilentRefresher::new(),
            store,
            flood: FloodGuard::new(),
            streams: Arc::new(Registry::default()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            live_streams::spawn_watcher(&app);
        }
        app
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

/// How long an ended session is remembered, so its still-valid access tokens answer
/// `session_replaced` rather than `session_revoked`: the life of an access token, plus leeway.
fn store_settings(config: &Config) -> StoreSettings {
    let t = &config.token;
    StoreSettings {
        refresh_key: RefreshKey::new(&t.refresh_secret),
        reuse_grace: config.session.refresh_reuse_grace,
        tombstone_ttl: t.access_ttl + t.keys.rules().leeway + Duration::from_secs(60),
    }
}

async fn open_store(config: &Config) -> Result<SessionStore, StoreError> {
    let settings = store_settings(config);
    let s = &config.session;
    Ok(match s.store {
        StoreKind::Memory => MemoryStore::new(settings).into(),
        StoreKind::Redis => {
            let target = if s.redis_cluster.is_empty() {
                RedisTarget::Single(s.redis_url.clone())
            } else {
                RedisTarget::Cluster(s.redis_cluster.clone())
            };
            RedisStore::connect(target, &s.key_prefix, settings, Duration::from_secs(1))
                .await?
                .into()
        }
    })
}

/// Unix milliseconds now: the `now` the session store takes (its times are milliseconds).
pub fn now_ms() -> Millis {
    Millis::now()
}

/// Unix seconds now: token claims, audit lines.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
