//! The serde mirror of `gateway.toml` (and of the users file): every section and key of the
//! contract with exactly its default, unknown keys rejected.
//!
//! These structs only describe the *shape* of the file. Everything that needs judgement
//! (durations, addresses, header names, cross-references between sections) stays a plain string
//! here and is checked in `validate/`, where each problem gets its key path. Every key has a
//! default (required keys default to empty and are reported missing there), which lets
//! [`parse`] keep going after a bad key: it drops the offending entry and deserializes again,
//! so that one run reports every shape problem of the file, not just the first.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::Problem;

/// The env var `token.secret_env` names when neither it nor `secret_file` is given.
pub(crate) const DEFAULT_SECRET_ENV: &str = "AUTHGATE_JWT_SECRET";

/// The whole of `gateway.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GatewayFile {
    pub server: ServerFile,
    pub token: TokenFile,
    pub session: SessionFile,
    pub platforms: PlatformsFile,
    pub login: LoginFile,
    pub identity: IdentityFile,
    pub cors: CorsFile,
    pub browser: BrowserFile,
    pub log: LogFile,
    pub notify: NotifyFile,
    pub upstreams: Vec<UpstreamFile>,
    pub routes: Vec<RouteFile>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerFile {
    pub listen: String,
    /// `None` (the key left out) or `""`: no admin listener.
    pub admin_listen: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub request_timeout: String,
    pub idle_timeout: String,
    /// A response write the client does not take for this long closes the connection.
    pub send_timeout: String,
    pub shutdown_grace: String,
    pub max_body_bytes: u64,
    pub max_header_bytes: u64,
    pub header_timeout: String,
    /// `false`: a path holding `%25` is 400 (double-encoding tricks).
    pub allow_encoded_percent: bool,
    /// `false`: routes match without regard to ASCII case.
    pub route_case_sensitive: bool,
    pub trusted_proxies: Vec<String>,
    pub admin_token_env: String,
    /// Signed so that 0 and negatives get a clear message.
    pub max_connections: i64,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            request_timeout: "30s".into(),
            idle_timeout: "60s".into(),
            send_timeout: "60s".into(),
            shutdown_grace: "30s".into(),
            max_body_bytes: 10_485_760,
            max_header_bytes: 16_384,
            header_timeout: "10s".into(),
            allow_encoded_percent: false,
            route_case_sensitive: false,
            trusted_proxies: Vec::new(),
            admin_token_env: "AUTHGATE_ADMIN_TOKEN".into(),
            max_connections: 10_000,
        }
    }
}

/// The algorithms a key may be pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum AlgorithmName {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    EdDSA,
}

impl AlgorithmName {
    /// HS256/HS384/HS512: a shared secret rather than a key pair.
    pub(crate) fn is_symmetric(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::HS256 => A::HS256,
            Self::HS384 => A::HS384,
            Self::HS512 => A::HS512,
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::EdDSA => A::EdDSA,
        }
    }
}

/// `[token]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TokenFile {
    pub algorithm: AlgorithmName,
    /// `None`: [`DEFAULT_SECRET_ENV`], unless `secret_file` is given. Kept optional so that
    /// giving both `secret_env` and `secret_file` can be reported.
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    pub kid: String,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: String,
    pub refresh_ttl: String,
    pub max_lifetime: String,
    pub silent_refresh_window: String,
    pub refresh_header: String,
    pub leeway: String,
    pub cookie: String,
    pub verify_keys: Vec<VerifyKeyFile>,
    pub issuers: Vec<IssuerFile>,
}

impl Default for TokenFile {
    fn default() -> Self {
        Self {
            algorithm: AlgorithmName::HS256,
            secret_env: None,
            secret_file: None,
            private_key_file: None,
            kid: "k1".into(),
            issuer: "authgate".into(),
            audience: "legacy-app".into(),
            access_ttl: "2h".into(),
            refresh_ttl: "30d".into(),
            max_lifetime: "0s".into(),
            silent_refresh_window: "30m".into(),
            refresh_header: "refresh-token".into(),
            leeway: "30s".into(),
            cookie: String::new(),
            verify_keys: Vec::new(),
            issuers: Vec::new(),
        }
    }
}

