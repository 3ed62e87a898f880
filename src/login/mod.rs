//! Credential backends for `POST /auth/login`: who is this, given a login body?
//!
//! [`Authenticator`] is built once per config snapshot from `[login]` and answers a
//! [`LoginOutcome`]; the endpoint (in `endpoints`) turns that into a token pair or an error and
//! does the lock-out book-keeping with [`lockout`]. The backends:
//! - [`users_file`]: `{"username", "password"}` against Argon2 hashes in `users.toml`;
//! - [`upstream`]: the body goes to the legacy application's own login, whose 2xx JSON names
//!   the user (JSON pointers) and whose other answers are relayed unchanged;
//! - none: the gateway issues no tokens (another issuer does); login is not offered.
//!
//! The endpoint's order for one login, so that a locked account stays locked even with the
//! right password and a flood never reaches Argon2:
//! 1. [`lockout::FloodGuard::allow`] (per IP) — refused: 429 with `Retry-After: 1`;
//! 2. [`lockout::Lockout::check`] with [`username_of`] (a body with a key twice: 400) —
//!    locked: 429 `account_locked`;
//! 3. [`captcha::check`] when `[login.captcha]` asks for one — no live challenge or a wrong
//!    answer: 401 `captcha_required` / `invalid_captcha`, the password not looked at and
//!    nothing counted toward lock-out;
//! 4. [`lockout::Lockout::reserve`], then [`Authenticator::authenticate`];
//! 5. [`lockout::Lockout::record_failure`] on `InvalidCredentials` or a counted `Relay`,
//!    [`lockout::Lockout::record_success`] on `Success`.

pub(crate) mod captcha;
pub(crate) mod lockout;
pub(crate) mod upstream;
pub(crate) mod users_file;

use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderMap;

use crate::config::{Login, LoginBackend};

/// Login bodies above this size are refused (`400 bad_request`) by every backend; read at
/// most this much (plus one byte, to tell) from the client.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who logged in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoginIdentity {
    pub user_id: String,
    pub user_name: String,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    /// Upstream backend: its 2xx JSON body, returned under `"upstream"` beside the token pair.
    pub upstream_body: Option<serde_json::Value>,
    /// Upstream backend: the legacy login's `Set-Cookie` values, relayed to the client (a
    /// legacy session cookie, a captcha tied to `JSESSIONID`).
    pub set_cookies: Vec<http::HeaderValue>,
}

/// What a login attempt came to.
#[derive(Debug)]
pub(crate) enum LoginOutcome {
    Success(LoginIdentity),
    /// Wrong password or unknown user (the same answer, the same cost): 401
    /// `invalid_credentials`, counted for lock-out.
    InvalidCredentials,
    /// Upstream backend, a 2xx that is not a success: `success_pointer` does not hold
    /// `success_value`, there is no user id at `user_id_pointer`, or the body is not JSON (the
    /// cause is logged, naming the pointer). 401 `invalid_credentials` with the legacy JSON
    /// under `"upstream"`, counted for lock-out.
    Rejected {
        upstream_body: Option<serde_json::Value>,
        set_cookies: Vec<http::HeaderValue>,
    },
    /// Upstream backend, non-2xx: relay it unchanged (status, headers minus hop-by-hop, body);
    /// `counts_as_failure` for any 3xx or 4xx but 429 (a redirect back to the login form, a
    /// 400 or 422 for a wrong password are failures as much as a 401).
    Relay {
        response: http::Response<crate::body::Body>,
        counts_as_failure: bool,
    },
    /// Malformed body (users file: not `{"username","password"}` with non-empty strings; any
    /// backend: over [`MAX_BODY_BYTES`]), or login not offered (`backend = "none"`): 400.
    BadRequest(&'static str),
    /// Upstream backend: a 2xx whose identity value `field` (user_id, user_name, tenant,
    /// roles) cannot be a header (over 255 bytes, a control character, padding): 502 naming
    /// the field, logged; not a failed login.
    BadIdentity {
        field: &'static str,
    },
    /// The upstream login is unreachable or timed out: 502 `upstream_unavailable` (the cause
    /// is logged).
    Unavailable,
    /// Users file: no Argon2 slot came free within [`lockout::VERIFY_QUEUE_WAIT`] (a login
    /// flood is being queued): 503 with `Retry-After`. Not a failed login.
    Busy,
}

/// The configured credential backend of one config snapshot.
pub(crate) struct Authenticator {
    backend: Backend,
}

enum Backend {
    UsersFile(users_file::UsersFile),
    /// Boxed: the pooled client is large, and one enum is built per config snapshot.
    Upstream(Box<upstream::UpstreamBackend>),
    None,
}

impl Authenticator {
    /// From `[login]`. Cheap: the users file was read by the config; the upstream client
    /// connects lazily. Must be called inside a Tokio runtime for the upstream backend.
    pub(crate) fn new(login: &Login) -> Self {
        let backend = match &login.backend {
            LoginBackend::UsersFile { users, .. } => {
                Backend::UsersFile(users_file::UsersFile::new(users))
            }
            LoginBackend::Upstream(up) => {
                Backend::Upstream(Box::new(upstream::UpstreamBackend::new(up)))
            }
            LoginBackend::None => Backend::None,
        };
        Self { backend }
    }

