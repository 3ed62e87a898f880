//! The behaviour suite, run against both stores (`memory_store::*` and `redis_store::*`), plus
//! Redis-only fault tests and two ignored memory measurements.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ids::{format_sid, format_token, random};
use super::redis::TOUCH_EVERY;
use super::testutil::{RedisCluster, RedisSentinels, RedisServer};
use super::*;

const GRACE: u64 = 10;
const TOMB: u64 = 300;

fn settings() -> StoreSettings {
    StoreSettings {
        refresh_key: RefreshKey::new(&[42; 32]),
        reuse_grace: Duration::from_secs(GRACE),
        tombstone_ttl: Duration::from_secs(TOMB),
        // The whole suite runs with the Redis store's local cache on, as deployed.
        local_cache: Some(CACHE),
    }
}

/// The local cache of the suite's Redis stores: the default TTL.
const CACHE: CacheSettings = CacheSettings {
    ttl: Duration::from_secs(5),
    max_bytes: 1 << 20,
};

/// A duration in whole seconds (the suite's offsets from its `t`).
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn life() -> Lifetimes {
    Lifetimes {
        refresh_ttl: Duration::from_secs(3600),
        max_lifetime: None,
    }
}

fn new(user: &str, platform: &str) -> NewSession {
    NewSession {
        user_id: user.into(),
        user_name: format!("name-{user}"),
        tenant: Some("acme".into()),
        roles: vec!["admin".into(), "ops".into()],
        platform: platform.into(),
        device: Some("dev-1".into()),
        ip: "203.0.113.7".into(),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) test".into()),
    }
}

enum Backend {
    Memory,
    Single(RedisServer),
    /// A shared cluster: each behaviour gets its own key prefix (and so its own channel).
    Cluster {
        urls: Vec<String>,
        prefix: String,
    },
    /// Shared sentinels (a master and a replica behind them), a key prefix per behaviour.
    Sentinel {
        nodes: Vec<String>,
        prefix: String,
    },
}

fn sentinel_target(nodes: &[String]) -> RedisTarget {
    RedisTarget::Sentinel {
        master: RedisSentinels::NAME.into(),
        nodes: nodes.to_vec(),
        redis_url: "redis://127.0.0.1/0".into(),
    }
}

struct Fixture {
    store: SessionStore,
    backend: Backend,
}

impl Fixture {
    fn memory() -> Self {
        Self {
            store: MemoryStore::new(settings()).into(),
            backend: Backend::Memory,
        }
    }

    async fn redis() -> Option<Self> {
        let server = RedisServer::start()?;
        let store = redis_store(&server).await;
        Some(Self {
            store,
            backend: Backend::Single(server),
        })
    }

    async fn cluster(cluster: &RedisCluster, prefix: &str) -> Self {
        let urls = cluster.urls();
        let store = connect(RedisTarget::Cluster(urls.clone()), prefix).await;
        Self {
            store,
            backend: Backend::Cluster {
                urls,
                prefix: prefix.to_owned(),
            },
        }
    }

    async fn sentinel(set: &RedisSentinels, prefix: &str) -> Self {
        let nodes = set.urls();
        let store = connect(sentinel_target(&nodes), prefix).await;
        Self {
            store,
            backend: Backend::Sentinel {
                nodes,
                prefix: prefix.to_owned(),
            },
        }
    }

    /// A store on the same backend with its own `refresh_reuse_grace` (memory: a new store).
    async fn with_grace(&self, grace: Duration) -> SessionStore {
        let settings = StoreSettings {
            reuse_grace: grace,
            ..settings()
        };
        match &self.backend {
            Backend::Memory => MemoryStore::new(settings).into(),
            Backend::Single(server) => {
                connect_with(RedisTarget::Single(server.url()), "authgate:", settings).await
            }
            Backend::Cluster { urls, prefix } => {
                connect_with(RedisTarget::Cluster(urls.clone()), prefix, settings).await
            }
            Backend::Sentinel { nodes, prefix } => {
                connect_with(sentinel_target(nodes), prefix, settings).await
            }
        }
    }

    /// Another gateway instance on the same store (memory: the same store).
    async fn another_instance(&self) -> SessionStore {
        match &self.backend {
            Backend::Memory => self.store.clone(),
            Backend::Single(server) => redis_store(server).await,
            Backend::Cluster { urls, prefix } => {
                connect(RedisTarget::Cluster(urls.clone()), prefix).await
            }
            Backend::Sentinel { nodes, prefix } => connect(sentinel_target(nodes), prefix).await,
        }
    }
}

async fn connect(target: RedisTarget, prefix: &str) -> SessionStore {
    connect_with(target, prefix, settings()).await
}

async fn connect_with(target: RedisTarget, prefix: &str, settings: StoreSettings) -> SessionStore {
    let store = RedisStore::connect(target, prefix, settings, Duration::from_secs(1))
        .await
        .expect("connect");
    assert!(store.wait_subscribed(Duration::from_secs(5)).await);
    store.into()
}

async fn redis_store(server: &RedisServer) -> SessionStore {
    connect(RedisTarget::Single(server.url()), "authgate:").await
}

/// Runs each behaviour against the memory store, a Redis node, and (all in one test, one
/// cluster) a three-node Redis Cluster.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Fixture::memory()).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(f) = super::Fixture::redis().await {
                        super::$name(f).await;
                    }
                }
            )*
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn redis_cluster_store_passes_the_suite() {
            let Some(cluster) = RedisCluster::start() else {
                return;
            };
            $(
                $name(Fixture::cluster(&cluster, concat!(stringify!($name), ":")).await).await;
            )*
        }
        /// Through Sentinel: every write of a login or rotation also waits for the replica.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn redis_sentinel_store_passes_the_suite() {
            let Some(set) = RedisSentinels::start() else {
                return;
            };
            $(
                $name(Fixture::sentinel(&set, concat!(stringify!($name), ":")).await).await;
            )*
        }
    };
}

both_stores! {
    create_and_check,
    kick_out_on_the_same_platform,
    no_kick_across_platforms_or_users,
    concurrent_creates_leave_exactly_one,
    refresh_rotates,
    grace_gives_the_same_successor,
    parallel_refreshes_have_one_successor,
    parent_after_grace_is_theft_of_that_session_only,
    older_generation_is_theft,
    forged_token_is_invalid,
    invalid_refresh_tokens,
    end_end_all_and_list,
    idle_expiry,
    a_lapsed_session_is_marked_expired_once,
    a_login_tells_of_the_lapsed_sessions_it_drops_once,
    end_all_names_the_sessions_it_ended,
    max_lifetime_caps_refreshes,
    tombstones_answer_replaced_then_go,
    tombstones_are_bounded,
    lockout_counters,
    failures_are_read_without_counting,
    captcha_challenges_answer_once_while_live,
    revocations_are_broadcast,
    active_count_follows_changes,
    instances_share_sessions,
    grace_is_bounded_to_the_millisecond,
    idle_limit_is_bounded_to_the_millisecond,
    max_lifetime_is_bounded_to_the_millisecond,
    tombstones_are_bounded_to_the_millisecond,
    lockout_window_and_duration_are_bounded_to_the_millisecond,
}

/// Where in its second an instant falls, for the boundary tests: a window must end exactly
/// its configured duration after it started, wherever in a second that was (issue 15).
const IN_THE_SECOND: [u64; 4] = [0, 1, 499, 999];

/// A whole Unix second a little ahead of the clock (the memory store's sweep uses the real
/// clock, so the injected instants stay near it).
fn base() -> Millis {
    Millis::from_secs(Millis::now().as_secs() + 10)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rotated(o: RefreshOutcome) -> (Session, RefreshToken) {
    match o {
        RefreshOutcome::Rotated { session, token } => (session, token),
        other => panic!("expected Rotated, got {other:?}"),
    }
}

async fn create_and_check(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let c = s
        .create(new("1001", "web"), Some(1), life(), t)
        .await
        .unwrap();
    assert!(c.kicked.is_empty());
    let sess = &c.session;
    assert_eq!(user_id_of(&sess.id).as_deref(), Some("1001"));
    assert!(c
        .refresh_token
        .as_str()
        .starts_with(&format!("{}.", sess.id)));
    assert_eq!(sess.user_id, "1001");
    assert_eq!(sess.user_name, "name-1001");
    assert_eq!(sess.tenant.as_deref(), Some("acme"));
    assert_eq!(sess.roles, ["admin", "ops"]);
    assert_eq!(sess.platform, "web");
    assert_eq!(sess.device.as_deref(), Some("dev-1"));
    assert_eq!(sess.ip, "203.0.113.7");
    assert_eq!((sess.created_at, sess.last_seen_at), (t, t));
    assert_eq!((sess.generation, sess.rotated_at), (0, Millis::ZERO));
    assert_eq!(sess.expires_at, t + secs(3600));
    assert_eq!(sess.state, SessionState::Active);

    assert_eq!(
        s.check("1001", &sess.id, t + secs(1)).await.unwrap(),
        SessionCheck::Active
    );
    assert_eq!(
        s.check("1002", &sess.id, t + secs(1)).await.unwrap(),
        SessionCheck::Unknown
    );
    assert_eq!(
        s.check("1001", "garbage", t).await.unwrap(),
        SessionCheck::Unknown
    );
    let unknown = format_sid("1001", &random());
    assert_eq!(
        s.check("1001", &unknown, t).await.unwrap(),
        SessionCheck::Unknown
    );
    // Memory moves last_seen_at on every check; Redis at most once a minute.
    let mut got = s.get("1001", &sess.id).await.unwrap().unwrap();
    assert!(got.last_seen_at >= t);
    got.last_seen_at = t;
    assert_eq!(&got, sess);
    assert_eq!(s.get("1001", &unknown).await.unwrap(), None);
    let listed = s.list("1001", t).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sess.id);
    assert!(s.list("1002", t).await.unwrap().is_empty());
    s.ping().await.unwrap();

    // A user id with characters that mean something to Redis or to our own formats.
    let odd = "a}{b}.c d";
    let c = s.create(new(odd, "web"), None, life(), t).await.unwrap();
    assert_eq!(user_id_of(&c.session.id).as_deref(), Some(odd));
    assert_eq!(
        s.check(odd, &c.session.id, t).await.unwrap(),
        SessionCheck::Active
    );
    rotated(
        s.refresh(c.refresh_token.as_str(), life(), t)
            .await
            .unwrap(),
    );

    let too_long = "x".repeat(256);
    assert!(matches!(
        s.create(new(&too_long, "web"), None, life(), t).await,
        Err(StoreError::InvalidInput(_))
    ));
}

