//! The validated configuration: what the gateway runs on.
//!
//! `file.rs` mirrors `gateway.toml` with serde (unknown keys rejected, every default filled in);
//! this module turns that mirror into a [`Config`], resolving secrets from env vars and files,
//! loading key files, building the route table, and collecting *every* problem with its key
//! path (`routes[2].upstream: no upstream named "legacy"`) instead of stopping at the first.
//! `reload.rs` swaps a new, fully validated snapshot in on SIGHUP, admin reload or file change.

pub mod duration;
pub mod file;
pub mod reload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::pipeline::route::RouteTable;
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
    pub platforms: Platforms,
    pub login: Login,
    pub identity: Identity,
    pub cors: Cors,
    pub upstreams: Vec<Upstream>,
    pub routes: RouteTable,
}

pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    /// A client that takes no response byte for this long is cut (both connections closed).
    pub send_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    /// How request paths are canonicalised (`allow_encoded_percent`).
    pub path_rules: crate::pipeline::path::PathRules,
    pub trusted_proxies: Vec<IpNet>,
    /// Resolved from `admin_token_env`; `None` turns `/admin/*` off.
    pub admin_token: Option<String>,
    /// Client connections on `listen` at once (the admin listener is not counted).
    pub max_connections: usize,
}

pub struct TlsFiles {
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
pub enum SessionMode {
    Stateful,
    Stateless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Deny,
    AllowStateless,
}

pub struct Session {
    pub store: StoreKind,
    pub mode: SessionMode,
    pub redis_url: String,
    /// Non-empty: Redis Cluster with these seed nodes instead of `redis_url`.
    pub redis_cluster: Vec<String>,
    pub key_prefix: String,
    pub on_store_error: OnStoreError,
    pub refresh_reuse_grace: Duration,
}

pub struct Platforms {
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
    pub backend: LoginBackend,
    pub lockout: Lockout,
}

pub enum LoginBackend {
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
pub struct UpstreamLogin {
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
pub struct SuccessRule {
    pub pointer: String,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Lockout {
    pub max_failures: u32,
    pub max_failures_per_ip: u32,
    pub window: Duration,
    pub duration: Duration,
}

pub struct Identity {
    pub user_id: HeaderName,
    pub user_name: HeaderName,
    pub tenant: HeaderName,
    pub roles: HeaderName,
    pub session_id: HeaderName,
    pub platform: HeaderName,
    pub forward_authorization: bool,
}

pub struct Cors {
    /// Empty: CORS off.
    pub allowed_origins: Vec<String>,
    /// Prebuilt `Access-Control-Allow-Headers` value.
    pub allowed_headers: HeaderValue,
    pub allow_credentials: bool,
    pub max_age: Duration,
}

pub struct Upstream {
    pub name: String,
    /// `host:port` targets, tried round robin; `http://` only.
    pub targets: Vec<UpstreamTarget>,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// `host:port` as written (a name is resolved at connect time).
    pub authority: http::uri::Authority,
    /// Path prefix of the url, without trailing slash ("" for none).
    pub base_path: String,
}

/// The refresh-token derivation key: HMAC-SHA256 of a fixed label under the signing key's bytes.
fn refresh_secret(material: &crate::tokens::KeyMaterial) -> [u8; 32] {
    use crate::tokens::KeyMaterial;
    let bytes = match material {
        KeyMaterial::Secret(b) | KeyMaterial::PrivatePem(b) | KeyMaterial::PublicPem(b) => b,
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes);
    let tag = aws_lc_rs::hmac::sign(&key, b"authgate refresh-token derivation key v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
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
pub use crate::tokens::MIN_SECRET_BYTES;

/// Smallest `server.max_header_bytes` accepted.
pub const MIN_HEADER_BYTES: u64 = 1024;

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
            notes.extend(
                unresolved_signing_key(&parsed.token, base_dir, env).map(|why| {
                    format!("{why}; explain signs nothing, so a throwaway secret stands in")
                }),
            );
            for f in std::iter::once(&mut parsed).chain(as_meant.as_mut()) {
                f.token.algorithm = file::AlgorithmName::HS256;
                f.token.secret_env = Some(STAND_IN_ENV.into());
                f.token.secret_file = None;
                f.token.private_key_file = None;
                f.token.verify_keys.clear();
            }
            &stand_in
        }
    };
    let mut cx = Cx {
        base_dir,
        env,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let built = cx.config(&parsed, source.clone());
    // A key that did not have the right shape was dropped and took its default; anything the
    // default then trips over is noise beside the shape problem itself.
    let covered = |key: &str| {
        shape_problems.iter().any(|p| {
            key == p.key
                || key
                    .strip_prefix(p.key.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    };
    // The same for a mistyped key (`acess_ttl`): its default may trip up another key
    // (`refresh_ttl` no longer longer than `access_ttl`). Such a problem is gone when the file
    // is read as meant (the key renamed as suggested), and then it is not reported; a problem
    // at a key that the as-meant reading has too is real either way.
    if let Some(meant) = &as_meant {
        let mut other = Cx {
            base_dir,
            env,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let _ = other.config(meant, source);
        cx.problems
            .retain(|p| other.problems.iter().any(|q| q.key == p.key));
    }
    let mut problems = shape_problems.clone();
    problems.extend(cx.problems.into_iter().filter(|p| !covered(&p.key)));
    match built {
        Some(config) if problems.is_empty() => {
            let mut warnings = cx.warnings;
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

/// 32 random bytes (hex) for explain's stand-in signing key; never used to sign.
fn throwaway_secret() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness the stand-in is all zeros: explain never signs with it anyway.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Validation state: where relative paths start, how env vars are read, what went wrong.
struct Cx<'a> {
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

/// Stands in for a header name that did not validate (the config is refused anyway).
const PLACEHOLDER_HEADER: HeaderName = HeaderName::from_static("x-invalid");

/// Stands in for an address that did not validate (the config is refused anyway).
const PLACEHOLDER_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

impl Cx<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, key: &str, message: impl std::fmt::Display) {
        self.warnings.push(format!("{key}: {message}"));
    }

    /// Every section, in file order. `None` when some part could not be built at all (the
    /// problems say why); a `Some` is only used when there are no problems.
    fn config(&mut self, f: &file::GatewayFile, source: PathBuf) -> Option<Config> {
        let server = self.server(&f.server);
        let no_login = f.login.backend == file::BackendName::None;
        let token = self.token(&f.token, no_login);
        let session = self.session(&f.session);
        let platforms = self.platforms(&f.platforms);
        let login = self.login(&f.login);
        if let Some(t) = &token {
            self.sessions_possible(t, &session, no_login);
        }
        let identity = self.identity(&f.identity, &f.token.refresh_header);
        let cors = self.cors(&f.cors);
        let upstreams = self.upstreams(&f.upstreams);
        let routes = self.routes(&f.routes, &f.upstreams, f.server.route_case_sensitive);
        Some(Config {
            source,
            server,
            token: token?,
            session,
            platforms,
            login,
            identity,
            cors,
            upstreams,
            routes,
        })
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    fn read(&mut self, key: &str, path: &Path) -> Option<Vec<u8>> {
        let resolved = self.resolve(path);
        match std::fs::read(&resolved) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problem(key, format!("cannot read {}: {e}", resolved.display()));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, text: &str) -> Duration {
        duration::parse(text).unwrap_or_else(|| {
            self.problem(
                key,
                format!("{text:?} is not a duration; write e.g. \"500ms\", \"30s\", \"10m\", \"2h\", \"30d\""),
            );
            Duration::ZERO
        })
    }

    /// A duration the session store keeps (48-bit Unix milliseconds, `session/record.rs`):
    /// refused, not saturated, beyond [`crate::session::time::MAX_STORE_SPAN`].
    fn store_span(&mut self, key: &str, d: Duration) -> Duration {
        let max = crate::session::time::MAX_STORE_SPAN;
        if d > max {
            self.problem(
                key,
                format!(
                    "{} is longer than the session store can represent (at most {})",
                    duration::format(d),
                    duration::format(max)
                ),
            );
        }
        d
    }

    /// A duration that ends up in a whole-seconds field (a token's `exp`, the verifier's
    /// leeway, `Access-Control-Max-Age`): refused unless a whole number of seconds, rather
    /// than cut.
    fn whole_seconds(&mut self, key: &str, d: Duration, why: &str) -> Duration {
        if d.subsec_nanos() != 0 {
            self.problem(
                key,
                format!(
                    "{} is not a whole number of seconds, which {why} needs",
                    duration::format(d)
                ),
            );
        }
        d
    }

    /// A duration that must be more than zero.
    fn positive(&mut self, key: &str, text: &str) -> Duration {
        let before = self.problems.len();
        let d = self.duration(key, text);
        if d.is_zero() && self.problems.len() == before {
            self.problem(key, "must be more than 0s");
        }
        d
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(
                key,
                format!("{text:?} is not an IP:port address such as \"127.0.0.1:8080\" or \"[::1]:8080\""),
            );
            PLACEHOLDER_ADDR
        })
    }

    fn header_name(&mut self, key: &str, text: &str) -> HeaderName {
        HeaderName::from_bytes(text.as_bytes()).unwrap_or_else(|_| {
            self.problem(key, format!("{text:?} is not a valid header name"));
            PLACEHOLDER_HEADER
        })
    }

    /// At least 1 and at most `u32::MAX`.
    fn count(&mut self, key: &str, n: i64) -> u32 {
        match u32::try_from(n) {
            Ok(n) if n >= 1 => n,
            _ => {
                self.problem(
                    key,
                    format!("must be a whole number from 1 to {}", u32::MAX),
                );
                1
            }
        }
    }

    fn server(&mut self, f: &file::ServerFile) -> Server {
        let listen = self.socket_addr("server.listen", &f.listen);
        let admin_listen = match f.admin_listen.as_deref() {
            None | Some("") => None,
            Some(text) => {
                let addr = self.socket_addr("server.admin_listen", text);
                if addr == listen && addr.port() != 0 {
                    self.problem(
                        "server.admin_listen",
                        "is the same address as server.listen",
                    );
                }
                Some(addr)
            }
        };
        let tls = match (&f.tls_cert_file, &f.tls_key_file) {
            (None, None) => None,
            (Some(_), None) => {
                self.problem("server.tls_key_file", "required when tls_cert_file is set");
                None
            }
            (None, Some(_)) => {
                self.problem("server.tls_cert_file", "required when tls_key_file is set");
                None
            }
            (Some(cert), Some(key)) => {
                if let Some(pem) = self.read("server.tls_cert_file", cert) {
                    let certs = rustls_pemfile::certs(&mut pem.as_slice())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap_or_default();
                    if certs.is_empty() {
                        self.problem(
                            "server.tls_cert_file",
                            format!("{} holds no PEM certificate", cert.display()),
                        );
                    }
                }
                if let Some(pem) = self.read("server.tls_key_file", key) {
                    if !matches!(
                        rustls_pemfile::private_key(&mut pem.as_slice()),
                        Ok(Some(_))
                    ) {
                        self.problem(
                            "server.tls_key_file",
                            format!("{} holds no PEM private key", key.display()),
                        );
                    }
                }
                Some(TlsFiles {
                    cert: self.resolve(cert),
                    key: self.resolve(key),
                })
            }
        };
        let request_timeout = self.positive("server.request_timeout", &f.request_timeout);
        let idle_timeout = self.positive("server.idle_timeout", &f.idle_timeout);
        let send_timeout = self.positive("server.send_timeout", &f.send_timeout);
        let shutdown_grace = self.duration("server.shutdown_grace", &f.shutdown_grace);
        let header_timeout = self.positive("server.header_timeout", &f.header_timeout);
        let max_header_bytes = match usize::try_from(f.max_header_bytes) {
            Ok(n) if f.max_header_bytes >= MIN_HEADER_BYTES => n,
            _ => {
                self.problem(
                    "server.max_header_bytes",
                    format!("must be at least {MIN_HEADER_BYTES}"),
                );
                MIN_HEADER_BYTES as usize
            }
        };
        let mut trusted_proxies = Vec::new();
        for (i, text) in f.trusted_proxies.iter().enumerate() {
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net.trunc()),
                Err(_) => self.problem(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{text:?} is not an IP address or CIDR such as \"10.0.0.0/8\""),
                ),
            }
        }
        let max_connections = self.count("server.max_connections", f.max_connections) as usize;
        let admin_token = if f.admin_token_env.is_empty() {
            None
        } else {
            (self.env)(&f.admin_token_env).filter(|t| !t.is_empty())
        };
        Server {
            listen,
            admin_listen,
            tls,
            request_timeout,
            idle_timeout,
            send_timeout,
            shutdown_grace,
            max_body_bytes: f.max_body_bytes,
            max_header_bytes,
            header_timeout,
            path_rules: crate::pipeline::path::PathRules {
                allow_encoded_percent: f.allow_encoded_percent,
            },
            trusted_proxies,
            admin_token,
            max_connections,
        }
    }

    /// An HMAC secret from an env var or a file; `None` (with a problem) when it does not
    /// resolve or is too short. Messages name the variable or file, never the secret.
    fn secret(
        &mut self,
        key_prefix: &str,
        env: Option<&str>,
        path: Option<&Path>,
    ) -> Option<Vec<u8>> {
        let (key, secret, from) = match (env, path) {
            (_, Some(path)) => {
                let key = format!("{key_prefix}.secret_file");
                let mut bytes = self.read(&key, path)?;
                // `echo secret > file` leaves a newline that is not part of the secret.
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                (key, bytes, path.display().to_string())
            }
            (Some(""), None) => {
                let key = format!("{key_prefix}.secret_env");
                self.problem(key, "must name an environment variable");
                return None;
            }
            (Some(name), None) => {
                let key = format!("{key_prefix}.secret_env");
                let Some(value) = (self.env)(name) else {
                    self.problem(key, format!("environment variable {name} is not set"));
                    return None;
                };
                (key, value.into_bytes(), name.to_owned())
            }
            (None, None) => return None,
        };
        if secret.len() < MIN_SECRET_BYTES {
            self.problem(
                key,
                format!(
                    "the secret in {from} is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                    secret.len()
                ),
            );
            return None;
        }
        Some(secret)
    }

    /// `login.backend = "none"` with `session.mode = "stateful"` needs sessions that some other
    /// authgate creates in a shared store, for tokens signed by a key this one knows (the
    /// signing key or a verify key). Otherwise every own token would be refused as
    /// `session_revoked`, while `check` said all was well.
    fn sessions_possible(&mut self, token: &Token, session: &Session, no_login: bool) {
        if !no_login || session.mode != SessionMode::Stateful {
            return;
        }
        let own_keys = token.keys.can_sign() || token.keys.verify_key_count() > 0;
        let why = if session.store == StoreKind::Memory {
            "with login.backend = \"none\" and the memory store no session is ever created, \
             so every token would be refused as session_revoked"
        } else if !own_keys {
            "with login.backend = \"none\" and no signing or verify key, no token can name a \
             session of the store"
        } else {
            return;
        };
        self.problem(
            "session.mode",
            format!(
                "\"stateful\" cannot work here: {why}; set mode = \"stateless\", or share a \
                 Redis store with the authgate that issues the tokens (its key in \
                 token.verify_keys)"
            ),
        );
    }

    /// `signing_optional` (login.backend = "none"): a signing key that is not configured at all
    /// (its variable unset, no key file) is left out; the ring then only verifies.
    fn token(&mut self, f: &file::TokenFile, signing_optional: bool) -> Option<Token> {
        use crate::tokens::{KeyMaterial, KeySpec, TokenRules};

        let alg = f.algorithm;
        for (key, value) in [
            ("token.kid", &f.kid),
            ("token.issuer", &f.issuer),
            ("token.audience", &f.audience),
        ] {
            if value.is_empty() {
                self.problem(key, "must not be empty");
            }
        }
        let signing = if alg.is_symmetric() {
            if f.private_key_file.is_some() {
                self.problem(
                    "token.private_key_file",
                    format!("not used by {alg:?}, which signs with secret_env or secret_file"),
                );
            }
            if f.secret_env.is_some() && f.secret_file.is_some() {
                self.problem(
                    "token.secret_file",
                    "set either secret_env or secret_file, not both",
                );
                None
            } else {
                let env = f.secret_env.as_deref().unwrap_or(file::DEFAULT_SECRET_ENV);
                let env = if f.secret_file.is_some() {
                    None
                } else {
                    Some(env)
                };
                if signing_optional
                    && f.secret_file.is_none()
                    && (self.env)(env.unwrap_or("")).is_none()
                {
                    Some(None)
                } else {
                    self.secret("token", env, f.secret_file.as_deref())
                        .map(|s| Some(KeyMaterial::Secret(s)))
                }
            }
        } else {
            for (key, set) in [
                ("token.secret_env", f.secret_env.is_some()),
                ("token.secret_file", f.secret_file.is_some()),
            ] {
                if set {
                    self.problem(
                        key,
                        format!(
                            "not used by {alg:?}, which signs with private_key_file; remove it"
                        ),
                    );
                }
            }
            match &f.private_key_file {
                None if signing_optional => Some(None),
                None => {
                    self.problem("token.private_key_file", format!("required for {alg:?}"));
                    None
                }
                Some(path) => self
                    .read("token.private_key_file", path)
                    .map(|pem| Some(KeyMaterial::PrivatePem(pem))),
            }
        };

        let mut verify = Vec::new();
        let mut kids = vec![f.kid.as_str()];
        for (i, vk) in f.verify_keys.iter().enumerate() {
            let prefix = format!("token.verify_keys[{i}]");
            // A key with a bad kid stays out of the ring, which would only report it again.
            let kid_ok = !vk.kid.is_empty() && !kids.contains(&vk.kid.as_str());
            if vk.kid.is_empty() {
                self.problem(format!("{prefix}.kid"), "required");
            } else if !kid_ok {
                self.problem(
                    format!("{prefix}.kid"),
                    format!("{:?} is already used by another key", vk.kid),
                );
            }
            kids.push(&vk.kid);
            let vk_alg = vk.algorithm.unwrap_or(alg);
            let sources = [
                vk.secret_env.is_some(),
                vk.secret_file.is_some(),
                vk.public_key_file.is_some(),
            ];
            let material = match sources.iter().filter(|s| **s).count() {
                0 => {
                    let need = if vk_alg.is_symmetric() {
                        "secret_env or secret_file"
                    } else {
                        "public_key_file"
                    };
                    self.problem(prefix.clone(), format!("needs {need}"));
                    None
                }
                1 if vk_alg.is_symmetric() => {
                    if vk.public_key_file.is_some() {
                        self.problem(
                            format!("{prefix}.public_key_file"),
                            format!("not used by {vk_alg:?}; give secret_env or secret_file"),
                        );
                        None
                    } else {
                        self.secret(&prefix, vk.secret_env.as_deref(), vk.secret_file.as_deref())
                            .map(KeyMaterial::Secret)
                    }
                }
                1 => match &vk.public_key_file {
                    None => {
                        let key = if vk.secret_env.is_some() {
                            "secret_env"
                        } else {
                            "secret_file"
                        };
                        self.problem(
                            format!("{prefix}.{key}"),
                            format!("not used by {vk_alg:?}; give public_key_file"),
                        );
                        None
                    }
                    Some(path) => self
                        .read(&format!("{prefix}.public_key_file"), path)
                        .map(KeyMaterial::PublicPem),
                },
                _ => {
                    self.problem(
                        prefix.clone(),
                        "set only one of secret_env, secret_file, public_key_file",
                    );
                    None
                }
            };
            if let (Some(material), true) = (material, kid_ok) {
                verify.push(KeySpec {
                    kid: vk.kid.clone(),
                    algorithm: vk_alg.to_jwt(),
                    material,
                });
            }
        }

        let access_ttl = self.positive("token.access_ttl", &f.access_ttl);
        let access_ttl = self.whole_seconds("token.access_ttl", access_ttl, "a token's exp");
        let access_ttl = self.store_span("token.access_ttl", access_ttl);
        let refresh_ttl = self.duration("token.refresh_ttl", &f.refresh_ttl);
        let refresh_ttl = self.store_span("token.refresh_ttl", refresh_ttl);
        let max_lifetime = self.duration("token.max_lifetime", &f.max_lifetime);
        let max_lifetime = self.store_span("token.max_lifetime", max_lifetime);
        let silent_refresh_window =
            self.duration("token.silent_refresh_window", &f.silent_refresh_window);
        let silent_refresh_window = self.whole_seconds(
            "token.silent_refresh_window",
            silent_refresh_window,
            "the comparison with a token's exp",
        );
        let leeway = self.duration("token.leeway", &f.leeway);
        let leeway = self.whole_seconds("token.leeway", leeway, "the token verifier");
        let leeway = self.store_span("token.leeway", leeway);
        if !access_ttl.is_zero() {
            if refresh_ttl <= access_ttl && duration::parse(&f.refresh_ttl).is_some() {
                self.problem(
                    "token.refresh_ttl",
                    format!("must be longer than access_ttl ({})", f.access_ttl),
                );
            }
            if silent_refresh_window >= access_ttl
                && duration::parse(&f.silent_refresh_window).is_some()
            {
                self.problem(
                    "token.silent_refresh_window",
                    format!("must be shorter than access_ttl ({})", f.access_ttl),
                );
            }
            if !max_lifetime.is_zero() && max_lifetime < access_ttl {
                self.problem(
                    "token.max_lifetime",
                    format!(
                        "must be 0s (no cap) or at least access_ttl ({})",
                        f.access_ttl
                    ),
                );
            }
        }
        let refresh_header = self.header_name("token.refresh_header", &f.refresh_header);
        let cookie = if f.cookie.is_empty() {
            None
        } else {
            if !f.cookie.bytes().all(is_tchar) {
                self.problem(
                    "token.cookie",
                    format!("{:?} is not a valid cookie name", f.cookie),
                );
            }
            Some(f.cookie.clone())
        };

        // `signing` is `None` when the key did not resolve (a problem says why), `Some(None)`
        // when it may be and was left out.
        let signing = signing?.map(|material| KeySpec {
            kid: f.kid.clone(),
            algorithm: alg.to_jwt(),
            material,
        });
        if signing.is_none() {
            self.warn(
                "token",
                "no signing key (login.backend = \"none\"): the gateway signs nothing, so no \
                 token is silently refreshed",
            );
            if verify.is_empty() {
                self.problem(
                    "token.verify_keys",
                    "without a signing key at least one verify key is needed, or no token \
                     could ever be accepted",
                );
            }
        }
        let refresh_secret = match &signing {
            Some(spec) => refresh_secret(&spec.material),
            // Nothing is minted, so no refresh token is ever derived with it.
            None => [0; 32],
        };
        let rules = TokenRules {
            issuer: f.issuer.clone(),
            audience: f.audience.clone(),
            leeway,
            access_ttl,
        };
        let keys = match KeyRing::new(signing, verify, rules) {
            Ok(keys) => keys,
            Err(e) => {
                self.problem("token", e.0);
                return None;
            }
        };
        Some(Token {
            keys,
            access_ttl,
            refresh_ttl,
            max_lifetime: (!max_lifetime.is_zero()).then_some(max_lifetime),
            silent_refresh_window,
            refresh_header,
            cookie,
            refresh_secret,
        })
    }

    fn session(&mut self, f: &file::SessionFile) -> Session {
        let redis_ok = |url: &str| {
            ["redis://", "rediss://"].iter().any(|scheme| {
                url.strip_prefix(scheme)
                    .is_some_and(|rest| !rest.is_empty())
            })
        };
        // The URL may carry a password: messages never repeat it.
        if !redis_ok(&f.redis_url) {
            self.problem("session.redis_url", "must be a redis:// or rediss:// URL");
        }
        for (i, url) in f.redis_cluster.iter().enumerate() {
            if !redis_ok(url) {
                self.problem(
                    format!("session.redis_cluster[{i}]"),
                    "must be a redis:// or rediss:// URL",
                );
            }
        }
        if f.store == file::StoreName::Memory && !f.redis_cluster.is_empty() {
            self.warn(
                "session.redis_cluster",
                "ignored: session.store is \"memory\"",
            );
        }
        let refresh_reuse_grace =
            self.duration("session.refresh_reuse_grace", &f.refresh_reuse_grace);
        let refresh_reuse_grace =
            self.store_span("session.refresh_reuse_grace", refresh_reuse_grace);
        Session {
            store: match f.store {
                file::StoreName::Memory => StoreKind::Memory,
                file::StoreName::Redis => StoreKind::Redis,
            },
            mode: match f.mode {
                file::ModeName::Stateful => SessionMode::Stateful,
                file::ModeName::Stateless => SessionMode::Stateless,
            },
            redis_url: f.redis_url.clone(),
            redis_cluster: f.redis_cluster.clone(),
            key_prefix: f.key_prefix.clone(),
            on_store_error: match f.on_store_error {
                file::OnStoreErrorName::Deny => OnStoreError::Deny,
                file::OnStoreErrorName::AllowStateless => OnStoreError::AllowStateless,
            },
            refresh_reuse_grace,
        }
    }

    fn platforms(&mut self, f: &file::PlatformsFile) -> Platforms {
        let header = self.header_name("platforms.header", &f.header);
        if f.allowed.is_empty() {
            self.problem("platforms.allowed", "must name at least one platform");
        }
        for (i, name) in f.allowed.iter().enumerate() {
            let key = format!("platforms.allowed[{i}]");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                self.problem(
                    key,
                    format!("{name:?}: use letters, digits, `-`, `_` or `.`"),
                );
            } else if f.allowed[..i].contains(name) {
                self.problem(key, format!("{name:?} is listed twice"));
            }
        }
        if !f.allowed.is_empty() && !f.allowed.contains(&f.default) {
            self.problem(
                "platforms.default",
                format!("{:?} is not in platforms.allowed", f.default),
            );
        }
        let max_sessions = match &f.max_sessions {
            None => f.allowed.iter().map(|p| (p.clone(), 1)).collect(),
            Some(limits) => {
                let mut out = HashMap::new();
                for (name, n) in limits {
                    let key = format!("platforms.max_sessions.{}", file::render_key(name));
                    if !f.allowed.contains(name) {
                        self.problem(key.clone(), format!("{name:?} is not in platforms.allowed"));
                    }
                    out.insert(name.clone(), self.count(&key, *n));
                }
                out
            }
        };
        Platforms {
            header,
            default: f.default.clone(),
            allowed: f.allowed.clone(),
            max_sessions,
        }
    }

    fn login(&mut self, f: &file::LoginFile) -> Login {
        let p = &f.prefix;
        if !p.starts_with('/') || p == "/" || p.ends_with('/') {
            self.problem(
                "login.prefix",
                format!("{p:?} must start with `/`, not end with one, and not be `/` alone"),
            );
        } else if let Some(why) = non_canonical(p) {
            self.problem("login.prefix", why);
        }
        let backend = match f.backend {
            file::BackendName::None => LoginBackend::None,
            file::BackendName::UsersFile => {
                let path = self.resolve(&f.users_file);
                let users = self.users(&f.users_file);
                LoginBackend::UsersFile { path, users }
            }
            file::BackendName::Upstream => LoginBackend::Upstream(self.upstream_login(f)),
        };
        if f.backend != file::BackendName::Upstream {
            for (key, set) in [
                ("login.upstream_url", f.upstream_url.is_some()),
                ("login.user_id_pointer", f.user_id_pointer.is_some()),
                ("login.user_name_pointer", f.user_name_pointer.is_some()),
                ("login.tenant_pointer", f.tenant_pointer.is_some()),
                ("login.roles_pointer", f.roles_pointer.is_some()),
                ("login.success_pointer", f.success_pointer.is_some()),
                ("login.success_value", f.success_value.is_some()),
            ] {
                if set {
                    self.warn(key, "ignored: login.backend is not \"upstream\"");
                }
            }
        }
        let l = &f.lockout;
        let lockout = Lockout {
            max_failures: self.count("login.lockout.max_failures", l.max_failures),
            max_failures_per_ip: self
                .count("login.lockout.max_failures_per_ip", l.max_failures_per_ip),
            window: {
                let d = self.positive("login.lockout.window", &l.window);
                self.store_span("login.lockout.window", d)
            },
            duration: {
                let d = self.positive("login.lockout.duration", &l.duration);
                self.store_span("login.lockout.duration", d)
            },
        };
        let username_pointer = match (&f.backend, &f.username_pointer) {
            (file::BackendName::Upstream, Some(p)) => {
                self.json_pointer("login.username_pointer", p)
            }
            (_, Some(_)) => {
                self.warn(
                    "login.username_pointer",
                    "ignored: the users file's login body names the user in \"username\"",
                );
                "/username".to_owned()
            }
            (_, None) => "/username".to_owned(),
        };
        Login {
            prefix: p.clone(),
            username_pointer,
            backend,
            lockout,
        }
    }

    /// Reads and checks the users file; every problem goes under `login.users_file`.
    fn users(&mut self, path: &Path) -> HashMap<String, User> {
        const KEY: &str = "login.users_file";
        let shown = path.display().to_string();
        let mut users = HashMap::new();
        let Some(bytes) = self.read(KEY, path) else {
            return users;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.problem(KEY, format!("{shown}: not UTF-8 text"));
            return users;
        };
        let (parsed, problems) = file::parse_lenient::<file::UsersFile>(&text);
        for p in problems {
            self.problem(KEY, format!("{shown}: {p}"));
        }
        let Some(parsed) = parsed else {
            return users;
        };
        if parsed.users.is_empty() {
            self.warn(KEY, format!("{shown} has no users: nobody can log in"));
        }
        for (i, u) in parsed.users.iter().enumerate() {
            let at = format!("{shown}: users[{i}]");
            for (field, value) in [
                ("id", &u.id),
                ("username", &u.username),
                ("password_hash", &u.password_hash),
            ] {
                if value.is_empty() {
                    self.problem(KEY, format!("{at}.{field}: required"));
                }
            }
            if !u.password_hash.is_empty() {
                if let Err(why) = check_password_hash(&u.password_hash) {
                    self.problem(KEY, format!("{at}.password_hash: {why}"));
                }
            }
            // They become identity headers (contract §4.4): refused here, never trimmed.
            let values = [
                ("id", Some(&u.id)),
                ("username", Some(&u.username)),
                ("tenant", u.tenant.as_ref()),
            ];
            for (field, v) in values {
                if let Some(why) = v.and_then(|v| crate::tokens::identity_value_problem(v)) {
                    self.problem(KEY, format!("{at}.{field}: {why}"));
                }
            }
            for (j, role) in u.roles.iter().enumerate() {
                if let Some(why) = crate::tokens::identity_value_problem(role) {
                    self.problem(KEY, format!("{at}.roles[{j}]: {why}"));
                }
            }
            if u.tenant.as_deref() == Some("") {
                self.problem(
                    KEY,
                    format!("{at}.tenant: must not be empty (leave it out instead)"),
                );
            }
            for (j, role) in u.roles.iter().enumerate() {
                if role.is_empty() || role.contains(',') {
                    self.problem(
                        KEY,
                        format!("{at}.roles[{j}]: must be non-empty and without `,`"),
                    );
                }
            }
            if u.username.is_empty() {
                continue;
            }
            if users.contains_key(&u.username) {
                self.problem(
                    KEY,
                    format!("{at}.username: {:?} appears more than once", u.username),
                );
                continue;
            }
            users.insert(
                u.username.clone(),
                User {
                    id: u.id.clone(),
                    username: u.username.clone(),
                    password_hash: u.password_hash.clone(),
                    tenant: u.tenant.clone(),
                    roles: u.roles.clone(),
                },
            );
        }
        users
    }

    fn upstream_login(&mut self, f: &file::LoginFile) -> UpstreamLogin {
        let url = match f.upstream_url.as_deref() {
            None => {
                self.problem(
                    "login.upstream_url",
                    "required when login.backend is \"upstream\"",
                );
                http::Uri::default()
            }
            Some(text) => match text.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.authority().is_some_and(|a| !a.host().is_empty()) =>
                {
                    uri
                }
                _ => {
                    self.problem(
                        "login.upstream_url",
                        format!("{text:?} is not an http:// or https:// URL"),
                    );
                    http::Uri::default()
                }
            },
        };
        let user_id_pointer = match &f.user_id_pointer {
            None => {
                self.problem(
                    "login.user_id_pointer",
                    "required when login.backend is \"upstream\"",
                );
                String::new()
            }
            Some(p) => self.json_pointer("login.user_id_pointer", p),
        };
        let success = match (&f.success_pointer, &f.success_value) {
            (None, None) => None,
            (Some(_), None) => {
                self.problem(
                    "login.success_value",
                    "required with success_pointer: the value a successful login answers there",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "login.success_pointer",
                    "required with success_value: where in the answer to look for it",
                );
                None
            }
            (Some(p), Some(v)) => {
                let pointer = self.json_pointer("login.success_pointer", p);
                match serde_json::to_value(v) {
                    Ok(value) if !value.is_object() && !value.is_array() => {
                        Some(SuccessRule { pointer, value })
                    }
                    _ => {
                        self.problem("login.success_value", "must be a string, number or boolean");
                        None
                    }
                }
            }
        };
        let mut optional =
            |key: &str, p: &Option<String>| p.as_ref().map(|p| self.json_pointer(key, p));
        UpstreamLogin {
            url,
            user_id_pointer,
            user_name_pointer: optional("login.user_name_pointer", &f.user_name_pointer),
            tenant_pointer: optional("login.tenant_pointer", &f.tenant_pointer),
            roles_pointer: optional("login.roles_pointer", &f.roles_pointer),
            success,
        }
    }

