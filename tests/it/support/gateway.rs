//! The test gateway. [`Conf`] is the one builder: it renders a `gateway.toml` (HS256, one
//! upstream `up`, [`ROUTES`]) in a config folder of its own, and [`Gateway`] is that config
//! running on port 0, built exactly as the binary builds it (`config::load_str` →
//! `App::build` → `server::start`), with helpers for its clock, tokens, test-user logins,
//! session checks and the admin API (the auth endpoints are the [`Probe`]'s it derefs to).
//!
//! Two kinds of gateway come out of it:
//! - `Conf::new()`: stateless, `login.backend = "none"`, no admin token, `shutdown_grace` 5 s.
//! - `Conf::new().store(kind)`: stateful sessions in the memory store or in a `redis-server`
//!   of the test's own ([`StoreKind`]), the test users' file ([`super::users_toml`]) behind
//!   `/auth/login`, the admin API on [`ADMIN_TOKEN`], `shutdown_grace` 2 s (restarts are quick).
//!
//! A Redis gateway cannot start where `redis-server` is missing: [`gateway!`] (or
//! [`Gateway::try_start`]) returns from the test then, after the loud skip of
//! [`super::installed_or_skip`]; [`both_stores!`] runs one case on each store.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::app::App;
use authgate::clock::Millis;
use authgate::config::{self, ConfigError, Loaded};
use authgate::reload;
use authgate::server::{self, Handle};
use authgate::tokens::AccessIdentity;
use bytes::Bytes;

use super::client::{Probe, Resp};
use super::jwt::SECRET;
use super::receiver::NOTIFY_SECRET;
use super::redis::RedisServer;
use super::upstream::Upstream;
use super::users::{password_of, users_toml, Pair};
use super::wait::{poll_until, within};

/// The admin bearer token, served as env `T_ADMIN`.
pub const ADMIN_TOKEN: &str = "admin-token-for-the-session-tests";

/// The environment every test config reads: `T_SECRET` ([`SECRET`]), `T_ADMIN`
/// ([`ADMIN_TOKEN`]) and `T_NOTIFY` ([`NOTIFY_SECRET`]); nothing else is set.
pub fn env(name: &str) -> Option<String> {
    match name {
        "T_SECRET" => Some(SECRET.to_owned()),
        "T_ADMIN" => Some(ADMIN_TOKEN.to_owned()),
        "T_NOTIFY" => Some(NOTIFY_SECRET.to_owned()),
        _ => None,
    }
}

/// Which session store a gateway keeps its sessions in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    /// A `redis-server` of the gateway's own, started with it.
    Redis,
}

/// Runs each named `async fn case(store: StoreKind)` twice, as `case::memory` and `case::redis`.
#[macro_export]
macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                super::$case($crate::support::StoreKind::Memory).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                super::$case($crate::support::StoreKind::Redis).await
            }
        }
    )*};
}

