//! Harness for the session tests (issue 3): a gateway with a real login backend and a real
//! session store, built through `config::load_str` → `App::build` → `server::start` exactly as
//! the binary does, with either the memory store or a throw-away `redis-server` of its own.
//!
//! [`StoreKind`] picks the store; [`Setup`] renders a `gateway.toml` around the users file and
//! routes; [`Gw`] is the running gateway with helpers for login, refresh and the admin API, and
//! can be restarted on the same store. [`RedisServer`] is a copy of the crate's
//! `session::testutil` harness (that one is `#[cfg(test)]`, out of reach of integration tests),
//! plus `SAVE` so a restart can keep the data.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHasher, SaltString};
use authgate::app::App;
use authgate::server::Handle;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::support::*;

/// The admin bearer token, served as env `T_ADMIN`.
pub const ADMIN_TOKEN: &str = "admin-token-for-the-session-tests";

/// Passwords of the users in every test users file.
pub const ALICE_PW: &str = "alice-correct-horse";
pub const BOB_PW: &str = "bob-battery-staple";
pub const ZHANG_PW: &str = "zhang-san-mima";

/// The id of the user whose id and name need percent-encoding in a URL (`张三`).
pub const ZHANG_ID: &str = "用户 1003";

/// Env for the session test configs: the signing secret and the admin token.
pub fn session_env(name: &str) -> Option<String> {
    match name {
        "T_SECRET" => Some(SECRET.to_owned()),
        "T_ADMIN" => Some(ADMIN_TOKEN.to_owned()),
        _ => None,
    }
}

/// Which session store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

/// Runs each named `async fn case(store: StoreKind)` twice, as `case::memory` and `case::redis`.
#[macro_export]
macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                super::$case($crate::session_support::StoreKind::Memory).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                super::$case($crate::session_support::StoreKind::Redis).await
            }
        }
    )*};
}

// ---------------------------------------------------------------------------------------------
// Users file
// ---------------------------------------------------------------------------------------------

/// A low-cost Argon2id PHC string (m = 256 KiB, t = 1): valid for the users file, and about a
/// millisecond to verify, so a test can log in often. The gateway's dummy hash for unknown
/// users takes the users' parameters, so unknown users are as cheap.
pub fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(256, 1, 1, None).expect("valid Argon2 params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"session-tests-salt").expect("salt");
    argon
        .hash_password(password.as_bytes(), &salt)
        .expect("hash a test password")
        .to_string()
}

/// users.toml: alice (1001, tenant acme, roles admin and ops), bob (2002, tenant globex), and
/// 张三 (id [`ZHANG_ID`], no tenant, no roles).
pub fn users_toml() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            r#"
[[users]]
id = "1001"
username = "alice"
password_hash = "{alice}"
tenant = "acme"
roles = ["admin", "ops"]

[[users]]
id = "2002"
username = "bob"
password_hash = "{bob}"
tenant = "globex"
roles = ["user"]

[[users]]
id = "{zhang_id}"
username = "张三"
password_hash = "{zhang}"
"#,
            alice = cheap_hash(ALICE_PW),
            bob = cheap_hash(BOB_PW),
            zhang = cheap_hash(ZHANG_PW),
            zhang_id = ZHANG_ID,
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// `[server]` line that lets the tests' loopback client act as a forward-auth proxy.
pub const TRUST_LOOPBACK: &str = "trusted_proxies = [\"127.0.0.1/32\"]";

/// The parts of a session test's `gateway.toml`; each string is extra lines for its section.
#[derive(Clone, Default)]
pub struct Setup {
    pub server: String,
    /// The env variable of the admin token (default `T_ADMIN`, which [`session_env`] serves).
    pub admin_env: Option<String>,
    /// Replaces the HS256 signing lines of `[token]` when non-empty.
    pub token_base: String,
    pub token: String,
    pub session: String,
    pub platforms: String,
    /// Replaces `backend = "users_file"` / `users_file = "users.toml"` when non-empty.
    pub login: String,
    pub lockout: String,
    /// Runs in the config folder before the config is loaded (e.g. to write keys).
    pub prepare: Option<fn(&Path)>,
}

impl Setup {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn server(mut self, lines: &str) -> Self {
        self.server.push_str(lines);
        self.server.push('\n');
        self
    }

    pub fn admin_env(mut self, name: &str) -> Self {
        self.admin_env = Some(name.to_owned());
        self
    }

    pub fn token_base(mut self, lines: &str) -> Self {
        self.token_base = format!("{lines}\n");
        self
    }

    pub fn token(mut self, lines: &str) -> Self {
        self.token.push_str(lines);
        self.token.push('\n');
        self
    }