    fn json_pointer(&mut self, key: &str, p: &str) -> String {
        if !is_json_pointer(p) {
            self.problem(
                key,
                format!("{p:?} is not a JSON pointer such as \"/data/id\" (starts with `/`; `~` only as ~0 or ~1)"),
            );
        }
        p.to_owned()
    }

    fn identity(&mut self, f: &file::IdentityFile, refresh_header: &str) -> Identity {
        let fields = [
            ("identity.user_id", &f.user_id),
            ("identity.user_name", &f.user_name),
            ("identity.tenant", &f.tenant),
            ("identity.roles", &f.roles),
            ("identity.session_id", &f.session_id),
            ("identity.platform", &f.platform),
        ];
        let mut names = Vec::new();
        for (key, text) in fields {
            let name = self.header_name(key, text);
            if name != PLACEHOLDER_HEADER {
                if is_reserved_header(name.as_str()) {
                    self.problem(
                        key,
                        format!("{text:?} is a header HTTP or the gateway itself uses; incoming copies would be stripped"),
                    );
                }
                let folded = fold_header(name.as_str());
                if fold_header(refresh_header) == folded {
                    self.problem(key, format!("{text:?} is also token.refresh_header"));
                } else if let Some((other, _)) = fields
                    .iter()
                    .take_while(|(k, _)| *k != key)
                    .find(|(_, t)| fold_header(t) == folded)
                {
                    self.problem(key, format!("{text:?} is also {other}"));
                }
            }
            names.push(name);
        }
        if is_reserved_header(&refresh_header.to_ascii_lowercase()) {
            self.problem(
                "token.refresh_header",
                format!("{refresh_header:?} is a header HTTP or the gateway itself uses"),
            );
        }
        let mut names = names.into_iter();
        let mut next = || names.next().unwrap_or(PLACEHOLDER_HEADER);
        Identity {
            user_id: next(),
            user_name: next(),
            tenant: next(),
            roles: next(),
            session_id: next(),
            platform: next(),
            forward_authorization: f.forward_authorization,
        }
    }