/// Starts the gateway of a [`Conf`], or returns from the test when it cannot run
/// (`redis-server` missing, already announced): [`Gateway::try_start`] with the skip built in.
#[macro_export]
macro_rules! gateway {
    ($conf:expr) => {
        match $crate::support::Gateway::try_start($conf).await {
            Some(gw) => gw,
            None => return,
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The routes most tests use.
pub const ROUTES: &str = r#"
[[routes]]
path = "/public"
upstream = "up"
auth = "public"

[[routes]]
path = "/optional"
upstream = "up"
auth = "optional"

[[routes]]
path = "/admin"
upstream = "up"
auth = "required"
require_roles = ["admin"]

[[routes]]
path = "/acme"
upstream = "up"
auth = "required"
require_tenants = ["acme"]

[[routes]]
path = "/get-only"
upstream = "up"
auth = "public"
methods = ["GET"]

[[routes]]
path = "/stripped"
upstream = "up"
auth = "public"
strip_prefix = "/stripped"

[[routes]]
path = "/"
upstream = "up"
auth = "required"
"#;

/// `[server]` line that lets the tests' loopback client act as a forward-auth proxy.
pub const TRUST_LOOPBACK: &str = "trusted_proxies = [\"127.0.0.1/32\"]";

/// Runs in the config folder before the config is loaded (e.g. to write keys).
type Prepare = Box<dyn FnOnce(&Path) + Send>;

/// The one gateway builder: a `gateway.toml` and how to start it. Each knob that takes lines
/// adds them to its section, unless it says it replaces.
#[derive(Default)]
pub struct Conf {
    server: String,
    admin_env: Option<String>,
    token_base: Option<String>,
    token: String,
    store: Option<StoreKind>,
    session: String,
    platforms: String,
    login: String,
    lockout: String,
    sections: String,
    routes: Option<String>,
    urls: Option<Vec<String>>,
    upstream: Option<Upstream>,
    prepare: Vec<Prepare>,
    run_from_file: bool,
}

impl Conf {
    /// The stateless gateway (see the module's doc); knobs change it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stateful sessions in `kind`, the test users behind `/auth/login`, the admin API on
    /// [`ADMIN_TOKEN`] (see the module's doc).
    pub fn store(mut self, kind: StoreKind) -> Self {
        self.store = Some(kind);
        self
    }

    /// Adds lines to `[server]`.
    pub fn server(mut self, lines: &str) -> Self {
        push_lines(&mut self.server, lines);
        self
    }

    /// The env variable of `server.admin_token_env` (with a store: `T_ADMIN` unless set here).
    pub fn admin_env(mut self, name: &str) -> Self {
        self.admin_env = Some(name.to_owned());
        self
    }

    /// Replaces the signing lines of `[token]` (HS256 with `secret_env = "T_SECRET"`).
    pub fn token_base(mut self, lines: &str) -> Self {
        self.token_base = Some(format!("{lines}\n"));
        self
    }

    /// Adds lines to `[token]`.
    pub fn token(mut self, lines: &str) -> Self {
        push_lines(&mut self.token, lines);
        self
    }

    /// Adds lines to `[session]`; a `mode = ...` line replaces the mode the store implies.
    pub fn session(mut self, lines: &str) -> Self {
        push_lines(&mut self.session, lines);
        self
    }

    /// Adds lines to `[platforms]`.
    pub fn platforms(mut self, lines: &str) -> Self {
        push_lines(&mut self.platforms, lines);
        self
    }

    /// Adds lines to `[login]`, which then replace the backend the store implies (`users_file`
    /// with a store, `none` without).
    pub fn login(mut self, lines: &str) -> Self {
        push_lines(&mut self.login, lines);
        self
    }

    /// Adds lines to `[login.lockout]`.
    pub fn lockout(mut self, lines: &str) -> Self {
        push_lines(&mut self.lockout, lines);
        self
    }

    /// Adds whole sections (e.g. `[cors]` or `[identity]`).
    pub fn section(mut self, text: &str) -> Self {
        push_lines(&mut self.sections, text);
        self
    }

    /// Replaces the `[[routes]]` ([`ROUTES`]).
    pub fn routes(mut self, text: &str) -> Self {
        self.routes = Some(text.into());
        self
    }

    /// Upstream urls instead of the test upstream's own address.
    pub fn urls(mut self, urls: Vec<String>) -> Self {
        self.urls = Some(urls);
        self
    }

    /// The upstream behind `up` (default: a fresh [`Upstream::echo`]).
    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Runs `f` in the config folder before the config is loaded (e.g. to write keys there:
    /// relative paths of the config start in that folder).
    pub fn prepare(mut self, f: impl FnOnce(&Path) + Send + 'static) -> Self {
        self.prepare.push(Box::new(f));
        self
    }

    /// Starts from a real `gateway.toml` in the config folder read as the binary reads it
    /// (secrets from the process environment), with the binary's reload set-up (SIGHUP and the
    /// file watch): `POST /admin/reload` and file changes reload it.
    pub fn run_from_file(mut self) -> Self {
        self.run_from_file = true;
        self
    }

    /// The config text for an upstream at `upstream` (a memory store, if any: a Redis
    /// gateway's config names its server, so only [`Gateway::start`] renders one).
    pub fn render(&self, upstream: SocketAddr) -> String {
        assert_ne!(self.store, Some(StoreKind::Redis), "start a Redis gateway");
        self.render_on(upstream, None)
    }

    /// The config text. `redis` is `(redis_url, key_prefix)` for the Redis store.
    fn render_on(&self, upstream: SocketAddr, redis: Option<(&str, &str)>) -> String {
        let sessions = self.store.is_some();
        let mut server = String::new();
        // Unless the test sets its own (a key given twice is a TOML error).
        if !self.server.contains("shutdown_grace") {
            let grace = if sessions { "2s" } else { "5s" };
            server.push_str(&format!("shutdown_grace = \"{grace}\"\n"));
        }
        let admin_env = self.admin_env.as_deref().or(sessions.then_some("T_ADMIN"));
        if let Some(name) = admin_env {
            server.push_str(&format!("admin_token_env = {name:?}\n"));
        }
        server.push_str(&self.server);

        let token_base = self
            .token_base
            .as_deref()
            .unwrap_or("algorithm = \"HS256\"\nsecret_env = \"T_SECRET\"\n");

        let mut session = String::new();
        if !self.session.contains("mode =") {
            let mode = if sessions { "stateful" } else { "stateless" };
            session.push_str(&format!("mode = \"{mode}\"\n"));
        }
        match (self.store, redis) {
            (None, _) => {}
            (Some(StoreKind::Memory), _) => session.push_str("store = \"memory\"\n"),
            (Some(StoreKind::Redis), Some((url, prefix))) => session.push_str(&format!(
                "store = \"redis\"\nredis_url = {url:?}\nkey_prefix = {prefix:?}\n"
            )),
            (Some(StoreKind::Redis), None) => unreachable!("a Redis config names its server"),
        }
        session.push_str(&self.session);

        let login = match (self.login.is_empty(), sessions) {
            (false, _) => self.login.as_str(),
            (true, true) => "backend = \"users_file\"\nusers_file = \"users.toml\"\n",
            (true, false) => "backend = \"none\"\n",
        };

        let urls = self
            .urls
            .clone()
            .unwrap_or_else(|| vec![format!("http://{upstream}")]);
        let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}
[token]
{token_base}{token}
[session]
{session}
{platforms}
[login]
{login}
{lockout}
{sections}
[[upstreams]]
name = "up"
urls = [{urls}]
connect_timeout = "1s"

{routes}
"#,
            token = self.token,
            platforms = table("platforms", &self.platforms),
            lockout = table("login.lockout", &self.lockout),
            sections = self.sections,
            urls = urls.join(", "),
            routes = self.routes.as_deref().unwrap_or(ROUTES),
        )
    }
}

fn push_lines(to: &mut String, lines: &str) {
    to.push_str(lines);
    to.push('\n');
}

/// `[name]` and its lines, or nothing for no lines.
fn table(name: &str, lines: &str) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("[{name}]\n{lines}")
    }
}