/// `[[token.verify_keys]]`: an older key still accepted. Exactly one source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct VerifyKeyFile {
    pub kid: String,
    /// `None`: the same as `token.algorithm`.
    pub algorithm: Option<AlgorithmName>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
}

/// `[[token.issuers]]`: an identity provider whose tokens are accepted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IssuerFile {
    /// Required: the exact `iss`.
    pub issuer: String,
    pub discovery: bool,
    pub jwks_url: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks_refresh: String,
    pub fetch_timeout: String,
    pub user_name_claim: String,
    pub roles_claim: String,
    pub tenant_claim: String,
    pub ca_file: Option<PathBuf>,
}

impl Default for IssuerFile {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            discovery: true,
            jwks_url: None,
            public_key_file: None,
            audiences: Vec::new(),
            algorithms: Vec::new(),
            jwks_refresh: "10m".into(),
            fetch_timeout: "5s".into(),
            user_name_claim: "preferred_username".into(),
            roles_claim: "roles".into(),
            tenant_claim: "tenant".into(),
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreName {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ModeName {
    Stateful,
    Stateless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnStoreErrorName {
    Deny,
    AllowStateless,
}

/// `[session]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SessionFile {
    pub store: StoreName,
    pub mode: ModeName,
    pub redis_url: String,
    pub redis_cluster: Vec<String>,
    pub redis_sentinel: Option<SentinelFile>,
    pub key_prefix: String,
    pub on_store_error: OnStoreErrorName,
    pub refresh_reuse_grace: String,
    pub local_cache: bool,
    pub local_cache_ttl: String,
    pub local_cache_max_bytes: u64,
}

impl Default for SessionFile {
    fn default() -> Self {
        Self {
            store: StoreName::Memory,
            mode: ModeName::Stateful,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_cluster: Vec::new(),
            redis_sentinel: None,
            key_prefix: "authgate:".into(),
            on_store_error: OnStoreErrorName::Deny,
            refresh_reuse_grace: "10s".into(),
            local_cache: true,
            local_cache_ttl: "5s".into(),
            local_cache_max_bytes: 33_554_432,
        }
    }
}

/// `session.redis_sentinel = { master = "mymaster", nodes = ["redis://127.0.0.1:26379"] }`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SentinelFile {
    /// The name the sentinels monitor the master by (`sentinel monitor <name> ...`).
    pub master: String,
    /// `redis://` URLs of the sentinels (not of Redis itself).
    pub nodes: Vec<String>,
}

/// `[platforms]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PlatformsFile {
    pub header: String,
    pub default: String,
    pub allowed: Vec<String>,
    /// `None`: 1 for every allowed platform (the contract's `{ web = 1, h5 = 1, app = 1 }` for
    /// the default `allowed`). Signed so that 0 and negatives get a clear message.
    pub max_sessions: Option<BTreeMap<String, i64>>,
}

