//! The gateway's shared state: the live config snapshot behind an `ArcSwap`, and what lives
//! longer than one snapshot (the silent-refresh cache, later the session store).
//!
//! Each request `load`s the snapshot once and uses it to the end, so a reload never changes
//! the rules in the middle of a request.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;

use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::config::{Config, StoreKind};
use crate::login::lockout::{FloodGuard, Lockout};
use crate::login::Authenticator;
use crate::metrics::{Counted, RequestCounters};
use crate::notify::{About, Notifier, Reason};
use crate::proxy::UpstreamClient;
use crate::session::{
    CacheSettings, Lifetimes, MemoryStore, RedisStore, RedisTarget, RefreshKey, SessionCheck,
    SessionStore, StoreError, StoreSettings, RECHECK_ALL,
};
use crate::shutdown::Shutdown;
use crate::streams::Registry;
use crate::tokens::silent::SilentRefresher;

/// One validated config with everything built from it (upstream clients, prebuilt values).
pub struct Live {
    pub config: Config,
    /// Same order as `config.upstreams`; routes index into it.
    pub(crate) upstreams: Vec<UpstreamClient>,
    /// `Access-Control-Expose-Headers` value naming the refresh header.
    pub(crate) expose_refresh: HeaderValue,
    /// The credential backend of `[login]`.
    pub(crate) login: Authenticator,
    /// The lock-out policy of `[login.lockout]`.
    pub(crate) lockout: Lockout,
    /// `refresh_ttl` and `max_lifetime`, as the store wants them.
    pub lifetimes: Lifetimes,
    /// `authgate_upstream_duration_seconds`, registered once.
    pub(crate) upstream_duration: metrics::Histogram,
    /// `authgate_requests_total{route,status}`, by route.
    request_counters: RequestCounters,
}

impl Live {
    pub fn new(config: Config) -> Self {
        // The metric handles below bind to the recorder installed at that moment.
        crate::metrics::prometheus();
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
            request_counters: RequestCounters::new(routes),
        }
    }

    /// Counts one answer in `authgate_requests_total{route,status}`.
    pub(crate) fn count_request(&self, counted: Counted<'_>, status: http::StatusCode) {
        self.request_counters.count(counted, status);
    }
}

/// See [`App::notify_counts`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyCounts {
    pub sent: u64,
    pub queue_full: u64,
    pub undelivered: u64,
    pub disabled: u64,
}

/// State shared by every connection and request.
pub struct App {
    live: ArcSwap<Live>,
    pub(crate) refresher: SilentRefresher,
    /// Fixed at start: a reload does not change the store.
    pub store: SessionStore,
    /// Per-IP login flood guard in front of Argon2 (fixed memory).
    pub(crate) flood: FloodGuard,
    /// The same for `GET {prefix}/captcha` (each answer renders a picture and stores it).
    pub(crate) captcha_flood: FloodGuard,
    /// Requests of the main listeners being answered (`authgate_requests_in_flight`).
    pub(crate) in_flight: crate::metrics::InFlight,
    /// Open WebSocket tunnels and streaming responses, closed when their session ends.
    pub(crate) streams: Arc<Registry>,
    /// The time every request and background check decides by (tests move it forward).
    pub clock: Clock,
    /// The one shutdown signal: `server::Handle::shutdown` and SIGTERM/SIGINT trigger it;
    /// listeners, connections, tunnels and every background task hear it.
    pub shutdown: Shutdown,
    /// `[notify]`'s queue of session events (its settings follow each reload).
    pub(crate) notify: Notifier,
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
    /// store's revocations (to close the streams of ended sessions) and sweeping the memory
    /// store, both until the shutdown signal.
    pub(crate) fn with_store(config: Config, store: SessionStore) -> Arc<Self> {
        let notify = Notifier::new(&config.notify);
        let n = notify.clone();
        store.on_expired(Arc::new(move |lapsed: Vec<crate::session::Session>| {
            for s in &lapsed {
                n.session_ended(about(s), Reason::Expired);
            }
        }));
        let app = Arc::new(Self {
            live: ArcSwap::from_pointee(Live::new(config)),
            refresher: SilentRefresher::new(),
            store,
            flood: FloodGuard::new(),
            captcha_flood: FloodGuard::with_limit(crate::login::captcha::FLOOD_LIMIT_PER_SECOND),
            in_flight: Default::default(),
            streams: Arc::new(Registry::default()),
            clock: Clock::system(),
            shutdown: Shutdown::new(),
            notify,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            spawn_watcher(&app);
            app.notify.spawn(|| app.shutdown.signal());
            app.store.spawn_sweeper(app.shutdown.signal());
            app.start_issuers(&app.live(), &[]);
        }
        app
    }

    /// `[notify]`'s counts of this gateway alone (`authgate_notify_*` are the process's,
    /// shared by every gateway of a test process): what the integration tests read.
    #[doc(hidden)]
    pub fn notify_counts(&self) -> NotifyCounts {
        let [sent, queue_full, undelivered, disabled] = self.notify.counts();
        NotifyCounts {
            sent,
            queue_full,
            undelivered,
            disabled,
        }
    }

    /// The current snapshot.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in a new, already validated config. Its issuers take over the keys of the same
    /// issuers, configured the same, in the config it replaces.
    pub(crate) fn swap(&self, mut config: Config) {
        let old = self.live.load_full();
        let reused = config.token.keys.reuse_issuers(&old.config.token.keys);
        let new = Arc::new(Live::new(config));
        self.start_issuers(&new, &reused);
        self.notify.configure(&new.config.notify);
        self.live.store(new);
    }

    /// Starts keeping the keys of `live`'s issuers fresh (until shutdown, or until a reload
    /// drops them), but for those `reused` from the config before, whose refresher runs on.
    fn start_issuers(&self, live: &Live, reused: &[bool]) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for (i, issuer) in live.config.token.keys.issuers().iter().enumerate() {
            if !reused.get(i).copied().unwrap_or(false) {
                issuer.spawn_refresher(self.clock.clone(), self.shutdown.signal());
            }
        }
    }
}