async fn kick_out_on_the_same_platform(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let a = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let b = s
        .create(new("u", "web"), Some(1), life(), t + secs(1))
        .await
        .unwrap();
    assert_eq!(b.kicked, vec![a.session.id.clone()]);
    assert_eq!(b.kicked_platforms, ["web"]);
    assert_eq!(
        s.check("u", &a.session.id, t + secs(2)).await.unwrap(),
        SessionCheck::Ended(EndReason::Replaced)
    );
    assert_eq!(
        s.check("u", &b.session.id, t + secs(2)).await.unwrap(),
        SessionCheck::Active
    );
    assert!(matches!(
        s.refresh(a.refresh_token.as_str(), life(), t + secs(2))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    ));
    let ended = s.get("u", &a.session.id).await.unwrap().unwrap();
    assert_eq!(ended.state, SessionState::Ended(EndReason::Replaced));

    // A limit of two keeps two; the third login ends the oldest.
    let c1 = s.create(new("u", "app"), Some(2), life(), t).await.unwrap();
    let c2 = s
        .create(new("u", "app"), Some(2), life(), t + secs(1))
        .await
        .unwrap();
    assert!(c2.kicked.is_empty());
    let c3 = s
        .create(new("u", "app"), Some(2), life(), t + secs(2))
        .await
        .unwrap();
    assert_eq!(c3.kicked, vec![c1.session.id.clone()]);
    assert_eq!(c3.kicked_platforms, ["app"]);
    let ids: Vec<String> = s
        .list("u", t + secs(3))
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(ids, vec![b.session.id, c2.session.id, c3.session.id]);
}

async fn no_kick_across_platforms_or_users(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let mut ids = Vec::new();
    for p in ["web", "h5", "app"] {
        let c = s.create(new("u", p), Some(1), life(), t).await.unwrap();
        assert!(c.kicked.is_empty());
        ids.push(c.session.id);
    }
    let other = s.create(new("v", "web"), Some(1), life(), t).await.unwrap();
    assert!(other.kicked.is_empty());
    for id in &ids {
        assert_eq!(
            s.check("u", id, t + secs(1)).await.unwrap(),
            SessionCheck::Active
        );
    }
    assert_eq!(s.list("u", t + secs(1)).await.unwrap().len(), 3);
    // No limit on a platform: no kick either.
    for i in 0..5 {
        let c = s
            .create(new("u", "cli"), None, life(), t + secs(i))
            .await
            .unwrap();
        assert!(c.kicked.is_empty());
    }
    assert_eq!(s.list("u", t + secs(10)).await.unwrap().len(), 8);
}

async fn concurrent_creates_leave_exactly_one(f: Fixture) {
    let t = Millis::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let s = f.store.clone();
            tokio::spawn(async move { s.create(new("u", "web"), Some(1), life(), t).await })
        })
        .collect();
    let mut all = Vec::new();
    let mut kicked = 0;
    for task in tasks {
        let c = task.await.unwrap().unwrap();
        kicked += c.kicked.len();
        all.push(c.session.id);
    }
    let live = f.store.list("u", t).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(kicked, 9);
    for id in all.iter().filter(|id| **id != live[0].id) {
        assert_eq!(
            f.store.check("u", id, t).await.unwrap(),
            SessionCheck::Ended(EndReason::Replaced)
        );
    }
}

async fn refresh_rotates(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let c = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let (s1, t1) = rotated(
        s.refresh(c.refresh_token.as_str(), life(), t + secs(100))
            .await
            .unwrap(),
    );
    assert_eq!(s1.id, c.session.id);
    assert_ne!(t1, c.refresh_token);
    assert_eq!(s1.generation, 1);
    assert_eq!(s1.rotated_at, t + secs(100));
    assert_eq!(s1.last_seen_at, t + secs(100));
    assert_eq!(s1.expires_at, t + secs(100 + 3600));
    assert_eq!(s1.created_at, t);
    let (s2, t2) = rotated(s.refresh(t1.as_str(), life(), t + secs(200)).await.unwrap());
    assert_eq!(s2.generation, 2);
    assert_ne!(t2, t1);
    assert_eq!(
        s.check("u", &c.session.id, t + secs(201)).await.unwrap(),
        SessionCheck::Active
    );
    let listed = s.list("u", t + secs(201)).await.unwrap();
    assert_eq!(listed[0].expires_at, t + secs(200 + 3600));
}

async fn grace_gives_the_same_successor(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let c = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let t0 = c.refresh_token.as_str();
    let (_, t1) = rotated(s.refresh(t0, life(), t).await.unwrap());
    for dt in [1, 5, GRACE] {
        match s.refresh(t0, life(), t + secs(dt)).await.unwrap() {
            RefreshOutcome::Grace { session, token } => {
                assert_eq!(token, t1);
                assert_eq!(session.generation, 1);
                assert_eq!(session.id, c.session.id);
            }
            other => panic!("expected Grace at +{dt}, got {other:?}"),
        }
    }
    // The successor handed out twice is the current token.
    let (s2, _) = rotated(
        s.refresh(t1.as_str(), life(), t + secs(GRACE))
            .await
            .unwrap(),
    );
    assert_eq!(s2.generation, 2);
}

async fn parallel_refreshes_have_one_successor(f: Fixture) {
    let t = Millis::now();
    let c = f
        .store
        .create(new("u", "web"), Some(1), life(), t)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = f.store.clone();
            let tok = c.refresh_token.clone();
            tokio::spawn(async move { s.refresh(tok.as_str(), life(), t + secs(1)).await })
        })
        .collect();
    let mut rotations = 0;
    let mut tokens = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            RefreshOutcome::Rotated { token, .. } => {
                rotations += 1;
                tokens.push(token);
            }
            RefreshOutcome::Grace { token, .. } => tokens.push(token),
            other => panic!("expected Rotated or Grace, got {other:?}"),
        }
    }
    assert_eq!(rotations, 1);
    assert!(tokens.iter().all(|x| *x == tokens[0]));
    assert_eq!(
        f.store
            .check("u", &c.session.id, t + secs(1))
            .await
            .unwrap(),
        SessionCheck::Active
    );
    let (s2, _) = rotated(
        f.store
            .refresh(tokens[0].as_str(), life(), t + secs(2))
            .await
            .unwrap(),
    );
    assert_eq!(s2.generation, 2);
}

async fn parent_after_grace_is_theft_of_that_session_only(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let c = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let other = s.create(new("u", "app"), Some(1), life(), t).await.unwrap();
    let (_, t1) = rotated(
        s.refresh(c.refresh_token.as_str(), life(), t)
            .await
            .unwrap(),
    );
    match s
        .refresh(c.refresh_token.as_str(), life(), t + secs(GRACE + 1))
        .await
        .unwrap()
    {
        RefreshOutcome::Theft { session } => {
            assert_eq!(session.id, c.session.id);
            assert_eq!(session.state, SessionState::Ended(EndReason::Theft));
        }
        o => panic!("expected Theft, got {o:?}"),
    }
    let later = t + secs(GRACE + 2);
    assert_eq!(
        s.check("u", &c.session.id, later).await.unwrap(),
        SessionCheck::Ended(EndReason::Theft)
    );
    assert_eq!(
        s.check("u", &other.session.id, later).await.unwrap(),
        SessionCheck::Active
    );
    // The successor died with the session; the other session still refreshes.
    assert!(matches!(
        s.refresh(t1.as_str(), life(), later).await.unwrap(),
        RefreshOutcome::Invalid
    ));
    assert!(matches!(
        s.refresh(c.refresh_token.as_str(), life(), later)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    ));
    rotated(
        s.refresh(other.refresh_token.as_str(), life(), later)
            .await
            .unwrap(),
    );
}

async fn older_generation_is_theft(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let c = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let (_, t1) = rotated(
        s.refresh(c.refresh_token.as_str(), life(), t)
            .await
            .unwrap(),
    );
    let (_, t2) = rotated(s.refresh(t1.as_str(), life(), t + secs(1)).await.unwrap());
    let (_, _t3) = rotated(s.refresh(t2.as_str(), life(), t + secs(2)).await.unwrap());
    // Two generations back, well within the grace in time: still theft.
    assert!(matches!(
        s.refresh(t1.as_str(), life(), t + secs(3)).await.unwrap(),
        RefreshOutcome::Theft { .. }
    ));
    assert_eq!(
        s.check("u", &c.session.id, t + secs(3)).await.unwrap(),
        SessionCheck::Ended(EndReason::Theft)
    );

    // The very first token, many rotations later.
    let c = s.create(new("w", "web"), Some(1), life(), t).await.unwrap();
    let mut tok = c.refresh_token.clone();
    for i in 0..20 {
        tok = rotated(s.refresh(tok.as_str(), life(), t + secs(i)).await.unwrap()).1;
    }
    assert!(matches!(
        s.refresh(c.refresh_token.as_str(), life(), t + secs(20))
            .await
            .unwrap(),
        RefreshOutcome::Theft { .. }
    ));
}

async fn forged_token_is_invalid(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let c = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let (_, t1) = rotated(
        s.refresh(c.refresh_token.as_str(), life(), t)
            .await
            .unwrap(),
    );
    // Someone who knows the session id (it travels in headers) but no token of it.
    let (sid_user, sid) = super::ids::parse_sid(&c.session.id).unwrap();
    let forged = format_token(&sid_user, &sid, &random());
    for now in [t + secs(1), t + secs(GRACE + 5)] {
        assert!(matches!(
            s.refresh(forged.as_str(), life(), now).await.unwrap(),
            RefreshOutcome::Invalid
        ));
    }
    assert_eq!(
        s.check("u", &c.session.id, t + secs(20)).await.unwrap(),
        SessionCheck::Active
    );
    rotated(s.refresh(t1.as_str(), life(), t + secs(20)).await.unwrap());
}

async fn invalid_refresh_tokens(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let c = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let unknown = format_token("u", &random(), &random());
    let nobody = format_token("nobody", &random(), &random());
    let tok = c.refresh_token.as_str();
    for bad in [
        "",
        "garbage",
        "a.b.c",
        &tok[..tok.len() - 1],
        &format!("{tok}.x"),
        unknown.as_str(),
        nobody.as_str(),
    ] {
        assert!(
            matches!(
                s.refresh(bad, life(), t + secs(1)).await.unwrap(),
                RefreshOutcome::Invalid
            ),
            "{bad:?}"
        );
    }
    // Expired: the idle limit is reached at exactly created + refresh_ttl.
    assert!(matches!(
        s.refresh(tok, life(), t + secs(3600)).await.unwrap(),
        RefreshOutcome::Invalid
    ));
    // Ended by logout: both the token and (after) anything else.
    assert!(s
        .end("u", &c.session.id, EndReason::Logout, t + secs(1))
        .await
        .unwrap());
    assert!(matches!(
        s.refresh(tok, life(), t + secs(2)).await.unwrap(),
        RefreshOutcome::Invalid
    ));
}