    /// Does this gateway offer login at all (`backend` is not `none`)? If not, the endpoint
    /// should answer 404 rather than call [`Self::authenticate`].
    pub(crate) fn is_enabled(&self) -> bool {
        !matches!(self.backend, Backend::None)
    }

    /// The legacy login gets a browser's form as it came; the users file reads JSON.
    pub(crate) fn passes_forms_on(&self) -> bool {
        matches!(self.backend, Backend::Upstream(_))
    }

    /// Users file: does a user with this id still exist? `None` for the other backends, which
    /// cannot tell (the upstream login is only asked at login). A refresh and a reload use it
    /// so that a user removed from the file keeps no session.
    pub(crate) fn has_user_id(&self, user_id: &str) -> Option<bool> {
        match &self.backend {
            Backend::UsersFile(b) => Some(b.has_user_id(user_id)),
            Backend::Upstream(_) | Backend::None => None,
        }
    }

    /// Checks one login body. `headers` are the client's request headers (the upstream
    /// backend passes some on) and `client_ip` the client as far as the gateway believes it
    /// (sent to the upstream login as `X-Forwarded-For`).
    pub(crate) async fn authenticate(
        &self,
        body: Bytes,
        headers: &HeaderMap,
        client_ip: IpAddr,
    ) -> LoginOutcome {
        if body.len() > MAX_BODY_BYTES {
            return LoginOutcome::BadRequest("the login body is too large");
        }
        match &self.backend {
            Backend::UsersFile(b) => b.authenticate(&body).await,
            Backend::Upstream(b) => b.authenticate(body, headers, client_ip).await,
            Backend::None => LoginOutcome::BadRequest("this gateway does not offer login"),
        }
    }
}

/// The username a login body is for, to key lock-out and captcha counters: the string (or
/// number) at `pointer` (`login.username_pointer`; the users file's is `/username`) of a JSON
/// body, or the form field it names (`/username` is the field `username`) of an
/// `application/x-www-form-urlencoded` body. `Ok(None)` when there is none (only the client IP
/// is counted then) or the body is over [`MAX_BODY_BYTES`].
///
/// A body with a key twice (JSON or form) is `Err`, answered 400: the counters and the legacy
/// login could read different copies (`username=decoy&username=carol`), and which one a legacy
/// stack takes varies. Only one field is read, for the same reason: guessing among `username`,
/// `user`, `email` let `{"username":"decoyN","login":"carol"}` guess carol's password without
/// ever locking her.
pub(crate) fn username_of(body: &[u8], pointer: &str) -> Result<Option<String>, &'static str> {
    const DUPLICATE: &str = "the login body holds a key twice";
    if body.len() > MAX_BODY_BYTES {
        return Ok(None);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if serde_json::from_slice::<NoDuplicates>(body).is_err() {
            return Err(DUPLICATE);
        }
        return Ok(value.pointer(pointer).and_then(scalar_text));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(None);
    };
    let pairs: Vec<(String, String)> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    let mut keys = std::collections::HashSet::new();
    if !pairs.iter().all(|(k, _)| keys.insert(k.as_str())) {
        return Err(DUPLICATE);
    }
    // A form is flat: the pointer names one field, `/username` → `username`.
    let Some(field) = pointer.strip_prefix('/').filter(|f| !f.contains('/')) else {
        return Ok(None);
    };
    let field = field.replace("~1", "/").replace("~0", "~");
    Ok(pairs
        .into_iter()
        .find(|(k, v)| *k == field && !v.is_empty())
        .map(|(_, v)| v))
}

