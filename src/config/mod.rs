//! The validated configuration: what the gateway runs on.
//!
//! `file.rs` mirrors `gateway.toml` with serde (unknown keys rejected, every default filled in);
//! this module turns that mirror into a [`Config`], resolving secrets from env vars and files,
//! loading key files, building the route table, and collecting *every* problem with its key
//! path (`routes[2].upstream: no upstream named "legacy"`) instead of stopping at the first.
//! `reload.rs` swaps a new, fully validated snapshot in on SIGHUP, admin reload or file change.
//!
//! This file holds the validated types and the loading: reading the file, explain's stand-in
//! for the token keys, and leaving out the problems a shape problem or a mistyped key explains
//! away. The checks themselves are in `validate/`, one file per section.

pub mod duration;
pub mod file;
#[cfg(test)]
mod test_support;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::routing::table::RouteTable;
use crate::tokens::KeyRing;

/// One problem found in a config, with the key path it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `routes[2].upstream`
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem of a config that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in the config: {}", .0.len(), .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigError(pub Vec<Problem>);

/// A config that validated, with the warnings `check` prints (shadowed routes, overlaps).
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The whole validated configuration. Immutable; a reload builds a new one.
pub struct Config {
    /// The file it came from (relative paths were resolved against its folder).
    pub source: PathBuf,
    pub server: Server,
    pub token: Token,
    pub session: Session,
    pub(crate) platforms: Platforms,
    pub login: Login,
    pub identity: Identity,
    pub(crate) cors: Cors,
    /// `[browser]`; `None` unless `enabled = true`.
    pub(crate) browser: Option<Browser>,
    /// `[log]`
    pub log: Log,
    /// `[notify]`; off while it has no targets.
    pub(crate) notify: Notify,
    pub upstreams: Vec<Upstream>,
    pub routes: RouteTable,
}

pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub(crate) tls: Option<TlsFiles>,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    /// A client that takes no response byte for this long is cut (both connections closed).
    pub send_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    /// How request paths are canonicalised (`allow_encoded_percent`).
    pub path_rules: crate::routing::path::PathRules,
    pub trusted_proxies: Vec<IpNet>,
    /// Resolved from `admin_token_env`; `None` turns `/admin/*` off.
    pub admin_token: Option<String>,
    /// Client connections on `listen` at once (the admin listener is not counted).
    pub max_connections: usize,
}

pub(crate) struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Token {
    /// Signing key, verify keys, issuer, audience, leeway.
    pub keys: KeyRing,
    /// Derives each refresh token from its parent (see `session::ids`). Derived from the
    /// signing key, so every instance sharing a config and a Redis store agrees on it and it
    /// survives restarts; rotating the signing key invalidates outstanding refresh tokens'
    /// grace recomputation, not the sessions.
    pub refresh_secret: [u8; 32],
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// `None` when `max_lifetime = "0s"`.
    pub max_lifetime: Option<Duration>,
    pub silent_refresh_window: Duration,
    pub refresh_header: HeaderName,
    /// `None` when `cookie = ""`.
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionMode {
    Stateful,
    Stateless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnStoreError {
    Deny,
    AllowStateless,
}

pub struct Session {
    pub store: StoreKind,
    pub(crate) mode: SessionMode,
    pub redis_url: String,
    /// Non-empty: Redis Cluster with these seed nodes instead of `redis_url`.
    pub redis_cluster: Vec<String>,
    /// Some: the master is found through these sentinels instead of `redis_url` (whose
    /// credentials, database and scheme are used for the master).
    pub redis_sentinel: Option<Sentinel>,
    pub key_prefix: String,
    pub(crate) on_store_error: OnStoreError,
    pub refresh_reuse_grace: Duration,
    /// Redis: the per-instance cache of session states (`session::cache`); `None` when off.
    pub local_cache: Option<LocalCache>,
}

/// `session.local_cache*`: how the Redis store keeps what it has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCache {
    /// `local_cache_ttl`: the longest an entry is trusted without a revocation saying so.
    pub ttl: Duration,
    /// `local_cache_max_bytes`: the cap on the cache's memory, entries weighed in bytes.
    pub max_bytes: u64,
}

/// `session.redis_sentinel`, validated: a non-empty master name and at least one sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinel {
    pub master: String,
    pub nodes: Vec<String>,
}