async fn end_end_all_and_list(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let web = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let app = s
        .create(new("u", "app"), Some(1), life(), t + secs(1))
        .await
        .unwrap();
    let h5 = s
        .create(new("u", "h5"), Some(1), life(), t + secs(2))
        .await
        .unwrap();
    let v = s.create(new("v", "web"), Some(1), life(), t).await.unwrap();

    assert!(!s
        .end("v", &web.session.id, EndReason::Logout, t + secs(3))
        .await
        .unwrap());
    assert!(s
        .end("u", &web.session.id, EndReason::Logout, t + secs(3))
        .await
        .unwrap());
    assert!(!s
        .end("u", &web.session.id, EndReason::Logout, t + secs(3))
        .await
        .unwrap());
    assert!(!s
        .end("u", "nonsense", EndReason::Logout, t + secs(3))
        .await
        .unwrap());
    let listed: Vec<String> = s
        .list("u", t + secs(3))
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(listed, vec![app.session.id.clone(), h5.session.id.clone()]);
    assert_eq!(
        s.check("u", &web.session.id, t + secs(3)).await.unwrap(),
        SessionCheck::Ended(EndReason::Logout)
    );

    assert_eq!(
        s.end_all("u", EndReason::Revoked, t + secs(4))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.end_all("u", EndReason::Revoked, t + secs(4))
            .await
            .unwrap(),
        0
    );
    assert!(s.list("u", t + secs(4)).await.unwrap().is_empty());
    assert_eq!(
        s.check("u", &app.session.id, t + secs(4)).await.unwrap(),
        SessionCheck::Ended(EndReason::Revoked)
    );
    // The other user is untouched.
    assert_eq!(
        s.check("v", &v.session.id, t + secs(4)).await.unwrap(),
        SessionCheck::Active
    );

    // By id alone (admin API).
    let ended = s
        .end_by_id(&v.session.id, EndReason::Revoked, t + secs(5))
        .await
        .unwrap()
        .expect("ended");
    assert_eq!(
        (ended.id.as_str(), ended.platform.as_str()),
        (v.session.id.as_str(), "web")
    );
    assert!(s
        .end_by_id(&v.session.id, EndReason::Revoked, t + secs(5))
        .await
        .unwrap()
        .is_none());
    assert!(s
        .end_by_id("junk", EndReason::Revoked, t + secs(5))
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.end_all("nobody", EndReason::Revoked, t).await.unwrap(), 0);
}

/// `expire` marks the sessions of a user past their expiry once, whichever instance asks
/// first, all of them at once; never an active or already ended one, nor another user's.
/// `[notify]` tells of the expiry on the strength of it.
async fn a_lapsed_session_is_marked_expired_once(f: Fixture) {
    let a = &f.store;
    let b = f.another_instance().await;
    let t = Millis::now();
    let short = Lifetimes {
        refresh_ttl: Duration::from_secs(100),
        max_lifetime: None,
    };
    let c = a.create(new("u", "web"), None, short, t).await.unwrap();
    let id = &c.session.id;
    let other = a.create(new("u", "app"), None, short, t).await.unwrap();
    let later = a
        .create(new("u", "h5"), None, short, t + secs(50))
        .await
        .unwrap();
    let v = a.create(new("v", "web"), None, short, t).await.unwrap();
    // Active: nothing to mark.
    assert!(a.expire("u", t + secs(99)).await.unwrap().is_empty());
    assert_eq!(
        a.check("u", id, t + secs(99)).await.unwrap(),
        SessionCheck::Active
    );
    let at = t + secs(100);
    assert_eq!(a.check("u", id, at).await.unwrap(), SessionCheck::Lapsed);
    let (x, y) = tokio::join!(a.expire("u", at), b.expire("u", at));
    let mut marked: Vec<Session> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    marked.sort_by(|p, q| p.platform.cmp(&q.platform));
    let seen: Vec<(&str, &str)> = marked
        .iter()
        .map(|s| (s.id.as_str(), s.platform.as_str()))
        .collect();
    assert_eq!(
        seen,
        [(other.session.id.as_str(), "app"), (id.as_str(), "web")],
        "each lapsed session once, from one of the two instances"
    );
    assert!(marked
        .iter()
        .all(|s| s.state == SessionState::Ended(EndReason::Expired)));
    assert_eq!(
        a.check("u", id, at + secs(1)).await.unwrap(),
        SessionCheck::Ended(EndReason::Expired)
    );
    assert_eq!(
        a.check("u", &later.session.id, at + secs(1)).await.unwrap(),
        SessionCheck::Active
    );
    assert!(b.expire("u", at + secs(1)).await.unwrap().is_empty());
    assert_eq!(a.list("u", at).await.unwrap().len(), 1);
    // Another user's lapsed session waits for its own.
    assert_eq!(
        a.check("v", &v.session.id, at).await.unwrap(),
        SessionCheck::Lapsed
    );
    // An ended session is not lapsed either.
    assert!(a
        .end("u", &later.session.id, EndReason::Logout, at + secs(1))
        .await
        .unwrap());
    assert!(a.expire("u", t + secs(200)).await.unwrap().is_empty());
    assert!(a.expire("nobody", at).await.unwrap().is_empty());
}

/// What the stores' expiry hooks were told (one list for every store given).
fn told_expired(stores: &[&SessionStore]) -> Arc<std::sync::Mutex<Vec<(String, String)>>> {
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    for s in stores {
        let to = told.clone();
        s.on_expired(Arc::new(move |lapsed: Vec<Session>| {
            let mut to = to.lock().unwrap();
            to.extend(lapsed.into_iter().map(|s| (s.id, s.platform)));
        }));
    }
    told
}

/// Waits (at most 3 s) until `told` holds `want` (in any order); then asserts it.
async fn told_is(told: &std::sync::Mutex<Vec<(String, String)>>, want: &[(&str, &str)]) {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut got = told.lock().unwrap().clone();
        got.sort();
        if got == want || Instant::now() > deadline {
            assert_eq!(got, want);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A login that rewrites its user's record drops the sessions past their expiry that no
/// request marked: the expiry hook hears of each once, from the one instance whose login
/// dropped it, even when two instances log the user in at once on other platforms.
async fn a_login_tells_of_the_lapsed_sessions_it_drops_once(f: Fixture) {
    let a = &f.store;
    let b = f.another_instance().await;
    let told = told_expired(&[a, &b]);
    let t = Millis::now();
    let short = Lifetimes {
        refresh_ttl: Duration::from_secs(100),
        max_lifetime: None,
    };
    let gone = a.create(new("u", "web"), None, short, t).await.unwrap();
    let stays = a
        .create(new("u", "app"), None, short, t + secs(50))
        .await
        .unwrap();
    let other = a.create(new("v", "web"), None, short, t).await.unwrap();
    // Not yet lapsed: a login drops nothing.
    a.create(new("u", "tv"), None, short, t + secs(99))
        .await
        .unwrap();
    told_is(&told, &[]).await;
    let at = t + secs(100);
    let (x, y) = tokio::join!(
        a.create(new("u", "h5"), None, short, at),
        b.create(new("u", "pad"), None, short, at)
    );
    x.unwrap();
    y.unwrap();
    told_is(&told, &[(gone.session.id.as_str(), "web")]).await;
    // Dropped, so nobody marks it again.
    assert!(a.expire("u", at).await.unwrap().is_empty());
    assert_eq!(
        a.check("u", &gone.session.id, at).await.unwrap(),
        SessionCheck::Unknown
    );
    assert_eq!(
        a.check("u", &stays.session.id, at).await.unwrap(),
        SessionCheck::Active
    );
    // Another user's lapsed session waits for a write of its own.
    assert_eq!(
        a.check("v", &other.session.id, at).await.unwrap(),
        SessionCheck::Lapsed
    );
    told_is(&told, &[(gone.session.id.as_str(), "web")]).await;
    // A login that kicks one session out and drops a lapsed one: each told its own way.
    let live = a.create(new("k", "web"), None, life(), t).await.unwrap();
    let idle = a.create(new("k", "app"), None, short, t).await.unwrap();
    let c = b
        .create(new("k", "web"), Some(1), life(), at)
        .await
        .unwrap();
    assert_eq!(c.kicked, [live.session.id.as_str()]);
    assert_eq!(c.kicked_platforms, ["web"]);
    told_is(
        &told,
        &[
            (gone.session.id.as_str(), "web"),
            (idle.session.id.as_str(), "app"),
        ],
    )
    .await;
}

/// On Redis every write to a user's record drops the sessions past their expiry, not only a
/// login: a refresh, a logout of another session of theirs and a last-seen update tell the
/// expiry hook of what they dropped, once. (The memory store rewrites a user's record only
/// at a login; its sweep tells of the rest.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_every_write_tells_of_the_lapsed_sessions_it_drops() {
    let Some(f) = Fixture::redis().await else {
        return;
    };
    let s = &f.store;
    let told = told_expired(&[s]);
    let t = Millis::now();
    let short = Lifetimes {
        refresh_ttl: Duration::from_secs(100),
        max_lifetime: None,
    };
    let mut want = Vec::new();
    let lapsed_and_kept = |user: &'static str| async move {
        let gone = s.create(new(user, "web"), None, short, t).await.unwrap();
        let kept = s.create(new(user, "app"), None, life(), t).await.unwrap();
        (gone, kept)
    };
    let at = t + secs(100);
    // A refresh of another session of the user.
    let (gone, kept) = lapsed_and_kept("r").await;
    rotated(
        s.refresh(kept.refresh_token.as_str(), life(), at)
            .await
            .unwrap(),
    );
    want.push(gone.session.id);
    // A logout of another session.
    let (gone, kept) = lapsed_and_kept("e").await;
    assert!(s
        .end("e", &kept.session.id, EndReason::Logout, at)
        .await
        .unwrap());
    want.push(gone.session.id);
    // A request's last-seen update (in the background, a minute after the last).
    let (gone, kept) = lapsed_and_kept("h").await;
    assert_eq!(
        s.check("h", &kept.session.id, at).await.unwrap(),
        SessionCheck::Active
    );
    want.push(gone.session.id);
    let want: Vec<(&str, &str)> = want.iter().map(|id| (id.as_str(), "web")).collect();
    told_is(&told, &want).await;
    // Told once: the next writes find nothing more to drop.
    for user in ["r", "e", "h"] {
        s.create(new(user, "tv"), None, life(), at + secs(1))
            .await
            .unwrap();
    }
    told_is(&told, &want).await;
}

async fn end_all_names_the_sessions_it_ended(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let web = s.create(new("u", "web"), None, life(), t).await.unwrap();
    let app = s.create(new("u", "app"), None, life(), t).await.unwrap();
    let gone = s.create(new("u", "h5"), None, life(), t).await.unwrap();
    assert!(s
        .end("u", &gone.session.id, EndReason::Logout, t)
        .await
        .unwrap());
    let mut ended: Vec<(String, String, SessionState)> = s
        .end_all_sessions("u", EndReason::Logout, t + secs(1))
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.platform, s.state))
        .collect();
    ended.sort_by(|a, b| a.0.cmp(&b.0));
    let ended_as = SessionState::Ended(EndReason::Logout);
    let mut want = vec![
        (web.session.id.clone(), "web".to_owned(), ended_as),
        (app.session.id.clone(), "app".to_owned(), ended_as),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ended, want);
    assert!(s
        .end_all_sessions("u", EndReason::Logout, t + secs(2))
        .await
        .unwrap()
        .is_empty());
}