impl Default for PlatformsFile {
    fn default() -> Self {
        Self {
            header: "X-Platform".into(),
            default: "web".into(),
            allowed: vec!["web".into(), "h5".into(), "app".into()],
            max_sessions: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BackendName {
    UsersFile,
    Upstream,
    None,
}

/// `[login]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LoginFile {
    pub prefix: String,
    pub backend: BackendName,
    pub users_file: PathBuf,
    pub upstream_url: Option<String>,
    pub user_id_pointer: Option<String>,
    pub user_name_pointer: Option<String>,
    pub tenant_pointer: Option<String>,
    pub roles_pointer: Option<String>,
    /// Where the lock-out counters read the username (upstream backend); default `/username`.
    pub username_pointer: Option<String>,
    /// A 2xx answer is a success only if the value here equals `success_value`.
    pub success_pointer: Option<String>,
    pub success_value: Option<toml::Value>,
    pub lockout: LockoutFile,
    pub captcha: CaptchaFile,
}

impl Default for LoginFile {
    fn default() -> Self {
        Self {
            prefix: "/auth".into(),
            backend: BackendName::UsersFile,
            users_file: PathBuf::from("users.toml"),
            upstream_url: None,
            user_id_pointer: None,
            user_name_pointer: None,
            tenant_pointer: None,
            roles_pointer: None,
            username_pointer: None,
            success_pointer: None,
            success_value: None,
            lockout: LockoutFile::default(),
            captcha: CaptchaFile::default(),
        }
    }
}

/// `[login.lockout]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LockoutFile {
    /// Signed so that 0 and negatives get a clear message.
    pub max_failures: i64,
    pub max_failures_per_ip: i64,
    pub window: String,
    pub duration: String,
}

impl Default for LockoutFile {
    fn default() -> Self {
        Self {
            max_failures: 5,
            max_failures_per_ip: 50,
            window: "1m".into(),
            duration: "10m".into(),
        }
    }
}

/// `[login.captcha]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CaptchaFile {
    pub mode: CaptchaModeName,
    /// `None`: the default (3); an explicit value with another mode is warned about.
    pub after_failures: Option<i64>,
    pub ttl: String,
}

impl Default for CaptchaFile {
    fn default() -> Self {
        Self {
            mode: CaptchaModeName::Off,
            after_failures: None,
            ttl: "2m".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CaptchaModeName {
    Off,
    Always,
    AfterFailures,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IdentityFile {
    pub user_id: String,
    pub user_name: String,
    pub tenant: String,
    pub roles: String,
    pub session_id: String,
    pub platform: String,
    pub forward_authorization: bool,
    /// `[identity.claims]`: header name → claim name or pointer.
    pub claims: std::collections::BTreeMap<String, String>,
}

impl Default for IdentityFile {
    fn default() -> Self {
        Self {
            user_id: "X-User-Id".into(),
            user_name: "X-User-Name".into(),
            tenant: "X-Tenant-Id".into(),
            roles: "X-User-Roles".into(),
            session_id: "X-Session-Id".into(),
            platform: "X-User-Platform".into(),
            forward_authorization: true,
            claims: std::collections::BTreeMap::new(),
        }
    }
}

/// `[cors]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CorsFile {
    pub allowed_origins: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: String,
}

impl Default for CorsFile {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_headers: ["Authorization", "Content-Type", "X-Platform", "X-Device-Id"]
                .map(String::from)
                .to_vec(),
            allow_credentials: false,
            max_age: "10m".into(),
        }
    }
}

/// `[browser]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BrowserFile {
    pub enabled: bool,
    pub access_cookie: String,
    pub refresh_cookie: String,
    pub insecure_cookies: bool,
    pub csrf: String,
    pub csrf_cookie: String,
    pub login_page: String,
    pub redirect_html: bool,
    pub allowed_return_hosts: Vec<String>,
}