    pub fn session(mut self, lines: &str) -> Self {
        self.session.push_str(lines);
        self.session.push('\n');
        self
    }

    pub fn platforms(mut self, lines: &str) -> Self {
        self.platforms.push_str(lines);
        self.platforms.push('\n');
        self
    }

    pub fn login(mut self, lines: &str) -> Self {
        self.login.push_str(lines);
        self.login.push('\n');
        self
    }

    pub fn lockout(mut self, lines: &str) -> Self {
        self.lockout.push_str(lines);
        self.lockout.push('\n');
        self
    }

    pub fn prepare(mut self, f: fn(&Path)) -> Self {
        self.prepare = Some(f);
        self
    }

    /// The config text. `store` is `(redis_url, key_prefix)` for Redis, `None` for memory.
    pub fn render(&self, upstream: SocketAddr, store: Option<(&str, &str)>) -> String {
        let store_lines = match store {
            None => "store = \"memory\"".to_owned(),
            Some((url, prefix)) => {
                format!("store = \"redis\"\nredis_url = {url:?}\nkey_prefix = {prefix:?}")
            }
        };
        let token_base = if self.token_base.is_empty() {
            "algorithm = \"HS256\"\nsecret_env = \"T_SECRET\"\n"
        } else {
            self.token_base.as_str()
        };
        let login = if self.login.is_empty() {
            "backend = \"users_file\"\nusers_file = \"users.toml\"\n"
        } else {
            self.login.as_str()
        };
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "2s"
admin_token_env = {admin_env:?}
{server}
[token]
{token_base}{token}
[session]
{mode}{store_lines}
{session}
[platforms]
{platforms}
[login]
{login}
[login.lockout]
{lockout}
[[upstreams]]
name = "up"
urls = ["http://{upstream}"]
connect_timeout = "1s"

{routes}
"#,
            server = self.server,
            mode = if self.session.contains("mode =") {
                ""
            } else {
                "mode = \"stateful\"\n"
            },
            admin_env = self.admin_env.as_deref().unwrap_or("T_ADMIN"),
            token = self.token,
            session = self.session,
            platforms = self.platforms,
            lockout = self.lockout,
            routes = ROUTES,
        )
    }
}

/// A random key prefix, so two tests on one Redis never see each other's keys.
pub fn random_prefix() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; 6];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("random bytes");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("t{hex}:")
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// A login's token pair.
#[derive(Debug, Clone)]
pub struct Pair {
    pub access: String,
    pub refresh: String,
    pub sid: String,
    pub json: Value,
}

impl Pair {
    pub fn from_resp(r: &Resp) -> Pair {
        assert_eq!(
            r.status,
            200,
            "expected a token pair: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        let text = |k: &str| {
            j[k].as_str()
                .unwrap_or_else(|| panic!("no {k} in {j}"))
                .to_owned()
        };
        Pair {
            access: text("access_token"),
            refresh: text("refresh_token"),
            sid: text("session_id"),
            json: j.clone(),
        }
    }
}

/// A running gateway with the session store `kind`, in front of an echo upstream.
pub struct Gw {
    pub probe: Probe,
    pub admin: Probe,
    pub upstream: Upstream,
    pub app: Arc<App>,
    handle: Option<Handle>,
    text: String,
    /// Holds users.toml (and keys); relative paths of the config point here.
    pub dir: tempfile::TempDir,
    redis: Option<RedisServer>,
    /// `[session] key_prefix` (Redis).
    pub prefix: String,
}

impl std::ops::Deref for Gw {
    type Target = Probe;

    fn deref(&self) -> &Probe {
        &self.probe
    }
}

impl Gw {
    /// Starts a gateway for `setup` on `kind`; `None` (after a loud message) when the Redis
    /// variant cannot run because `redis-server` is missing (a panic instead with `CI` set).
    pub async fn start(kind: StoreKind, setup: Setup) -> Option<Gw> {
        Self::start_with(kind, setup, Upstream::echo().await).await
    }

    /// Like [`Gw::start`], in front of `upstream`.
    pub async fn start_with(kind: StoreKind, setup: Setup, upstream: Upstream) -> Option<Gw> {
        Self::start_inner(kind, setup, upstream, false).await
    }

    /// Like [`Gw::start`], but from a real `gateway.toml` in [`Gw::dir`] read as the binary
    /// reads it (secrets from the process environment), with the binary's reload set-up
    /// (SIGHUP and the file watch): `POST /admin/reload` and file changes reload it.
    pub async fn start_from_file(kind: StoreKind, setup: Setup) -> Option<Gw> {
        Self::start_inner(kind, setup, Upstream::echo().await, true).await
    }