pub(crate) struct Platforms {
    pub header: HeaderName,
    pub default: String,
    pub allowed: Vec<String>,
    /// Per platform; a platform missing here has no limit.
    pub max_sessions: HashMap<String, u32>,
}

pub struct Login {
    /// e.g. `/auth`, no trailing slash.
    pub prefix: String,
    /// Where lock-out and captcha counters read the username in a login body (`/username`
    /// for the users file).
    pub username_pointer: String,
    pub(crate) backend: LoginBackend,
    pub(crate) lockout: Lockout,
    pub(crate) captcha: Captcha,
}

pub(crate) enum LoginBackend {
    UsersFile {
        path: PathBuf,
        users: HashMap<String, User>,
    },
    Upstream(UpstreamLogin),
    None,
}

/// One user of the users file, keyed by username.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
}

#[derive(Clone)]
pub(crate) struct UpstreamLogin {
    pub url: http::Uri,
    pub user_id_pointer: String,
    pub user_name_pointer: Option<String>,
    pub tenant_pointer: Option<String>,
    pub roles_pointer: Option<String>,
    /// `success_pointer` and `success_value`: a 2xx answer is a success only if the value at
    /// the pointer equals this one (legacy apps that answer `200 {"code":500}` to a wrong
    /// password).
    pub success: Option<SuccessRule>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SuccessRule {
    pub pointer: String,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone)]
pub(crate) struct Lockout {
    pub max_failures: u32,
    pub max_failures_per_ip: u32,
    pub window: Duration,
    pub duration: Duration,
}

/// `[login.captcha]`: when a login must answer a picture challenge first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Captcha {
    pub mode: CaptchaMode,
    /// How long a challenge can be answered (10 s to 1 h).
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaptchaMode {
    Off,
    Always,
    /// Once the username or the client IP has this many failed logins (at least 1) within
    /// the lock-out window.
    AfterFailures(u32),
}

pub struct Identity {
    pub user_id: HeaderName,
    pub user_name: HeaderName,
    pub tenant: HeaderName,
    pub roles: HeaderName,
    pub session_id: HeaderName,
    pub platform: HeaderName,
    pub forward_authorization: bool,
    /// `[identity.claims]`: more headers, each from a claim.
    pub(crate) claims: Vec<(HeaderName, crate::claims::ClaimPath)>,
}

pub(crate) struct Cors {
    /// Empty: CORS off.
    pub allowed_origins: Vec<String>,
    /// Prebuilt `Access-Control-Allow-Headers` value.
    pub allowed_headers: HeaderValue,
    pub allow_credentials: bool,
    pub max_age: Duration,
}