impl Default for BrowserFile {
    fn default() -> Self {
        Self {
            enabled: false,
            access_cookie: "authgate_access".into(),
            refresh_cookie: "authgate_refresh".into(),
            insecure_cookies: false,
            csrf: "origin".into(),
            csrf_cookie: "authgate_csrf".into(),
            login_page: "builtin".into(),
            redirect_html: true,
            allowed_return_hosts: Vec::new(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogFile {
    /// One access line per request on stderr.
    pub access: bool,
}

impl Default for LogFile {
    fn default() -> Self {
        Self { access: true }
    }
}

/// The env var `notify.secret_env` names when neither it nor `secret_file` is given.
pub(crate) const DEFAULT_NOTIFY_SECRET_ENV: &str = "AUTHGATE_NOTIFY_SECRET";

/// `[notify]`: session events POSTed to other services.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NotifyFile {
    /// Empty: off. `http://host[:port]/path` or `upstream://<name>/path`.
    pub urls: Vec<String>,
    /// `None`: [`DEFAULT_NOTIFY_SECRET_ENV`] (unless `secret_file` is given).
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// `session_ended`, `login`.
    pub events: Vec<String>,
    pub timeout: String,
    pub max_queue: i64,
    /// Attempts after the first, each after a longer wait.
    pub retries: i64,
}

impl Default for NotifyFile {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret_env: None,
            secret_file: None,
            events: vec!["session_ended".into()],
            timeout: "2s".into(),
            max_queue: 10_000,
            retries: 2,
        }
    }
}

/// `[[upstreams]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UpstreamFile {
    /// Required; `""` when left out.
    pub name: String,
    /// Required; empty when left out.
    pub urls: Vec<String>,
    pub connect_timeout: String,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        Self {
            name: String::new(),
            urls: Vec::new(),
            connect_timeout: "2s".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthName {
    Public,
    Required,
    Optional,
}

/// `[[routes]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RouteFile {
    /// Exactly one of `path`, `exact`, `glob`.
    pub path: Option<String>,
    pub exact: Option<String>,
    pub glob: Option<String>,
    /// Required.
    pub upstream: Option<String>,
    /// Left out: `required` (fail closed).
    pub auth: AuthName,
    pub methods: Option<Vec<String>>,
    pub require_roles: Vec<String>,
    pub require_tenants: Vec<String>,
    pub require_scopes: Vec<String>,
    /// Claim name or pointer → the value it must equal.
    pub require_claims: std::collections::BTreeMap<String, toml::Value>,
    pub strip_prefix: Option<String>,
}

impl Default for RouteFile {
    fn default() -> Self {
        Self {
            path: None,
            exact: None,
            glob: None,
            upstream: None,
            auth: AuthName::Required,
            methods: None,
            require_roles: Vec::new(),
            require_tenants: Vec::new(),
            require_scopes: Vec::new(),
            require_claims: std::collections::BTreeMap::new(),
            strip_prefix: None,
        }
    }
}

/// The users file (`login.users_file`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UsersFile {
    pub users: Vec<UserFile>,
}

/// `[[users]]`; `id`, `username` and `password_hash` are required (checked in `validate/`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UserFile {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
}

/// Most problems [`parse`] reports before it gives up on a file.
const MAX_PROBLEMS: usize = 100;

/// Parses TOML text into `T`, reporting every syntax or shape problem with its key path
/// (`routes[1].methods`), or `line L, column C` for syntax errors.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Vec<Problem>> {
    match parse_lenient(text) {
        (Some(value), problems) if problems.is_empty() => Ok(value),
        (_, problems) => Err(problems),
    }
}

/// Like [`parse`], but also returns what could be read: after a shape problem the entry at
/// fault is dropped (so it takes its default) and the document deserialized again, which is
/// why `T` must have a default for every key. The value is `None` after syntax errors or when
/// no amount of dropping got it through.
pub(crate) fn parse_lenient<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<Problem>) {
    let read = parse_guessing(text);
    (read.value, read.problems)
}

/// What [`parse_guessing`] could read.
pub(crate) struct Lenient<T> {
    /// The document with every entry at fault dropped (see [`parse_lenient`]).
    pub value: Option<T>,
    pub problems: Vec<Problem>,
    /// The document read as if every unknown key that is a likely typo of a known one
    /// (`acess_ttl`) had been spelled as suggested; `None` when there was no such key. A
    /// meaning problem that the value has and this reading does not only stems from a
    /// default taking the place of the mistyped key.
    pub as_meant: Option<T>,
}

/// Like [`parse_lenient`]; an unknown key close (by edit distance) to a known key of its
/// table that the table does not set is reported as `unknown key acess_ttl, did you mean
/// access_ttl?`, and the document is also read with that key renamed ([`Lenient::as_meant`]).
pub(crate) fn parse_guessing<T: DeserializeOwned>(text: &str) -> Lenient<T> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .take(MAX_PROBLEMS)
            .map(|e| Problem {
                key: match e.span() {
                    Some(span) => line_column(text, span.start),
                    None => "(document)".into(),
                },
                message: e.message().trim().replace('\n', "; "),
            })
            .collect();
        return Lenient {
            value: None,
            problems,
            as_meant: None,
        };
    }
    let root_span = root.span();
    let original = root.into_inner();
    let (value, problems, renames) = settle::<T>(&original, root_span.clone(), true);
    let as_meant = if renames.is_empty() {
        None
    } else {
        let mut meant = original;
        for (span, name) in &renames {
            rename(&mut meant, span, name);
        }
        settle::<T>(&meant, root_span, false).0
    };
    Lenient {
        value,
        problems,
        as_meant,
    }
}