async fn idle_expiry(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let short = Lifetimes {
        refresh_ttl: Duration::from_secs(100),
        max_lifetime: None,
    };
    let c = s.create(new("u", "web"), None, short, t).await.unwrap();
    let id = &c.session.id;
    assert_eq!(
        s.check("u", id, t + secs(99)).await.unwrap(),
        SessionCheck::Active
    );
    assert_ne!(
        s.check("u", id, t + secs(100)).await.unwrap(),
        SessionCheck::Active
    );
    assert!(s.list("u", t + secs(100)).await.unwrap().is_empty());
    assert!(matches!(
        s.refresh(c.refresh_token.as_str(), short, t + secs(100))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    ));
    assert!(!s
        .end("u", id, EndReason::Logout, t + secs(100))
        .await
        .unwrap());

    // Each refresh extends the idle limit.
    let c = s.create(new("u", "web"), None, short, t).await.unwrap();
    let (s1, _) = rotated(
        s.refresh(c.refresh_token.as_str(), short, t + secs(90))
            .await
            .unwrap(),
    );
    assert_eq!(s1.expires_at, t + secs(190));
    assert_eq!(
        s.check("u", &c.session.id, t + secs(150)).await.unwrap(),
        SessionCheck::Active
    );
    assert_eq!(s.list("u", t + secs(150)).await.unwrap().len(), 1);
    assert_ne!(
        s.check("u", &c.session.id, t + secs(190)).await.unwrap(),
        SessionCheck::Active
    );
}

async fn max_lifetime_caps_refreshes(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let l = Lifetimes {
        refresh_ttl: Duration::from_secs(100),
        max_lifetime: Some(Duration::from_secs(150)),
    };
    let c = s.create(new("u", "web"), None, l, t).await.unwrap();
    assert_eq!(c.session.expires_at, t + secs(100));
    let (s1, t1) = rotated(
        s.refresh(c.refresh_token.as_str(), l, t + secs(90))
            .await
            .unwrap(),
    );
    assert_eq!(s1.expires_at, t + secs(150));
    let (s2, t2) = rotated(s.refresh(t1.as_str(), l, t + secs(140)).await.unwrap());
    assert_eq!(s2.expires_at, t + secs(150));
    assert_eq!(
        s.check("u", &c.session.id, t + secs(149)).await.unwrap(),
        SessionCheck::Active
    );
    assert_ne!(
        s.check("u", &c.session.id, t + secs(150)).await.unwrap(),
        SessionCheck::Active
    );
    assert!(matches!(
        s.refresh(t2.as_str(), l, t + secs(150)).await.unwrap(),
        RefreshOutcome::Invalid
    ));
    // A lifetime shorter than the idle limit caps the very first expiry.
    let tiny = Lifetimes {
        refresh_ttl: Duration::from_secs(100),
        max_lifetime: Some(Duration::from_secs(30)),
    };
    let c = s.create(new("u", "app"), None, tiny, t).await.unwrap();
    assert_eq!(c.session.expires_at, t + secs(30));
}

async fn tombstones_answer_replaced_then_go(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let a = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    assert_eq!(
        s.check("u", &a.session.id, t + secs(TOMB - 1))
            .await
            .unwrap(),
        SessionCheck::Ended(EndReason::Replaced)
    );
    assert_eq!(
        s.check("u", &a.session.id, t + secs(TOMB)).await.unwrap(),
        SessionCheck::Unknown
    );
    // A later write drops the tombstone for good.
    s.create(new("u", "app"), Some(1), life(), t + secs(TOMB + 1))
        .await
        .unwrap();
    assert_eq!(s.get("u", &a.session.id).await.unwrap(), None);
}

async fn tombstones_are_bounded(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let c = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
        ids.push(c.session.id);
    }
    // 39 ended, the 32 most recent remembered.
    let tomb = MAX_TOMBSTONES_PER_USER as usize;
    for (i, id) in ids.iter().enumerate() {
        let got = s.get("u", id).await.unwrap().map(|x| x.state);
        let expected = if i == 39 {
            Some(SessionState::Active)
        } else if i >= 39 - tomb {
            Some(SessionState::Ended(EndReason::Replaced))
        } else {
            None
        };
        assert_eq!(got, expected, "session {i}");
    }
}

async fn lockout_counters(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let w = Duration::from_secs(60);
    let u = "u:alice";
    let ip = "ip:203.0.113.7";
    assert_eq!(s.record_failure(u, w, t).await.unwrap(), 1);
    assert_eq!(s.record_failure(u, w, t + secs(1)).await.unwrap(), 2);
    assert_eq!(s.record_failure(u, w, t + secs(59)).await.unwrap(), 3);
    assert_eq!(s.record_failure(ip, w, t + secs(59)).await.unwrap(), 1);
    // The window started at the first failure.
    assert_eq!(s.record_failure(u, w, t + secs(60)).await.unwrap(), 1);
    assert_eq!(s.record_failure(u, w, t + secs(61)).await.unwrap(), 2);
    s.clear_failures(u).await.unwrap();
    assert_eq!(s.record_failure(u, w, t + secs(62)).await.unwrap(), 1);
    assert_eq!(s.record_failure(ip, w, t + secs(62)).await.unwrap(), 2);

    assert_eq!(s.locked_until(u, t).await.unwrap(), None);
    let until = s.lock(u, Duration::from_secs(600), t).await.unwrap();
    assert_eq!(until, t + secs(600));
    assert_eq!(
        s.locked_until(u, t + secs(599)).await.unwrap(),
        Some(t + secs(600))
    );
    assert_eq!(s.locked_until(u, t + secs(600)).await.unwrap(), None);
    assert_eq!(s.locked_until(ip, t + secs(1)).await.unwrap(), None);
    s.clear_failures(u).await.unwrap();
    assert_eq!(
        s.locked_until(u, t + secs(1)).await.unwrap(),
        Some(t + secs(600))
    );

    // Unlocking forgets the lock and the count of that key alone.
    s.record_failure(u, w, t + secs(2)).await.unwrap();
    s.lock(ip, Duration::from_secs(600), t).await.unwrap();
    s.unlock(u).await.unwrap();
    assert_eq!(s.locked_until(u, t + secs(2)).await.unwrap(), None);
    assert_eq!(s.record_failure(u, w, t + secs(3)).await.unwrap(), 1);
    assert_eq!(
        s.locked_until(ip, t + secs(2)).await.unwrap(),
        Some(t + secs(600))
    );
    s.unlock("u:nobody").await.unwrap();
}

async fn failures_are_read_without_counting(f: Fixture) {
    let s = &f.store;
    let t = base();
    let w = secs(60);
    let u = "u:carol";
    assert_eq!(s.failures(u, t).await.unwrap(), 0, "no counter yet");
    s.record_failure(u, w, t).await.unwrap();
    s.record_failure(u, w, t + secs(1)).await.unwrap();
    // Reading twice counts nothing.
    assert_eq!(s.failures(u, t + secs(2)).await.unwrap(), 2);
    assert_eq!(s.failures(u, t + secs(2)).await.unwrap(), 2);
    s.forgive_one(u).await.unwrap();
    assert_eq!(s.failures(u, t + secs(2)).await.unwrap(), 1);
    // The window ends 60 s after its first failure, to the millisecond.
    assert_eq!(s.failures(u, t + w - ms(1)).await.unwrap(), 1);
    assert_eq!(s.failures(u, t + w).await.unwrap(), 0);
    assert_eq!(s.failures("ip:192.0.2.9", t).await.unwrap(), 0);
    s.clear_failures(u).await.unwrap();
    assert_eq!(s.failures(u, t + secs(3)).await.unwrap(), 0);
}

async fn captcha_challenges_answer_once_while_live(f: Fixture) {
    let s = &f.store;
    let other = f.another_instance().await;
    let t = base();
    let ttl = secs(120);
    for id in ["id-a", "id-b", "id-c"] {
        s.put_captcha(id, &format!("answer-{id}"), ttl, t)
            .await
            .unwrap();
    }
    // Reading (the tests' helper) spends nothing; taking spends it, on every instance.
    let a = Some("answer-id-a".to_owned());
    assert_eq!(s.captcha_answer("id-a", t).await.unwrap(), a);
    assert_eq!(other.take_captcha("id-a", t + secs(1)).await.unwrap(), a);
    assert_eq!(s.take_captcha("id-a", t + secs(1)).await.unwrap(), None);
    assert_eq!(s.captcha_answer("id-a", t).await.unwrap(), None);
    assert_eq!(s.take_captcha("id-unknown", t).await.unwrap(), None);
    // Live until `now + ttl`, to the millisecond; taken after it answers nothing and is spent.
    let b = Some("answer-id-b".to_owned());
    assert_eq!(s.captcha_answer("id-b", t + ttl - ms(1)).await.unwrap(), b);
    assert_eq!(s.take_captcha("id-b", t + ttl).await.unwrap(), None);
    assert_eq!(s.take_captcha("id-b", t).await.unwrap(), None, "spent");
    // Two instances taking one challenge at once: one winner.
    let (x, y) = tokio::join!(s.take_captcha("id-c", t), other.take_captcha("id-c", t));
    let winners = [x.unwrap(), y.unwrap()];
    assert_eq!(
        winners.iter().flatten().collect::<Vec<_>>(),
        ["answer-id-c"],
        "{winners:?}"
    );
}

/// The next session id on `rx` (skipping re-check markers), within two seconds.
async fn next_revocation(rx: &mut tokio::sync::broadcast::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, rx.recv())
            .await
            .expect("a revocation within 2 s")
            .expect("channel open");
        if msg != RECHECK_ALL {
            return msg;
        }
    }
}

async fn revocations_are_broadcast(f: Fixture) {
    let s = &f.store;
    let remote = f.another_instance().await;
    let mut here = s.subscribe_revocations();
    let mut there = remote.subscribe_revocations();
    let t = Millis::now();

    let a = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    assert!(s
        .end("u", &a.session.id, EndReason::Logout, t)
        .await
        .unwrap());
    assert_eq!(next_revocation(&mut here).await, a.session.id);
    assert_eq!(next_revocation(&mut there).await, a.session.id);

    let b = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let c = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    assert_eq!(c.kicked, vec![b.session.id.clone()]);
    assert_eq!(next_revocation(&mut there).await, b.session.id);

    let d = s.create(new("u", "app"), Some(1), life(), t).await.unwrap();
    let t0 = d.refresh_token.as_str();
    rotated(s.refresh(t0, life(), t).await.unwrap());
    assert!(matches!(
        s.refresh(t0, life(), t + secs(GRACE + 1)).await.unwrap(),
        RefreshOutcome::Theft { .. }
    ));
    assert_eq!(next_revocation(&mut there).await, d.session.id);

    assert_eq!(
        s.end_all("u", EndReason::Logout, t + secs(20))
            .await
            .unwrap(),
        1
    );
    assert_eq!(next_revocation(&mut there).await, c.session.id);
}

