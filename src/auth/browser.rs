//! Browser sessions (`[browser]`): the three cookies the gateway sets, the CSRF check for
//! requests the access cookie authenticates, which requests are HTML navigations, and where
//! a browser may be sent back to (`return_to`).
//!
//! Cookies are written and parsed with the `cookie` crate. The access and refresh cookies are
//! `HttpOnly` (no script reads a token), all three are `SameSite=Lax` and `Secure` (unless
//! `insecure_cookies`); the refresh cookie only travels to `<prefix>/refresh`.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::app::Live;
use crate::body::{empty, Body};
use crate::config::{Browser, CsrfMode, LoginPage};
use crate::error::GatewayError;

/// `X-CSRF-Token`: the double-submit header.
pub(crate) const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// How the request's access token comes: in the access cookie when `[browser]` is on, the
/// cookie is there and no `Authorization: Bearer` token was sent (a header and a cookie that
/// disagree are a 400 earlier). An `Authorization` header of another scheme carries no token
/// of ours, and a browser sends one by itself (cached `Basic` credentials of the origin, to
/// cross-site requests too): the token still comes from the cookie then.
pub(crate) fn via_cookie(live: &Live, headers: &HeaderMap) -> bool {
    live.config.browser.as_ref().is_some_and(|b| {
        !matches!(crate::auth::token::extract(headers, None), Ok(Some(_)))
            && crate::auth::token::cookie_value(headers, &b.access_cookie)
                .is_ok_and(|v| v.is_some())
    })
}

/// GET or HEAD whose `Accept` lists `text/html`: a browser navigation, which is sent to
/// renew its cookies instead of getting a JSON 401.
pub(crate) fn is_html_navigation(method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && headers.get_all(header::ACCEPT).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',').any(|m| {
                    m.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html"))
                })
            })
        })
}

/// Methods that change nothing (RFC 9110 §9.2.1): never CSRF-checked.
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The CSRF check of a cookie-authenticated unsafe request (and of the login and logout
/// forms): `Sec-Fetch-Site: same-origin|none`, else an `Origin` (or, without one, a
/// `Referer`) that is the request's own origin or one of `cors.allowed_origins`; with
/// `double_submit`, also `X-CSRF-Token` (or `form_token`) equal to the CSRF cookie.
pub(crate) fn csrf_check(
    live: &Live,
    headers: &HeaderMap,
    own_origin: Option<&str>,
    form_token: Option<&str>,
) -> Result<(), GatewayError> {
    let Some(b) = &live.config.browser else {
        return Ok(());
    };
    if b.csrf == CsrfMode::Off {
        return Ok(());
    }
    if !same_origin(live, headers, own_origin) {
        crate::logs::scope::note(tracing::Level::INFO, "cross-site request");
        return Err(GatewayError::CsrfFailed);
    }
    if b.csrf == CsrfMode::DoubleSubmit {
        let cookie = crate::auth::token::cookie_value(headers, &b.csrf_cookie)
            .ok()
            .flatten();
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .or(form_token);
        let matches = match (cookie, sent) {
            (Some(c), Some(s)) => {
                aws_lc_rs::constant_time::verify_slices_are_equal(c.as_bytes(), s.as_bytes())
                    .is_ok()
            }
            _ => false,
        };
        if !matches {
            crate::logs::scope::note(tracing::Level::INFO, "X-CSRF-Token missing or wrong");
            return Err(GatewayError::CsrfFailed);
        }
    }
    Ok(())
}

/// The origin half of [`csrf_check`] alone: for the login form (there is no CSRF cookie
/// before a login) and a WebSocket handshake (no page can add a header to one).
pub(crate) fn origin_check(
    live: &Live,
    headers: &HeaderMap,
    own_origin: Option<&str>,
) -> Result<(), GatewayError> {
    match &live.config.browser {
        Some(b) if b.csrf != CsrfMode::Off && !same_origin(live, headers, own_origin) => {
            crate::logs::scope::note(tracing::Level::INFO, "cross-site request");
            Err(GatewayError::CsrfFailed)
        }
        _ => Ok(()),
    }
}

/// Whether the browser says the request comes from the gateway's own origin (or an allowed
/// one). A request that says nothing at all (no `Sec-Fetch-Site`, `Origin` or `Referer`)
/// is refused: every browser of the last years sends one of them on a POST.
fn same_origin(live: &Live, headers: &HeaderMap, own_origin: Option<&str>) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if matches!(fetch_site, Some(s) if s.eq_ignore_ascii_case("same-origin") || s.eq_ignore_ascii_case("none"))
    {
        return true;
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let origin = match (origins.next(), origins.next()) {
        (Some(_), Some(_)) => return false,
        (Some(v), None) => v.to_str().ok().map(str::to_owned),
        (None, _) => headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(origin_of_url),
    };
    let Some(origin) = origin else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    if origin == "null" {
        return false;
    }
    own_origin.is_some_and(|own| own.eq_ignore_ascii_case(&origin))
        || live.config.cors.allowed_origins.contains(&origin)
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

/// The request's own origin as the browser sees it: `https` on TLS (or a trusted proxy's
/// `X-Forwarded-Proto`), and the trusted `X-Forwarded-Host`, else `Host`, else the request
/// target's `authority` (HTTP/2 sends `:authority` and, as a rule, no `Host`).
pub(crate) fn own_origin(
    headers: &HeaderMap,
    authority: Option<&str>,
    tls: bool,
    peer_trusted: bool,
) -> Option<String> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let forwarded = |name: &str| {
        peer_trusted
            .then(|| text(name))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = forwarded("x-forwarded-proto").unwrap_or(if tls { "https" } else { "http" });
    let host = forwarded("x-forwarded-host")
        .or_else(|| text("host"))
        .or(authority)?;
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    ))
}