/// A non-empty string, or a number as text.
fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Any JSON value, refused when an object anywhere in it holds a key twice (`serde_json`'s
/// own `Value` silently keeps the last).
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<NoDuplicates, A::Error> {
        while a.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = a.next_key::<String>()? {
            if !seen.insert(k) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
            a.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

/// One `x-www-form-urlencoded` key or value: `+` is a space, then percent-decoding.
/// The fields of an `application/x-www-form-urlencoded` body, decoded; a key twice is `Err`
/// (as in [`username_of`]), a body that is not UTF-8 too.
pub(crate) fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "the form is not UTF-8")?;
    let pairs: Vec<(String, String)> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    let mut keys = std::collections::HashSet::new();
    if !pairs.iter().all(|(k, _)| keys.insert(k.as_str())) {
        return Err("the login body holds a key twice");
    }
    Ok(pairs)
}

fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::time::Duration;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn login(backend: LoginBackend) -> Login {
        Login {
            prefix: "/auth".into(),
            username_pointer: "/username".into(),
            backend,
            lockout: crate::config::Lockout {
                max_failures: 5,
                max_failures_per_ip: 50,
                window: Duration::from_secs(60),
                duration: Duration::from_secs(600),
            },
            captcha: crate::config::Captcha {
                mode: crate::config::CaptchaMode::Off,
                ttl: Duration::from_secs(120),
            },
        }
    }

    #[test]
    fn username_of_table() {
        let u = "/username";
        for (body, pointer, want) in [
            (
                r#"{"username":"alice","password":"x"}"#,
                u,
                Ok(Some("alice")),
            ),
            (r#"{"username":1001}"#, u, Ok(Some("1001"))),
            (r#"{"user":"bob"}"#, u, Ok(None)),
            // Only the configured field counts: the decoy trick keys on carol.
            (
                r#"{"username":"decoy1","login":"carol"}"#,
                "/login",
                Ok(Some("carol")),
            ),
            (
                r#"{"username":"decoy1","login":"carol"}"#,
                u,
                Ok(Some("decoy1")),
            ),
            (
                r#"{"data":{"account":"dan"}}"#,
                "/data/account",
                Ok(Some("dan")),
            ),
            (r#"{"username":""}"#, u, Ok(None)),
            (r#"["alice"]"#, u, Ok(None)),
            ("", u, Ok(None)),
            ("not json", u, Ok(None)),
            ("username=gus&password=x", u, Ok(Some("gus"))),
            (
                "password=x&email=h%40example.com",
                "/email",
                Ok(Some("h@example.com")),
            ),
            ("username=i+j", u, Ok(Some("i j"))),
            ("password=x", u, Ok(None)),
            ("username=gus", "/data/username", Ok(None)),
            // Duplicates, JSON or form, top level or nested: 400.
            (r#"{"username":"decoy","username":"carol"}"#, u, Err(())),
            (r#"{"a":{"b":1,"b":2},"username":"x"}"#, u, Err(())),
            (r#"[{"k":1,"k":1}]"#, u, Err(())),
            ("username=decoy&username=carol", u, Err(())),
            ("username=carol&password=a&password=b", u, Err(())),
            ("user%6Eame=decoy&username=carol", u, Err(())),
        ] {
            assert_eq!(
                username_of(body.as_bytes(), pointer)
                    .map_err(|_| ())
                    .as_ref()
                    .map(|o| o.as_deref()),
                want.as_ref().map(|o| *o),
                "{body} at {pointer}"
            );
        }
        let big = format!(r#"{{"username":"{}"}}"#, "a".repeat(MAX_BODY_BYTES));
        assert_eq!(username_of(big.as_bytes(), u), Ok(None));
    }

    #[tokio::test]
    async fn authenticator_dispatches_to_the_users_file() {
        let a = Authenticator::new(&login(LoginBackend::UsersFile {
            path: PathBuf::from("users.toml"),
            users: users_file::tests::users(),
        }));
        assert!(a.is_enabled());
        let ok = a
            .authenticate(
                Bytes::from_static(br#"{"username":"alice","password":"correct horse"}"#),
                &HeaderMap::new(),
                IP,
            )
            .await;
        assert!(matches!(ok, LoginOutcome::Success(ref id) if id.user_id == "1001"));
        // Looked up by id, not by username.
        assert_eq!(a.has_user_id("1001"), Some(true));
        assert_eq!(a.has_user_id("alice"), Some(false));
        let bad = a
            .authenticate(Bytes::from_static(b"{"), &HeaderMap::new(), IP)
            .await;
        assert!(matches!(bad, LoginOutcome::BadRequest(_)));
    }

    #[tokio::test]
    async fn no_backend_offers_no_login() {
        let a = Authenticator::new(&login(LoginBackend::None));
        assert!(!a.is_enabled());
        assert_eq!(a.has_user_id("1001"), None, "no users to tell from");
        let out = a
            .authenticate(
                Bytes::from_static(br#"{"username":"a","password":"b"}"#),
                &HeaderMap::new(),
                IP,
            )
            .await;
        assert!(matches!(out, LoginOutcome::BadRequest(_)));
    }
}