/// The drop-and-retry loop of [`parse_lenient`] over `original`; also returns the unknown
/// keys to rename (their span and the suggested name) when `guess` is set.
type Settled<T> = (Option<T>, Vec<Problem>, Vec<(Range<usize>, String)>);

fn settle<T: DeserializeOwned>(
    original: &DeTable<'_>,
    root_span: Range<usize>,
    guess: bool,
) -> Settled<T> {
    let mut current = original.clone();
    // Each with where it starts in the text: they are reported in file order, not in the
    // (alphabetical) order the keys are deserialized in.
    let mut problems: Vec<(usize, Problem)> = Vec::new();
    let mut renames = Vec::new();
    let in_file_order = |mut problems: Vec<(usize, Problem)>| {
        problems.sort_by_key(|(at, _)| *at);
        problems.into_iter().map(|(_, p)| p).collect()
    };
    while problems.len() < MAX_PROBLEMS {
        let de = ValueDeserializer::from(Spanned::new(
            root_span.clone(),
            DeValue::Table(current.clone()),
        ));
        let err = match T::deserialize(de) {
            Ok(value) => return (Some(value), in_file_order(problems), renames),
            Err(err) => err,
        };
        let mut message = tidy_message(err.message());
        let found = err.span().and_then(|span| locate(original, &span));
        let Some((path, target)) = found else {
            let problem = Problem {
                key: "(document)".into(),
                message,
            };
            problems.push((usize::MAX, problem));
            break;
        };
        let at = match &target {
            Target::Entry(span) | Target::Element(span) => span.start,
        };
        if let (true, Target::Entry(span), Some(Segment::Key(name))) = (guess, &target, path.last())
        {
            let siblings = table_at(original, &path[..path.len() - 1]);
            let suggestion = suggest(name, err.message())
                .filter(|s| siblings.is_some_and(|t| t.get(s.as_str()).is_none()));
            if let Some(known) = suggestion {
                message = format!(
                    "unknown key {}, did you mean {}?",
                    render_key(name),
                    render_key(&known)
                );
                renames.push((span.clone(), known));
            }
        }
        let problem = Problem {
            key: render_path(&path),
            message,
        };
        problems.push((at, problem));
        if !remove(&mut current, &target) {
            break;
        }
    }
    (None, in_file_order(problems), renames)
}