/// A random key prefix, so two tests on one Redis never see each other's keys.
fn random_prefix() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; 6];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("random bytes");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("t{hex}:")
}

/// Replaces `path` the way editors do: a new file written beside it, then renamed over it.
pub fn replace_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it over the old one");
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// A running gateway in front of a test upstream. Derefs to a [`Probe`] for requests.
pub struct Gateway {
    probe: Probe,
    /// A client of the admin listener.
    pub admin: Probe,
    pub upstream: Upstream,
    pub app: Arc<App>,
    pub handle: Option<Handle>,
    text: String,
    /// The config folder: holds users.toml (and whatever [`Conf::prepare`] wrote); relative
    /// paths of the config point here.
    pub dir: tempfile::TempDir,
    redis: Option<RedisServer>,
    /// `[session] key_prefix` (Redis).
    pub prefix: String,
}

/// Every gateway checks the log lines written since the last check for secrets
/// ([`super::logs::check`]), unless its test already failed.
impl Drop for Gateway {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            super::logs::check();
        }
    }
}

impl std::ops::Deref for Gateway {
    type Target = Probe;

    fn deref(&self) -> &Probe {
        &self.probe
    }
}

impl Gateway {
    /// Starts `conf`'s gateway. A Redis gateway where `redis-server` is missing panics: those
    /// tests start with [`gateway!`], which skips.
    pub async fn start(conf: Conf) -> Gateway {
        Self::try_start(conf)
            .await
            .expect("redis-server is missing: start Redis gateways with gateway!")
    }

