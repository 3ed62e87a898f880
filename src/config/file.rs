//! The serde mirror of `gateway.toml` (and of the users file): every section and key of the
//! contract with exactly its default, unknown keys rejected.
//!
//! These structs only describe the *shape* of the file. Everything that needs judgement
//! (durations, addresses, header names, cross-references between sections) stays a plain string
//! here and is checked in `mod.rs`, where each problem gets its key path. Every key has a
//! default (required keys default to empty and are reported missing by `mod.rs`), which lets
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
pub const DEFAULT_SECRET_ENV: &str = "AUTHGATE_JWT_SECRET";

/// The whole of `gateway.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayFile {
    pub server: ServerFile,
    pub token: TokenFile,
    pub session: SessionFile,
    pub platforms: PlatformsFile,
    pub login: LoginFile,
    pub identity: IdentityFile,
    pub cors: CorsFile,
    pub upstreams: Vec<UpstreamFile>,
    pub routes: Vec<RouteFile>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    pub listen: String,
    /// `None` (the key left out) or `""`: no admin listener.
    pub admin_listen: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub request_timeout: String,
    pub idle_timeout: String,
    pub shutdown_grace: String,
    pub max_body_bytes: u64,
    pub max_header_bytes: u64,
    pub header_timeout: String,
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
            shutdown_grace: "30s".into(),
            max_body_bytes: 10_485_760,
            max_header_bytes: 16_384,
            header_timeout: "10s".into(),
            trusted_proxies: Vec::new(),
            admin_token_env: "AUTHGATE_ADMIN_TOKEN".into(),
            max_connections: 10_000,
        }
    }
}

/// The algorithms a key may be pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AlgorithmName {
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
    pub fn is_symmetric(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
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
pub struct TokenFile {
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
        }
    }
}

/// `[[token.verify_keys]]`: an older key still accepted. Exactly one source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyKeyFile {
    pub kid: String,
    /// `None`: the same as `token.algorithm`.
    pub algorithm: Option<AlgorithmName>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreName {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    Stateful,
    Stateless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreErrorName {
    Deny,
    AllowStateless,
}

/// `[session]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionFile {
    pub store: StoreName,
    pub mode: ModeName,
    pub redis_url: String,
    pub redis_cluster: Vec<String>,
    pub key_prefix: String,
    pub on_store_error: OnStoreErrorName,
    pub refresh_reuse_grace: String,
}

impl Default for SessionFile {
    fn default() -> Self {
        Self {
            store: StoreName::Memory,
            mode: ModeName::Stateful,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_cluster: Vec::new(),
            key_prefix: "authgate:".into(),
            on_store_error: OnStoreErrorName::Deny,
            refresh_reuse_grace: "10s".into(),
        }
    }
}

/// `[platforms]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformsFile {
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
pub enum BackendName {
    UsersFile,
    Upstream,
    None,
}

/// `[login]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginFile {
    pub prefix: String,
    pub backend: BackendName,
    pub users_file: PathBuf,
    pub upstream_url: Option<String>,
    pub user_id_pointer: Option<String>,
    pub user_name_pointer: Option<String>,
    pub tenant_pointer: Option<String>,
    pub roles_pointer: Option<String>,
    pub lockout: LockoutFile,
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
            lockout: LockoutFile::default(),
        }
    }
}

/// `[login.lockout]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutFile {
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

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityFile {
    pub user_id: String,
    pub user_name: String,
    pub tenant: String,
    pub roles: String,
    pub session_id: String,
    pub platform: String,
    pub forward_authorization: bool,
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
        }
    }
}

/// `[cors]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsFile {
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

/// `[[upstreams]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamFile {
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
pub enum AuthName {
    Public,
    Required,
    Optional,
}

/// `[[routes]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteFile {
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
            strip_prefix: None,
        }
    }
}

/// The users file (`login.users_file`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsersFile {
    pub users: Vec<UserFile>,
}

/// `[[users]]`; `id`, `username` and `password_hash` are required (checked in `mod.rs`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserFile {
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
pub fn parse_lenient<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<Problem>) {
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
        return (None, problems);
    }
    let original = root.get_ref().clone();
    let root_span = root.span();
    let mut current = root.into_inner();
    // Each with where it starts in the text: they are reported in file order, not in the
    // (alphabetical) order the keys are deserialized in.
    let mut problems: Vec<(usize, Problem)> = Vec::new();
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
            Ok(value) => return (Some(value), in_file_order(problems)),
            Err(err) => err,
        };
        let message = tidy_message(err.message());
        let found = err.span().and_then(|span| locate(&original, &span));
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
        let problem = Problem {
            key: render_path(&path),
            message,
        };
        problems.push((at, problem));
        if !remove(&mut current, &target) {
            break;
        }
    }
    (None, in_file_order(problems))
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
            ("[login.lockout]\nwindw = \"1m\"", &["login.lockout.windw"]),
            ("[login]\nlockout = { max_failures = \"5\" }", &["login.lockout.max_failures"]),
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
