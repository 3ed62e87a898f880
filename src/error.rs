//! The one place where a refusal becomes an HTTP answer.
//!
//! Every phase returns its own typed error; they all convert into [`GatewayError`], and only
//! [`GatewayError::into_response`] picks the status, the stable error code of the contract and
//! the fixed client message. Causes go to the log, never into the body.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use tracing::Level;

use crate::body::{full, Body};
use crate::logs::scope;
use crate::routing::{PathError, Unrouted};
use crate::session::StoreError;
use crate::tokens::TokenError;

/// Carries the error code of every 401 and 403 (contract §5, `/auth/verify`).
pub(crate) const X_AUTH_ERROR: header::HeaderName = header::HeaderName::from_static("x-auth-error");

/// A refusal the gateway answers itself, with the contract's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GatewayError {
    BadRequest(&'static str),
    MissingToken,
    InvalidToken,
    TokenExpired,
    SessionRevoked,
    SessionReplaced,
    InvalidCredentials,
    InvalidRefreshToken,
    TokenTheftDetected,
    /// A login that needs a captcha came without a live `captcha_id` and `captcha`.
    CaptchaRequired,
    /// The captcha answer was wrong (the challenge is spent).
    InvalidCaptcha,
    Forbidden,
    /// A cookie-authenticated unsafe request (or a login/logout form) from another site.
    CsrfFailed,
    NoRoute,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    HeadersTooLarge,
    /// The body of a gateway endpoint did not arrive within `header_timeout`.
    RequestTimeout,
    AccountLocked {
        retry_after: Duration,
    },
    /// The per-IP login flood guard refused the attempt.
    RateLimited,
    /// Every password-hashing slot stayed busy: 503 with Retry-After.
    LoginBusy,
    UpstreamUnavailable,
    /// The legacy login answered an identity value that cannot be a header; the message names
    /// the field.
    UpstreamIdentity(&'static str),
    UpstreamTimeout,
    StoreUnavailable,
    /// A foreign token's issuer has no keys yet (its JWKS never arrived): 503 with Retry-After.
    IssuerUnavailable,
    /// Admin API without the right bearer token.
    AdminUnauthorized,
    Internal,
}

impl GatewayError {
    pub(crate) fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            BadRequest(_) => StatusCode::BAD_REQUEST,
            MissingToken | InvalidToken | TokenExpired | SessionRevoked | SessionReplaced
            | InvalidCredentials | InvalidRefreshToken | TokenTheftDetected | CaptchaRequired
            | InvalidCaptcha | AdminUnauthorized => StatusCode::UNAUTHORIZED,
            Forbidden | CsrfFailed => StatusCode::FORBIDDEN,
            NoRoute | NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            AccountLocked { .. } | RateLimited => StatusCode::TOO_MANY_REQUESTS,
            UpstreamUnavailable | UpstreamIdentity(_) => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            StoreUnavailable | LoginBusy | IssuerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of the contract (§7).
    pub(crate) fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            BadRequest(_) => "bad_request",
            MissingToken => "missing_token",
            InvalidToken => "invalid_token",
            TokenExpired => "token_expired",
            SessionRevoked => "session_revoked",
            SessionReplaced => "session_replaced",
            InvalidCredentials => "invalid_credentials",
            InvalidRefreshToken => "invalid_refresh_token",
            TokenTheftDetected => "token_theft_detected",
            CaptchaRequired => "captcha_required",
            InvalidCaptcha => "invalid_captcha",
            AdminUnauthorized => "invalid_token",
            Forbidden => "forbidden",
            CsrfFailed => "csrf_failed",
            NoRoute => "no_route",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            PayloadTooLarge => "payload_too_large",
            HeadersTooLarge => "request_header_fields_too_large",
            RequestTimeout => "request_timeout",
            AccountLocked { .. } => "account_locked",
            RateLimited => "rate_limited",
            UpstreamUnavailable | UpstreamIdentity(_) => "upstream_unavailable",
            UpstreamTimeout => "upstream_timeout",
            StoreUnavailable => "store_unavailable",
            IssuerUnavailable => "issuer_unavailable",
            LoginBusy => "login_busy",
            Internal => "internal_error",
        }
    }

    /// A fixed message for the client; never the cause.
    pub(crate) fn message(&self) -> &'static str {
        use GatewayError::*;
        match self {
            BadRequest(m) => m,
            MissingToken => "an access token is required",
            InvalidToken => "the access token is invalid",
            TokenExpired => "the access token has expired; call the refresh endpoint (a token of an identity provider: get a new one there)",
            SessionRevoked => "the session has ended",
            SessionReplaced => "the session was ended by a newer login on the same platform",
            InvalidCredentials => "invalid username or password",
            InvalidRefreshToken => "the refresh token is invalid or expired",
            TokenTheftDetected => "a spent refresh token was reused; the session has been ended",
            CaptchaRequired => "this login needs a captcha: get one from the captcha endpoint and send its captcha_id and your answer as captcha",
            InvalidCaptcha => "the captcha answer is wrong; get a new captcha",
            AdminUnauthorized => "the admin token is missing or wrong",
            Forbidden => "access to this route is not allowed",
            CsrfFailed => "the request does not come from this site (CSRF check)",
            NoRoute => "no route matches this path",
            NotFound => "not found",
            MethodNotAllowed => "method not allowed on this route",
            PayloadTooLarge => "the request body is too large",
            HeadersTooLarge => "the request headers are too large",
            RequestTimeout => "the request body did not arrive in time",
            AccountLocked { .. } => "too many failed logins; try again later",
            RateLimited => "too many login attempts from this address; slow down",
            UpstreamUnavailable => "the upstream is unavailable",
            UpstreamIdentity(m) => m,
            UpstreamTimeout => "the upstream did not answer in time",
            StoreUnavailable => "the session store is unavailable; try again shortly",
            IssuerUnavailable => "the token's issuer has published no keys yet; try again shortly",
            LoginBusy => "too many logins in progress; try again shortly",
            Internal => "internal error",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3) of a refused bearer token: the token
    /// errors of protected routes and of the endpoints that take an access token. A failed
    /// login or refresh (`invalid_credentials`, `invalid_refresh_token`,
    /// `token_theft_detected`, `captcha_required`, `invalid_captcha`) presented no bearer
    /// token, so a Bearer challenge saying `invalid_token` would be false; those 401s carry
    /// none.
    pub(crate) fn bearer_challenge(&self) -> Option<&'static str> {
        use GatewayError::*;
        match self {
            MissingToken => Some(r#"Bearer realm="authgate", error="invalid_request""#),
            InvalidToken | TokenExpired | SessionRevoked | SessionReplaced | AdminUnauthorized => {
                Some(r#"Bearer realm="authgate", error="invalid_token""#)
            }
            InvalidCredentials | InvalidRefreshToken | TokenTheftDetected | CaptchaRequired
            | InvalidCaptcha => None,
            BadRequest(_)
            | Forbidden
            | CsrfFailed
            | NoRoute
            | NotFound
            | MethodNotAllowed
            | PayloadTooLarge
            | HeadersTooLarge
            | RequestTimeout
            | AccountLocked { .. }
            | RateLimited
            | LoginBusy
            | UpstreamUnavailable
            | UpstreamIdentity(_)
            | UpstreamTimeout
            | StoreUnavailable
            | IssuerUnavailable
            | Internal => None,
        }
    }

    /// 405 `method_not_allowed` with the `Allow` header HTTP requires on it (RFC 9110
    /// §15.5.6): `allow` lists the methods the resource takes.
    pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
        let mut r = GatewayError::MethodNotAllowed.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        r
    }

    /// The JSON answer, with `WWW-Authenticate` on a refused bearer token and `Retry-After`
    /// where the contract asks; inside a request also its `request_id`. The refusal's log
    /// line is written here too ([`scope::refused`]), with the request's context and the
    /// cause the phases noted: whichever part of the gateway refuses, it is logged once.
    pub(crate) fn into_response(self) -> Response<Body> {
        scope::refused(self.status().as_u16(), self.code());
        let mut body = serde_json::json!({ "error": self.code(), "message": self.message() });
        if let Some(id) = scope::request_id() {
            body["request_id"] = id.into();
        }
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // The code again where a proxy in front can relay it without reading the body: on
        // every error, not only the contract's 401/403, since nginx's auth_request keeps no
        // body and turns a 400, 405 or 503 of forward-auth into a bare 500 (the recipe in
        // examples/nginx reads the code from here).
        h.insert(X_AUTH_ERROR, HeaderValue::from_static(self.code()));
        if let Some(challenge) = self.bearer_challenge() {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        match self {
            GatewayError::AccountLocked { retry_after } => {
                let secs = retry_after.as_secs().max(1);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            GatewayError::StoreUnavailable
            | GatewayError::RateLimited
            | GatewayError::LoginBusy => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::IssuerUnavailable => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::tokens::issuer::RETRY_AFTER.as_secs()),
                );
            }
            _ => {}
        }
        resp
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for GatewayError {}