/// The known key closest to `unknown` by edit distance, from serde's `unknown field `x`,
/// expected one of `a`, `b`` message; `None` unless it is close (a typo, not another word).
fn suggest(unknown: &str, serde_message: &str) -> Option<String> {
    let expected = serde_message
        .strip_prefix("unknown field ")?
        .split_once(", expected ")?
        .1;
    let allowed = (unknown.chars().count() / 4).clamp(1, 3);
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|known| (edit_distance(unknown, known), known))
        .filter(|(d, _)| *d <= allowed)
        // The first of equally close keys: the one declared first in its table.
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known.to_owned())
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours (`acess` → `access` is 1, `tll` → `ttl` is 1), case-insensitively.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // Three rows of the table: two back (for swaps), the previous, the current.
    let mut two_back = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(two_back[j - 2] + 1);
            }
        }
        std::mem::swap(&mut two_back, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The table a key path leads to (the root for an empty path).
fn table_at<'a, 'i>(root: &'a DeTable<'i>, path: &[Segment]) -> Option<&'a DeTable<'i>> {
    let mut value: Option<&DeValue<'i>> = None;
    for segment in path {
        let next = match (value, segment) {
            (None, Segment::Key(k)) => root.get(k.as_str())?.get_ref(),
            (Some(DeValue::Table(t)), Segment::Key(k)) => t.get(k.as_str())?.get_ref(),
            (Some(DeValue::Array(items)), Segment::Index(i)) => items.get(*i)?.get_ref(),
            _ => return None,
        };
        value = Some(next);
    }
    match value {
        None => Some(root),
        Some(DeValue::Table(t)) => Some(t),
        Some(_) => None,
    }
}

/// Renames the entry whose key has `span` to `name`, wherever it is.
fn rename(table: &mut DeTable<'_>, span: &Range<usize>, name: &str) -> bool {
    let old = table
        .keys()
        .find(|key| key.span() == *span)
        .map(|key| key.get_ref().to_string());
    if let Some(old) = old {
        if let Some((key, value)) = table.remove_entry(old.as_str()) {
            table.insert(
                Spanned::new(key.span(), std::borrow::Cow::Owned(name.to_owned())),
                value,
            );
            return true;
        }
    }
    table.iter_mut().any(|(_, value)| match value.get_mut() {
        DeValue::Table(t) => rename(t, span, name),
        DeValue::Array(items) => items.iter_mut().any(|item| match item.get_mut() {
            DeValue::Table(t) => rename(t, span, name),
            _ => false,
        }),
        _ => false,
    })
}

/// `line L, column C` (both from 1) of a byte offset.
fn line_column(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// serde's wording, in the vocabulary of a config file.
fn tidy_message(message: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // "unknown field `x`, expected one of `a`, `b`": the key path already names `x`.
        return match rest.split_once(", expected ") {
            Some((_, expected)) => format!("unknown key; expected {expected}"),
            None => "unknown key".into(),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!("unknown value {rest}");
    }
    message
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// What to drop from the document so that deserializing again gets past a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The key-value entry whose key has this span.
    Entry(Range<usize>),
    /// The array element with this span.
    Element(Range<usize>),
}

/// The entry an error span belongs to: a key with exactly that span (unknown keys), else the
/// smallest value that contains it.
fn locate(root: &DeTable<'_>, span: &Range<usize>) -> Option<(Vec<Segment>, Target)> {
    struct Best {
        len: usize,
        path: Vec<Segment>,
        target: Target,
    }
    fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
        outer.start <= inner.start && inner.end <= outer.end
    }
    fn consider(best: &mut Option<Best>, value_span: Range<usize>, path: &[Segment], t: Target) {
        let len = value_span.len();
        // Ties go to the deeper entry: an inline table and its only value can share a span.
        if best
            .as_ref()
            .is_none_or(|b| len < b.len || (len == b.len && path.len() > b.path.len()))
        {
            *best = Some(Best {
                len,
                path: path.to_vec(),
                target: t,
            });
        }
    }
    fn walk_value(
        value: &Spanned<DeValue<'_>>,
        span: &Range<usize>,
        path: &mut Vec<Segment>,
        exact: &mut Option<(Vec<Segment>, Target)>,
        best: &mut Option<Best>,
    ) {
        match value.get_ref() {
            DeValue::Table(table) => walk_table(table, span, path, exact, best),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Segment::Index(i));
                    if contains(&item.span(), span) {
                        consider(best, item.span(), path, Target::Element(item.span()));
                    }
                    walk_value(item, span, path, exact, best);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    fn walk_table(
        table: &DeTable<'_>,
        span: &Range<usize>,
        path: &mut Vec<Segment>,
        exact: &mut Option<(Vec<Segment>, Target)>,
        best: &mut Option<Best>,
    ) {
        for (key, value) in table.iter() {
            path.push(Segment::Key(key.get_ref().to_string()));
            if key.span() == *span && exact.is_none() {
                *exact = Some((path.clone(), Target::Entry(key.span())));
            }
            if contains(&value.span(), span) {
                consider(best, value.span(), path, Target::Entry(key.span()));
            }
            walk_value(value, span, path, exact, best);
            path.pop();
        }
    }
    let mut exact = None;
    let mut best = None;
    walk_table(root, span, &mut Vec::new(), &mut exact, &mut best);
    exact.or(best.map(|b| (b.path, b.target)))
}

/// Removes the entry or element `target` names; `false` when it is not there.
fn remove(table: &mut DeTable<'_>, target: &Target) -> bool {
    fn in_value(value: &mut DeValue<'_>, target: &Target) -> bool {
        match value {
            DeValue::Table(table) => remove(table, target),
            DeValue::Array(items) => {
                if let Target::Element(span) = target {
                    if let Some(i) = items.iter().position(|item| item.span() == *span) {
                        let mut kept = DeArray::new();
                        for (j, item) in items.iter().enumerate() {
                            if j != i {
                                kept.push(item.clone());
                            }
                        }
                        *items = kept;
                        return true;
                    }
                }
                items
                    .iter_mut()
                    .any(|item| in_value(item.get_mut(), target))
            }
            _ => false,
        }
    }
    if let Target::Entry(span) = target {
        let name = table
            .keys()
            .find(|key| key.span() == *span)
            .map(|key| key.get_ref().to_string());
        if let Some(name) = name {
            return table.remove(name.as_str()).is_some();
        }
    }
    table
        .iter_mut()
        .any(|(_, value)| in_value(value.get_mut(), target))
}

/// `server.listen`, `routes[2].upstream`, `platforms.max_sessions."my app"`.
fn render_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&render_key(key));
            }
        }
    }
    out
}