/// Where a browser may be sent after login or renewal: a relative path (`/x?y`, never `//x`
/// or `/\x`), or an absolute http(s) URL to one of `allowed_return_hosts`; anything else,
/// and anything with a control character, a space or a byte beyond ASCII, is `/`.
pub(crate) fn safe_return_to(raw: &str, allowed_hosts: &[String]) -> String {
    let fallback = || "/".to_owned();
    if raw.is_empty() || !raw.bytes().all(|b| (0x21..0x7f).contains(&b)) || raw.contains('\\') {
        return fallback();
    }
    if raw.starts_with('/') {
        return if raw.starts_with("//") {
            fallback()
        } else {
            raw.to_owned()
        };
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        return fallback();
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return fallback();
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@')
        || !allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(authority))
    {
        return fallback();
    }
    raw.to_owned()
}

/// Characters escaped in a query value (all but unreserved ones).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `<base>?return_to=…[&error=…]`, with both values escaped.
fn with_query(base: &str, return_to: &str, error: Option<&str>) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut url = format!(
        "{base}{sep}return_to={}",
        utf8_percent_encode(return_to, QUERY_VALUE)
    );
    if let Some(code) = error {
        url.push_str("&error=");
        url.extend(utf8_percent_encode(code, QUERY_VALUE));
    }
    url
}

/// The login page's address, with where to go afterwards and the error to show.
pub(crate) fn login_page_url(
    live: &Live,
    b: &Browser,
    return_to: &str,
    error: Option<&str>,
) -> String {
    let builtin;
    let base = match &b.login_page {
        LoginPage::Builtin => {
            builtin = format!("{}/login", live.config.login.prefix);
            &builtin
        }
        LoginPage::At(page) => page,
    };
    with_query(base, return_to, error)
}

/// A redirect the browser follows; never cached.
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    // Built of visible ASCII (escaped values, checked paths), so always a valid value.
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The answer to an HTML navigation that would get a 401: 302 to `<prefix>/refresh`, which
/// renews the cookies from the refresh cookie and comes back to `path_and_query`.
pub(crate) fn renew(live: &Live, path_and_query: &str) -> Response<Body> {
    let return_to = safe_return_to(path_and_query, &[]);
    let base = format!("{}/refresh", live.config.login.prefix);
    redirect(StatusCode::FOUND, &with_query(&base, &return_to, None))
}

/// The `[browser]` cookies never reach an upstream (the proxied app, the legacy login): the
/// refresh cookie never (it only travels to `<prefix>/refresh` anyway), the access and CSRF
/// cookies unless `identity.forward_authorization` forwards the token as it came.
pub(crate) fn strip_cookies(h: &mut HeaderMap, b: &Browser, forward_authorization: bool) {
    if !h.contains_key(header::COOKIE) {
        return;
    }
    crate::auth::token::strip_cookie(h, &b.refresh_cookie);
    if !forward_authorization {
        crate::auth::token::strip_cookie(h, &b.access_cookie);
        crate::auth::token::strip_cookie(h, &b.csrf_cookie);
    }
}

/// The three cookies of a session that just logged in or refreshed: the access token, the
/// refresh token, and the CSRF value, each for `max_age`. A login passes `keep_csrf: None`
/// and gets a fresh value; a refresh passes the request's CSRF cookie, which is kept when it
/// is one of ours, so a page that read it before the renewal still sends the right
/// `X-CSRF-Token` after it.
pub(crate) fn set_session_cookies(
    h: &mut HeaderMap,
    b: &Browser,
    access: &str,
    refresh: &str,
    max_age: Duration,
    keep_csrf: Option<&str>,
) {
    set_access_cookie(h, b, access, max_age);
    let csrf = match keep_csrf.filter(|v| is_csrf_value(v)) {
        Some(v) => v.to_owned(),
        None => base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            crate::session::ids::random::<CSRF_BYTES>(),
        ),
    };
    append(
        h,
        cookie(
            b,
            &b.refresh_cookie,
            refresh,
            &b.refresh_path,
            max_age,
            true,
        ),
    );
    append(h, cookie(b, &b.csrf_cookie, &csrf, "/", max_age, false));
}