/// What a session event says of `s`.
pub(crate) fn about(s: &crate::session::Session) -> About<'_> {
    About {
        session_id: &s.id,
        user_id: &s.user_id,
        platform: &s.platform,
    }
}

/// `authgate check --probe`: fetches each issuer's keys and pings the session store; a line
/// for each, and whether all of them answered.
pub async fn probe(config: &Config) -> (String, bool) {
    use std::fmt::Write;
    let mut out = String::new();
    let mut ok = true;
    let clock = Clock::system();
    for (i, issuer) in config.token.keys.issuers().iter().enumerate() {
        let line = match issuer.probe(&clock).await {
            Ok(n) => format!("{n} key(s)"),
            Err(e) => {
                ok = false;
                format!("FAILED: {e}")
            }
        };
        let _ = writeln!(out, "probe: token.issuers[{i}] {}: {line}", issuer.name());
    }
    let store = match config.session.store {
        StoreKind::Memory => "(memory): nothing to reach".to_owned(),
        StoreKind::Redis => match open_store(config).await {
            Ok(store) => match store.ping().await {
                Ok(()) => "(redis): answers".to_owned(),
                Err(e) => {
                    ok = false;
                    format!("(redis): FAILED: {e}")
                }
            },
            Err(e) => {
                ok = false;
                format!("(redis): FAILED: {e}")
            }
        },
    };
    let _ = writeln!(out, "probe: session store {store}");
    (out, ok)
}

/// How long an ended session is remembered, so its still-valid access tokens answer
/// `session_replaced` rather than `session_revoked`: the life of an access token, plus leeway.
fn store_settings(config: &Config) -> StoreSettings {
    let t = &config.token;
    StoreSettings {
        refresh_key: RefreshKey::new(&t.refresh_secret),
        reuse_grace: config.session.refresh_reuse_grace,
        tombstone_ttl: t.access_ttl + t.keys.rules().leeway + Duration::from_secs(60),
        local_cache: config.session.local_cache.map(|c| CacheSettings {
            ttl: c.ttl,
            max_bytes: c.max_bytes,
        }),
    }
}

async fn open_store(config: &Config) -> Result<SessionStore, StoreError> {
    let settings = store_settings(config);
    let s = &config.session;
    Ok(match s.store {
        StoreKind::Memory => MemoryStore::new(settings).into(),
        StoreKind::Redis => {
            let target = match &s.redis_sentinel {
                Some(sentinel) => RedisTarget::Sentinel {
                    master: sentinel.master.clone(),
                    nodes: sentinel.nodes.clone(),
                    redis_url: s.redis_url.clone(),
                },
                None if s.redis_cluster.is_empty() => RedisTarget::Single(s.redis_url.clone()),
                None => RedisTarget::Cluster(s.redis_cluster.clone()),
            };
            RedisStore::connect(target, &s.key_prefix, settings, Duration::from_secs(1))
                .await?
                .into()
        }
    })
}

/// Follows the store's revocations until the shutdown signal (or the app is dropped).
fn spawn_watcher(app: &Arc<App>) {
    let mut rx = app.store.subscribe_revocations();
    let mut stop = app.shutdown.signal();
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        loop {
            // `recv` is cancel-safe: a revocation that arrives as the signal wins is only
            // left unread, and nothing reads it any more.
            let msg = tokio::select! {
                _ = stop.signalled() => return,
                msg = rx.recv() => msg,
            };
            let Some(app) = weak.upgrade() else { return };
            match msg {
                Ok(sid) if sid != RECHECK_ALL => app.streams.end(&sid),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => recheck_all(&app).await,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

async fn recheck_all(app: &App) {
    for (uid, sid) in app.streams.sessions() {
        match app.store.check(&uid, &sid, app.clock.now_ms()).await {
            Ok(SessionCheck::Active) | Err(_) => {}
            Ok(_) => app.streams.end(&sid),
        }
    }
}