    fn cors(&mut self, f: &file::CorsFile) -> Cors {
        let mut allowed_origins = Vec::new();
        for (i, origin) in f.allowed_origins.iter().enumerate() {
            let key = format!("cors.allowed_origins[{i}]");
            if origin == "*" {
                if f.allow_credentials {
                    self.problem(
                        key,
                        "\"*\" cannot be combined with allow_credentials = true; list the origins",
                    );
                }
                allowed_origins.push(origin.clone());
            } else if is_origin(origin) {
                allowed_origins.push(origin.to_ascii_lowercase());
            } else {
                self.problem(
                    key,
                    format!("{origin:?} is not an origin like \"https://app.example.com\" or \"http://localhost:3000\" (no path, no trailing slash)"),
                );
            }
        }
        let mut names = Vec::new();
        for (i, text) in f.allowed_headers.iter().enumerate() {
            let name = self.header_name(&format!("cors.allowed_headers[{i}]"), text);
            if name != PLACEHOLDER_HEADER {
                names.push(text.as_str());
            }
        }
        // Header names are visible ASCII and ", " is too, so the joined value is valid.
        let allowed_headers = HeaderValue::from_str(&names.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Cors {
            allowed_origins,
            allowed_headers,
            allow_credentials: f.allow_credentials,
            max_age: {
                let d = self.duration("cors.max_age", &f.max_age);
                self.whole_seconds("cors.max_age", d, "Access-Control-Max-Age")
            },
        }
    }

    fn upstreams(&mut self, list: &[file::UpstreamFile]) -> Vec<Upstream> {
        if list.is_empty() {
            self.problem("upstreams", "at least one [[upstreams]] is needed");
        }
        let mut out = Vec::new();
        for (i, u) in list.iter().enumerate() {
            let prefix = format!("upstreams[{i}]");
            if u.name.is_empty() {
                self.problem(format!("{prefix}.name"), "required");
            } else if list[..i].iter().any(|o| o.name == u.name) {
                self.problem(
                    format!("{prefix}.name"),
                    format!("{:?} is used by an earlier upstream", u.name),
                );
            }
            if u.urls.is_empty() {
                self.problem(format!("{prefix}.urls"), "at least one url is needed");
            }
            let mut targets = Vec::new();
            for (j, url) in u.urls.iter().enumerate() {
                match upstream_target(url) {
                    Ok(t) => targets.push(t),
                    Err(why) => self.problem(format!("{prefix}.urls[{j}]"), why),
                }
            }
            out.push(Upstream {
                name: u.name.clone(),
                targets,
                connect_timeout: self
                    .positive(&format!("{prefix}.connect_timeout"), &u.connect_timeout),
            });
        }
        out
    }

    fn routes(
        &mut self,
        list: &[file::RouteFile],
        upstreams: &[file::UpstreamFile],
        case_sensitive: bool,
    ) -> RouteTable {
        use crate::pipeline::route::{AuthMode, Matcher, Route};

        if list.is_empty() {
            self.problem("routes", "at least one [[routes]] is needed");
        }
        let mut out = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let prefix = format!("routes[{i}]");
            let given: Vec<(&str, &String)> =
                [("path", &r.path), ("exact", &r.exact), ("glob", &r.glob)]
                    .into_iter()
                    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                    .collect();
            let (label, matcher) = match given.as_slice() {
                [] => {
                    self.problem(prefix.clone(), "needs one of path, exact, glob");
                    (String::new(), Matcher::Exact(String::new()))
                }
                [(kind, pattern)] => {
                    let key = format!("{prefix}.{kind}");
                    let matcher = self.matcher(&key, kind, pattern);
                    ((*pattern).clone(), matcher)
                }
                _ => {
                    self.problem(prefix.clone(), "set only one of path, exact, glob");
                    (String::new(), Matcher::Exact(String::new()))
                }
            };
            let upstream = match &r.upstream {
                None => {
                    self.problem(format!("{prefix}.upstream"), "required");
                    0
                }
                Some(name) => match upstreams.iter().position(|u| &u.name == name) {
                    Some(index) => index,
                    None => {
                        self.problem(
                            format!("{prefix}.upstream"),
                            format!("no upstream named {name:?}"),
                        );
                        0
                    }
                },
            };
            let auth = match r.auth {
                file::AuthName::Public => AuthMode::Public,
                file::AuthName::Required => AuthMode::Required,
                file::AuthName::Optional => AuthMode::Optional,
            };
            let methods = r.methods.as_ref().map(|methods| {
                if methods.is_empty() {
                    self.problem(
                        format!("{prefix}.methods"),
                        "empty; leave methods out to allow every method",
                    );
                }
                let mut out: Vec<http::Method> = Vec::new();
                for (j, m) in methods.iter().enumerate() {
                    match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                        Ok(m) if !m.as_str().is_empty() => {
                            if !out.contains(&m) {
                                out.push(m);
                            }
                        }
                        _ => self.problem(
                            format!("{prefix}.methods[{j}]"),
                            format!("{m:?} is not an HTTP method"),
                        ),
                    }
                }
                out
            });
            for (field, values) in [
                ("require_roles", &r.require_roles),
                ("require_tenants", &r.require_tenants),
            ] {
                if auth != AuthMode::Required && !values.is_empty() {
                    let why = if auth == AuthMode::Public {
                        "this one is public"
                    } else {
                        "on an optional route it could not be enforced: a request without a \
                         token passes anonymously"
                    };
                    self.problem(
                        format!("{prefix}.{field}"),
                        format!("only for routes with auth = \"required\"; {why}"),
                    );
                }
                for (j, v) in values.iter().enumerate() {
                    if v.is_empty() {
                        self.problem(format!("{prefix}.{field}[{j}]"), "must not be empty");
                    }
                }
            }
            let strip_prefix = r.strip_prefix.as_ref().map(|s| {
                let key = format!("{prefix}.strip_prefix");
                if !s.starts_with('/') {
                    self.problem(key, format!("{s:?} must start with `/`"));
                } else if let Some(why) = non_canonical(s) {
                    self.problem(key, why);
                }
                normalise_prefix(s)
            });
            out.push(Route {
                index: i,
                label,
                matcher,
                upstream,
                auth,
                methods,
                require_roles: r.require_roles.clone(),
                require_tenants: r.require_tenants.clone(),
                strip_prefix,
                fold: false,
            });
        }
        if !case_sensitive {
            for r in &mut out {
                r.matcher =
                    std::mem::replace(&mut r.matcher, Matcher::Exact(String::new())).folded();
                r.strip_prefix = r.strip_prefix.take().map(|p| p.to_ascii_lowercase());
                r.fold = true;
            }
        }
        for (j, b) in out.iter().enumerate() {
            if let Some(a) = out[..j]
                .iter()
                .find(|a| a.label != b.label && a.label.eq_ignore_ascii_case(&b.label))
            {
                let how = if case_sensitive {
                    "with route_case_sensitive = true they are different routes, while a \
                     case-blind upstream (IIS, ASP.NET, Express) serves them as one path"
                } else {
                    "routes match without regard to case, so they are the same path"
                };
                self.warn(
                    &format!("routes[{}]", b.index),
                    format!("{:?} differs from {a} only by case: {how}", b.label),
                );
            }
        }
        RouteTable::new(out)
    }