/// `[browser]`: cookie sessions for browser apps.
pub(crate) struct Browser {
    pub access_cookie: String,
    pub refresh_cookie: String,
    pub csrf_cookie: String,
    /// `Secure` on every cookie set (false only with `insecure_cookies = true`).
    pub secure: bool,
    pub csrf: CsrfMode,
    pub login_page: LoginPage,
    pub redirect_html: bool,
    /// Lowercase host names (with `:port` when one was given).
    pub allowed_return_hosts: Vec<String>,
    /// The path the refresh cookie is scoped to: `<prefix>/refresh`.
    pub refresh_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CsrfMode {
    Off,
    Origin,
    DoubleSubmit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoginPage {
    /// `GET <prefix>/login` serves the gateway's own form.
    Builtin,
    /// The app's own page: a path (`/login`) or an absolute URL.
    At(String),
}

/// `[log]`: what is logged besides the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// One access line per request (contract §8); a reload turns it on or off.
    pub access: bool,
}

/// `[notify]`: where session events go and how they are signed.
#[derive(Clone)]
pub(crate) struct Notify {
    /// Empty: off.
    pub targets: Vec<NotifyTarget>,
    /// The HMAC-SHA256 key of the signature header (at least [`MIN_SECRET_BYTES`]).
    pub secret: std::sync::Arc<[u8]>,
    /// `session_ended` is in `events`.
    pub session_ended: bool,
    /// `login` is in `events`.
    pub login: bool,
    /// Per attempt: connect, send, and the answer's head.
    pub timeout: Duration,
    pub max_queue: usize,
    /// Attempts after the first.
    pub retries: u32,
}

impl Notify {
    /// Off: no targets, nothing queued.
    pub(crate) fn off() -> Self {
        Self {
            targets: Vec::new(),
            secret: std::sync::Arc::from(&[][..]),
            session_ended: false,
            login: false,
            timeout: Duration::from_secs(2),
            max_queue: 0,
            retries: 0,
        }
    }
}

/// Never the secret.
impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("targets", &self.targets)
            .field("session_ended", &self.session_ended)
            .field("login", &self.login)
            .field("timeout", &self.timeout)
            .field("max_queue", &self.max_queue)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// One `notify.urls` entry, resolved: the `host:port`s to try (round robin: one, or the
/// targets of the upstream it names) and the path (and query) to POST to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotifyTarget {
    /// As written in the config (logs).
    pub url: String,
    pub authorities: Vec<http::uri::Authority>,
    pub path: http::uri::PathAndQuery,
}

pub struct Upstream {
    pub name: String,
    /// `host:port` targets, tried round robin; `http://` only.
    pub(crate) targets: Vec<UpstreamTarget>,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct UpstreamTarget {
    /// `host:port` as written (a name is resolved at connect time).
    pub authority: http::uri::Authority,
    /// Path prefix of the url, without trailing slash ("" for none).
    pub base_path: String,
}

/// Reads, parses and validates the config at `path`; secrets come from the process
/// environment, relative paths are taken from `path`'s folder.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let (text, base_dir) = read_config(path)?;
    let env = |name: &str| std::env::var(name).ok();
    build(&text, path.to_path_buf(), base_dir, &env, Purpose::Serve).map(|(loaded, _)| loaded)
}

/// Like [`load`], for `authgate explain`, which signs and verifies nothing: the signing key
/// and the verify keys are not read, and a throwaway HS256 secret stands in for them, so
/// explain works without the secret's env var or the key files. The notes name what was
/// stood in for (`token.secret_env: environment variable X is not set; ...`).
pub fn load_for_explain(path: &Path) -> Result<(Loaded, Vec<String>), ConfigError> {
    let (text, base_dir) = read_config(path)?;
    let env = |name: &str| std::env::var(name).ok();
    build(&text, path.to_path_buf(), base_dir, &env, Purpose::Explain)
}