/// A key as TOML would need it written: bare when it can be, quoted otherwise.
pub(crate) fn render_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        match parse::<GatewayFile>(text) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse::<GatewayFile>("").unwrap(), GatewayFile::default());
    }

    #[test]
    fn shape_problems_have_key_paths() {
        let cases: &[(&str, &[&str])] = &[
            ("nope = 1", &["nope"]),
            ("[server]\nlisten = 5", &["server.listen"]),
            ("[server]\nlistn = \"x\"", &["server.listn"]),
            ("[server]\nmax_body_bytes = -1", &["server.max_body_bytes"]),
            ("[token]\nalgorithm = \"none\"", &["token.algorithm"]),
            (
                "[[token.verify_keys]]\nkid = \"a\"\n[[token.verify_keys]]\nkid = \"b\"\nsecret = \"x\"",
                &["token.verify_keys[1].secret"],
            ),
            ("[session]\nstore = \"disk\"", &["session.store"]),
            ("[session]\nlocal_cache = \"yes\"", &["session.local_cache"]),
            ("[session]\nlocal_cache_max_bytes = -1", &["session.local_cache_max_bytes"]),
            ("[login.lockout]\nwindw = \"1m\"", &["login.lockout.windw"]),
            ("[login]\nlockout = { max_failures = \"5\" }", &["login.lockout.max_failures"]),
            ("[login.captcha]\nmod = \"always\"", &["login.captcha.mod"]),
            ("[login.captcha]\nmode = \"sometimes\"", &["login.captcha.mode"]),
            ("[login.captcha]\nafter_failures = \"3\"", &["login.captcha.after_failures"]),
            (
                "[platforms]\nmax_sessions = { web = \"one\" }",
                &["platforms.max_sessions.web"],
            ),
            ("[cors]\nallowed_origins = \"*\"", &["cors.allowed_origins"]),
            ("[[upstreams]]\nname = \"a\"\nurls = [\"http://x:1\", 5]", &["upstreams[0].urls[1]"]),
            (
                "[[routes]]\npath = \"/\"\n[[routes]]\npath = \"/a\"\nauth = \"maybe\"",
                &["routes[1].auth"],
            ),
            ("routes = 3", &["routes"]),
        ];
        for (text, want) in cases {
            assert_eq!(keys(text), *want, "{text}");
        }
    }

    #[test]
    fn every_shape_problem_at_once() {
        let text = r#"
typo = 1
[server]
listen = 8080
extra = true
[[routes]]
path = "/"
auth = "sometimes"
[[routes]]
path = "/b"
methods = "GET"
"#;
        assert_eq!(
            keys(text),
            [
                "typo",
                "server.listen",
                "server.extra",
                "routes[0].auth",
                "routes[1].methods"
            ]
        );
    }

    #[test]
    fn later_problems_keep_their_indices_after_an_element_is_dropped() {
        let text = "[[upstreams]]\nname = \"a\"\nurls = [1, \"http://x:1\", 2]";
        assert_eq!(keys(text), ["upstreams[0].urls[0]", "upstreams[0].urls[2]"]);
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = parse::<GatewayFile>("[server]\nlisten = \n").unwrap_err();
        assert!(err[0].key.starts_with("line 2"), "{err:?}");
        let err = parse::<GatewayFile>("[server]\n[server]\n").unwrap_err();
        assert!(err[0].key.starts_with("line 2"), "{err:?}");
    }

    #[test]
    fn messages_speak_of_keys() {
        let err = parse::<GatewayFile>("[server]\nlistn = \"x\"").unwrap_err();
        assert_eq!(err[0].message, "unknown key listn, did you mean listen?");
        let err = parse::<GatewayFile>("[server]\nzzz = \"x\"").unwrap_err();
        assert!(
            err[0].message.starts_with("unknown key; expected"),
            "{err:?}"
        );
        let err = parse::<GatewayFile>("[session]\nstore = \"disk\"").unwrap_err();
        assert!(
            err[0].message.starts_with("unknown value `disk`"),
            "{err:?}"
        );
    }

    #[test]
    fn typos_get_the_closest_known_key_of_their_table() {
        let cases: &[(&str, &str)] = &[
            ("[token]\nacess_ttl = \"1h\"", "did you mean access_ttl?"),
            ("[token]\nrefresh_tll = \"1h\"", "did you mean refresh_ttl?"),
            ("[token]\nAudience = \"x\"", "did you mean audience?"),
            ("[login.lockout]\nwindw = \"1m\"", "did you mean window?"),
            (
                "[login.captcha]\nafter_failure = 2",
                "did you mean after_failures?",
            ),
            ("[[routes]]\npth = \"/\"", "did you mean path?"),
            // Not close to anything: the list instead.
            ("[token]\nlifetime = \"1h\"", "unknown key; expected one of"),
            // The key it is close to is set already: it is no stand-in for it.
            (
                "[token]\naccess_ttl = \"1h\"\nacess_ttl = \"1h\"",
                "unknown key; expected",
            ),
        ];
        for (text, want) in cases {
            let err = parse::<GatewayFile>(text).unwrap_err();
            assert!(err[0].message.contains(want), "{text}: {err:?}");
        }
    }

    #[test]
    fn the_as_meant_reading_renames_the_typo() {
        let read = parse_guessing::<GatewayFile>(
            "[token]\nacess_ttl = \"1h\"\n[[routes]]\npth = \"/x\"\n[server]\nlisten = 1",
        );
        let value = read.value.expect("read with the typos dropped");
        assert_eq!(value.token.access_ttl, "2h");
        assert_eq!(value.routes[0].path, None);
        let meant = read.as_meant.expect("a reading as meant");
        assert_eq!(meant.token.access_ttl, "1h");
        assert_eq!(meant.routes[0].path.as_deref(), Some("/x"));
        // Other shape problems are dropped in both readings alike.
        assert_eq!(meant.server.listen, ServerFile::default().listen);
        assert_eq!(read.problems.len(), 3, "{:?}", read.problems);
        assert!(parse_guessing::<GatewayFile>("[server]\nlisten = 1")
            .as_meant
            .is_none());
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        for (a, b, d) in [
            ("acess_ttl", "access_ttl", 1),
            ("tll", "ttl", 1),
            ("wnidow", "window", 1),
            ("listen", "listen", 0),
            ("abc", "", 3),
            ("kid", "kids", 1),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} {b}");
        }
    }

    #[test]
    fn quoted_keys_render_quoted() {
        assert_eq!(keys("\"a b\" = 1"), ["\"a b\""]);
    }

    #[test]
    fn users_file_shape() {
        let text = "[[users]]\nid = \"1\"\nusername = \"a\"\npassword_hash = \"x\"\nrole = []";
        let err = parse::<UsersFile>(text).unwrap_err();
        assert_eq!(err[0].key, "users[0].role");
    }
}