    fn matcher(&mut self, key: &str, kind: &str, pattern: &str) -> crate::pipeline::route::Matcher {
        use crate::pipeline::route::Matcher;

        let mut reported = true;
        if !pattern.starts_with('/') {
            self.problem(key, format!("{pattern:?} must start with `/`"));
        } else if let Some(why) = non_canonical(pattern) {
            self.problem(key, why);
        } else if kind == "glob" && pattern.split('/').any(|s| s.contains('*') && s != "*") {
            self.problem(
                key,
                format!("{pattern:?}: `*` must be a whole segment, as in \"/files/*/meta\""),
            );
        } else if kind != "glob" && pattern.contains('*') {
            self.problem(
                key,
                format!("{pattern:?}: `*` is literal in {kind}; use glob = ... for wildcards"),
            );
        } else {
            reported = false;
        }
        // The route module's own constructors normalise exactly as request paths are
        // canonicalised, so a pattern always means what matching will do with it.
        let parsed = match kind {
            "glob" => Matcher::parse_glob(pattern),
            "exact" => Matcher::parse_exact(pattern),
            _ => Matcher::parse_prefix(pattern),
        };
        match parsed {
            Ok(m) => m,
            Err(e) => {
                if !reported {
                    self.problem(key, format!("{pattern:?}: {e}"));
                }
                Matcher::Prefix("/".to_owned())
            }
        }
    }
}

/// Why a route pattern or prefix could never equal a canonical request path, if it could not.
fn non_canonical(p: &str) -> Option<String> {
    if p.bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\' || b == b'?' || b == b'#')
    {
        return Some(format!(
            "{p:?} contains a space, control character, `\\`, `?` or `#`"
        ));
    }
    let body = p.strip_prefix('/').unwrap_or(p);
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.split('/').any(|s| s == "." || s == "..")
        || (!body.is_empty() && body.split('/').any(str::is_empty))
    {
        return Some(format!("{p:?} is not canonical (no `//`, `.` or `..` segments); requests are matched after canonicalisation"));
    }
    None
}

/// Drops a trailing slash unless the prefix is `/`.
fn normalise_prefix(p: &str) -> String {
    match p.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ => p.to_owned(),
    }
}

/// `http://host[:port][/base]` → target; the port defaults to 80.
fn upstream_target(url: &str) -> Result<UpstreamTarget, String> {
    let shape = || format!("{url:?} is not of the form http://host:port[/base]");
    let uri: http::Uri = url.parse().map_err(|_| shape())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https upstreams are not supported yet; use http:// (e.g. to a local TLS sidecar)"
            ))
        }
        _ => return Err(shape()),
    }
    let authority = uri.authority().ok_or_else(shape)?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(shape());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "{url:?}: an upstream url takes no query or fragment"
        ));
    }
    let authority = match authority.port_u16() {
        Some(_) => authority.clone(),
        None => format!("{}:80", authority.host())
            .parse()
            .map_err(|_| shape())?,
    };
    let path = uri.path();
    let base_path = path.trim_end_matches('/').to_owned();
    if let Some(why) = non_canonical(&format!("{base_path}/")) {
        return Err(why);
    }
    Ok(UpstreamTarget {
        authority,
        base_path,
    })
}

