//! Harness for the session tests (issue 3): a gateway with a real login backend and a real
//! session store, built through `config::load_str` → `App::build` → `server::start` exactly as
//! the binary does, with either the memory store or a throw-away `redis-server` of its own.
//!
//! [`StoreKind`] picks the store; [`Setup`] renders a `gateway.toml` around the users file and
//! routes; [`Gw`] is the running gateway with helpers for login, refresh and the admin API, and
//! can be restarted on the same store.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

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
    authgate::config::reload::spawn(app.clone(), path);
    (app, handle)
}

/// Replaces `path` the way editors do: a new file written beside it, then renamed over it.
pub fn replace_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it over the old one");
}
