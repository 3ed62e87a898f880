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
//! 2. [`lockout::Lockout::check`] with [`username_of`] — locked: 429 `account_locked`;
//! 3. [`Authenticator::authenticate`];
//! 4. [`lockout::Lockout::record_failure`] on `InvalidCredentials` or a counted `Relay`,
//!    [`lockout::Lockout::record_success`] on `Success`.

pub mod lockout;
pub mod upstream;
pub mod users_file;

use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderMap;

use crate::config::{Login, LoginBackend};

/// Login bodies above this size are refused (`400 bad_request`) by every backend; read at
/// most this much (plus one byte, to tell) from the client.
pub const MAX_BODY_BYTES: usize = users_file::MAX_BODY_BYTES;

/// Who logged in.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginIdentity {
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
pub enum LoginOutcome {
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
pub struct Authenticator {
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
    pub fn new(login: &Login) -> Self {
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
    pub fn is_enabled(&self) -> bool {
        !matches!(self.backend, Backend::None)
    }

    /// Users file: does a user with this id still exist? `None` for the other backends, which
    /// cannot tell (the upstream login is only asked at login). A refresh and a reload use it
    /// so that a user removed from the file keeps no session.
    pub fn has_user_id(&self, user_id: &str) -> Option<bool> {
        match &self.backend {
            Backend::UsersFile(b) => Some(b.has_user_id(user_id)),
            Backend::Upstream(_) | Backend::None => None,
        }
    }

    /// Checks one login body. `headers` are the client's request headers (the upstream
    /// backend passes some on) and `client_ip` the client as far as the gateway believes it
    /// (sent to the upstream login as `X-Forwarded-For`).
    pub async fn authenticate(
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

/// Fields tried, in order, for the username of a login body (lock-out key).
const USERNAME_FIELDS: [&str; 4] = ["username", "user", "email", "login"];

/// The username a login body is for, to key lock-out: the first non-empty string among the
/// `username`, `user`, `email`, `login` fields of a JSON object (users file: only `username`
/// can be set in a valid body), or of an `application/x-www-form-urlencoded` body (legacy
/// logins often take forms). `None` if there is none or the body is over [`MAX_BODY_BYTES`];
/// then only the client IP is counted.
pub fn username_of(body: &[u8]) -> Option<String> {
    if body.len() > MAX_BODY_BYTES {
        return None;
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let obj = value.as_object()?;
        return USERNAME_FIELDS.iter().find_map(|f| {
            obj.get(*f)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        });
    }
    let text = std::str::from_utf8(body).ok()?;
    let pairs: Vec<(String, String)> = text
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    USERNAME_FIELDS.iter().find_map(|f| {
        pairs
            .iter()
            .find(|(k, v)| k == f && !v.is_empty())
            .map(|(_, v)| v.clone())
    })
}

/// One `x-www-form-urlencoded` key or value: `+` is a space, then percent-decoding.
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
            backend,
            lockout: crate::config::Lockout {
                max_failures: 5,
                max_failures_per_ip: 50,
                window: Duration::from_secs(60),
                duration: Duration::from_secs(600),
            },
        }
    }

    #[test]
    fn username_of_table() {
        for (body, want) in [
            (r#"{"username":"alice","password":"x"}"#, Some("alice")),
            (r#"{"user":"bob"}"#, Some("bob")),
            (
                r#"{"email":"c@example.com","login":"c"}"#,
                Some("c@example.com"),
            ),
            (r#"{"login":"dan"}"#, Some("dan")),
            (r#"{"username":"","user":"eve"}"#, Some("eve")),
            (r#"{"username":7,"login":"fay"}"#, Some("fay")),
            (r#"{"password":"x"}"#, None),
            (r#"["alice"]"#, None),
            ("", None),
            ("not json", None),
            ("username=gus&password=x", Some("gus")),
            ("password=x&email=h%40example.com", Some("h@example.com")),
            ("user=i+j", Some("i j")),
            ("username=&login=k", Some("k")),
            ("password=x", None),
        ] {
            assert_eq!(username_of(body.as_bytes()).as_deref(), want, "{body}");
        }
        let big = format!(r#"{{"username":"{}"}}"#, "a".repeat(MAX_BODY_BYTES));
        assert_eq!(username_of(big.as_bytes()), None);
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