async fn active_count_follows_changes(f: Fixture) {
    let s = &f.store;
    let t = Millis::now();
    let a = s.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    s.create(new("v", "web"), Some(1), life(), t).await.unwrap();
    s.create(new("w", "web"), Some(1), life(), t).await.unwrap();
    // Kicks w's first session.
    let w2 = s.create(new("w", "web"), Some(1), life(), t).await.unwrap();
    assert!(s
        .end("u", &a.session.id, EndReason::Logout, t)
        .await
        .unwrap());
    // A rotation moves a session to a later expiry hour; still one session.
    rotated(
        s.refresh(w2.refresh_token.as_str(), life(), t + secs(100))
            .await
            .unwrap(),
    );
    // Redis adjusts its counters in the background: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = s.active_count(t).await.unwrap();
        if n == 2 || Instant::now() > deadline {
            assert_eq!(n, 2);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn instances_share_sessions(f: Fixture) {
    let a = &f.store;
    let b = f.another_instance().await;
    let t = Millis::now();
    let c = a.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    assert_eq!(
        b.check("u", &c.session.id, t).await.unwrap(),
        SessionCheck::Active
    );
    let (_, t1) = rotated(
        b.refresh(c.refresh_token.as_str(), life(), t)
            .await
            .unwrap(),
    );
    assert!(matches!(
        a.refresh(c.refresh_token.as_str(), life(), t + secs(1))
            .await
            .unwrap(),
        RefreshOutcome::Grace { token, .. } if token == t1
    ));
    assert_eq!(
        b.end_all("u", EndReason::Logout, t + secs(2))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        a.check("u", &c.session.id, t + secs(2)).await.unwrap(),
        SessionCheck::Ended(EndReason::Logout)
    );
}

// ---- Redis only -------------------------------------------------------------------------

fn assert_unavailable_fast<T: std::fmt::Debug>(r: Result<T, StoreError>, started: Instant) {
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "expected Unavailable, got {r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_fails_fast_and_restart_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    let SessionStore::Redis(redis) = &store else {
        unreachable!()
    };
    let mut revocations = store.subscribe_revocations();
    let t = Millis::now();
    let c = store
        .create(new("u", "web"), Some(1), life(), t)
        .await
        .unwrap();

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        assert_unavailable_fast(store.check("u", &c.session.id, t).await, started);
        let started = Instant::now();
        assert_unavailable_fast(
            store.refresh(c.refresh_token.as_str(), life(), t).await,
            started,
        );
        let started = Instant::now();
        assert_unavailable_fast(
            store.create(new("u", "web"), Some(1), life(), t).await,
            started,
        );
        let started = Instant::now();
        assert_unavailable_fast(
            store.end("u", &c.session.id, EndReason::Logout, t).await,
            started,
        );
        let started = Instant::now();
        assert_unavailable_fast(store.ping().await, started);
    }
    // The lock-out counts on, in this instance, weighted (see `lockout_degrades_...`).
    let started = Instant::now();
    let n = store
        .record_failure("u:x", Duration::from_secs(60), t)
        .await
        .unwrap();
    assert_eq!(n, super::redis::DEGRADED_WEIGHT);
    assert!(started.elapsed() < Duration::from_millis(2500));

    server.restart();
    // The same store object recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "no recovery after a restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = store
        .create(new("u", "web"), Some(1), life(), t)
        .await
        .unwrap();
    assert_eq!(
        store.check("u", &c.session.id, t).await.unwrap(),
        SessionCheck::Active
    );
    rotated(
        store
            .refresh(c.refresh_token.as_str(), life(), t)
            .await
            .unwrap(),
    );
    // The subscription comes back too, and says revocations may have been missed.
    assert!(redis.wait_subscribed(Duration::from_secs(10)).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, revocations.recv()).await {
            Ok(Ok(m)) if m == RECHECK_ALL => break,
            Ok(_) => continue,
            Err(_) => panic!("no re-check marker after resubscribing"),
        }
    }
    store
        .end("u", &c.session.id, EndReason::Logout, t)
        .await
        .unwrap();
    assert_eq!(next_revocation(&mut revocations).await, c.session.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_timed_out_refresh_can_be_retried_for_the_same_pair() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    let t = Millis::now();
    let c = store
        .create(new("u", "web"), Some(1), life(), t)
        .await
        .unwrap();
    // Writes stall longer than the store's 1 s timeout; the script runs after the pause.
    server
        .command(&["CLIENT", "PAUSE", "1500", "WRITE"])
        .unwrap();
    let started = Instant::now();
    let r = store
        .refresh(c.refresh_token.as_str(), life(), t + secs(1))
        .await;
    assert_unavailable_fast(r, started);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The client retries with the same token: it gets a token and the session lives.
    match store
        .refresh(c.refresh_token.as_str(), life(), t + secs(2))
        .await
        .unwrap()
    {
        RefreshOutcome::Grace { session, .. } | RefreshOutcome::Rotated { session, .. } => {
            assert_eq!(session.generation, 1)
        }
        o => panic!("expected Grace or Rotated, got {o:?}"),
    }
    assert_eq!(
        store.check("u", &c.session.id, t + secs(2)).await.unwrap(),
        SessionCheck::Active
    );
}

/// Raw binary access to the test server (the harness's `command` speaks text).
async fn raw(server: &RedisServer) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Data written in seconds by the version before issue 15 is read as milliseconds after an
/// upgrade: nobody is logged out, no window is 1000× off, and the next write stores layout 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_upgrades_times_written_in_seconds() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    let mut conn = raw(&server).await;
    let t = base();
    let c = store
        .create(new("u", "web"), None, life(), t)
        .await
        .unwrap();
    let rotation = t + secs(1);
    let (_, t1) = rotated(
        store
            .refresh(c.refresh_token.as_str(), life(), rotation)
            .await
            .unwrap(),
    );
    let other = store
        .create(new("u", "app"), None, life(), t)
        .await
        .unwrap();
    // Rewrite the user's key as the old version stored it: layout 1, Unix seconds.
    let key = "authgate:{u:u}";
    let doc: Vec<u8> = ::redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut old = Vec::new();
    for r in record::ranges(&doc).unwrap() {
        old.extend_from_slice(&record::as_layout_1(&doc[r]));
    }
    let () = ::redis::cmd("SET")
        .arg(key)
        .arg(&old[..])
        .arg("EX")
        .arg(3600)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Read paths (Rust) see the sessions, times × 1000.
    let now = t + secs(2);
    assert_eq!(
        store.check("u", &c.session.id, now).await.unwrap(),
        SessionCheck::Active
    );
    let listed = store.list("u", now).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].created_at, t);
    assert_eq!(listed[0].rotated_at, rotation);
    assert_eq!(listed[0].expires_at, rotation + secs(3600));
    // Script paths (Lua) too: the parent within the grace gets the same successor...
    assert!(matches!(
        store.refresh(c.refresh_token.as_str(), life(), rotation + secs(GRACE)).await.unwrap(),
        RefreshOutcome::Grace { token, .. } if token == t1
    ));
    // ...and the other session rotates, which stores the whole key as layout 2.
    rotated(
        store
            .refresh(other.refresh_token.as_str(), life(), now)
            .await
            .unwrap(),
    );
    let doc: Vec<u8> = ::redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ranges = record::ranges(&doc).expect("all layout 2 after a write");
    assert_eq!(ranges.len(), 2);
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 3_590_000 && pttl <= 3_600_000, "key TTL {pttl} ms");
    // The upgraded parent is still bounded by the grace.
    assert!(matches!(
        store
            .refresh(
                c.refresh_token.as_str(),
                life(),
                rotation + secs(GRACE) + ms(1)
            )
            .await
            .unwrap(),
        RefreshOutcome::Theft { .. }
    ));

    // Lock-out values in seconds: the count goes on, the lock holds until its second.
    let secs_now = t.as_secs();
    let () = ::redis::cmd("HSET")
        .arg("authgate:lock:u:alice")
        .arg("n")
        .arg(3)
        .arg("e")
        .arg(secs_now + 60)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = ::redis::cmd("SET")
        .arg("authgate:locked:u:alice")
        .arg(secs_now + 600)
        .arg("EX")
        .arg(600)
        .query_async(&mut conn)
        .await
        .unwrap();
    let w = secs(60);
    assert_eq!(
        store
            .record_failure("u:alice", w, t + secs(59))
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        store
            .record_failure("u:alice", w, t + secs(60))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.locked_until("u:alice", t + secs(599)).await.unwrap(),
        Some(t + secs(600))
    );
    assert_eq!(
        store.locked_until("u:alice", t + secs(600)).await.unwrap(),
        None
    );
}