impl From<TokenError> for GatewayError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => GatewayError::TokenExpired,
            TokenError::Invalid(why) => {
                scope::note(Level::INFO, why);
                GatewayError::InvalidToken
            }
            // `KeyRing::verify_fetching` turns it into one of the others; a caller of plain
            // `verify_shared` has no fetch to wait for.
            TokenError::KeysNeeded(_) => {
                scope::note(Level::INFO, "unknown_kid");
                GatewayError::InvalidToken
            }
            TokenError::IssuerUnavailable => GatewayError::IssuerUnavailable,
        }
    }
}

/// A store failure is a 503 `store_unavailable`, logged and counted ([`store_failed`]).
impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        store_failed(&e, "refused with 503");
        GatewayError::StoreUnavailable
    }
}

impl From<PathError> for GatewayError {
    fn from(e: PathError) -> Self {
        scope::note(Level::INFO, format!("path refused: {e}"));
        GatewayError::BadRequest("the request path is malformed or ambiguous")
    }
}

impl From<Unrouted> for GatewayError {
    fn from(e: Unrouted) -> Self {
        match e {
            Unrouted::MethodNotAllowed => GatewayError::MethodNotAllowed,
            Unrouted::NotFound => GatewayError::NoRoute,
        }
    }
}

/// The one place a session-store failure is logged and counted
/// (`authgate_store_errors_total`), whatever is done about it (`then`: a 503, the token
/// accepted alone, a retry). An unreachable store is told once, by the store itself ("session
/// store lost", then "back"), so each request's failure is only a debug line; any other store
/// error is an error line each time.
pub(crate) fn store_failed(e: &StoreError, then: &str) {
    match e {
        StoreError::Unavailable(_) => tracing::debug!(error = %e, then, "session store error"),
        _ => tracing::error!(error = %e, then, "session store error"),
    }
    metrics::counter!("authgate_store_errors_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_401s_have_a_bearer_challenge_and_json() {
        for e in [
            GatewayError::MissingToken,
            GatewayError::InvalidToken,
            GatewayError::TokenExpired,
            GatewayError::SessionRevoked,
            GatewayError::SessionReplaced,
            GatewayError::AdminUnauthorized,
        ] {
            let code = e.code();
            let missing = matches!(e, GatewayError::MissingToken);
            let r = e.into_response();
            assert_eq!(r.status(), 401);
            let www = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
            let want = if missing {
                "invalid_request"
            } else {
                "invalid_token"
            };
            assert!(
                www.starts_with("Bearer realm=\"authgate\""),
                "{code}: {www}"
            );
            assert!(www.contains(want), "{code}: {www}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        }
    }

    #[test]
    fn login_and_refresh_401s_have_no_bearer_challenge() {
        for e in [
            GatewayError::InvalidCredentials,
            GatewayError::InvalidRefreshToken,
            GatewayError::TokenTheftDetected,
            GatewayError::CaptchaRequired,
            GatewayError::InvalidCaptcha,
        ] {
            let code = e.code();
            let r = e.into_response();
            assert_eq!(r.status(), 401, "{code}");
            assert!(
                !r.headers().contains_key(header::WWW_AUTHENTICATE),
                "{code}: {:?}",
                r.headers()
            );
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        }
    }

    #[test]
    fn every_error_carries_its_code_in_x_auth_error() {
        for e in [
            GatewayError::BadRequest("x"),
            GatewayError::MissingToken,
            GatewayError::Forbidden,
            GatewayError::NoRoute,
            GatewayError::MethodNotAllowed,
            GatewayError::UpstreamUnavailable,
            GatewayError::StoreUnavailable,
            GatewayError::IssuerUnavailable,
        ] {
            let code = e.code();
            let r = e.into_response();
            assert_eq!(r.headers()[X_AUTH_ERROR], code, "{code}");
        }
    }

    #[test]
    fn retry_after_on_429_and_503() {
        let r = GatewayError::AccountLocked {
            retry_after: Duration::from_secs(90),
        }
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "90");
        let r = GatewayError::StoreUnavailable.into_response();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }
}
