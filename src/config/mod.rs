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
    pub shutdown_grace: Duration,
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
    /// Resolved from `admin_token_env`; `None` turns `/admin/*` off.
    pub admin_token: Option<String>,
}

pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Token {
    /// Signing key, verify keys, issuer, audience, leeway.
    pub keys: KeyRing,
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
    pub backend: LoginBackend,
    pub lockout: Lockout,
}

pub enum LoginBackend {
    UsersFile { path: PathBuf, users: HashMap<String, User> },
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

pub struct UpstreamLogin {
    pub url: http::Uri,
    pub user_id_pointer: String,
    pub user_name_pointer: Option<String>,
    pub tenant_pointer: Option<String>,
    pub roles_pointer: Option<String>,
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

/// Reads, parses and validates the config at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let _ = path;
    todo!("config::load")
}