    /// Starts `conf`'s gateway; `None` (after a loud message) when its Redis cannot run
    /// because `redis-server` is missing (a panic instead with `CI` set).
    pub async fn try_start(mut conf: Conf) -> Option<Gateway> {
        super::logs::capture();
        let redis = match conf.store {
            Some(StoreKind::Redis) => Some(RedisServer::start()?),
            Some(StoreKind::Memory) | None => None,
        };
        let upstream = match conf.upstream.take() {
            Some(up) => up,
            None => Upstream::echo().await,
        };
        let dir = tempfile::tempdir().expect("temporary config folder");
        std::fs::write(dir.path().join("users.toml"), users_toml()).expect("write users.toml");
        for prepare in std::mem::take(&mut conf.prepare) {
            prepare(dir.path());
        }
        let url = redis.as_ref().map(|r| r.url());
        let prefix = random_prefix();
        let store = url.as_deref().map(|u| (u, prefix.as_str()));
        let text = conf.render_on(upstream.addr, store);
        let (app, handle) = if conf.run_from_file {
            launch_file(&text, dir.path()).await
        } else {
            launch(&text, dir.path()).await
        };
        Some(Gateway {
            probe: Probe::new(handle.addr),
            admin: Probe::new(handle.admin_addr.expect("admin listener")),
            upstream,
            app,
            handle: Some(handle),
            text,
            dir,
            redis,
            prefix,
        })
    }

    /// A client for this gateway that can move into a task.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// Stops the gateway gracefully and waits for it.
    pub async fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    /// A second gateway on the same config and store (another instance of a deployment).
    pub async fn sibling(&self) -> (Probe, Handle) {
        let (_, handle) = launch(&self.text, self.dir.path()).await;
        (Probe::new(handle.addr), handle)
    }