/// Key TTLs are milliseconds too: a 1.5 s lock is not kept for 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_ttls_are_milliseconds() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    let mut conn = raw(&server).await;
    let t = base();
    store.record_failure("u:a", ms(1500), t).await.unwrap();
    store.lock("u:a", ms(1500), t).await.unwrap();
    let l = Lifetimes {
        refresh_ttl: ms(2500),
        max_lifetime: None,
    };
    store.create(new("u", "web"), None, l, t).await.unwrap();
    for (key, most) in [
        ("authgate:lock:u:a", 1500),
        ("authgate:locked:u:a", 1500),
        ("authgate:{u:u}", 2500),
    ] {
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl > most - 500 && pttl <= most, "{key}: PTTL {pttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_keys_all_have_a_ttl() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    let t = Millis::now();
    let c = store
        .create(new("u", "web"), Some(1), life(), t)
        .await
        .unwrap();
    store
        .create(new("u", "web"), Some(1), life(), t)
        .await
        .unwrap();
    store
        .record_failure("u:alice", Duration::from_secs(60), t)
        .await
        .unwrap();
    store
        .lock("u:alice", Duration::from_secs(600), t)
        .await
        .unwrap();
    store
        .end("u", &c.session.id, EndReason::Logout, t)
        .await
        .unwrap();
    store
        .put_captcha("c1", "x7kq2", Duration::from_secs(120), t)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // background counter writes
    let keys = server.command(&["DBSIZE"]).unwrap();
    assert_eq!(keys, "5", "user, lock, locked, stats, captcha");
    for key in [
        "authgate:{u:u}",
        "authgate:lock:u:alice",
        "authgate:locked:u:alice",
        "authgate:stats:active",
        "authgate:captcha:c1",
    ] {
        let ttl: i64 = server.command(&["TTL", key]).unwrap().parse().unwrap();
        assert!(ttl > 0, "{key} has TTL {ttl}");
    }
    let pttl: i64 = server
        .command(&["PTTL", "authgate:captcha:c1"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(pttl <= 120_000, "a challenge's key lives its ttl: {pttl}");
}

// ---- Measurements (ignored; run by hand) --------------------------------------------------

fn browser_session(i: u64) -> NewSession {
    NewSession {
        user_id: format!("{}", 1_000_000 + i),
        user_name: format!("user{i}"),
        tenant: None,
        roles: vec!["user".into()],
        platform: "web".into(),
        device: None,
        ip: "203.0.113.7".into(),
        user_agent: Some(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/126.0.0.0 Safari/537.36"
                .into(),
        ),
    }
}

/// `cargo test --release --lib redis_memory_per_session -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn redis_memory_per_session() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    let t = Millis::now();
    let n = 100_000u64;
    let before = server.used_memory();
    for chunk in 0..(n / 500) {
        let tasks: Vec<_> = (0..500)
            .map(|j| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.create(browser_session(chunk * 500 + j), Some(1), life(), t)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.used_memory();
    println!(
        "redis: {} bytes per session ({n} users, one browser session each)",
        (after - before) / n
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `cargo test --release --lib memory_store_rss_per_session -- --ignored --nocapture`
/// (alone: other tests in the process would distort RSS).
#[tokio::test(flavor = "current_thread")]
#[ignore]
async fn memory_store_rss_per_session() {
    let store = MemoryStore::new(settings());
    let t = Millis::now();
    let n = 1_000_000u64;
    let before = rss_bytes();
    for i in 0..n {
        store
            .create(browser_session(i), Some(1), life(), t)
            .await
            .unwrap();
    }
    let after = rss_bytes();
    println!(
        "memory: {} bytes of RSS per session ({n} users, one browser session each)",
        (after - before) / n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_moves_on_checks() {
    for f in [Some(Fixture::memory()), Fixture::redis().await]
        .into_iter()
        .flatten()
    {
        let s = &f.store;
        let t = Millis::now();
        let c = s.create(new("u", "web"), None, life(), t).await.unwrap();
        let id = &c.session.id;
        assert_eq!(
            s.check("u", id, t + secs(61)).await.unwrap(),
            SessionCheck::Active
        );
        // Redis writes it in the background.
        let deadline = Instant::now() + Duration::from_secs(3);
        while s.get("u", id).await.unwrap().unwrap().last_seen_at != t + secs(61) {
            assert!(
                Instant::now() < deadline,
                "{}: last_seen_at not moved",
                s.kind()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `cargo test --release --lib check_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn check_throughput() {
    let mut fixtures = vec![Fixture::memory()];
    fixtures.extend(Fixture::redis().await);
    for f in fixtures {
        let t = Millis::now();
        let mut ids = Vec::new();
        for i in 0..1000 {
            let c = f
                .store
                .create(browser_session(i), Some(1), life(), t)
                .await
                .unwrap();
            ids.push((c.session.user_id, c.session.id));
        }
        let ids = std::sync::Arc::new(ids);
        let n = 200_000usize;
        let started = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|k| {
                let (s, ids) = (f.store.clone(), ids.clone());
                tokio::spawn(async move {
                    for i in (k..n).step_by(64) {
                        let (u, id) = &ids[i % ids.len()];
                        assert_eq!(s.check(u, id, t).await.unwrap(), SessionCheck::Active);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let el = started.elapsed();
        println!(
            "{}: {n} checks, 64 concurrent, in {el:?}: {:.0}/s",
            f.store.kind(),
            n as f64 / el.as_secs_f64()
        );
    }
}

// ---- Boundaries to the millisecond (issue 15) ---------------------------------------------

async fn grace_is_bounded_to_the_millisecond(f: Fixture) {
    for grace in [ms(500), ms(1000), ms(2000)] {
        let s = f.with_grace(grace).await;
        for (k, off) in IN_THE_SECOND.into_iter().enumerate() {
            let user = format!("g{}-{k}", grace.as_millis());
            let t = base();
            let c = s.create(new(&user, "web"), None, life(), t).await.unwrap();
            let r = t + ms(1000 + off);
            let (s1, t1) = rotated(
                s.refresh(c.refresh_token.as_str(), life(), r)
                    .await
                    .unwrap(),
            );
            assert_eq!(s1.rotated_at, r, "rotated_at keeps its millisecond");
            let parent = c.refresh_token.as_str();
            for at in [r + grace - ms(1), r + grace] {
                match s.refresh(parent, life(), at).await.unwrap() {
                    RefreshOutcome::Grace { token, .. } => assert_eq!(token, t1),
                    o => panic!("grace {grace:?}, rotated at {r}, parent at {at}: {o:?}"),
                }
            }
            let late = r + grace + ms(1);
            assert!(
                matches!(
                    s.refresh(parent, life(), late).await.unwrap(),
                    RefreshOutcome::Theft { .. }
                ),
                "grace {grace:?}, rotated at {r}: the parent at {late} is theft"
            );
        }
    }
}

async fn idle_limit_is_bounded_to_the_millisecond(f: Fixture) {
    let s = &f.store;
    for ttl in [ms(1500), secs(100)] {
        let l = Lifetimes {
            refresh_ttl: ttl,
            max_lifetime: None,
        };
        for (k, off) in IN_THE_SECOND.into_iter().enumerate() {
            let user = format!("i{}-{k}", ttl.as_millis());
            let t = base() + ms(off);
            // Never refreshed: ends `refresh_ttl` after the login.
            let a = s.create(new(&user, "web"), None, l, t).await.unwrap();
            assert_eq!(a.session.expires_at, t + ttl);
            let id = &a.session.id;
            assert_eq!(
                s.check(&user, id, t + ttl - ms(1)).await.unwrap(),
                SessionCheck::Active
            );
            assert_ne!(
                s.check(&user, id, t + ttl).await.unwrap(),
                SessionCheck::Active
            );
            assert!(matches!(
                s.refresh(a.refresh_token.as_str(), l, t + ttl + ms(1))
                    .await
                    .unwrap(),
                RefreshOutcome::Invalid
            ));
            // Refreshed a millisecond before the limit: extended to that instant + refresh_ttl.
            let b = s.create(new(&user, "app"), None, l, t).await.unwrap();
            let r = t + ttl - ms(1);
            let (s1, t1) = rotated(s.refresh(b.refresh_token.as_str(), l, r).await.unwrap());
            assert_eq!(s1.expires_at, r + ttl);
            let id = &b.session.id;
            assert_eq!(
                s.check(&user, id, r + ttl - ms(1)).await.unwrap(),
                SessionCheck::Active
            );
            assert_ne!(
                s.check(&user, id, r + ttl + ms(1)).await.unwrap(),
                SessionCheck::Active
            );
            assert!(matches!(
                s.refresh(t1.as_str(), l, r + ttl + ms(1)).await.unwrap(),
                RefreshOutcome::Invalid
            ));
        }
    }
}

async fn max_lifetime_is_bounded_to_the_millisecond(f: Fixture) {
    let s = &f.store;
    // Several seconds: Redis also expires the user's key by its own clock (PX, the time left),
    // which runs on while the test runs.
    let life_ = ms(10_500);
    let l = Lifetimes {
        refresh_ttl: secs(30),
        max_lifetime: Some(life_),
    };
    for (k, off) in IN_THE_SECOND.into_iter().enumerate() {
        let user = format!("m{k}");
        let t = base() + ms(off);
        let c = s.create(new(&user, "web"), None, l, t).await.unwrap();
        assert_eq!(c.session.expires_at, t + life_);
        let (s1, t1) = rotated(
            s.refresh(c.refresh_token.as_str(), l, t + ms(1000))
                .await
                .unwrap(),
        );
        assert_eq!(s1.expires_at, t + life_, "capped at login + max_lifetime");
        let id = &c.session.id;
        assert_eq!(
            s.check(&user, id, t + life_ - ms(1)).await.unwrap(),
            SessionCheck::Active
        );
        // A rotation a millisecond before the cap still works, and keeps the cap.
        let (s2, t2) = rotated(s.refresh(t1.as_str(), l, t + life_ - ms(1)).await.unwrap());
        assert_eq!(s2.expires_at, t + life_);
        assert_ne!(
            s.check(&user, id, t + life_).await.unwrap(),
            SessionCheck::Active
        );
        assert!(matches!(
            s.refresh(t2.as_str(), l, t + life_ + ms(1)).await.unwrap(),
            RefreshOutcome::Invalid
        ));
    }
}

async fn tombstones_are_bounded_to_the_millisecond(f: Fixture) {
    let s = &f.store;
    for (k, off) in IN_THE_SECOND.into_iter().enumerate() {
        let user = format!("t{k}");
        let t = base();
        let c = s.create(new(&user, "web"), None, life(), t).await.unwrap();
        let end = t + ms(1000 + off);
        assert!(s
            .end(&user, &c.session.id, EndReason::Logout, end)
            .await
            .unwrap());
        let tomb = secs(TOMB);
        assert_eq!(
            s.check(&user, &c.session.id, end + tomb - ms(1))
                .await
                .unwrap(),
            SessionCheck::Ended(EndReason::Logout)
        );
        assert_eq!(
            s.check(&user, &c.session.id, end + tomb).await.unwrap(),
            SessionCheck::Unknown
        );
    }
}

async fn lockout_window_and_duration_are_bounded_to_the_millisecond(f: Fixture) {
    let s = &f.store;
    // At least 1.5 s: Redis also expires the counter and the lock by its own clock (PX),
    // which runs on while the test runs.
    for window in [ms(1500), ms(2500)] {
        for (k, off) in IN_THE_SECOND.into_iter().enumerate() {
            let key = format!("u:w{}-{k}", window.as_millis());
            let t = base() + ms(off);
            assert_eq!(s.record_failure(&key, window, t).await.unwrap(), 1);
            assert_eq!(
                s.record_failure(&key, window, t + window - ms(1))
                    .await
                    .unwrap(),
                2,
                "{window:?} from {t}: a millisecond before its end, still the same window"
            );
            assert_eq!(
                s.record_failure(&key, window, t + window + ms(1))
                    .await
                    .unwrap(),
                1,
                "{window:?} from {t}: a millisecond after its end, a new window"
            );
            // Exactly at its end is after it, too.
            let other = format!("{key}-x");
            s.record_failure(&other, window, t).await.unwrap();
            assert_eq!(
                s.record_failure(&other, window, t + window).await.unwrap(),
                1
            );
        }
    }
    for duration in [ms(1500), ms(2500)] {
        for (k, off) in IN_THE_SECOND.into_iter().enumerate() {
            let key = format!("u:d{}-{k}", duration.as_millis());
            let t = base() + ms(off);
            let until = s.lock(&key, duration, t).await.unwrap();
            assert_eq!(until, t + duration);
            assert_eq!(
                s.locked_until(&key, t + duration - ms(1)).await.unwrap(),
                Some(until)
            );
            assert_eq!(s.locked_until(&key, t + duration).await.unwrap(), None);
            assert_eq!(
                s.locked_until(&key, t + duration + ms(1)).await.unwrap(),
                None
            );
        }
    }
}

// ---- Redis local cache (cache.rs) --------------------------------------------------------

/// Commands the server has run (`INFO commandstats`), but for the test's own `INFO`, the
/// subscriber's keep-alive `PING` and the active-session counters (`HINCRBY`, `EXPIRE`,
/// `HDEL`), which a login, rotation or end updates in the background, a moment later.
fn commands_run(server: &RedisServer) -> u64 {
    const ASIDE: [&str; 5] = ["info:", "ping:", "hincrby:", "expire:", "hdel:"];
    let info = server.command(&["INFO", "commandstats"]).expect("INFO");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| !ASIDE.iter().any(|a| l.starts_with(a)))
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Two instances (A and B) on one Redis, with the given local cache.
async fn two_instances(cache: CacheSettings) -> Option<(RedisServer, RedisStore, RedisStore)> {
    let server = RedisServer::start()?;
    let mut stores = Vec::new();
    for _ in 0..2 {
        let s = RedisStore::connect(
            RedisTarget::Single(server.url()),
            "authgate:",
            StoreSettings {
                local_cache: Some(cache),
                ..settings()
            },
            Duration::from_secs(1),
        )
        .await
        .expect("connect");
        assert!(s.wait_subscribed(Duration::from_secs(5)).await);
        stores.push(s);
    }
    let b = stores.pop()?;
    let a = stores.pop()?;
    Some((server, a, b))
}

/// Checks `id` on `s` at `t`, asserting that it took no Redis command.
async fn check_from_cache(
    server: &RedisServer,
    s: &RedisStore,
    user: &str,
    id: &str,
    t: Millis,
) -> SessionCheck {
    let before = commands_run(server);
    let answer = s.check(user, id, t).await.unwrap();
    assert_eq!(
        commands_run(server),
        before,
        "a cached check ran a Redis command"
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_repeat_checks_run_no_command() {
    let Some((server, a, b)) = two_instances(CACHE).await else {
        return;
    };
    let t = Millis::now();
    let c = a.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let id = &c.session.id;
    for s in [&a, &b] {
        let before = commands_run(&server);
        assert_eq!(s.check("u", id, t).await.unwrap(), SessionCheck::Active);
        assert_eq!(
            commands_run(&server),
            before + 1,
            "the first check reads Redis once"
        );
        for i in 0..200 {
            let at = t + Duration::from_millis(i * 10);
            assert_eq!(
                check_from_cache(&server, s, "u", id, at).await,
                SessionCheck::Active
            );
        }
    }
    // Unknown and malformed ids are answered locally too once seen.
    let ghost = format_sid("u", &random());
    assert_eq!(
        b.check("u", &ghost, t).await.unwrap(),
        SessionCheck::Unknown
    );
    assert_eq!(
        check_from_cache(&server, &b, "u", &ghost, t).await,
        SessionCheck::Unknown
    );
    // A token of another user naming this session: refused, from the cache as by Redis.
    assert_eq!(
        check_from_cache(&server, &b, "v", id, t).await,
        SessionCheck::Unknown
    );
}

/// Every kind of end on instance A is refused on instance B once B has heard of it (its
/// revocation arrived), though B had the session cached as active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_ends_on_one_instance_are_refused_on_another() {
    // A TTL that cannot be what refuses them.
    let long = CacheSettings {
        ttl: Duration::from_secs(600),
        ..CACHE
    };
    let Some((server, a, b)) = two_instances(long).await else {
        return;
    };
    let mut heard = b.subscribe_revocations();
    let t = Millis::now();
    let (srv, bb) = (&server, &b);
    let cached = move |id: String| async move {
        assert_eq!(bb.check("u", &id, t).await.unwrap(), SessionCheck::Active);
        assert_eq!(
            check_from_cache(srv, bb, "u", &id, t).await,
            SessionCheck::Active
        );
        id
    };

    // Logout.
    let s1 = cached(
        a.create(new("u", "web"), None, life(), t)
            .await
            .unwrap()
            .session
            .id,
    )
    .await;
    assert!(a
        .end("u", &s1, EndReason::Logout, t)
        .await
        .unwrap()
        .is_some());
    // Admin revoke by id (the same script; a removed user's sessions end this way too).
    let s2 = cached(
        a.create(new("u", "web"), None, life(), t)
            .await
            .unwrap()
            .session
            .id,
    )
    .await;
    assert!(a
        .end(&user_id_of(&s2).unwrap(), &s2, EndReason::Revoked, t)
        .await
        .unwrap()
        .is_some());
    // Logout everywhere.
    let s3 = cached(
        a.create(new("u", "h5"), None, life(), t)
            .await
            .unwrap()
            .session
            .id,
    )
    .await;
    // Kick-out: a newer login on the same platform beyond max_sessions.
    let s4 = cached(
        a.create(new("u", "app"), Some(1), life(), t)
            .await
            .unwrap()
            .session
            .id,
    )
    .await;
    let s5 = a.create(new("u", "app"), Some(1), life(), t).await.unwrap();
    assert_eq!(s5.kicked, vec![s4.clone()]);
    // Theft: the parent presented again after the grace.
    let s6 = a.create(new("u", "tv"), None, life(), t).await.unwrap();
    let s6_id = cached(s6.session.id.clone()).await;
    rotated(
        a.refresh(s6.refresh_token.as_str(), life(), t)
            .await
            .unwrap(),
    );
    assert!(matches!(
        a.refresh(s6.refresh_token.as_str(), life(), t + secs(GRACE + 1))
            .await
            .unwrap(),
        RefreshOutcome::Theft { .. }
    ));
    let mut ended = vec![s1.clone(), s2.clone(), s4.clone(), s6_id.clone()];
    let all = a.end_all("u", EndReason::Logout, t).await.unwrap();
    assert_eq!(all.len(), 2, "s3 and s5");
    ended.push(s3.clone());
    ended.push(s5.session.id.clone());
    let mut got = Vec::new();
    while got.len() < ended.len() {
        got.push(next_revocation(&mut heard).await);
    }
    got.sort();
    ended.sort();
    assert_eq!(got, ended);
    let at = t + secs(GRACE + 1);
    for (id, want) in [
        (&s1, SessionCheck::Ended(EndReason::Logout)),
        (&s2, SessionCheck::Ended(EndReason::Revoked)),
        (&s3, SessionCheck::Ended(EndReason::Logout)),
        (&s4, SessionCheck::Ended(EndReason::Replaced)),
        (&s6_id, SessionCheck::Ended(EndReason::Theft)),
    ] {
        assert_eq!(b.check("u", id, at).await.unwrap(), want, "{id}");
        // And the ended state is what is cached now.
        assert_eq!(
            check_from_cache(&server, &b, "u", id, at).await,
            want,
            "{id}"
        );
    }
}

/// A rotation on A that shortens a session's expiry (a reload to a shorter `refresh_ttl`)
/// reaches B's cache, although B's entry would be trusted for a minute yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_hears_rotations() {
    let long = CacheSettings {
        ttl: Duration::from_secs(600),
        ..CACHE
    };
    let Some((server, a, b)) = two_instances(long).await else {
        return;
    };
    let mut heard = b.subscribe_revocations();
    let t = Millis::now();
    let c = a.create(new("u", "web"), None, life(), t).await.unwrap();
    let id = &c.session.id;
    assert_eq!(b.check("u", id, t).await.unwrap(), SessionCheck::Active);
    let short = Lifetimes {
        refresh_ttl: secs(10),
        max_lifetime: None,
    };
    rotated(
        a.refresh(c.refresh_token.as_str(), short, t + secs(1))
            .await
            .unwrap(),
    );
    // A marker after the rotation: the channel is ordered, so once B hears the marker it has
    // heard the rotation.
    let marker = a.create(new("m", "web"), None, life(), t).await.unwrap();
    assert!(a
        .end("m", &marker.session.id, EndReason::Logout, t)
        .await
        .unwrap()
        .is_some());
    assert_eq!(next_revocation(&mut heard).await, marker.session.id);
    // Read from Redis (the rotation made B forget its entry): past its new expiry, not
    // yet marked expired by anyone.
    assert_eq!(
        b.check("u", id, t + secs(12)).await.unwrap(),
        // Past its new expiry, not yet marked ended (the caller marks it: issue 16).
        SessionCheck::Lapsed
    );
    // The other way: an expiry that moved later (a refresh elsewhere) is never answered
    // from the old entry as expired: past its cached expiry, B asks Redis.
    let d = a.create(new("w", "web"), None, short, t).await.unwrap();
    assert_eq!(
        b.check("w", &d.session.id, t).await.unwrap(),
        SessionCheck::Active
    );
    assert_eq!(
        check_from_cache(&server, &b, "w", &d.session.id, t + secs(9)).await,
        SessionCheck::Active
    );
    rotated(
        a.refresh(d.refresh_token.as_str(), short, t + secs(9))
            .await
            .unwrap(),
    );
    assert_eq!(
        b.check("w", &d.session.id, t + secs(15)).await.unwrap(),
        SessionCheck::Active
    );
}

/// Checks on B racing an end on A: no check that starts after B heard the revocation
/// answers active (a read that was at Redis during the end does not put the old state back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cache_never_passes_a_session_once_its_revocation_arrived() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some((_server, a, b)) = two_instances(CACHE).await else {
        return;
    };
    for round in 0..20 {
        let mut heard = b.subscribe_revocations();
        let t = Millis::now();
        let user = format!("u{round}");
        let c = a.create(new(&user, "web"), None, life(), t).await.unwrap();
        let id = c.session.id.clone();
        let arrived = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (b, id, user, arrived) = (b.clone(), id.clone(), user.clone(), arrived.clone());
            tasks.push(tokio::spawn(async move {
                let mut after = 0;
                while after < 50 {
                    let late = arrived.load(Ordering::SeqCst);
                    let answer = b.check(&user, &id, Millis::now()).await.unwrap();
                    if late {
                        assert_ne!(answer, SessionCheck::Active, "passed after the revocation");
                        after += 1;
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        assert!(a
            .end(&user, &id, EndReason::Logout, Millis::now())
            .await
            .unwrap()
            .is_some());
        assert_eq!(next_revocation(&mut heard).await, id);
        arrived.store(true, Ordering::SeqCst);
        for task in tasks {
            task.await.unwrap();
        }
    }
}

/// While B's subscription is down B reads Redis for every check; an end during the gap is
/// honoured once B is subscribed again (its cache was emptied), though B had cached the
/// session as active before the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_is_bypassed_while_the_subscription_is_down() {
    let long = CacheSettings {
        ttl: Duration::from_secs(600),
        ..CACHE
    };
    let Some((server, a, b)) = two_instances(long).await else {
        return;
    };
    let mut heard = b.subscribe_revocations();
    let t = Millis::now();
    let c = a.create(new("u", "web"), None, life(), t).await.unwrap();
    let id = &c.session.id;
    assert_eq!(b.check("u", id, t).await.unwrap(), SessionCheck::Active);
    assert_eq!(
        check_from_cache(&server, &b, "u", id, t).await,
        SessionCheck::Active
    );

    server
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("CLIENT KILL");
    assert!(b.wait_subscription(false, Duration::from_secs(5)).await);
    let before = commands_run(&server);
    assert_eq!(b.check("u", id, t).await.unwrap(), SessionCheck::Active);
    assert!(
        commands_run(&server) > before,
        "a check during the gap reads Redis"
    );
    // Ended during the gap: B cannot hear it.
    assert!(a
        .end("u", id, EndReason::Logout, t)
        .await
        .unwrap()
        .is_some());
    // B is back, and says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, heard.recv())
            .await
            .expect("re-check marker")
            .unwrap();
        if msg == RECHECK_ALL {
            break;
        }
    }
    assert_eq!(
        b.check("u", id, t).await.unwrap(),
        SessionCheck::Ended(EndReason::Logout)
    );
}

/// A change the channel does not tell (here the user's key deleted by hand) is seen once the
/// entry is older than the TTL, by the clock passed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_ttl_is_the_safety_net() {
    let Some((server, a, b)) = two_instances(CACHE).await else {
        return;
    };
    let t = Millis::now();
    let c = a.create(new("u", "web"), None, life(), t).await.unwrap();
    let id = &c.session.id;
    assert_eq!(b.check("u", id, t).await.unwrap(), SessionCheck::Active);
    let mut conn = raw(&server).await;
    let () = ::redis::cmd("DEL")
        .arg("authgate:{u:u}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let last_trusted = t + CACHE.ttl - Duration::from_millis(1);
    assert_eq!(
        check_from_cache(&server, &b, "u", id, last_trusted).await,
        SessionCheck::Active
    );
    assert_eq!(
        b.check("u", id, t + CACHE.ttl).await.unwrap(),
        SessionCheck::Unknown
    );
}

/// The background last-seen write still happens about once a minute of checks, though the
/// checks are answered from the cache in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_still_touches_last_seen() {
    let long = CacheSettings {
        ttl: Duration::from_secs(600),
        ..CACHE
    };
    let Some((server, a, b)) = two_instances(long).await else {
        return;
    };
    let t = Millis::now();
    let c = a.create(new("u", "web"), None, life(), t).await.unwrap();
    let id = &c.session.id;
    assert_eq!(b.check("u", id, t).await.unwrap(), SessionCheck::Active);
    let minute = Duration::from_millis(TOUCH_EVERY);
    assert_eq!(
        check_from_cache(&server, &b, "u", id, t + minute - Duration::from_millis(1)).await,
        SessionCheck::Active
    );
    assert_eq!(
        b.check("u", id, t + minute).await.unwrap(),
        SessionCheck::Active
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.get("u", id).await.unwrap().unwrap().last_seen_at != t + minute {
        assert!(Instant::now() < deadline, "last_seen_at not moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Touched: answered locally again until the next minute.
    assert_eq!(
        check_from_cache(&server, &b, "u", id, t + minute + secs(30)).await,
        SessionCheck::Active
    );
}

/// `local_cache_max_bytes` bounds what one instance keeps, however many sessions it sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_size_is_capped() {
    let small = CacheSettings {
        max_bytes: 16 * 1024,
        ..CACHE
    };
    let Some((_server, a, b)) = two_instances(small).await else {
        return;
    };
    let t = Millis::now();
    for i in 0..300 {
        let user = format!("user-{i:03}");
        let c = a.create(new(&user, "web"), None, life(), t).await.unwrap();
        assert_eq!(
            b.check(&user, &c.session.id, t).await.unwrap(),
            SessionCheck::Active
        );
    }
    let per_entry = u64::from(super::cache::ENTRY_BYTES) + 40;
    let most = small.max_bytes / per_entry + 1;
    let held = b.cached_sessions();
    assert!(held <= most && held > 0, "{held} entries, at most {most}");
}

/// `cargo test --release --lib local_cache_rss_per_entry -- --ignored --nocapture`
/// (alone: other tests in the process would distort RSS). What `cache::ENTRY_BYTES` is set
/// from.
#[test]
#[ignore]
fn local_cache_rss_per_entry() {
    let n = 200_000u64;
    let cache = super::cache::LocalCache::new(Duration::from_secs(600), u64::MAX);
    cache.trust_afresh();
    let t = Millis::now();
    let rec = record::encode(
        &browser_session(0),
        &[1; 16],
        &[2; 16],
        t,
        t + Duration::from_secs(3600),
    )
    .unwrap();
    let ids: Vec<String> = (0..n)
        .map(|i| format_sid(&format!("user-{i}"), &random()))
        .collect();
    let id_bytes: u64 = ids.iter().map(|i| i.len() as u64).sum::<u64>() / n;
    let before = rss_bytes();
    for id in &ids {
        let ticket = cache.ticket().unwrap();
        cache.put(ticket, id, Some((record::Entry(&rec), t)), t);
    }
    let held = cache.len();
    let after = rss_bytes();
    println!(
        "local cache: {} bytes of RSS per entry ({held} entries, ids of {id_bytes} bytes)",
        (after - before) / held.max(1)
    );
}

/// A TCP listener that accepts connections and closes them at once, counting them: a "Redis"
/// every call fails against, where each attempt to reach it shows.
struct Refuser {
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    port: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Refuser {
    /// On `port` (that a killed server has just left).
    fn on(port: u16) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::net::TcpListener::bind(("127.0.0.1", port)) {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "bind {port}: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        };
        listener.set_nonblocking(true).unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            drop(conn);
                        }
                        // Nothing waiting: look again shortly (a test helper thread, not a
                        // synchronisation).
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Self {
            accepted,
            stop,
            port,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.port;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_breaker_opens_fails_fast_without_connecting_and_a_probe_closes_it() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    let SessionStore::Redis(redis) = &store else {
        unreachable!()
    };
    let t = Millis::now();
    let c = store
        .create(new("u", "web"), Some(1), life(), t)
        .await
        .unwrap();
    let sid = c.session.id.clone();
    server.save();
    server.stop();
    let refuser = Refuser::on(server.port());
    // Five calls in a row that reach nothing open it.
    let mut calls = 0;
    while !redis.breaker_open() {
        assert!(
            calls < super::breaker::FAILURES,
            "still closed after {calls} failures"
        );
        assert!(matches!(
            store.check("u", &sid, t).await,
            Err(StoreError::Unavailable(_))
        ));
        calls += 1;
    }
    assert_eq!(calls, super::breaker::FAILURES);
    // Open: every call fails at once, and not one of them connects.
    let before = refuser.accepted();
    for _ in 0..50 {
        assert!(matches!(
            store.check("u", &sid, t).await,
            Err(StoreError::Unavailable(e)) if e.contains("circuit open")
        ));
        assert!(matches!(
            store.refresh(c.refresh_token.as_str(), life(), t).await,
            Err(StoreError::Unavailable(_))
        ));
    }
    // The subscriber's own attempts (it backs off on its own) may reach the listener; the
    // hundred calls above did not: fewer connections than a tenth of them.
    let during = refuser.accepted() - before;
    assert!(during < 10, "{during} connections while open");
    assert!(redis.breaker_open());

    // Redis back on the same port: after the cool-down a probe gets through and closes it.
    drop(refuser);
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.check("u", &sid, t).await {
            Ok(SessionCheck::Active) => break,
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "the breaker did not close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!redis.breaker_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_lockout_degrades_to_weighted_local_counters_and_keeps_their_locks() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    let w = Duration::from_secs(60);
    let t = Millis::now();
    assert_eq!(store.record_failure("u:a", w, t).await.unwrap(), 1);
    server.stop();
    // Down: counted here, each failure twice, never an error.
    let k = super::redis::DEGRADED_WEIGHT;
    assert_eq!(store.record_failure("u:a", w, t).await.unwrap(), k);
    assert_eq!(store.record_failure("u:a", w, t).await.unwrap(), 2 * k);
    assert_eq!(store.failures("u:a", t).await.unwrap(), 2 * k);
    store.forgive_one("u:a").await.unwrap();
    assert_eq!(store.failures("u:a", t).await.unwrap(), k);
    // A lock while down holds here, checked before Redis is asked.
    let until = store.lock("u:a", secs(600), t).await.unwrap();
    assert_eq!(store.locked_until("u:a", t).await.unwrap(), Some(until));
    assert_eq!(store.locked_until("u:b", t).await.unwrap(), None);
    // Captcha challenges too: issued and spent here.
    store
        .put_captcha("c1", "x7kq2", secs(120), t)
        .await
        .unwrap();
    assert_eq!(
        store.captcha_answer("c1", t).await.unwrap().as_deref(),
        Some("x7kq2")
    );

    // Back: the local lock and challenge are still honoured, Redis counts again.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "no recovery after a restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.locked_until("u:a", t).await.unwrap(), Some(until));
    assert_eq!(
        store.take_captcha("c1", t).await.unwrap().as_deref(),
        Some("x7kq2")
    );
    assert_eq!(store.take_captcha("c1", t).await.unwrap(), None, "spent");
    assert_eq!(store.record_failure("u:b", w, t).await.unwrap(), 1);
    // An admin's unlock clears the local lock too.
    store.unlock("u:a").await.unwrap();
    assert_eq!(store.locked_until("u:a", t).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_sentinel_failover_is_followed_by_calls_and_revocations() {
    let Some(set) = RedisSentinels::start() else {
        return;
    };
    let nodes = set.urls();
    let a = connect(sentinel_target(&nodes), "fo:").await;
    let b = connect(sentinel_target(&nodes), "fo:").await;
    let SessionStore::Redis(ra) = &a else {
        unreachable!()
    };
    let t = Millis::now();
    let kept = a.create(new("u", "web"), Some(1), life(), t).await.unwrap();
    let kept = rotated(
        a.refresh(kept.refresh_token.as_str(), life(), t)
            .await
            .unwrap(),
    );
    let other = a.create(new("v", "web"), Some(1), life(), t).await.unwrap();
    let mut revocations = a.subscribe_revocations();

    let set = std::sync::Arc::new(set);
    let new_master = {
        let set = set.clone();
        tokio::task::spawn_blocking(move || set.failover())
            .await
            .unwrap()
    };
    assert_eq!(set.master_port(), new_master);
    // The subscription moves within a second or two (it asks the sentinels every second),
    // long before Sentinel demotes the old master (some 10 s later) and so cuts its clients.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, revocations.recv()).await {
            Ok(Ok(m)) if m == RECHECK_ALL => break,
            Ok(_) => continue,
            Err(_) => panic!("the subscription did not follow the failover within 5 s"),
        }
    }

    // Calls follow the new master: what was acknowledged before is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match a.check("u", &kept.0.id, t).await {
            Ok(SessionCheck::Active) => break,
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "no answer from the new master");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The subscription follows too: it resubscribes (and says so), then hears an end made
    // by another instance on the new master.
    assert!(ra.wait_subscribed(Duration::from_secs(20)).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match b.end("v", &other.session.id, EndReason::Revoked, t).await {
            Ok(true) => break,
            Ok(false) => panic!("the session was lost in the failover"),
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "no end on the new master");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, revocations.recv()).await {
            Ok(Ok(m)) if m == other.session.id => break,
            Ok(_) => continue,
            Err(_) => panic!("the revocation on the new master was not heard"),
        }
    }
    // And the new master takes writes once its replica (the old master) caught up.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        // A try cut off by an unacknowledged WAIT may have rotated already: its retry within
        // the grace gets the same successor.
        match a.refresh(kept.1.as_str(), life(), t + secs(1)).await {
            Ok(RefreshOutcome::Rotated { .. } | RefreshOutcome::Grace { .. }) => break,
            Ok(o) => panic!("{o:?}"),
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "no rotation on the new master");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