fn read_config(path: &Path) -> Result<(String, &Path), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![Problem {
            key: path.display().to_string(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((text, base_dir))
}

/// Validates config text without touching the process environment: `env` answers for
/// environment variables and relative paths are taken from `base_dir`. The returned
/// [`Config::source`] is `base_dir` itself (there is no file to reload from).
pub fn load_str(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    build(text, base_dir.to_path_buf(), base_dir, env, Purpose::Serve).map(|(loaded, _)| loaded)
}

/// What a config is validated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Running the gateway (and `check`): every key and secret must resolve.
    Serve,
    /// `authgate explain`: the token keys are stood in for (see [`load_for_explain`]).
    Explain,
}

/// The env var name that answers with explain's throwaway secret (no real variable can have
/// this name: it holds a NUL).
const STAND_IN_ENV: &str = "\0authgate-explain-stand-in";

/// Why the signing key of `f` would not resolve, if it would not (explain's notes).
fn unresolved_signing_key(
    f: &file::TokenFile,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let unreadable = |key: &str, path: &Path| {
        let resolved = base_dir.join(path);
        std::fs::metadata(&resolved)
            .err()
            .map(|e| format!("{key}: cannot read {}: {e}", resolved.display()))
    };
    if f.algorithm.is_symmetric() {
        match (&f.secret_file, &f.secret_env) {
            (Some(path), _) => unreadable("token.secret_file", path),
            (None, name) => {
                let name = name.as_deref().unwrap_or(file::DEFAULT_SECRET_ENV);
                env(name)
                    .is_none()
                    .then(|| format!("token.secret_env: environment variable {name} is not set"))
            }
        }
    } else {
        match &f.private_key_file {
            Some(path) => unreadable("token.private_key_file", path),
            None => Some("token.private_key_file: not set".into()),
        }
    }
}

/// Shortest HMAC secret accepted, in bytes: the token module's own limit.
pub(crate) use crate::tokens::MIN_SECRET_BYTES;

/// Smallest `server.max_header_bytes` accepted.
pub(crate) const MIN_HEADER_BYTES: u64 = 1024;

fn build(
    text: &str,
    source: PathBuf,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    purpose: Purpose,
) -> Result<(Loaded, Vec<String>), ConfigError> {
    let read = file::parse_guessing::<file::GatewayFile>(text);
    let shape_problems = read.problems;
    let Some(mut parsed) = read.value else {
        return Err(ConfigError(shape_problems));
    };
    let mut as_meant = read.as_meant;
    let mut notes = Vec::new();
    // explain signs and verifies nothing: its token keys are a throwaway secret, so neither
    // a missing env var nor a missing key file stops it (the notes say what was stood in for).
    let stand_in = |name: &str| {
        if name == STAND_IN_ENV {
            Some(throwaway_secret())
        } else {
            env(name)
        }
    };
    let env: &dyn Fn(&str) -> Option<String> = match purpose {
        Purpose::Serve => env,
        Purpose::Explain => {
            notes.extend(stand_in_for_token_keys(
                &mut parsed,
                as_meant.as_mut(),
                base_dir,
                env,
            ));
            &stand_in
        }
    };
    let mut found = validate::validate(&parsed, source.clone(), base_dir, env);
    // The same for a mistyped key (`acess_ttl`): its default may trip up another key
    // (`refresh_ttl` no longer longer than `access_ttl`). Such a problem is gone when the file
    // is read as meant (the key renamed as suggested), and then it is not reported; a problem
    // at a key that the as-meant reading has too is real either way.
    if let Some(meant) = &as_meant {
        let other = validate::validate(meant, source, base_dir, env);
        found
            .problems
            .retain(|p| other.problems.iter().any(|q| q.key == p.key));
    }
    let problems = beside_shape_problems(shape_problems, found.problems);
    match found.config {
        Some(config) if problems.is_empty() => {
            let mut warnings = found.warnings;
            warnings.extend(config.routes.warnings());
            Ok((Loaded { config, warnings }, notes))
        }
        _ if !problems.is_empty() => Err(ConfigError(problems)),
        // Every `None` comes with a problem; this only guards against an empty error list.
        _ => Err(ConfigError(vec![Problem {
            key: "(config)".into(),
            message: "could not be built".into(),
        }])),
    }
}

/// For explain: the token keys of `parsed` (and of its as-meant reading) replaced by a
/// throwaway HS256 secret; returns the note on why the real signing key would not resolve,
/// if it would not.
fn stand_in_for_token_keys(
    parsed: &mut file::GatewayFile,
    as_meant: Option<&mut file::GatewayFile>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let note = unresolved_signing_key(&parsed.token, base_dir, env)
        .map(|why| format!("{why}; explain signs nothing, so a throwaway secret stands in"));
    for f in std::iter::once(parsed).chain(as_meant) {
        f.token.algorithm = file::AlgorithmName::HS256;
        f.token.secret_env = Some(STAND_IN_ENV.into());
        f.token.secret_file = None;
        f.token.private_key_file = None;
        f.token.verify_keys.clear();
    }
    note
}

/// The shape problems, then the others except those a shape problem explains: a key that
/// did not have the right shape was dropped and took its default, and anything the default
/// then trips over is noise beside the shape problem itself.
fn beside_shape_problems(shape_problems: Vec<Problem>, found: Vec<Problem>) -> Vec<Problem> {
    let covered = |key: &str| {
        shape_problems.iter().any(|p| {
            key == p.key
                || key
                    .strip_prefix(p.key.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    };
    let mut problems = shape_problems.clone();
    problems.extend(found.into_iter().filter(|p| !covered(&p.key)));
    problems
}

/// 32 random bytes (hex) for explain's stand-in signing key; never used to sign.
fn throwaway_secret() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness the stand-in is all zeros: explain never signs with it anyway.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::routing::table::{AuthMode, Matcher};

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // syntax and shape
            ("[server\nlisten = \"x\"", "line ", ""),
            ("[nonsense]\nx = 1", "nonsense", "unknown key"),
            ("[server]\nlistn = \"127.0.0.1:1\"", "server.listn", "unknown key"),
            ("[server]\nmax_body_bytes = \"big\"", "server.max_body_bytes", "invalid type"),
        ];
        assert_rules(cases);
    }

    #[test]
    fn at_least_one_upstream_and_one_route() {
        let found = problems("");
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["upstreams", "routes"], "{found:?}");
    }

    #[test]
    fn a_mistyped_key_reports_nothing_its_default_caused() {
        // The default access_ttl (2h) would trip refresh_ttl (90m), which was fine as meant.
        let text = format!("{MINIMAL}\n[token]\nacess_ttl = \"1h\"\nrefresh_ttl = \"90m\"\n");
        let found = problems(&text);
        assert_eq!(
            found,
            [Problem {
                key: "token.acess_ttl".into(),
                message: "unknown key acess_ttl, did you mean access_ttl?".into(),
            }]
        );
        // A problem that is there as meant too is still reported.
        let text = format!("{MINIMAL}\n[token]\nacess_ttl = \"1h\"\nrefresh_ttl = \"30m\"\n");
        let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["token.acess_ttl", "token.refresh_ttl"]);
    }

    #[test]
    fn explain_stands_in_for_signing_keys_that_do_not_resolve() {
        let no_env = |_: &str| None;
        let base = Path::new(FIXTURES);
        let run = |text: &str| build(text, base.into(), base, &no_env, Purpose::Explain);
        // The secret's variable is not set.
        let (_, notes) = run(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with(
                "token.secret_env: environment variable AUTHGATE_JWT_SECRET is not set"
            ),
            "{notes:?}"
        );
        // A missing private key file, and verify keys whose secrets are unset.
        let text = format!(
            "{MINIMAL}\n[token]\nalgorithm = \"ES256\"\nprivate_key_file = \"nope.pem\"\n\
             [[token.verify_keys]]\nkid = \"k0\"\nsecret_env = \"UNSET\"\nalgorithm = \"HS256\"\n"
        );
        let (_, notes) = run(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            notes[0].starts_with("token.private_key_file: cannot read"),
            "{notes:?}"
        );
        // Everything else is still checked.
        let text = format!("{MINIMAL}\n[server]\nlisten = \"nowhere\"\n");
        let err = run(&text).err().expect("a bad listen address");
        assert_eq!(err.0[0].key, "server.listen");
        // Serving never stands in.
        assert!(build(MINIMAL, base.into(), base, &no_env, Purpose::Serve).is_err());
    }

    #[test]
    fn three_problems_are_all_reported() {
        let text = r#"
[server]
listen = "nowhere"

[token]
access_ttl = "forever"

[[upstreams]]
name = "app"
urls = ["http://127.0.0.1:9000"]

[[routes]]
path = "/"
upstream = "app"

[[routes]]
path = "/old"
upstream = "legacy"
"#;
        let err = load_fixture(text).err().expect("three problems");
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["server.listen", "token.access_ttl", "routes[1].upstream"],
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("routes[1].upstream: no upstream named \"legacy\""),
            "{err}"
        );
    }

    #[test]
    fn shape_and_meaning_problems_are_reported_together() {
        let text =
            format!("{MINIMAL}\n[server]\nlisten = 8080\nidle_timeout = \"1 minnit\"\ntypo = 1\n");
        let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            ["server.listen", "server.typo", "server.idle_timeout"]
        );
    }

    #[test]
    fn problems_never_show_secrets() {
        let text = format!("{MINIMAL}\n[token]\nsecret_env = \"SHORT_SECRET\"\n");
        let err = load_fixture(&text).err().expect("short secret");
        assert!(!err.to_string().contains("short,"), "{err}");
        assert!(!format!("{err:?}").contains("\"short\""), "{err:?}");
        let text = format!("{MINIMAL}\n[session]\nredis_url = \"http://:hunter2@redis:6379\"\n");
        let err = load_fixture(&text).err().expect("bad redis url");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn root_gateway_toml_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
        let text = std::fs::read_to_string(path).expect("gateway.toml at the repo root");
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        let loaded = match load_str(&text, base, &env) {
            Ok(loaded) => loaded,
            Err(e) => panic!("gateway.toml: {e}"),
        };
        let c = &loaded.config;
        assert_eq!(
            c.server.admin_listen,
            Some("127.0.0.1:9091".parse().unwrap())
        );
        assert_eq!(c.upstreams[0].name, "legacy");
        assert_eq!(c.routes.routes().len(), 2);
        assert_eq!(c.routes.routes()[0].auth, AuthMode::Public);
        let LoginBackend::UsersFile { users, .. } = &c.login.backend else {
            panic!("users_file backend");
        };
        let alice = &users["alice"];
        assert_eq!(alice.id, "1001");
        assert_eq!(alice.roles, ["admin"]);
    }

    #[test]
    fn missing_sections_take_their_defaults() {
        let c = ok(MINIMAL).config;
        assert_eq!(c.source, Path::new(FIXTURES));
        let s = &c.server;
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.admin_listen, None);
        assert!(s.tls.is_none());
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.send_timeout, Duration::from_secs(60));
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        assert_eq!(s.max_body_bytes, 10_485_760);
        assert_eq!(s.max_header_bytes, 16_384);
        assert_eq!(s.header_timeout, Duration::from_secs(10));
        assert_eq!(s.max_connections, 10_000);
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.admin_token, None);

        let t = &c.token;
        assert_eq!(t.access_ttl, Duration::from_secs(2 * 3600));
        assert_eq!(t.refresh_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(t.max_lifetime, None);
        assert_eq!(t.silent_refresh_window, Duration::from_secs(30 * 60));
        assert_eq!(t.refresh_header, "refresh-token");
        assert_eq!(t.cookie, None);
        let rules = t.keys.rules();
        assert_eq!(rules.issuer, "authgate");
        assert_eq!(rules.audience, "legacy-app");
        assert_eq!(rules.leeway, Duration::from_secs(30));

        let se = &c.session;
        assert_eq!(se.store, StoreKind::Memory);
        assert_eq!(se.mode, SessionMode::Stateful);
        assert_eq!(se.redis_url, "redis://127.0.0.1:6379/0");
        assert!(se.redis_cluster.is_empty());
        assert_eq!(se.key_prefix, "authgate:");
        assert_eq!(se.on_store_error, OnStoreError::Deny);
        assert_eq!(se.refresh_reuse_grace, Duration::from_secs(10));

        let p = &c.platforms;
        assert_eq!(p.header, "x-platform");
        assert_eq!(p.default, "web");
        assert_eq!(p.allowed, ["web", "h5", "app"]);
        let want: HashMap<String, u32> = [("web", 1), ("h5", 1), ("app", 1)]
            .map(|(k, v)| (k.to_owned(), v))
            .into();
        assert_eq!(p.max_sessions, want);

        let l = &c.login;
        assert_eq!(l.prefix, "/auth");
        let LoginBackend::UsersFile { path, users } = &l.backend else {
            panic!("users_file is the default backend");
        };
        assert_eq!(path, &Path::new(FIXTURES).join("users.toml"));
        assert!(users.contains_key("alice"));
        assert_eq!(l.lockout.max_failures, 5);
        assert_eq!(l.lockout.max_failures_per_ip, 50);
        assert_eq!(l.lockout.window, Duration::from_secs(60));
        assert_eq!(l.lockout.duration, Duration::from_secs(600));
        assert_eq!(
            l.captcha,
            Captcha {
                mode: CaptchaMode::Off,
                ttl: Duration::from_secs(120),
            }
        );

        let i = &c.identity;
        let names = [
            &i.user_id,
            &i.user_name,
            &i.tenant,
            &i.roles,
            &i.session_id,
            &i.platform,
        ];
        let want = [
            "x-user-id",
            "x-user-name",
            "x-tenant-id",
            "x-user-roles",
            "x-session-id",
            "x-user-platform",
        ];
        for (name, want) in names.into_iter().zip(want) {
            assert_eq!(name, want);
        }
        assert!(i.forward_authorization);

        let co = &c.cors;
        assert!(co.allowed_origins.is_empty());
        assert_eq!(
            co.allowed_headers,
            "Authorization, Content-Type, X-Platform, X-Device-Id"
        );
        assert!(!co.allow_credentials);
        assert_eq!(co.max_age, Duration::from_secs(600));

        assert_eq!(c.upstreams[0].connect_timeout, Duration::from_secs(2));
        let route = &c.routes.routes()[0];
        assert_eq!(route.auth, AuthMode::Required, "auth left out fails closed");
        assert_eq!(route.methods, None);
    }

    /// Every duration key takes humantime's compound forms (issue 12), not only the one the
    /// duration module's own tests parse.
    #[test]
    fn durations_take_compound_forms_in_every_section() {
        let text = r#"
[server]
request_timeout = "1m 30s"
shutdown_grace = "0.5m"

[token]
access_ttl = "1h30m"
refresh_ttl = "1w"
silent_refresh_window = "90s"

[session]
refresh_reuse_grace = "1s500ms"

[login.lockout]
window = "2 minutes"

[cors]
max_age = "1h 1s"

[[upstreams]]
name = "app"
urls = ["http://127.0.0.1:9000"]
connect_timeout = "2500ms"

[[routes]]
path = "/"
upstream = "app"
"#;
        let c = ok(text).config;
        let secs = Duration::from_secs;
        assert_eq!(c.server.request_timeout, secs(90));
        assert_eq!(c.server.shutdown_grace, secs(30));
        assert_eq!(c.token.access_ttl, secs(5_400));
        assert_eq!(c.token.refresh_ttl, secs(7 * 86_400));
        assert_eq!(c.token.silent_refresh_window, secs(90));
        assert_eq!(c.session.refresh_reuse_grace, Duration::from_millis(1_500));
        assert_eq!(c.login.lockout.window, secs(120));
        assert_eq!(c.cors.max_age, secs(3_601));
        assert_eq!(c.upstreams[0].connect_timeout, Duration::from_millis(2_500));
    }

    #[test]
    fn values_are_normalised() {
        let text = r#"
[server]
admin_listen = "[::1]:9091"
admin_token_env = "ADMIN_TOKEN"
trusted_proxies = ["10.1.2.3", "192.168.7.9/16", "::1"]

[token]
secret_file = "secret.txt"
max_lifetime = "90d"
cookie = "ag_token"

[[token.verify_keys]]
kid = "k0"
secret_env = "OLD_SECRET"

[[token.verify_keys]]
kid = "k-es"
algorithm = "ES256"
public_key_file = "ec-public.pem"

[platforms]
allowed = ["web", "app"]
max_sessions = { web = 3 }

[cors]
allowed_origins = ["HTTPS://App.Example.com", "http://localhost:3000"]
allowed_headers = ["authorization"]

[[upstreams]]
name = "app"
urls = ["http://legacy", "http://127.0.0.1:9000/base/"]

[[routes]]
path = "/api/"
upstream = "app"
methods = ["get", "Post", "GET"]
strip_prefix = "/api/"

[[routes]]
glob = "/files/*/meta"
upstream = "app"
auth = "required"
require_roles = ["admin"]

[[routes]]
exact = "/"
upstream = "app"
auth = "public"
"#;
        let c = ok(text).config;
        assert_eq!(c.server.admin_token.as_deref(), Some("admin-token-value"));
        let proxies: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(proxies, ["10.1.2.3/32", "192.168.0.0/16", "::1/128"]);
        assert_eq!(c.token.max_lifetime, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(c.token.cookie.as_deref(), Some("ag_token"));
        assert_eq!(c.platforms.max_sessions.len(), 1);
        assert_eq!(c.platforms.max_sessions["web"], 3);
        assert_eq!(
            c.cors.allowed_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(c.cors.allowed_headers, "authorization");

        let targets = &c.upstreams[0].targets;
        assert_eq!(targets[0].authority.as_str(), "legacy:80");
        assert_eq!(targets[0].base_path, "");
        assert_eq!(targets[1].authority.as_str(), "127.0.0.1:9000");
        assert_eq!(targets[1].base_path, "/base");

        let routes = c.routes.routes();
        assert_eq!(routes[0].matcher, Matcher::Prefix("/api".into()));
        assert_eq!(routes[0].label, "/api/");
        assert_eq!(
            routes[0].methods,
            Some(vec![http::Method::GET, http::Method::POST])
        );
        assert_eq!(routes[0].strip_prefix.as_deref(), Some("/api"));
        assert_eq!(
            routes[1].matcher,
            Matcher::Glob(vec![Some("files".into()), None, Some("meta".into())])
        );
        assert_eq!(routes[1].auth, AuthMode::Required);
        assert_eq!(routes[1].require_roles, ["admin"]);
        assert_eq!(routes[2].matcher, Matcher::Exact("/".into()));
        assert_eq!(routes[2].index, 2);
        assert!(routes.iter().all(|r| r.upstream == 0));
    }

    #[test]
    fn optional_backends_and_listeners() {
        let text = format!(
            "{MINIMAL}\n[server]\nadmin_listen = \"\"\ntls_cert_file = \"tls-cert.pem\"\ntls_key_file = \"tls-key.pem\"\n\
             [login]\nbackend = \"upstream\"\nupstream_url = \"https://legacy.example.com/api/login\"\n\
             user_id_pointer = \"/data/id\"\nroles_pointer = \"/data/ro~1les\"\n"
        );
        let c = ok(&text).config;
        assert_eq!(c.server.admin_listen, None);
        let tls = c.server.tls.expect("tls");
        assert_eq!(tls.cert, Path::new(FIXTURES).join("tls-cert.pem"));
        let LoginBackend::Upstream(up) = &c.login.backend else {
            panic!("upstream backend");
        };
        assert_eq!(up.url, "https://legacy.example.com/api/login");
        assert_eq!(up.user_id_pointer, "/data/id");
        assert_eq!(up.user_name_pointer, None);
        assert_eq!(up.roles_pointer.as_deref(), Some("/data/ro~1les"));

        let text = format!(
            "{MINIMAL}\n[session]\nmode = \"stateless\"\n[login]\nbackend = \"none\"\nusers_file = \"nobody.toml\"\n"
        );
        assert!(matches!(ok(&text).config.login.backend, LoginBackend::None));
    }

    #[test]
    fn ignored_keys_are_warned_about() {
        let text = format!(
            "{MINIMAL}\n[login]\nuser_id_pointer = \"/id\"\n[session]\nredis_cluster = [\"redis://a:1\"]\n"
        );
        let warnings = ok(&text).warnings;
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("login.user_id_pointer: ignored")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("session.redis_cluster: ignored")),
            "{warnings:?}"
        );
    }

    #[test]
    fn load_reads_the_file_and_its_folder() {
        let err = load(Path::new("/nonexistent/authgate/gateway.toml"))
            .err()
            .expect("no file");
        assert_eq!(err.0.len(), 1);
        assert!(
            err.0[0].message.contains("cannot read the config file"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "{MINIMAL}\n[token]\nsecret_file = \"s.key\"\n[session]\nmode = \"stateless\"\n[login]\nbackend = \"none\"\n"
        );
        std::fs::write(dir.path().join("gateway.toml"), text).expect("write config");
        std::fs::write(dir.path().join("s.key"), SECRET).expect("write secret");
        let loaded = load(&dir.path().join("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.config.source, dir.path().join("gateway.toml"));
    }
}