/// Random bytes in a CSRF value (32 base64url characters).
const CSRF_BYTES: usize = 24;

/// A value [`set_session_cookies`] could have written: 32 base64url characters.
fn is_csrf_value(v: &str) -> bool {
    v.len() == CSRF_BYTES * 4 / 3
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// The access cookie alone (a silent refresh).
pub(crate) fn set_access_cookie(h: &mut HeaderMap, b: &Browser, access: &str, max_age: Duration) {
    append(h, cookie(b, &b.access_cookie, access, "/", max_age, true));
}

/// Expires all three cookies (logout, a refresh that failed).
pub(crate) fn expire_cookies(h: &mut HeaderMap, b: &Browser) {
    for (name, path, http_only) in [
        (&b.access_cookie, "/", true),
        (&b.refresh_cookie, b.refresh_path.as_str(), true),
        (&b.csrf_cookie, "/", false),
    ] {
        append(h, cookie(b, name, "", path, Duration::ZERO, http_only));
    }
}

fn cookie<'c>(
    b: &Browser,
    name: &'c str,
    value: &'c str,
    path: &'c str,
    max_age: Duration,
    http_only: bool,
) -> Cookie<'c> {
    let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    Cookie::build((name, value))
        .path(path)
        .http_only(http_only)
        .secure(b.secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(secs))
        .build()
}

fn append(h: &mut HeaderMap, c: Cookie<'_>) {
    // Names were validated, values are tokens (base64url and JWTs): always valid.
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        h.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_is_a_relative_path_or_an_allowed_host() {
        let allowed = ["app.example.com".to_owned()];
        for (raw, want) in [
            ("/orders?id=7", "/orders?id=7"),
            ("/", "/"),
            ("//evil.example", "/"),
            ("/\\evil.example", "/"),
            ("\\\\evil.example", "/"),
            ("%2F%2Fevil.example", "/"),
            ("https://evil.example/x", "/"),
            ("https://app.example.com/x", "https://app.example.com/x"),
            ("https://APP.example.com", "https://APP.example.com"),
            ("https://app.example.com@evil.example/", "/"),
            ("https://evil.example@app.example.com/", "/"),
            ("javascript:alert(1)", "/"),
            ("JavaScript://app.example.com/%0aalert(1)", "/"),
            ("/\r\nSet-Cookie:x", "/"),
            ("/a b", "/"),
            ("/é", "/"),
            ("", "/"),
            ("orders", "/"),
        ] {
            assert_eq!(safe_return_to(raw, &allowed), want, "{raw:?}");
        }
    }

    #[test]
    fn html_navigations() {
        let h = |accept: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static(accept));
            h
        };
        let nav = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(is_html_navigation(&Method::GET, &h(nav)));
        assert!(is_html_navigation(&Method::HEAD, &h("TEXT/HTML; q=1")));
        assert!(!is_html_navigation(&Method::POST, &h(nav)));
        assert!(!is_html_navigation(&Method::GET, &h("application/json")));
        assert!(!is_html_navigation(&Method::GET, &h("*/*")));
        assert!(!is_html_navigation(&Method::GET, &HeaderMap::new()));
    }

    #[test]
    fn origins_of_urls_and_requests() {
        assert_eq!(
            origin_of_url("https://a.example:8443/x?y").as_deref(),
            Some("https://a.example:8443")
        );
        assert_eq!(origin_of_url("ftp://a.example/"), None);
        assert_eq!(origin_of_url("https://u@a.example/"), None);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("App.Example:8080"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("front.example"),
        );
        let authority = Some("gw.example:8443");
        assert_eq!(
            own_origin(&h, authority, false, false).as_deref(),
            Some("http://app.example:8080")
        );
        assert_eq!(
            own_origin(&h, authority, false, true).as_deref(),
            Some("https://front.example")
        );
        assert_eq!(
            own_origin(&h, authority, true, false).as_deref(),
            Some("https://app.example:8080")
        );
        // HTTP/2: no Host, the :authority.
        h.remove(header::HOST);
        assert_eq!(
            own_origin(&h, authority, true, false).as_deref(),
            Some("https://gw.example:8443")
        );
        assert_eq!(own_origin(&h, None, true, false), None);
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            with_query("/auth/login", "/a?b=1&c=2", Some("invalid_credentials")),
            "/auth/login?return_to=/a%3Fb%3D1%26c%3D2&error=invalid_credentials"
        );
        assert_eq!(
            with_query("/login?x=1", "/", None),
            "/login?x=1&return_to=/"
        );
    }
}