/// `scheme://host[:port]`, nothing after it.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    scheme_ok
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && rest
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| !a.host().is_empty())
}

/// RFC 6901, non-empty: `/a/b~1c`.
fn is_json_pointer(p: &str) -> bool {
    if !p.starts_with('/') {
        return false;
    }
    let bytes = p.as_bytes();
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'~' || matches!(bytes.get(i + 1), Some(b'0' | b'1')))
}

/// RFC 7230 `tchar`, which cookie names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Header names compared the way the identity phase strips them: case-blind, `_` as `-`.
fn fold_header(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Headers HTTP or the gateway itself relies on; configuring one as an identity or refresh
/// header would strip or overwrite something that matters.
fn is_reserved_header(lower: &str) -> bool {
    let lower = fold_header(lower);
    matches!(
        lower.as_str(),
        "authorization"
            | "cookie"
            | "set-cookie"
            | "host"
            | "content-length"
            | "content-type"
            | "content-encoding"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "forwarded"
            | "origin"
            | "cache-control"
            | "www-authenticate"
    ) || lower.starts_with("proxy-")
        || lower.starts_with("x-forwarded-")
        || lower.starts_with("access-control-")
        || lower.starts_with("sec-websocket-")
}

/// A PHC string the login phase can verify: `$argon2id$v=19$m=...,t=...,p=...$salt$hash`.
fn check_password_hash(hash: &str) -> Result<(), &'static str> {
    let parsed = argon2::PasswordHash::new(hash)
        .map_err(|_| "not a PHC string such as \"$argon2id$v=19$m=19456,t=2,p=1$...\"")?;
    if argon2::Algorithm::try_from(parsed.algorithm).is_err() {
        return Err("not an Argon2 hash (argon2id, argon2i or argon2d); make one with `authgate hash-password`");
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("has no salt or no hash part");
    }
    argon2::Params::try_from(&parsed).map_err(|_| "its Argon2 parameters are not valid")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::route::{AuthMode, Matcher};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config");
    const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

    /// One upstream, one route; the secret comes from the fake env.
    const MINIMAL: &str = r#"
[[upstreams]]
name = "app"
urls = ["http://127.0.0.1:9000"]

[[routes]]
path = "/"
upstream = "app"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "AUTHGATE_JWT_SECRET" => Some(SECRET.into()),
            "OLD_SECRET" => Some("old-secret-0123456789abcdef0123456789abcdef".into()),
            "SHORT_SECRET" => Some("short".into()),
            "ADMIN_TOKEN" => Some("admin-token-value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn load_fixture(text: &str) -> Result<Loaded, ConfigError> {
        load_str(text, Path::new(FIXTURES), &env)
    }

    fn problems(text: &str) -> Vec<Problem> {
        match load_fixture(text) {
            Ok(_) => Vec::new(),
            Err(ConfigError(problems)) => problems,
        }
    }

    fn ok(text: &str) -> Loaded {
        match load_fixture(text) {
            Ok(loaded) => loaded,
            Err(e) => panic!("expected a valid config, got {e}"),
        }
    }

    /// One bad fixture per rule: `MINIMAL` plus the snippet must be refused with a problem under
    /// exactly this key (and only problems under it), whose message contains the given text.
    #[test]
    fn each_rule_reports_its_key_path() {
        let cases: &[(&str, &str, &str)] = &[
            // syntax and shape
            ("[server\nlisten = \"x\"", "line ", ""),
            ("[nonsense]\nx = 1", "nonsense", "unknown key"),
            ("[server]\nlistn = \"127.0.0.1:1\"", "server.listn", "unknown key"),
            ("[server]\nmax_body_bytes = \"big\"", "server.max_body_bytes", "invalid type"),
            // [server]
            ("[server]\nlisten = \"localhost\"", "server.listen", "IP:port"),
            ("[server]\nadmin_listen = \"9091\"", "server.admin_listen", "IP:port"),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:1\"",
                "server.admin_listen",
                "same address",
            ),
            ("[server]\ntls_cert_file = \"tls-cert.pem\"", "server.tls_key_file", "required"),
            ("[server]\ntls_key_file = \"tls-key.pem\"", "server.tls_cert_file", "required"),
            (
                "[server]\ntls_cert_file = \"tls-cert.pem\"\ntls_key_file = \"missing.pem\"",
                "server.tls_key_file",
                "/missing.pem: ",
            ),
            (
                "[server]\ntls_cert_file = \"secret.txt\"\ntls_key_file = \"tls-key.pem\"",
                "server.tls_cert_file",
                "no PEM certificate",
            ),
            (
                "[server]\ntls_cert_file = \"tls-cert.pem\"\ntls_key_file = \"tls-cert.pem\"",
                "server.tls_key_file",
                "no PEM private key",
            ),
            ("[server]\nrequest_timeout = \"30\"", "server.request_timeout", "not a duration"),
            ("[server]\nidle_timeout = \"0s\"", "server.idle_timeout", "more than 0s"),
            ("[server]\nsend_timeout = \"0s\"", "server.send_timeout", "more than 0s"),
            ("[server]\nsend_timeout = \"soon\"", "server.send_timeout", "not a duration"),
            ("[server]\nshutdown_grace = \"-1s\"", "server.shutdown_grace", "not a duration"),
            ("[server]\nheader_timeout = \"\"", "server.header_timeout", "not a duration"),
            ("[server]\nmax_header_bytes = 100", "server.max_header_bytes", "at least 1024"),
            ("[server]\nmax_connections = 0", "server.max_connections", "from 1"),
            ("[server]\nmax_connections = -5", "server.max_connections", "from 1"),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.300\"]",
                "server.trusted_proxies[1]",
                "not an IP address or CIDR",
            ),
            // [token]: algorithm and signing key
            ("[token]\nalgorithm = \"none\"", "token.algorithm", "unknown value"),
            ("[token]\nalgorithm = \"PS256\"", "token.algorithm", "unknown value"),
            ("[token]\nsecret_env = \"NOT_SET\"", "token.secret_env", "NOT_SET is not set"),
            ("[token]\nsecret_env = \"SHORT_SECRET\"", "token.secret_env", "5 bytes"),
            ("[token]\nsecret_file = \"missing.key\"", "token.secret_file", "cannot read"),
            ("[token]\nsecret_file = \"short-secret.txt\"", "token.secret_file", "9 bytes"),
            (
                "[token]\nsecret_env = \"AUTHGATE_JWT_SECRET\"\nsecret_file = \"secret.txt\"",
                "token.secret_file",
                "not both",
            ),
            (
                "[token]\nprivate_key_file = \"ec-private.pem\"",
                "token.private_key_file",
                "not used by HS256",
            ),
            ("[token]\nalgorithm = \"ES256\"", "token.private_key_file", "required for ES256"),
            (
                "[token]\nalgorithm = \"EdDSA\"\nprivate_key_file = \"missing.pem\"",
                "token.private_key_file",
                "cannot read",
            ),
            (
                "[token]\nalgorithm = \"ES256\"\nprivate_key_file = \"ec-private.pem\"\nsecret_env = \"AUTHGATE_JWT_SECRET\"",
                "token.secret_env",
                "not used by ES256",
            ),
            ("[token]\nkid = \"\"", "token.kid", "must not be empty"),
            ("[token]\nsecret_env = \"\"", "token.secret_env", "must name an environment variable"),
            ("[token]\nissuer = \"\"", "token.issuer", "must not be empty"),
            ("[token]\naudience = \"\"", "token.audience", "must not be empty"),
            // [[token.verify_keys]]
            ("[[token.verify_keys]]\nkid = \"k0\"", "token.verify_keys[0]", "needs secret_env or secret_file"),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nsecret_env = \"OLD_SECRET\"\nsecret_file = \"secret.txt\"",
                "token.verify_keys[0]",
                "only one of",
            ),
            ("[[token.verify_keys]]\nsecret_env = \"OLD_SECRET\"", "token.verify_keys[0].kid", "required"),
            (
                "[[token.verify_keys]]\nkid = \"k1\"\nsecret_env = \"OLD_SECRET\"",
                "token.verify_keys[0].kid",
                "already used",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nsecret_env = \"GONE\"",
                "token.verify_keys[0].secret_env",
                "GONE is not set",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nsecret_file = \"short-secret.txt\"",
                "token.verify_keys[0].secret_file",
                "at least 32",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\npublic_key_file = \"ec-public.pem\"",
                "token.verify_keys[0].public_key_file",
                "not used by HS256",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nalgorithm = \"ES256\"\nsecret_env = \"OLD_SECRET\"",
                "token.verify_keys[0].secret_env",
                "give public_key_file",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nalgorithm = \"ES256\"\npublic_key_file = \"nope.pem\"",
                "token.verify_keys[0].public_key_file",
                "cannot read",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nalgorithm = \"XS1\"\nsecret_env = \"OLD_SECRET\"",
                "token.verify_keys[0].algorithm",
                "unknown value",
            ),
            // [token]: lifetimes, headers, cookie
            ("[token]\naccess_ttl = \"0s\"", "token.access_ttl", "more than 0s"),
            ("[token]\naccess_ttl = \"2 h\"", "token.access_ttl", "not a duration"),
            ("[token]\nrefresh_ttl = \"1h\"", "token.refresh_ttl", "longer than access_ttl"),
            (
                "[token]\nsilent_refresh_window = \"2h\"",
                "token.silent_refresh_window",
                "shorter than access_ttl",
            ),
            ("[token]\nmax_lifetime = \"1h\"", "token.max_lifetime", "at least access_ttl"),
            ("[token]\nleeway = \"30\"", "token.leeway", "not a duration"),
            ("[token]\nrefresh_header = \"refresh token\"", "token.refresh_header", "not a valid header name"),
            ("[token]\nrefresh_header = \"Set-Cookie\"", "token.refresh_header", "HTTP or the gateway"),
            ("[token]\ncookie = \"a b\"", "token.cookie", "not a valid cookie name"),
            // [session]
            ("[session]\nstore = \"disk\"", "session.store", "unknown value"),
            ("[session]\nmode = \"sometimes\"", "session.mode", "unknown value"),
            ("[session]\non_store_error = \"ignore\"", "session.on_store_error", "unknown value"),
            ("[session]\nredis_url = \"http://127.0.0.1:6379\"", "session.redis_url", "redis://"),
            (
                "[session]\nredis_cluster = [\"redis://a:7000\", \"tcp://b:7001\"]",
                "session.redis_cluster[1]",
                "redis://",
            ),
            ("[session]\nrefresh_reuse_grace = \"soon\"", "session.refresh_reuse_grace", "not a duration"),
            // Durations a key cannot represent are refused, never cut (issue 15). Below 1 ms
            // is not a duration at all (the store keeps milliseconds).
            ("[session]\nrefresh_reuse_grace = \"500us\"", "session.refresh_reuse_grace", "not a duration"),
            ("[login.lockout]\nwindow = \"900us\"", "login.lockout.window", "not a duration"),
            ("[session]\nrefresh_reuse_grace = \"3000001d\"", "session.refresh_reuse_grace", "longer than the session store can represent"),
            ("[token]\nrefresh_ttl = \"3000001d\"", "token.refresh_ttl", "longer than the session store can represent"),
            ("[token]\nmax_lifetime = \"3000001d\"", "token.max_lifetime", "longer than the session store can represent"),
            ("[login.lockout]\nwindow = \"3000001d\"", "login.lockout.window", "longer than the session store can represent"),
            ("[login.lockout]\nduration = \"3000001d\"", "login.lockout.duration", "longer than the session store can represent"),
            ("[token]\naccess_ttl = \"1500ms\"\nsilent_refresh_window = \"1s\"", "token.access_ttl", "not a whole number of seconds"),
            ("[token]\nleeway = \"500ms\"", "token.leeway", "not a whole number of seconds"),
            ("[token]\nsilent_refresh_window = \"1500ms\"", "token.silent_refresh_window", "not a whole number of seconds"),
            ("[cors]\nmax_age = \"1500ms\"", "cors.max_age", "not a whole number of seconds"),
            // [platforms]
            ("[platforms]\nheader = \"X Platform\"", "platforms.header", "not a valid header name"),
            ("[platforms]\ndefault = \"desktop\"", "platforms.default", "not in platforms.allowed"),
            ("[platforms]\nallowed = []\ndefault = \"web\"", "platforms.allowed", "at least one"),
            ("[platforms]\nallowed = [\"web\", \"web\"]", "platforms.allowed[1]", "twice"),
            ("[platforms]\nallowed = [\"web\", \"a:b\"]", "platforms.allowed[1]", "letters, digits"),
            (
                "[platforms]\nmax_sessions = { web = 1, tv = 2 }",
                "platforms.max_sessions.tv",
                "not in platforms.allowed",
            ),
            ("[platforms]\nmax_sessions = { web = 0 }", "platforms.max_sessions.web", "from 1"),
            // [login]
            ("[login]\nprefix = \"auth\"", "login.prefix", "start with `/`"),
            ("[login]\nprefix = \"/auth/\"", "login.prefix", "not end with one"),
            ("[login]\nprefix = \"/\"", "login.prefix", "not be `/` alone"),
            ("[login]\nprefix = \"/a//b\"", "login.prefix", "not canonical"),
            ("[login]\nbackend = \"ldap\"", "login.backend", "unknown value"),
            ("[login]\nusers_file = \"nobody.toml\"", "login.users_file", "/nobody.toml: "),
            ("[login]\nusers_file = \"ec-public.pem\"", "login.users_file", "ec-public.pem: line 1"),
            ("[login]\nusers_file = \"users-bad.toml\"", "login.users_file", "appears more than once"),
            ("[login]\nusers_file = \"users-bad.toml\"", "login.users_file", "users[2].password_hash: not a PHC string"),
            ("[login]\nusers_file = \"users-bad.toml\"", "login.users_file", "users[3].id: required"),
            (
                "[login]\nbackend = \"upstream\"\nuser_id_pointer = \"/id\"",
                "login.upstream_url",
                "required",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"ftp://legacy/login\"\nuser_id_pointer = \"/id\"",
                "login.upstream_url",
                "not an http:// or https:// URL",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"",
                "login.user_id_pointer",
                "required",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nsuccess_pointer = \"/code\"",
                "login.success_value",
                "required with success_pointer",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nsuccess_value = 0",
                "login.success_pointer",
                "required with success_value",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nsuccess_pointer = \"code\"\nsuccess_value = 0",
                "login.success_pointer",
                "not a JSON pointer",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nsuccess_pointer = \"/code\"\nsuccess_value = [0]",
                "login.success_value",
                "string, number or boolean",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"data.id\"",
                "login.user_id_pointer",
                "not a JSON pointer",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nroles_pointer = \"/a~2b\"",
                "login.roles_pointer",
                "not a JSON pointer",
            ),
            ("[login.lockout]\nmax_failures = 0", "login.lockout.max_failures", "from 1"),
            ("[login.lockout]\nmax_failures_per_ip = -3", "login.lockout.max_failures_per_ip", "from 1"),
            ("[login.lockout]\nwindow = \"0s\"", "login.lockout.window", "more than 0s"),
            ("[login.lockout]\nduration = \"10\"", "login.lockout.duration", "not a duration"),
            // [identity]
            ("[identity]\nroles = \"X User Roles\"", "identity.roles", "not a valid header name"),
            ("[identity]\nuser_name = \"x-user-id\"", "identity.user_name", "also identity.user_id"),
            ("[identity]\nplatform = \"X_Tenant_Id\"", "identity.platform", "also identity.tenant"),
            ("[identity]\nsession_id = \"Refresh-Token\"", "identity.session_id", "also token.refresh_header"),
            ("[identity]\nuser_id = \"Authorization\"", "identity.user_id", "HTTP or the gateway"),
            ("[identity]\ntenant = \"X-Forwarded-For\"", "identity.tenant", "HTTP or the gateway"),
            ("[identity]\nforward_authorization = \"no\"", "identity.forward_authorization", "invalid type"),
            // [cors]
            (
                "[cors]\nallowed_origins = [\"https://app.example.com/\"]",
                "cors.allowed_origins[0]",
                "not an origin",
            ),
            ("[cors]\nallowed_origins = [\"app.example.com\"]", "cors.allowed_origins[0]", "not an origin"),
            (
                "[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true",
                "cors.allowed_origins[0]",
                "allow_credentials",
            ),
            ("[cors]\nallowed_headers = [\"Content-Type\", \"X Bad\"]", "cors.allowed_headers[1]", "not a valid header name"),
            ("[cors]\nmax_age = \"ten minutes\"", "cors.max_age", "not a duration"),
            // [[upstreams]] (MINIMAL's is upstreams[0])
            ("[[upstreams]]\nname = \"app\"\nurls = [\"http://127.0.0.1:1\"]", "upstreams[1].name", "earlier upstream"),
            ("[[upstreams]]\nurls = [\"http://127.0.0.1:1\"]", "upstreams[1].name", "required"),
            ("[[upstreams]]\nname = \"b\"", "upstreams[1].urls", "at least one url"),
            (
                "[[upstreams]]\nname = \"b\"\nurls = [\"https://legacy.example.com\"]",
                "upstreams[1].urls[0]",
                "https upstreams are not supported yet",
            ),
            ("[[upstreams]]\nname = \"b\"\nurls = [\"127.0.0.1:9000\"]", "upstreams[1].urls[0]", "http://host:port"),
            ("[[upstreams]]\nname = \"b\"\nurls = [\"http://u:p@h:1\"]", "upstreams[1].urls[0]", "http://host:port"),
            ("[[upstreams]]\nname = \"b\"\nurls = [\"http://h:1/?x=1\"]", "upstreams[1].urls[0]", "no query"),
            (
                "[[upstreams]]\nname = \"b\"\nurls = [\"http://h:1\"]\nconnect_timeout = \"0s\"",
                "upstreams[1].connect_timeout",
                "more than 0s",
            ),
            // [[routes]] (MINIMAL's is routes[0])
            ("[[routes]]\nupstream = \"app\"", "routes[1]", "needs one of path, exact, glob"),
            ("[[routes]]\npath = \"/a\"\nexact = \"/a\"\nupstream = \"app\"", "routes[1]", "only one of"),
            ("[[routes]]\npath = \"api\"\nupstream = \"app\"", "routes[1].path", "start with `/`"),
            ("[[routes]]\nexact = \"x\"\nupstream = \"app\"", "routes[1].exact", "start with `/`"),
            ("[[routes]]\npath = \"/a/../b\"\nupstream = \"app\"", "routes[1].path", "not canonical"),
            ("[[routes]]\npath = \"/a?b\"\nupstream = \"app\"", "routes[1].path", "`?`"),
            ("[[routes]]\npath = \"/api/*\"\nupstream = \"app\"", "routes[1].path", "use glob"),
            ("[[routes]]\nglob = \"/files/*.txt\"\nupstream = \"app\"", "routes[1].glob", "whole segment"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"legacy\"", "routes[1].upstream", "no upstream named \"legacy\""),
            ("[[routes]]\npath = \"/a\"", "routes[1].upstream", "required"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"maybe\"", "routes[1].auth", "unknown value"),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nmethods = [\"GET\", \"NOT A METHOD\"]",
                "routes[1].methods[1]",
                "not an HTTP method",
            ),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nmethods = []", "routes[1].methods", "empty"),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"public\"\nrequire_roles = [\"admin\"]",
                "routes[1].require_roles",
                "this one is public",
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"optional\"\nrequire_roles = [\"admin\"]",
                "routes[1].require_roles",
                "could not be enforced",
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"optional\"\nrequire_tenants = [\"acme\"]",
                "routes[1].require_tenants",
                "anonymously",
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"public\"\nrequire_tenants = [\"acme\"]",
                "routes[1].require_tenants",
                "this one is public",
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nrequire_roles = [\"\"]",
                "routes[1].require_roles[0]",
                "must not be empty",
            ),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nstrip_prefix = \"a\"", "routes[1].strip_prefix", "start with `/`"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\npth = \"/b\"", "routes[1].pth", "unknown key"),
        ];
        for (snippet, key, message) in cases {
            let text = format!("{MINIMAL}\n{snippet}\n");
            let found = problems(&text);
            assert!(
                !found.is_empty(),
                "{snippet:?}: expected a problem at {key}, config loaded"
            );
            for p in &found {
                assert!(
                    p.key.starts_with(key),
                    "{snippet:?}: expected problems at {key} only, got {found:?}"
                );
            }
            assert!(
                found.iter().any(|p| p.message.contains(message)),
                "{snippet:?}: no message at {key} contains {message:?}: {found:?}"
            );
        }
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
            format!("{MINIMAL}\n[server]\nlisten = 8080\nidle_timeout = \"1 min\"\ntypo = 1\n");
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
    fn demo_user_password_matches_its_hash() {
        use argon2::PasswordVerifier;
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/users.toml"))
            .expect("users.toml at the repo root");
        let users: file::UsersFile = file::parse(&text).expect("users.toml parses");
        let hash = argon2::PasswordHash::new(&users.users[0].password_hash).expect("PHC");
        argon2::Argon2::default()
            .verify_password(b"wonderland-demo-42", &hash)
            .expect("alice's password");
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
    fn empty_admin_token_turns_the_admin_api_off() {
        for var in ["EMPTY", "NOT_SET", ""] {
            let text = format!("{MINIMAL}\n[server]\nadmin_token_env = \"{var}\"\n");
            assert_eq!(ok(&text).config.server.admin_token, None, "{var:?}");
        }
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
    fn asymmetric_signing_key_from_a_file() {
        let text = format!(
            "{MINIMAL}\n[token]\nalgorithm = \"ES256\"\nprivate_key_file = \"ec-private.pem\"\n"
        );
        let c = ok(&text).config;
        assert_eq!(c.token.keys.rules().issuer, "authgate");
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
    fn routes_that_differ_only_by_case_are_warned_about() {
        let routes = "[[upstreams]]\nname = \"app\"\nurls = [\"http://127.0.0.1:9000\"]\n\
            [[routes]]\npath = \"/admin\"\nupstream = \"app\"\nrequire_roles = [\"admin\"]\n\
            [[routes]]\npath = \"/Admin\"\nupstream = \"app\"\nauth = \"public\"\n\
            [[routes]]\npath = \"/\"\nupstream = \"app\"\n";
        for (server, needle) in [
            ("", "they are the same path"),
            (
                "[server]\nroute_case_sensitive = true\n",
                "case-blind upstream",
            ),
        ] {
            let loaded = ok(&format!("{server}{routes}"));
            let w: Vec<_> = loaded
                .warnings
                .iter()
                .filter(|w| w.starts_with("routes[1]:") && w.contains("only by case"))
                .collect();
            assert_eq!(w.len(), 1, "{:?}", loaded.warnings);
            assert!(w[0].contains(needle), "{w:?}");
            let r = &loaded.config.routes.routes()[1];
            assert_eq!(r.fold, server.is_empty());
        }
        // Case-blind: the later one is the same pattern, so it is shadowed too.
        let loaded = ok(routes);
        assert!(
            loaded.warnings.iter().any(|w| w.contains("shadowed")),
            "{:?}",
            loaded.warnings
        );
    }

    /// `login.backend = "none"`: the signing key may be left out (the ring only verifies), and
    /// stateful mode is refused where no session could ever be found.
    #[test]
    fn without_a_login_the_signing_key_is_optional() {
        let none = "[login]\nbackend = \"none\"\n";
        let stateless = "[session]\nmode = \"stateless\"\n";
        let ec_verify = "[[token.verify_keys]]\nkid = \"idp\"\nalgorithm = \"ES256\"\npublic_key_file = \"ec-public.pem\"\n";
        let unset = "[token]\nsecret_env = \"NOT_SET\"\n";

        // No secret, a verify key, stateless: valid; nothing can be signed.
        let loaded = ok(&format!("{MINIMAL}\n{unset}{ec_verify}{stateless}{none}"));
        let keys = &loaded.config.token.keys;
        assert!(!keys.can_sign());
        assert_eq!(keys.verify_key_count(), 1);
        assert!(
            loaded.warnings.iter().any(|w| w.contains("signs nothing")),
            "{:?}",
            loaded.warnings
        );
        // Asymmetric without a private key file: the same.
        let rs = "[token]\nalgorithm = \"ES256\"\n";
        assert!(!ok(&format!("{MINIMAL}\n{rs}{ec_verify}{stateless}{none}"))
            .config
            .token
            .keys
            .can_sign());
        // A secret that is there is still used.
        assert!(ok(&format!("{MINIMAL}\n{stateless}{none}"))
            .config
            .token
            .keys
            .can_sign());
        // With a login backend the key is still required.
        let p = problems(&format!("{MINIMAL}\n{unset}"));
        assert!(p.iter().any(|p| p.key == "token.secret_env"), "{p:?}");
        // A key file that is named but missing is a problem even without a login.
        let p = problems(&format!(
            "{MINIMAL}\n[token]\nsecret_file = \"missing.key\"\n{ec_verify}{stateless}{none}"
        ));
        assert!(p.iter().any(|p| p.key == "token.secret_file"), "{p:?}");
        // No key at all: nothing could be accepted.
        let p = problems(&format!("{MINIMAL}\n{unset}{stateless}{none}"));
        assert!(p.iter().any(|p| p.key == "token.verify_keys"), "{p:?}");

        // Stateful without a login: refused on the memory store, with or without a key...
        for token in ["", unset] {
            let p = problems(&format!("{MINIMAL}\n{token}{ec_verify}{none}"));
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].key, "session.mode");
            assert!(p[0].message.contains("session_revoked"), "{p:?}");
        }
        // ...and accepted on a Redis store shared with the authgate that logs users in.
        let shared = "[session]\nstore = \"redis\"\n";
        assert!(!ok(&format!("{MINIMAL}\n{unset}{ec_verify}{shared}{none}"))
            .config
            .token
            .keys
            .can_sign());
        ok(&format!("{MINIMAL}\n{shared}{none}"));
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

    #[test]
    fn helpers() {
        for (p, want) in [
            ("/a", true),
            ("/a/b~0~1", true),
            ("", false),
            ("a", false),
            ("/~", false),
            ("/~2", false),
        ] {
            assert_eq!(is_json_pointer(p), want, "{p:?}");
        }
        for (o, want) in [
            ("https://a.example", true),
            ("http://localhost:3000", true),
            ("capacitor://localhost", true),
            ("https://a.example/", false),
            ("https://a.example/x", false),
            ("https://u@a.example", false),
            ("https://", false),
            ("a.example", false),
            ("1http://a", false),
        ] {
            assert_eq!(is_origin(o), want, "{o:?}");
        }
        for (p, want) in [("/", "/"), ("/api/", "/api"), ("/api", "/api")] {
            assert_eq!(normalise_prefix(p), want);
        }
        for (p, ok) in [
            ("/", true),
            ("/a/b/", true),
            ("/a//b", false),
            ("/./a", false),
            ("/a/..", false),
            ("/a b", false),
        ] {
            assert_eq!(non_canonical(p).is_none(), ok, "{p:?}");
        }
        assert!(check_password_hash("$argon2id$v=19$m=19456,t=2,p=1$eECQyicfEQ3RQnGR8ra3jA$pNsvNIX9cOhPMO4igTkd4fWKNKSwMfyAL/RZ4M+apxA").is_ok());
        assert!(check_password_hash("$argon2id$v=19$m=1,t=2,p=1$eECQyicfEQ3RQnGR8ra3jA$pNsvNIX9cOhPMO4igTkd4fWKNKSwMfyAL/RZ4M+apxA").is_err());
        assert!(check_password_hash("$scrypt$ln=15,r=8,p=1$c2FsdA$aGFzaA").is_err());
        assert!(check_password_hash("plain").is_err());
    }
}