    async fn start_inner(
        kind: StoreKind,
        setup: Setup,
        upstream: Upstream,
        from_file: bool,
    ) -> Option<Gw> {
        let redis = match kind {
            StoreKind::Memory => None,
            StoreKind::Redis => Some(RedisServer::start()?),
        };
        let dir = tempfile::tempdir().expect("temporary config folder");
        std::fs::write(dir.path().join("users.toml"), users_toml()).expect("write users.toml");
        if let Some(prepare) = setup.prepare {
            prepare(dir.path());
        }
        let url = redis.as_ref().map(|r| r.url());
        let prefix = random_prefix();
        let store = url.as_deref().map(|u| (u, prefix.as_str()));
        let text = setup.render(upstream.addr, store);
        let (app, handle) = if from_file {
            launch_file(&text, dir.path()).await
        } else {
            launch(&text, dir.path()).await
        };
        Some(Gw {
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

    /// The test's own `redis-server` (Redis variant only).
    pub fn redis(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("a Redis test")
    }

    pub fn hits(&self) -> usize {
        self.upstream.hits()
    }

    /// `POST /auth/login` for `user` on `platform` (`None`: no `X-Platform` header).
    pub async fn login_on(&self, user: &str, password: &str, platform: Option<&str>) -> Resp {
        let body = json!({ "username": user, "password": password }).to_string();
        self.post("/auth/login", platform.map(|p| ("x-platform", p)), body)
            .await
    }

    /// `POST /auth/login` without `X-Platform` (the default platform, web).
    pub async fn login(&self, user: &str, password: &str) -> Resp {
        self.login_on(user, password, None).await
    }

    /// A successful login of a test user (alice or bob) on `platform`.
    pub async fn login_ok(&self, user: &str, platform: &str) -> Pair {
        let pw = match user {
            "alice" => ALICE_PW,
            "bob" => BOB_PW,
            "张三" => ZHANG_PW,
            other => panic!("no test user {other}"),
        };
        Pair::from_resp(&self.login_on(user, pw, Some(platform)).await)
    }

    /// `POST path` with a body and at most one extra header.
    pub async fn post(&self, path: &str, header: Option<(&str, &str)>, body: String) -> Resp {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(header);
        self.request("POST", path, &headers, Bytes::from(body))
            .await
    }

    /// `POST /auth/refresh` with `refresh_token`.
    pub async fn refresh(&self, refresh_token: &str) -> Resp {
        let body = json!({ "refresh_token": refresh_token }).to_string();
        self.post("/auth/refresh", None, body).await
    }

    /// `method path` with `Authorization: Bearer access` and no body.
    pub async fn with_token(&self, method: &str, path: &str, access: &str) -> Resp {
        let auth = format!("Bearer {access}");
        self.request(method, path, &[("authorization", &auth)], Bytes::new())
            .await
    }

    /// `GET /auth/verify` as a forward-auth proxy asks it (the gateway must trust the test's
    /// loopback peer: [`TRUST_LOOPBACK`]): `X-Forwarded-Uri: uri`, method GET.
    pub async fn verify(&self, uri: &str, access: Option<&str>) -> Resp {
        let auth = access.map(|t| format!("Bearer {t}"));
        let mut h = vec![("x-forwarded-method", "GET"), ("x-forwarded-uri", uri)];
        if let Some(a) = auth.as_deref() {
            h.push(("authorization", a));
        }
        self.request("GET", "/auth/verify", &h, Bytes::new()).await
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
}

/// Loads `text` (relative paths from `dir`), builds the app with the store the config names,
/// and starts serving on port 0.
async fn launch(text: &str, dir: &Path) -> (Arc<App>, Handle) {
    serve(authgate::config::load_str(text, dir, &session_env), text).await
}

/// Builds the app of a loaded config with the store it names and starts serving on port 0.
async fn serve(
    loaded: Result<authgate::config::Loaded, authgate::config::ConfigError>,
    text: &str,
) -> (Arc<App>, Handle) {
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => panic!("test config refused: {e}\n{text}"),
    };
    let app = within("App::build", App::build(loaded.config))
        .await
        .expect("the store opens");
    let handle = authgate::server::start(app.clone())
        .await
        .expect("gateway starts");
    (app, handle)
}

/// Writes `text` to `dir/gateway.toml`, loads it with `config::load` (process environment),
/// builds and starts the app, and starts the reload watch as `authgate run` does.
async fn launch_file(text: &str, dir: &Path) -> (Arc<App>, Handle) {
    static ENV: std::sync::Once = std::sync::Once::new();
    // The values `session_env` serves, set once: every config of these tests names them.
    ENV.call_once(|| {
        std::env::set_var("T_SECRET", SECRET);
        std::env::set_var("T_ADMIN", ADMIN_TOKEN);
    });
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write gateway.toml");
    let (app, handle) = serve(authgate::config::load(&path), text).await;
    authgate::reload::spawn(app.clone(), path);
    (app, handle)
}

/// Replaces `path` the way editors do: a new file written beside it, then renamed over it.
pub fn replace_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it over the old one");
}

/// The decoded header of a compact JWT (no verification).
pub fn header_of(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').next().expect("a JWT header");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url header");
    serde_json::from_slice(&raw).expect("JSON header")
}

/// Unix time now, as a float of seconds.
fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Waits until the wall clock reaches Unix second `t` (plus a little), so that a server taking
/// `now` in whole seconds sees at least `t`. Bounded: panics rather than wait more than 3 s.
pub async fn wait_until_unix(t: u64) {
    let left = t as f64 - unix_now_f64() + 0.05;
    assert!(left < 3.0, "refusing to wait {left:.1}s");
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

/// Asks `ask` every 50 ms until `done` holds for its answer, for at most [`WAIT`]; the last
/// answer. For events the gateway cannot announce (a store coming back).
pub async fn poll_until<T, F, Fut>(what: &str, mut ask: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = ask().await;
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

/// A `redis-server` child process with no automatic persistence, in its own temporary folder,
/// killed on drop. (A copy of `src/session/testutil.rs`, plus [`RedisServer::save`].)
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn redis_server_on_path() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts a server, or returns `None` after a loud `SKIPPED` when `redis-server` is not
    /// installed. With `CI` set, a missing `redis-server` panics instead.
    pub fn start() -> Option<Self> {
        if !redis_server_on_path() {
            if std::env::var_os("CI").is_some() {
                panic!("redis-server is not on PATH, and CI is set: the Redis tests must run");
            }
            // Straight to the process's stderr: libtest would swallow an `eprintln!` of a
            // passing test, and a skip must be seen.
            let _ = std::io::stderr().write_all(
                b"\n*********************************************************************\n\
                  *** SKIPPED: redis-server not found (a Redis session test).       ***\n\
                  *** Install it (apt-get install redis-server) to run these tests. ***\n\
                  *********************************************************************\n",
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut server = Self {
            child: None,
            port: 0,
            dir,
        };
        // Another process may take the port between our probe and redis-server's bind.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("could not start redis-server");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(c) = &mut self.child {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn ping(&self) -> bool {
        self.command(&["PING"]).is_ok_and(|r| r == "PONG")
    }

    /// Writes a snapshot (`SAVE`); a restart in the same folder loads it.
    pub fn save(&self) {
        assert_eq!(self.command(&["SAVE"]).as_deref(), Ok("OK"));
    }

    /// Kills the server (SIGKILL): whatever was not `SAVE`d is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT); it then answers what queued up.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts it again on the same port and folder (loading the last `SAVE`, if any).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not come back on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one command with a tiny blocking RESP client; the reply as text (status, integer
    /// or bulk string), `Err` for an error reply or a connection problem.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        match self.call(args)? {
            Reply::One(text) => Ok(text),
            Reply::Many(_) => Err("unexpected array reply".into()),
        }
    }

    /// The keys matching `pattern` (`KEYS`; fine for a test server).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.call(&["KEYS", pattern]) {
            Ok(Reply::Many(keys)) => keys,
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    fn call(&self, args: &[&str]) -> Result<Reply, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let (kind, rest) = read_line(&mut r)?;
        if kind == "*" {
            let n: i64 = rest.parse().map_err(|_| "bad array length".to_owned())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                let (kind, rest) = read_line(&mut r)?;
                items.push(scalar(&mut r, &kind, &rest)?);
            }
            return Ok(Reply::Many(items));
        }
        scalar(&mut r, &kind, &rest).map(Reply::One)
    }
}

/// A RESP reply: one scalar, or an array of scalars.
#[derive(Debug)]
enum Reply {
    One(String),
    Many(Vec<String>),
}

/// One reply line, split into its type byte and the rest.
fn read_line(r: &mut impl BufRead) -> Result<(String, String), String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    Ok((kind.to_owned(), rest.to_owned()))
}

/// A status, integer, error or bulk string reply whose first line was `kind rest`.
fn scalar(r: &mut impl BufRead, kind: &str, rest: &str) -> Result<String, String> {
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(rest.to_owned()),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| "bad bulk length".to_owned())?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(n as usize);
            // Keys may hold raw bytes; show them lossily.
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        _ => Err(format!("unsupported reply: {kind}{rest}")),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