    /// Stops the gateway and starts a new one (a new `App`, a new store connection) on the same
    /// config and store; the addresses change.
    pub async fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            within("the gateway to shut down", h.shutdown()).await;
        }
        let (app, handle) = launch(&self.text, self.dir.path()).await;
        self.probe = Probe::new(handle.addr);
        self.admin = Probe::new(handle.admin_addr.expect("admin listener"));
        self.app = app;
        self.handle = Some(handle);
    }

    /// The test's own `redis-server` (Redis gateways only).
    pub fn redis(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("a Redis test")
    }

    /// Kills the test's `redis-server` and waits until the gateway has noticed (its
    /// revocation subscription is down, so its local session cache answers nothing): a
    /// request sent at once could otherwise still be answered from the cache, a moment
    /// before the gateway hears of the loss.
    pub async fn stop_redis(&mut self) {
        self.redis().stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.app.store.hears_revocations() {
            assert!(
                Instant::now() < deadline,
                "the gateway did not notice Redis stopping"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Asserts that `access` is refused with 401 `code` within two seconds, asking again
    /// meanwhile: for a change made on another instance, which reaches this one's local
    /// session cache through the revocation channel a moment later.
    pub async fn until_refused(&self, access: &str, code: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let r = self.get_auth("/api/me", access).await;
            if r.status == 401 {
                assert_eq!(r.code(), code, "{}", String::from_utf8_lossy(&r.body));
                return;
            }
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert!(
                Instant::now() < deadline,
                "still passing 2 s after the change elsewhere"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (bounded) until the admin `/readyz` answers 200: the store is back.
    pub async fn until_ready(&self, what: &str) {
        poll_until(what, || self.admin.get("/readyz", &[]), |r| r.status == 200).await;
    }

    /// Requests that reached the upstream.
    pub fn hits(&self) -> usize {
        self.upstream.hits()
    }

    // -- Time --------------------------------------------------------------------------------

    /// The gateway's time in Unix seconds: its clock, which [`Gateway::advance`] moves. Compare
    /// what the gateway answers with this, not with the test's own `support::now()`.
    pub fn now(&self) -> u64 {
        self.app.clock.now()
    }

    /// The gateway's time in Unix milliseconds (what its session store is asked at).
    pub fn now_ms(&self) -> Millis {
        self.app.clock.now_ms()
    }

    /// Moves the gateway's clock forward by `d`, as if `d` had passed: token, session and
    /// lock-out times are judged from it, so a test need not wait for one to end. Server timers
    /// (timeouts, shutdown grace) and Redis's own key TTLs still run on the real clock, and a
    /// [`Gateway::restart`] or [`Gateway::sibling`] starts with a clock of its own.
    pub fn advance(&self, d: Duration) {
        self.app.clock.advance(d);
    }

    // -- Tokens of the gateway's own key ring -----------------------------------------------

    /// A token minted by the gateway's own key ring at `issued_at`.
    pub fn mint_at(&self, id: &AccessIdentity, issued_at: u64) -> String {
        let live = self.app.live();
        live.config
            .token
            .keys
            .mint(id, issued_at)
            .expect("mint a test token")
            .0
    }

    /// A fresh token for `id` (at the gateway's time).
    pub fn mint(&self, id: &AccessIdentity) -> String {
        self.mint_at(id, self.now())
    }

    /// A token for `id` with `left` seconds of life left (by the gateway's time).
    pub fn mint_expiring_in(&self, id: &AccessIdentity, left: u64) -> String {
        let ttl = self.app.live().config.token.access_ttl.as_secs();
        self.mint_at(id, self.now() + left - ttl)
    }

    // -- Login, admin (the auth endpoints themselves are the Probe's) ----------------------

    /// A successful login of a test user (alice, bob or 张三) on `platform`.
    pub async fn login_ok(&self, user: &str, platform: &str) -> Pair {
        let pw = password_of(user);
        Pair::from_resp(&self.login_on(user, pw, Some(platform)).await)
    }

    /// `method path` on the admin listener, with `Authorization: Bearer token` if given.
    pub async fn admin_call(&self, method: &str, path: &str, token: Option<&str>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        self.admin
            .request(method, path, &headers, Bytes::new())
            .await
    }

    /// Asserts that `access` passes a required route, the upstream seeing its session.
    #[track_caller]
    pub fn assert_passes<'a>(&'a self, p: &'a Pair) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let r = self.get_auth("/api/me", &p.access).await;
            assert_eq!(
                r.status,
                200,
                "{caller}: session {} should be active: {}",
                p.sid,
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.seen("x-session-id"), [p.sid.as_str()], "{caller}");
        }
    }

    /// Asserts that `access` is refused on a required route with 401 `code`, and that the
    /// refusal did not reach the upstream.
    #[track_caller]
    pub fn assert_refused<'a>(
        &'a self,
        access: &'a str,
        code: &'a str,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let before = self.hits();
            let r = self.get_auth("/api/me", access).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (401, code),
                "{caller}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.contains("invalid_token")),
                "{caller}: {:?}",
                r.headers
            );
            assert_eq!(
                self.hits(),
                before,
                "{caller}: a refusal reached the upstream"
            );
        }
    }

    /// Asserts that `p`'s session is over: its access token refused with 401 `code` (as by
    /// [`Gateway::assert_refused`]), its refresh token with 401 `invalid_refresh_token`.
    #[track_caller]
    pub fn assert_ended<'a>(
        &'a self,
        p: &'a Pair,
        code: &'a str,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        let refused = self.assert_refused(&p.access, code);
        async move {
            refused.await;
            let r = self.refresh(&p.refresh).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (401, "invalid_refresh_token"),
                "{caller}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }
}

/// Loads `text` (relative paths from `dir`, secrets from [`env`]), builds the app with the
/// store the config names, and starts serving on port 0.
async fn launch(text: &str, dir: &Path) -> (Arc<App>, Handle) {
    serve(config::load_str(text, dir, &env), text).await
}

/// Writes `text` to `dir/gateway.toml`, loads it with `config::load` (process environment),
/// builds and starts the app, and starts the reload watch as `authgate run` does.
async fn launch_file(text: &str, dir: &Path) -> (Arc<App>, Handle) {
    static ENV: std::sync::Once = std::sync::Once::new();
    // What `env` serves, set once: the same values for every test.
    ENV.call_once(|| {
        for name in ["T_SECRET", "T_ADMIN", "T_NOTIFY"] {
            std::env::set_var(name, env(name).expect("a test variable"));
        }
    });
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write gateway.toml");
    let (app, handle) = serve(config::load(&path), text).await;
    reload::spawn(app.clone(), path);
    (app, handle)
}

/// Builds the app of a loaded config with the store it names and starts serving on port 0.
async fn serve(loaded: Result<Loaded, ConfigError>, text: &str) -> (Arc<App>, Handle) {
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => panic!("test config refused: {e}\n{text}"),
    };
    let app = within("App::build", App::build(loaded.config))
        .await
        .expect("the store opens");
    let handle = server::start(app.clone()).await.expect("gateway starts");
    (app, handle)
}
