//! Browser sessions (`[browser]`, issue 11; contract §2, §4.4, §4.6, §5, §7) through HTTP
//! against the real gateway: the form login and its three cookies, safe `return_to`, the access
//! cookie on the proxy path (and the 302 that renews it for an HTML navigation), the CSRF check
//! of cookie-authenticated unsafe requests, refresh and logout from the cookies, the silent
//! refresh in `Set-Cookie`, the built-in login page, the cookies kept from the upstream, and
//! what `check` refuses.
//!
//! A [`Jar`] plays the browser's cookie store: it takes each answer's `Set-Cookie`s and sends
//! each cookie only where its `Path` lets a browser send it (the refresh cookie to
//! `/auth/refresh` alone). Stateful cases run on both stores (`both_stores!`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cookie::{Cookie, SameSite};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::json;
use tokio::sync::Barrier;

use crate::support::*;

const ACCESS: &str = "authgate_access";
const REFRESH: &str = "authgate_refresh";
const CSRF: &str = "authgate_csrf";
const FORM: &str = "application/x-www-form-urlencoded";
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const EVIL: &str = "https://evil.example";
/// An origin other than the gateway's that `[cors]` allows.
const APP: &str = "https://app.example.com";

both_stores!(
    form_login_sets_the_three_cookies_and_303s_to_return_to,
    cookies_live_as_long_as_the_session,
    form_login_asking_for_json_gets_the_session_without_tokens,
    failed_form_login_303s_back_to_the_login_page,
    a_login_form_from_another_site_is_refused,
    return_to_is_a_relative_path_or_an_allowed_host,
    the_access_cookie_authenticates_and_must_agree_with_a_bearer_header,
    a_bad_cookie_is_a_401_or_for_an_html_navigation_the_renewal_redirect,
    redirect_html_off_keeps_the_401,
    cross_site_unsafe_requests_with_the_cookie_are_refused,
    same_origin_unsafe_requests_with_the_cookie_pass,
    safe_methods_and_bearer_requests_are_not_csrf_checked,
    double_submit_needs_x_csrf_token_equal_to_the_csrf_cookie,
    csrf_off_lets_cross_site_requests_through,
    get_refresh_rotates_the_cookies_and_303s_back,
    a_refresh_cookie_reused_after_its_grace_is_theft,
    refresh_without_a_valid_cookie_expires_the_cookies,
    post_refresh_from_the_cookie_answers_204_and_a_json_body_still_works,
    silent_refresh_of_a_cookie_token_rides_in_set_cookie,
    concurrent_cookie_requests_in_the_window_get_one_new_token,
    logout_from_the_cookie_ends_the_session_and_expires_the_cookies,
    form_logout_303s_to_the_login_page,
    cross_site_logout_is_refused_and_the_session_lives_on,
    logout_all_and_the_session_list_work_from_the_cookie,
    builtin_login_page_is_strict_and_escapes_its_query,
    browser_cookies_never_reach_the_upstream_without_forward_authorization,
    the_refresh_cookie_never_reaches_the_upstream,
    insecure_cookies_drop_secure,
    other_authorization_schemes_beside_the_cookie_do_not_exempt_it,
    a_wildcard_cors_origin_trusts_no_origin_for_csrf,
    a_locked_account_is_told_to_the_login_page,
    an_apps_own_login_page_gets_the_redirects,
    verify_checks_the_cookie_for_csrf_and_renews_it_in_set_cookie,
    http2_cookie_crumbs_authenticate_are_csrf_checked_and_stripped,
    a_login_prefix_of_its_own_moves_the_refresh_cookie_and_the_redirects,
    a_form_login_through_the_legacy_login_passes_the_form_on_but_no_gateway_cookie,
    the_login_page_shows_the_captcha_and_the_form_answers_it,
    a_cross_site_websocket_handshake_with_the_cookie_is_refused,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A stateful gateway with `[browser]` on and `lines` added to that section.
fn conf(store: StoreKind, lines: &str) -> Conf {
    Conf::new()
        .store(store)
        .section(&format!("[browser]\nenabled = true\n{lines}"))
}

/// The gateway's own origin, as a browser that loaded one of its pages names it.
fn origin(gw: &Gateway) -> String {
    format!("http://{}", gw.addr)
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn enc(v: &str) -> String {
    utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
}

/// The `Set-Cookie`s of an answer, parsed.
fn set_cookies(r: &Resp) -> Vec<Cookie<'static>> {
    r.set_cookies()
        .into_iter()
        .map(|s| Cookie::parse(s.to_owned()).unwrap_or_else(|e| panic!("{s:?}: {e}")))
        .collect()
}

fn names(r: &Resp) -> Vec<String> {
    set_cookies(r).iter().map(|c| c.name().to_owned()).collect()
}

/// The one `Set-Cookie` named `name`.
#[track_caller]
fn set_cookie(r: &Resp, name: &str) -> Cookie<'static> {
    let mut found = set_cookies(r).into_iter().filter(|c| c.name() == name);
    let c = found
        .next()
        .unwrap_or_else(|| panic!("no Set-Cookie {name}: {:?}", r.set_cookies()));
    assert!(found.next().is_none(), "two Set-Cookie {name}");
    c
}

fn max_age(c: &Cookie<'_>) -> i64 {
    c.max_age()
        .unwrap_or_else(|| panic!("no Max-Age: {c}"))
        .whole_seconds()
}

/// The three cookies expired (`Max-Age=0`, empty), each on its own path.
#[track_caller]
fn assert_cookies_expired(r: &Resp) {
    assert_eq!(names(r), [ACCESS, REFRESH, CSRF], "{:?}", r.set_cookies());
    for (name, path) in [(ACCESS, "/"), (REFRESH, "/auth/refresh"), (CSRF, "/")] {
        let c = set_cookie(r, name);
        assert_eq!(max_age(&c), 0, "{c}");
        assert_eq!(c.value(), "", "{c}");
        assert_eq!(c.path(), Some(path), "{c}");
    }
}

/// A browser's cookies for the gateway.
#[derive(Debug, Clone, Default)]
struct Jar {
    /// name → (value, path)
    cookies: BTreeMap<String, (String, String)>,
}

impl Jar {
    /// Keeps the answer's cookies (a `Max-Age=0` one is deleted).
    fn take(&mut self, r: &Resp) {
        for c in set_cookies(r) {
            if c.max_age().is_some_and(|a| a.is_zero()) {
                self.cookies.remove(c.name());
            } else {
                let path = c.path().unwrap_or("/").to_owned();
                self.cookies
                    .insert(c.name().to_owned(), (c.value().to_owned(), path));
            }
        }
    }

    fn from(r: &Resp) -> Jar {
        let mut jar = Jar::default();
        jar.take(r);
        jar
    }

    #[track_caller]
    fn get(&self, name: &str) -> &str {
        &self
            .cookies
            .get(name)
            .unwrap_or_else(|| panic!("no cookie {name} in {self:?}"))
            .0
    }

    fn set(&mut self, name: &str, value: &str, path: &str) {
        self.cookies
            .insert(name.to_owned(), (value.to_owned(), path.to_owned()));
    }

    /// The session id in the access cookie.
    fn sid(&self) -> String {
        payload_of(self.get(ACCESS))["sid"]
            .as_str()
            .expect("sid")
            .to_owned()
    }

    /// The `Cookie` header a browser sends to `path`.
    fn header(&self, path: &str) -> String {
        let path = path.split('?').next().unwrap_or(path);
        self.cookies
            .iter()
            .filter(|(_, (_, p))| {
                path == p
                    || (path.starts_with(p.as_str())
                        && (p.ends_with('/') || path[p.len()..].starts_with('/')))
            })
            .map(|(n, (v, _))| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `method path` with the jar's cookies for `path` and `headers`.
async fn send(gw: &Gateway, method: &str, path: &str, jar: &Jar, headers: &[(&str, &str)]) -> Resp {
    send_with(&gw.probe(), method, path, jar, headers).await
}

async fn send_with(
    p: &Probe,
    method: &str,
    path: &str,
    jar: &Jar,
    headers: &[(&str, &str)],
) -> Resp {
    let cookie = jar.header(path);
    let mut h = headers.to_vec();
    if !cookie.is_empty() {
        h.push(("cookie", &cookie));
    }
    p.request(method, path, &h, Bytes::new()).await
}

/// `POST /auth/login` as a form with exactly `body` (already encoded) and `headers`.
async fn post_form(gw: &Gateway, path: &str, body: String, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", FORM)];
    h.extend_from_slice(headers);
    gw.request("POST", path, &h, Bytes::from(body)).await
}

/// A form login of `fields` (encoded here) with `headers`.
async fn form_login(gw: &Gateway, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
    let body = fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    post_form(gw, "/auth/login", body, headers).await
}

/// A successful same-origin form login of a test user on `platform`: the browser's jar.
async fn browser_login(gw: &Gateway, user: &str, platform: &str) -> Jar {
    let own = origin(gw);
    let r = form_login(
        gw,
        &[("username", user), ("password", password_of(user))],
        &[("origin", &own), ("x-platform", platform)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    let jar = Jar::from(&r);
    assert_eq!(names(&r), [ACCESS, REFRESH, CSRF]);
    jar
}

/// Asserts that the jar's access cookie passes `/api/me` as session `sid`.
#[track_caller]
fn assert_cookie_passes<'a>(
    gw: &'a Gateway,
    jar: &'a Jar,
) -> impl std::future::Future<Output = ()> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let r = send(gw, "GET", "/api/me", jar, &[]).await;
        assert_eq!(r.status, 200, "{caller}: {}", text(&r));
        assert_eq!(r.seen("x-session-id"), [jar.sid()], "{caller}");
    }
}

/// Asserts that the jar's access cookie is refused on `/api/me` (a non-HTML request) with 401
/// `code`, before the upstream.
#[track_caller]
fn assert_cookie_refused<'a>(
    gw: &'a Gateway,
    jar: &'a Jar,
    code: &'a str,
) -> impl std::future::Future<Output = ()> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let before = gw.hits();
        let r = send(gw, "GET", "/api/me", jar, &[("accept", "application/json")]).await;
        assert_eq!((r.status, r.code().as_str()), (401, code), "{caller}");
        assert_eq!(
            gw.hits(),
            before,
            "{caller}: a refusal reached the upstream"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Form login
// ---------------------------------------------------------------------------------------------

async fn form_login_sets_the_three_cookies_and_303s_to_return_to(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let own = origin(&gw);
    let r = form_login(
        &gw,
        &[
            ("username", "alice"),
            ("password", ALICE_PW),
            ("return_to", "/orders?id=7&tab=open"),
        ],
        &[("origin", &own)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/orders?id=7&tab=open"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(names(&r), [ACCESS, REFRESH, CSRF], "{:?}", r.set_cookies());
    let session_secs = 30 * 86400;
    for (name, path, http_only) in [
        (ACCESS, "/", true),
        (REFRESH, "/auth/refresh", true),
        (CSRF, "/", false),
    ] {
        let c = set_cookie(&r, name);
        assert_eq!(c.path(), Some(path), "{c}");
        assert_eq!(c.http_only().unwrap_or(false), http_only, "{c}");
        assert_eq!(c.secure(), Some(true), "{c}");
        assert_eq!(c.same_site(), Some(SameSite::Lax), "{c}");
        let age = max_age(&c);
        assert!((session_secs - 2..=session_secs).contains(&age), "{c}");
        assert!(!c.value().is_empty(), "{c}");
    }
    assert!(
        !r.set_cookies()[2].contains("HttpOnly"),
        "scripts read the CSRF cookie"
    );
    let jar = Jar::from(&r);
    assert!(jar.get(CSRF).len() >= 32, "at least 192 random bits");
    let claims = payload_of(jar.get(ACCESS));
    assert_eq!(claims["sub"], "1001");
    assert_eq!(claims["plat"], "web");

    // The browser comes back with its cookie: the upstream sees who it is.
    let r = send(&gw, "GET", "/orders?id=7", &jar, &[("accept", HTML)]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-user-name"), ["alice"]);
    assert_eq!(r.seen("x-session-id"), [jar.sid()]);
    assert_eq!(r.seen("x-user-platform"), ["web"]);
    assert!(
        r.set_cookies().is_empty(),
        "a fresh cookie needs no renewal"
    );
}

async fn cookies_live_as_long_as_the_session(store: StoreKind) {
    // The session ends at the sooner of its idle limit and max_lifetime: so do the cookies.
    let gw = gateway!(conf(store, "").token(
        "access_ttl = \"10m\"\nsilent_refresh_window = \"1m\"\nrefresh_ttl = \"1h\"\nmax_lifetime = \"20m\"",
    ));
    let own = origin(&gw);
    let r = form_login(
        &gw,
        &[("username", "bob"), ("password", BOB_PW)],
        &[("origin", &own), ("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let expires = r.json()["refresh_token_expires_at"].as_u64().unwrap();
    let left = expires as i64 - gw.now() as i64;
    assert!((1199..=1200).contains(&left), "{left}");
    for name in [ACCESS, REFRESH, CSRF] {
        let age = max_age(&set_cookie(&r, name));
        assert!(
            (left - 1..=left + 1).contains(&age),
            "{name}: {age} vs {left}"
        );
    }
}

async fn form_login_asking_for_json_gets_the_session_without_tokens(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let own = origin(&gw);
    let r = form_login(
        &gw,
        &[
            ("username", "alice"),
            ("password", ALICE_PW),
            ("return_to", "/x"),
        ],
        &[
            ("origin", &own),
            ("accept", "application/json"),
            ("x-platform", "h5"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r.header("location").is_none());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    let mut keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token_expires_at",
            "platform",
            "refresh_token_expires_at",
            "session_id",
            "user"
        ],
        "{j}"
    );
    assert_eq!(j["platform"], "h5");
    assert_eq!(j["user"], json!({"id": "1001", "name": "alice"}));
    let jar = Jar::from(&r);
    assert_eq!(j["session_id"], jar.sid());
    assert_eq!(
        j["access_token_expires_at"],
        payload_of(jar.get(ACCESS))["exp"]
    );
    let body = text(&r);
    assert!(
        !body.contains(jar.get(ACCESS)),
        "no access token in the body"
    );
    assert!(
        !body.contains(jar.get(REFRESH)),
        "no refresh token in the body"
    );
    assert_cookie_passes(&gw, &jar).await;

    // A user name beyond ASCII, percent-encoded as UTF-8 by the browser.
    let r = form_login(
        &gw,
        &[("username", "张三"), ("password", ZHANG_PW)],
        &[("origin", &own), ("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["user"], json!({"id": ZHANG_ID, "name": "张三"}));
}

async fn failed_form_login_303s_back_to_the_login_page(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let own = origin(&gw);
    for (user, pw) in [("alice", "wrong"), ("nobody", "whatever")] {
        let r = form_login(
            &gw,
            &[
                ("username", user),
                ("password", pw),
                ("return_to", "/x?a=1"),
            ],
            &[("origin", &own)],
        )
        .await;
        assert_eq!(r.status, 303, "{}", text(&r));
        assert_eq!(
            r.header("location"),
            Some("/auth/login?return_to=/x%3Fa%3D1&error=invalid_credentials")
        );
        assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    }
    // A form missing its password: told to the page too.
    let r = form_login(&gw, &[("username", "alice")], &[("origin", &own)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/auth/login?return_to=/&error=bad_request")
    );
    // Asking for JSON: the JSON error, no redirect, no cookie.
    let r = form_login(
        &gw,
        &[("username", "alice"), ("password", "wrong")],
        &[("origin", &own), ("accept", "application/json")],
    )
    .await;
    r.assert_error(401, "invalid_credentials");
    assert!(r.header("location").is_none());
    assert!(r.set_cookies().is_empty());
    assert_eq!(gw.hits(), 0);
}

async fn a_locked_account_is_told_to_the_login_page(store: StoreKind) {
    let gw = gateway!(conf(store, "").lockout("max_failures = 2"));
    let own = origin(&gw);
    for _ in 0..2 {
        let r = form_login(
            &gw,
            &[
                ("username", "alice"),
                ("password", "wrong"),
                ("return_to", "/x"),
            ],
            &[("origin", &own)],
        )
        .await;
        assert_eq!(
            r.header("location"),
            Some("/auth/login?return_to=/x&error=invalid_credentials")
        );
    }
    // Locked: even the right password is told so, and gets no cookie.
    let r = form_login(
        &gw,
        &[
            ("username", "alice"),
            ("password", ALICE_PW),
            ("return_to", "/x"),
        ],
        &[("origin", &own)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(
        r.header("location"),
        Some("/auth/login?return_to=/x&error=account_locked")
    );
    assert!(r.set_cookies().is_empty());
    let page = gw
        .get("/auth/login?return_to=/x&error=account_locked", &[])
        .await;
    assert!(text(&page).contains("Too many failed attempts."));
    // Asking for JSON: the 429 with Retry-After.
    let r = form_login(
        &gw,
        &[("username", "alice"), ("password", ALICE_PW)],
        &[("origin", &own), ("accept", "application/json")],
    )
    .await;
    r.assert_error(429, "account_locked");
    assert!(r.header("retry-after").is_some());
}

async fn an_apps_own_login_page_gets_the_redirects(store: StoreKind) {
    let gw = gateway!(conf(store, "login_page = \"/signin\""));
    let own = origin(&gw);
    // The gateway serves no page of its own then.
    gw.get("/auth/login", &[("accept", HTML)])
        .await
        .assert_error(405, "method_not_allowed");
    let r = form_login(
        &gw,
        &[
            ("username", "alice"),
            ("password", "wrong"),
            ("return_to", "/x"),
        ],
        &[("origin", &own)],
    )
    .await;
    assert_eq!(
        r.header("location"),
        Some("/signin?return_to=/x&error=invalid_credentials")
    );
    let r = gw
        .get("/auth/refresh?return_to=/x", &[("accept", HTML)])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/signin?return_to=/x"));
    let jar = browser_login(&gw, "alice", "web").await;
    let r = post_form(
        &gw,
        "/auth/logout",
        String::new(),
        &[("origin", &own), ("cookie", &jar.header("/auth/logout"))],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/signin?return_to=/"));
}

async fn a_login_form_from_another_site_is_refused(store: StoreKind) {
    let gw = gateway!(conf(store, "").section(&format!("[cors]\nallowed_origins = [\"{APP}\"]")));
    let own = origin(&gw);
    let other_port = format!("http://127.0.0.1:{}", gw.addr.port() ^ 1);
    let own_referer = format!("{own}/auth/login");
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("sec-fetch-site", "cross-site"), ("origin", EVIL)],
        vec![("origin", EVIL)],
        vec![("origin", "null")],
        vec![("origin", &other_port)],
        vec![("referer", "https://evil.example/login")],
        // A Referer of our own beside a foreign Origin does not help: the Origin is judged.
        vec![("origin", EVIL), ("referer", &own_referer)],
        vec![],
    ];
    for headers in refused {
        let r = form_login(
            &gw,
            &[("username", "alice"), ("password", ALICE_PW)],
            &headers,
        )
        .await;
        assert_eq!(r.status, 403, "{headers:?}: {}", text(&r));
        assert_eq!(r.code(), "csrf_failed", "{headers:?}");
        assert!(r.set_cookies().is_empty(), "{headers:?}");
    }
    let listed = gw
        .admin_call("GET", "/admin/users/1001/sessions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(listed.status, 200, "{}", text(&listed));
    assert_eq!(
        listed.json()["sessions"],
        json!([]),
        "no refused login made a session"
    );

    let passes: Vec<Vec<(&str, &str)>> = vec![
        vec![("sec-fetch-site", "same-origin")],
        vec![("sec-fetch-site", "none")],
        vec![("origin", &own)],
        vec![("sec-fetch-site", "same-site"), ("origin", &own)],
        vec![("referer", &own_referer)],
        vec![("sec-fetch-site", "cross-site"), ("origin", APP)],
    ];
    for headers in passes {
        let r = form_login(
            &gw,
            &[("username", "alice"), ("password", ALICE_PW)],
            &headers,
        )
        .await;
        assert_eq!(r.status, 303, "{headers:?}: {}", text(&r));
        assert_eq!(names(&r), [ACCESS, REFRESH, CSRF], "{headers:?}");
    }
}

async fn return_to_is_a_relative_path_or_an_allowed_host(store: StoreKind) {
    let gw = gateway!(conf(store, "allowed_return_hosts = [\"app.example.com\"]"));
    let own = origin(&gw);
    let pw = enc(ALICE_PW);
    // As a browser posts them (the form's own encoding).
    for (posted, want) in [
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("https://evil.example", "/"),
        ("https%3A%2F%2Fevil.example%2Fx", "/"),
        ("javascript:alert(1)", "/"),
        ("/%0d%0aSet-Cookie:x", "/"),
        ("https://app.example.com@evil.example/", "/"),
        ("https://app.example.com/x", "https://app.example.com/x"),
        ("%2Fa%2Fb%3Fc%3D1", "/a/b?c=1"),
    ] {
        let body = format!("username=alice&password={pw}&return_to={posted}");
        let r = post_form(&gw, "/auth/login", body, &[("origin", &own)]).await;
        assert_eq!(r.status, 303, "{posted}: {}", text(&r));
        assert_eq!(r.header("location"), Some(want), "{posted}");
        assert_eq!(
            names(&r),
            [ACCESS, REFRESH, CSRF],
            "{posted}: nothing injected"
        );
    }
    // The renewal's return_to too (here without a refresh cookie: to the login page).
    for (query, want) in [
        ("%2F%2Fevil.example", "/"),
        ("/%0d%0aSet-Cookie:x", "/"),
        ("javascript:alert(1)", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        (
            "https%3A%2F%2Fapp.example.com%2Fy",
            "https%3A//app.example.com/y",
        ),
        ("%2Fy", "/y"),
    ] {
        let r = gw
            .get(
                &format!("/auth/refresh?return_to={query}"),
                &[("accept", HTML)],
            )
            .await;
        assert_eq!(r.status, 303, "{query}: {}", text(&r));
        assert_eq!(
            r.header("location"),
            Some(format!("/auth/login?return_to={want}").as_str()),
            "{query}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The access cookie on the proxy path
// ---------------------------------------------------------------------------------------------

async fn the_access_cookie_authenticates_and_must_agree_with_a_bearer_header(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let jar = browser_login(&gw, "alice", "web").await;
    let r = send(&gw, "GET", "/admin/panel", &jar, &[]).await;
    assert_eq!(r.status, 200, "roles come with the cookie: {}", text(&r));
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-tenant-id"), ["acme"]);
    assert_eq!(r.seen("x-user-roles"), ["admin,ops"]);

    // A bearer header with another token beside the cookie: which one? Neither: 400.
    let bob = gw.login_ok("bob", "app").await;
    let before = gw.hits();
    let other = format!("Bearer {}", bob.access);
    let r = send(&gw, "GET", "/api/me", &jar, &[("authorization", &other)]).await;
    r.assert_error(400, "bad_request");
    let r = send(
        &gw,
        "GET",
        "/api/me",
        &jar,
        &[("authorization", &other), ("accept", HTML)],
    )
    .await;
    r.assert_error(400, "bad_request");
    assert_eq!(gw.hits(), before);
    // The same token in both is one token.
    let same = format!("Bearer {}", jar.get(ACCESS));
    let r = send(&gw, "GET", "/api/me", &jar, &[("authorization", &same)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
}

/// A cookie that does not authenticate: 401 `code` for XHR/fetch (and for anything that is not
/// an HTML navigation without an Authorization header), 302 to the renewal for a navigation.
async fn assert_bad_cookie(gw: &Gateway, jar: &Jar, code: &str) {
    let before = gw.hits();
    let page = "/app/page?a=1&b=2";
    for accept in ["application/json", "*/*"] {
        let r = send(gw, "GET", page, jar, &[("accept", accept)]).await;
        assert_eq!((r.status, r.code().as_str()), (401, code), "{accept}");
        assert!(r.header("www-authenticate").is_some());
    }
    for method in ["GET", "HEAD"] {
        let r = send(gw, method, page, jar, &[("accept", HTML)]).await;
        assert_eq!(r.status, 302, "{method} {code}: {}", text(&r));
        assert_eq!(
            r.header("location"),
            Some("/auth/refresh?return_to=/app/page%3Fa%3D1%26b%3D2"),
            "{method} {code}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    // Not a navigation: a POST, even one that accepts HTML.
    let r = send(gw, "POST", page, jar, &[("accept", HTML)]).await;
    assert_eq!((r.status, r.code().as_str()), (401, code), "POST");
    // With an Authorization header it is an API client's request: the 401.
    if let Some((v, _)) = jar.cookies.get(ACCESS) {
        let auth = format!("Bearer {v}");
        let r = send(
            gw,
            "GET",
            page,
            jar,
            &[("accept", HTML), ("authorization", &auth)],
        )
        .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, code),
            "with Authorization"
        );
    }
    assert_eq!(gw.hits(), before, "{code}: a refusal reached the upstream");
}

async fn a_bad_cookie_is_a_401_or_for_an_html_navigation_the_renewal_redirect(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    // No cookie at all.
    assert_bad_cookie(&gw, &Jar::default(), "missing_token").await;

    let web = browser_login(&gw, "alice", "web").await;
    let h5 = browser_login(&gw, "alice", "h5").await;
    // Forged: the same claims under another key.
    let token = web.get(ACCESS);
    let forged = jwt_hs256(
        &header_of(token),
        &payload_of(token),
        b"not-the-gateways-secret-0123456789",
    );
    let mut jar = web.clone();
    jar.set(ACCESS, &forged, "/");
    assert_bad_cookie(&gw, &jar, "invalid_token").await;

    // Its session ended (logged out by its bearer token).
    let auth = format!("Bearer {}", h5.get(ACCESS));
    let r = gw
        .request(
            "POST",
            "/auth/logout",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_bad_cookie(&gw, &h5, "session_revoked").await;

    // A navigation to `//evil.example/x` (the path merges to /evil.example/x, a required
    // route) is sent to renew its cookies and come back to `/`, never to another host.
    let r = gw
        .raw_get("//evil.example/x", &format!("Accept: {HTML}\r\n"))
        .await;
    assert_eq!(r.status, 302, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/auth/refresh?return_to=/"));
    // Only a 401 becomes the redirect: a 403 stays (bob is no admin).
    let bob = browser_login(&gw, "bob", "app").await;
    let r = send(&gw, "GET", "/admin/panel", &bob, &[("accept", HTML)]).await;
    r.assert_error(403, "forbidden");

    // Expired (by the gateway's clock: access_ttl 2 h and the 30 s leeway); its session lives.
    assert_cookie_passes(&gw, &web).await;
    gw.advance(Duration::from_secs(2 * 3600 + 31));
    assert_bad_cookie(&gw, &web, "token_expired").await;
}

async fn redirect_html_off_keeps_the_401(store: StoreKind) {
    let gw = gateway!(conf(store, "redirect_html = false"));
    let r = gw.get("/app/page", &[("accept", HTML)]).await;
    r.assert_error(401, "missing_token");
    let jar = browser_login(&gw, "alice", "web").await;
    gw.advance(Duration::from_secs(2 * 3600 + 31));
    let r = send(&gw, "GET", "/app/page", &jar, &[("accept", HTML)]).await;
    r.assert_error(401, "token_expired");
    assert_eq!(gw.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// CSRF on the proxy path
// ---------------------------------------------------------------------------------------------

const UNSAFE: [&str; 4] = ["POST", "PUT", "DELETE", "PATCH"];

/// Header sets a cross-site (or silent) request may carry: each must fail the check.
fn cross_site_headers(own: &str) -> Vec<Vec<(&'static str, String)>> {
    let s = |v: &str| v.to_owned();
    vec![
        vec![("sec-fetch-site", s("cross-site"))],
        vec![("sec-fetch-site", s("same-site"))],
        vec![("sec-fetch-site", s("cross-site")), ("origin", s(EVIL))],
        vec![
            ("sec-fetch-site", s("same-site")),
            ("origin", s("https://sub.127.0.0.1")),
        ],
        vec![("origin", s(EVIL))],
        vec![("origin", s("null"))],
        vec![("origin", s(EVIL)), ("referer", format!("{own}/page"))],
        vec![("origin", s(own)), ("origin", s(EVIL))],
        vec![("referer", s("https://evil.example/page"))],
        vec![("referer", s("null"))],
        vec![
            ("sec-fetch-site", s("cross-site")),
            ("referer", s("https://evil.example/")),
        ],
        vec![],
    ]
}

async fn cross_site_unsafe_requests_with_the_cookie_are_refused(store: StoreKind) {
    let gw = gateway!(conf(store, "").section(&format!("[cors]\nallowed_origins = [\"{APP}\"]")));
    let jar = browser_login(&gw, "alice", "web").await;
    let own = origin(&gw);
    let before = gw.hits();
    for method in UNSAFE {
        for headers in cross_site_headers(&own) {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = send(&gw, method, "/api/orders", &jar, &h).await;
            assert_eq!(r.status, 403, "{method} {h:?}: {}", text(&r));
            assert_eq!(r.code(), "csrf_failed", "{method} {h:?}");
        }
    }
    // An optional route is no way round it.
    let r = send(&gw, "POST", "/optional/x", &jar, &[("origin", EVIL)]).await;
    r.assert_error(403, "csrf_failed");
    assert_eq!(gw.hits(), before, "a refused request reached the upstream");
    assert_cookie_passes(&gw, &jar).await;
}

async fn a_wildcard_cors_origin_trusts_no_origin_for_csrf(store: StoreKind) {
    // `*` lets any page read public answers (no credentials); it is no list of trusted sites.
    let gw = gateway!(conf(store, "").section("[cors]\nallowed_origins = [\"*\"]"));
    let jar = browser_login(&gw, "alice", "web").await;
    for origin in [EVIL, "null", "https://app.example.com"] {
        let r = send(&gw, "POST", "/api/orders", &jar, &[("origin", origin)]).await;
        assert_eq!(r.status, 403, "{origin}: {}", text(&r));
        assert_eq!(r.code(), "csrf_failed", "{origin}");
    }
    let r = form_login(
        &gw,
        &[("username", "alice"), ("password", ALICE_PW)],
        &[("origin", EVIL)],
    )
    .await;
    r.assert_error(403, "csrf_failed");
    assert_eq!(gw.hits(), 0);
}

async fn same_origin_unsafe_requests_with_the_cookie_pass(store: StoreKind) {
    let gw = gateway!(conf(store, "").section(&format!("[cors]\nallowed_origins = [\"{APP}\"]")));
    let jar = browser_login(&gw, "alice", "web").await;
    let own = origin(&gw);
    let referer = format!("{own}/orders/7?x=1");
    let passing: Vec<Vec<(&str, &str)>> = vec![
        vec![("origin", &own)],
        vec![("sec-fetch-site", "same-origin")],
        vec![("sec-fetch-site", "none")],
        vec![("sec-fetch-site", "same-origin"), ("origin", &own)],
        vec![("sec-fetch-site", "same-site"), ("origin", &own)],
        vec![("referer", &referer)],
        vec![("origin", APP)],
        vec![("sec-fetch-site", "cross-site"), ("origin", APP)],
    ];
    for method in UNSAFE {
        for h in &passing {
            let before = gw.hits();
            let r = send(&gw, method, "/api/orders", &jar, h).await;
            assert_eq!(r.status, 200, "{method} {h:?}: {}", text(&r));
            assert_eq!(r.json()["method"], method);
            assert_eq!(r.seen("x-user-id"), ["1001"]);
            assert_eq!(gw.hits(), before + 1);
        }
    }
}

async fn safe_methods_and_bearer_requests_are_not_csrf_checked(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let jar = browser_login(&gw, "alice", "web").await;
    let cross = [("sec-fetch-site", "cross-site"), ("origin", EVIL)];
    for method in ["GET", "HEAD", "OPTIONS"] {
        let r = send(&gw, method, "/api/orders", &jar, &cross).await;
        assert_eq!(r.status, 200, "{method}: {}", text(&r));
    }
    // A bearer token: no other site can make a browser send the header.
    let auth = format!("Bearer {}", jar.get(ACCESS));
    let bearer = [cross[0], cross[1], ("authorization", auth.as_str())];
    for method in UNSAFE {
        let r = gw
            .request(method, "/api/orders", &bearer, Bytes::new())
            .await;
        assert_eq!(r.status, 200, "{method}: {}", text(&r));
        assert_eq!(r.seen("x-user-id"), ["1001"]);
    }
    // Control: the same cross-site POST by the cookie is refused.
    let r = send(&gw, "POST", "/api/orders", &jar, &cross).await;
    r.assert_error(403, "csrf_failed");
}

/// A browser attaches cached `Basic` credentials by itself (an app or a proxy on the same
/// origin asked for them), to cross-site requests too: a token that still comes from the
/// cookie is still subject to the CSRF check, and its silent refresh still rides in a cookie.
async fn other_authorization_schemes_beside_the_cookie_do_not_exempt_it(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let jar = browser_login(&gw, "alice", "web").await;
    let own = origin(&gw);
    let basic = ("authorization", "Basic dXNlcjpwYXNz");
    let before = gw.hits();
    for method in UNSAFE {
        let r = send(&gw, method, "/api/orders", &jar, &[basic, ("origin", EVIL)]).await;
        assert_eq!(r.status, 403, "{method}: {}", text(&r));
        assert_eq!(r.code(), "csrf_failed", "{method}");
    }
    assert_eq!(gw.hits(), before, "a refused request reached the upstream");
    let r = send(
        &gw,
        "POST",
        "/auth/logout",
        &jar,
        &[basic, ("origin", EVIL)],
    )
    .await;
    r.assert_error(403, "csrf_failed");
    assert_cookie_passes(&gw, &jar).await;
    let r = send(&gw, "POST", "/api/orders", &jar, &[basic, ("origin", &own)]).await;
    assert_eq!(r.status, 200, "{}", text(&r));

    gw.advance(Duration::from_secs(100 * 60));
    let r = send(&gw, "GET", "/api/x", &jar, &[basic]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
    assert_eq!(names(&r), [ACCESS]);
}

async fn double_submit_needs_x_csrf_token_equal_to_the_csrf_cookie(store: StoreKind) {
    let gw = gateway!(conf(store, "csrf = \"double_submit\""));
    let jar = browser_login(&gw, "alice", "web").await;
    let own = origin(&gw);
    let token = jar.get(CSRF).to_owned();
    let before = gw.hits();
    let wrong = format!("{token}x");
    for h in [
        vec![("origin", own.as_str())],
        vec![("origin", own.as_str()), ("x-csrf-token", "")],
        vec![("origin", own.as_str()), ("x-csrf-token", &wrong)],
        vec![
            ("origin", own.as_str()),
            ("x-csrf-token", &token[..token.len() - 1]),
        ],
        // The header right, the origin wrong: both are needed.
        vec![("origin", EVIL), ("x-csrf-token", &token)],
        vec![("sec-fetch-site", "cross-site"), ("x-csrf-token", &token)],
    ] {
        let r = send(&gw, "POST", "/api/orders", &jar, &h).await;
        assert_eq!(r.status, 403, "{h:?}: {}", text(&r));
        assert_eq!(r.code(), "csrf_failed", "{h:?}");
    }
    // The header without the cookie to match.
    let mut no_cookie = jar.clone();
    no_cookie.cookies.remove(CSRF);
    let r = send(
        &gw,
        "POST",
        "/api/orders",
        &no_cookie,
        &[("origin", &own), ("x-csrf-token", &token)],
    )
    .await;
    r.assert_error(403, "csrf_failed");
    assert_eq!(gw.hits(), before);

    for method in UNSAFE {
        let r = send(
            &gw,
            method,
            "/api/orders",
            &jar,
            &[("origin", &own), ("x-csrf-token", &token)],
        )
        .await;
        assert_eq!(r.status, 200, "{method}: {}", text(&r));
    }
    let r = send(
        &gw,
        "POST",
        "/api/orders",
        &jar,
        &[("sec-fetch-site", "same-origin"), ("x-csrf-token", &token)],
    )
    .await;
    assert_eq!(r.status, 200);

    // A logout form carries it as `csrf_token`.
    let cookie = jar.header("/auth/logout");
    let r = post_form(
        &gw,
        "/auth/logout",
        String::new(),
        &[("origin", &own), ("cookie", &cookie)],
    )
    .await;
    r.assert_error(403, "csrf_failed");
    assert_cookie_passes(&gw, &jar).await;
    let r = post_form(
        &gw,
        "/auth/logout",
        format!("csrf_token={token}"),
        &[("origin", &own), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_cookies_expired(&r);
    assert_cookie_refused(&gw, &jar, "session_revoked").await;
}

async fn csrf_off_lets_cross_site_requests_through(store: StoreKind) {
    let gw = gateway!(conf(store, "csrf = \"off\""));
    // Even the login form (no login CSRF check either).
    let r = form_login(
        &gw,
        &[("username", "alice"), ("password", ALICE_PW)],
        &[("sec-fetch-site", "cross-site"), ("origin", EVIL)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    let jar = Jar::from(&r);
    for method in UNSAFE {
        let r = send(
            &gw,
            method,
            "/api/orders",
            &jar,
            &[("sec-fetch-site", "cross-site"), ("origin", EVIL)],
        )
        .await;
        assert_eq!(r.status, 200, "{method}: {}", text(&r));
    }
    let r = send(&gw, "POST", "/api/orders", &jar, &[]).await;
    assert_eq!(r.status, 200);
}

/// Forward-auth (`/auth/verify`) judges the original request as the proxy path would: a
/// cookie-authenticated unsafe request is CSRF-checked, and a silent refresh of a cookie
/// token is a `Set-Cookie`.
async fn verify_checks_the_cookie_for_csrf_and_renews_it_in_set_cookie(store: StoreKind) {
    let gw = gateway!(conf(store, "").server(TRUST_LOOPBACK));
    let jar = browser_login(&gw, "alice", "web").await;
    let own = origin(&gw);
    let verify = |method: &'static str, extra: Vec<(&'static str, String)>| {
        let jar = &jar;
        let gw = &gw;
        async move {
            let mut h: Vec<(&str, String)> = vec![
                ("x-forwarded-method", method.to_owned()),
                ("x-forwarded-uri", "/api/orders".to_owned()),
            ];
            h.extend(extra);
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(gw, "GET", "/auth/verify", jar, &h).await
        }
    };
    for extra in [
        vec![("origin", EVIL.to_owned())],
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![],
    ] {
        let r = verify("POST", extra.clone()).await;
        assert_eq!(r.status, 403, "{extra:?}: {}", text(&r));
        assert_eq!(r.header("x-auth-error"), Some("csrf_failed"), "{extra:?}");
    }
    let r = verify("POST", vec![("origin", own.clone())]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("x-user-id"), Some("1001"));
    // The proxy's own origin, as it tells it (trusted): https://front.example.
    let r = verify(
        "DELETE",
        vec![
            ("x-forwarded-proto", "https".to_owned()),
            ("x-forwarded-host", "front.example".to_owned()),
            ("origin", "https://front.example".to_owned()),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = verify("GET", vec![("origin", EVIL.to_owned())]).await;
    assert_eq!(r.status, 200, "a safe method: {}", text(&r));

    gw.advance(Duration::from_secs(100 * 60));
    let r = verify("GET", vec![]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
    assert_eq!(names(&r), [ACCESS]);
    assert_eq!(gw.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// Refresh from the cookie
// ---------------------------------------------------------------------------------------------

async fn get_refresh_rotates_the_cookies_and_303s_back(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let mut jar = browser_login(&gw, "alice", "web").await;
    let old = jar.clone();
    let r = send(
        &gw,
        "GET",
        "/auth/refresh?return_to=%2Fx%3Fy%3D1",
        &jar,
        &[("accept", HTML)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/x?y=1"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(names(&r), [ACCESS, REFRESH, CSRF]);
    let age = max_age(&set_cookie(&r, REFRESH));
    assert!((30 * 86400 - 2..=30 * 86400).contains(&age), "{age}");
    jar.take(&r);
    assert_ne!(jar.get(REFRESH), old.get(REFRESH), "rotated");
    assert_ne!(jar.get(ACCESS), old.get(ACCESS));
    assert_eq!(jar.sid(), old.sid(), "the same session");
    // A page that read the CSRF value before the renewal still holds the right one.
    assert_eq!(jar.get(CSRF), old.get(CSRF), "the CSRF value is kept");
    assert_cookie_passes(&gw, &jar).await;

    // A CSRF cookie that is none of ours (planted by a sibling subdomain) is replaced.
    let mut planted = jar.clone();
    planted.set(CSRF, "planted", "/");
    let r = send(&gw, "GET", "/auth/refresh", &planted, &[("accept", HTML)]).await;
    assert_eq!(r.status, 303, "{}", text(&r));
    let csrf = set_cookie(&r, CSRF);
    assert_ne!(csrf.value(), "planted");
    assert_eq!(csrf.value().len(), 32, "{csrf}");
    jar.take(&r);

    // The new refresh cookie is an ordinary refresh token of the session.
    let r = gw.refresh(jar.get(REFRESH)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["session_id"], old.sid());
}

async fn a_refresh_cookie_reused_after_its_grace_is_theft(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let mut jar = browser_login(&gw, "alice", "web").await;
    let old = jar.clone();
    let r = send(&gw, "GET", "/auth/refresh?return_to=/x", &jar, &[]).await;
    assert_eq!(r.status, 303, "{}", text(&r));
    jar.take(&r);
    // Within the grace (a second tab, a lost answer): the same successor.
    let r = send(&gw, "GET", "/auth/refresh?return_to=/x", &old, &[]).await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/x"));
    assert_eq!(
        set_cookie(&r, REFRESH).value(),
        jar.get(REFRESH),
        "the same successor"
    );
    assert_cookie_passes(&gw, &jar).await;

    // After the grace (10 s by default): theft. The session ends and the browser is sent to
    // log in again with the reason, its cookies expired.
    gw.advance(Duration::from_secs(11));
    let r = send(&gw, "GET", "/auth/refresh?return_to=/x", &old, &[]).await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(
        r.header("location"),
        Some("/auth/login?return_to=/x&error=token_theft_detected")
    );
    assert_cookies_expired(&r);
    assert_cookie_refused(&gw, &jar, "session_revoked").await;
    // The thief's successor is worth nothing either.
    let r = send(&gw, "POST", "/auth/refresh", &jar, &[]).await;
    assert_eq!(r.status, 401, "{}", text(&r));
    assert_cookies_expired(&r);
}

async fn refresh_without_a_valid_cookie_expires_the_cookies(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let mut garbage = Jar::default();
    garbage.set(REFRESH, "not-a-refresh-token", "/auth/refresh");
    for jar in [Jar::default(), garbage] {
        let r = send(
            &gw,
            "GET",
            "/auth/refresh?return_to=/x",
            &jar,
            &[("accept", HTML)],
        )
        .await;
        assert_eq!(r.status, 303, "{}", text(&r));
        assert_eq!(r.header("location"), Some("/auth/login?return_to=/x"));
        assert_cookies_expired(&r);

        let r = send(&gw, "POST", "/auth/refresh", &jar, &[]).await;
        r.assert_error(401, "invalid_refresh_token");
        assert_cookies_expired(&r);
    }
    // Without return_to: back to /.
    let r = gw.get("/auth/refresh", &[]).await;
    assert_eq!(r.header("location"), Some("/auth/login?return_to=/"));
}

async fn post_refresh_from_the_cookie_answers_204_and_a_json_body_still_works(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let mut jar = browser_login(&gw, "alice", "web").await;
    let old = jar.clone();
    let own = origin(&gw);
    let r = send(&gw, "POST", "/auth/refresh", &jar, &[("origin", &own)]).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert!(r.body.is_empty());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(names(&r), [ACCESS, REFRESH, CSRF]);
    jar.take(&r);
    assert_ne!(jar.get(REFRESH), old.get(REFRESH));
    assert_eq!(jar.sid(), old.sid());
    assert_cookie_passes(&gw, &jar).await;

    // An API client's JSON refresh, as before: the pair in the body, no cookies.
    let pair = gw.login_ok("bob", "app").await;
    let r = gw.refresh(&pair.refresh).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let j = r.json();
    assert_eq!(j["session_id"], pair.sid);
    assert!(
        j["access_token"].is_string() && j["refresh_token"].is_string(),
        "{j}"
    );
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
}

// ---------------------------------------------------------------------------------------------
// Silent refresh
// ---------------------------------------------------------------------------------------------

async fn silent_refresh_of_a_cookie_token_rides_in_set_cookie(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let mut jar = browser_login(&gw, "alice", "web").await;
    let old = jar.get(ACCESS).to_owned();
    // 1 h 40 min on: 20 min left, inside the 30 min window.
    gw.advance(Duration::from_secs(100 * 60));
    let r = send(&gw, "GET", "/api/x", &jar, &[]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(
        r.header("refresh-token").is_none(),
        "not in a header a script reads"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(names(&r), [ACCESS], "the access cookie alone");
    let c = set_cookie(&r, ACCESS);
    assert_eq!(c.http_only(), Some(true));
    assert_eq!(c.secure(), Some(true));
    assert_eq!(c.path(), Some("/"));
    assert!(max_age(&c) > 0);
    let fresh = c.value().to_owned();
    assert_ne!(fresh, old);
    let (o, n) = (payload_of(&old), payload_of(&fresh));
    assert_eq!(o["sid"], n["sid"]);
    assert!(n["exp"].as_u64() > o["exp"].as_u64());
    jar.take(&r);
    let r = send(&gw, "GET", "/api/x", &jar, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookies().is_empty(), "the new token is fresh");

    // The same old token as a bearer header: the header, as before, and no cookie.
    let auth = format!("Bearer {old}");
    let r = gw.get("/api/x", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_some(), "{:?}", r.headers);
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
}

async fn concurrent_cookie_requests_in_the_window_get_one_new_token(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let jar = browser_login(&gw, "alice", "web").await;
    gw.advance(Duration::from_secs(100 * 60));
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, p, jar) = (barrier.clone(), gw.probe(), jar.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                send_with(&p, "GET", "/api/x", &jar, &[]).await
            })
        })
        .collect();
    let mut fresh = HashSet::new();
    for t in tasks {
        let r = within("a concurrent request", t).await.expect("task");
        assert_eq!(r.status, 200, "{}", text(&r));
        fresh.insert(set_cookie(&r, ACCESS).value().to_owned());
    }
    assert_eq!(fresh.len(), 1, "one token minted: {fresh:?}");
}

// ---------------------------------------------------------------------------------------------
// Logout, logout-all, the session list
// ---------------------------------------------------------------------------------------------

async fn logout_from_the_cookie_ends_the_session_and_expires_the_cookies(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let jar = browser_login(&gw, "alice", "web").await;
    let own = origin(&gw);
    let r = send(&gw, "POST", "/auth/logout", &jar, &[("origin", &own)]).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_cookies_expired(&r);
    assert_cookie_refused(&gw, &jar, "session_revoked").await;
    // Its refresh cookie is spent too.
    let r = send(&gw, "POST", "/auth/refresh", &jar, &[]).await;
    r.assert_error(401, "invalid_refresh_token");
    // A logout whose cookie no longer authenticates still logs the browser out.
    let r = send(&gw, "POST", "/auth/logout", &jar, &[("origin", &own)]).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_cookies_expired(&r);
}

async fn form_logout_303s_to_the_login_page(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let jar = browser_login(&gw, "alice", "web").await;
    let cookie = jar.header("/auth/logout");
    let r = post_form(
        &gw,
        "/auth/logout",
        String::new(),
        &[("sec-fetch-site", "same-origin"), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/auth/login?return_to=/"));
    assert_cookies_expired(&r);
    assert_cookie_refused(&gw, &jar, "session_revoked").await;
}

async fn cross_site_logout_is_refused_and_the_session_lives_on(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let jar = browser_login(&gw, "alice", "web").await;
    let cookie = jar.header("/auth/logout");
    for h in [
        vec![("origin", EVIL)],
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", "null")],
        vec![],
    ] {
        let r = send(&gw, "POST", "/auth/logout", &jar, &h).await;
        r.assert_error(403, "csrf_failed");
        assert!(r.set_cookies().is_empty(), "{h:?}");
        let mut form = h.clone();
        form.push(("cookie", &cookie));
        let r = post_form(&gw, "/auth/logout", String::new(), &form).await;
        r.assert_error(403, "csrf_failed");
        assert!(r.set_cookies().is_empty(), "{h:?}");
    }
    assert_cookie_passes(&gw, &jar).await;
}

async fn logout_all_and_the_session_list_work_from_the_cookie(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let web = browser_login(&gw, "alice", "web").await;
    let h5 = browser_login(&gw, "alice", "h5").await;
    let app = browser_login(&gw, "alice", "app").await;
    let own = origin(&gw);

    let r = send(&gw, "GET", "/auth/sessions", &h5, &[]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let list = r.json()["sessions"].as_array().expect("sessions").clone();
    assert_eq!(list.len(), 3, "{list:?}");
    let current: Vec<&str> = list
        .iter()
        .filter(|s| s["current"] == true)
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(current, [h5.sid()]);

    // Deleting a session by the cookie is CSRF-checked.
    let path = format!("/auth/sessions/{}", web.sid());
    let r = send(&gw, "DELETE", &path, &h5, &[("origin", EVIL)]).await;
    r.assert_error(403, "csrf_failed");
    let r = send(&gw, "DELETE", &path, &h5, &[]).await;
    r.assert_error(403, "csrf_failed");
    assert_cookie_passes(&gw, &web).await;
    let r = send(&gw, "DELETE", &path, &h5, &[("origin", &own)]).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_cookie_refused(&gw, &web, "session_revoked").await;

    // Logout-all: cross-site refused; same-origin ends every session and expires the cookies.
    let r = send(
        &gw,
        "POST",
        "/auth/logout-all",
        &h5,
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    r.assert_error(403, "csrf_failed");
    assert_cookie_passes(&gw, &app).await;
    let r = send(
        &gw,
        "POST",
        "/auth/logout-all",
        &h5,
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_cookies_expired(&r);
    assert_cookie_refused(&gw, &h5, "session_revoked").await;
    assert_cookie_refused(&gw, &app, "session_revoked").await;
}

async fn a_login_prefix_of_its_own_moves_the_refresh_cookie_and_the_redirects(store: StoreKind) {
    let gw = gateway!(conf(store, "")
        .login("backend = \"users_file\"\nusers_file = \"users.toml\"\nprefix = \"/gw\""));
    let own = origin(&gw);
    let page = gw.get("/gw/login?return_to=/x", &[("accept", HTML)]).await;
    assert_eq!(page.status, 200, "{}", text(&page));
    assert!(
        text(&page).contains("action=\"/gw/login\""),
        "{}",
        text(&page)
    );
    let body = format!("username=alice&password={}&return_to=/x", enc(ALICE_PW));
    let r = post_form(&gw, "/gw/login", body, &[("origin", &own)]).await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/x"));
    assert_eq!(set_cookie(&r, REFRESH).path(), Some("/gw/refresh"));
    let mut jar = Jar::from(&r);
    let r = post_form(
        &gw,
        "/gw/login",
        "username=alice&password=wrong".into(),
        &[("origin", &own)],
    )
    .await;
    assert_eq!(
        r.header("location"),
        Some("/gw/login?return_to=/&error=invalid_credentials")
    );

    gw.advance(Duration::from_secs(2 * 3600 + 31));
    let r = send(&gw, "GET", "/x", &jar, &[("accept", HTML)]).await;
    assert_eq!(r.status, 302, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/gw/refresh?return_to=/x"));
    let r = send(
        &gw,
        "GET",
        "/gw/refresh?return_to=/x",
        &jar,
        &[("accept", HTML)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/x"));
    jar.take(&r);
    assert_cookie_passes(&gw, &jar).await;
    let r = send(&gw, "POST", "/gw/logout", &jar, &[("origin", &own)]).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_eq!(set_cookie(&r, REFRESH).path(), Some("/gw/refresh"));
    assert_eq!(max_age(&set_cookie(&r, REFRESH)), 0);
}

// ---------------------------------------------------------------------------------------------
// The built-in login page
// ---------------------------------------------------------------------------------------------

async fn builtin_login_page_is_strict_and_escapes_its_query(store: StoreKind) {
    let gw = gateway!(conf(store, ""));
    let r = gw.get("/auth/login", &[("accept", HTML)]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let page = text(&r);
    assert!(
        page.contains("<form method=\"post\" action=\"/auth/login\">"),
        "{page}"
    );
    assert!(page.contains("name=\"username\"") && page.contains("type=\"password\""));
    assert!(page.contains("name=\"return_to\" value=\"/\""), "{page}");
    assert!(!page.contains("<script"), "no script at all");
    assert!(!page.contains("role=\"alert\""), "no error without ?error=");

    let r = gw.get("/auth/login?error=invalid_credentials", &[]).await;
    assert!(text(&r).contains("Wrong username or password."));
    // Whatever ?error= says, the page shows one of its own messages.
    let r = gw
        .get("/auth/login?error=%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[])
        .await;
    assert_eq!(r.status, 200);
    let page = text(&r);
    assert!(
        !page.contains("<script") && !page.contains("alert(1)"),
        "{page}"
    );
    assert!(page.contains("The login did not succeed."), "{page}");
    // ?return_to= is made safe, and what is kept is escaped into its attribute.
    let r = gw
        .get(
            "/auth/login?return_to=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            &[],
        )
        .await;
    let page = text(&r);
    assert!(
        !page.contains("\"><script>") && !page.contains("<script"),
        "{page}"
    );
    assert!(page.contains("name=\"return_to\" value=\"/\""), "{page}");
    let r = gw
        .get("/auth/login?return_to=%2Fx%22%3E%3Cscript%3E", &[])
        .await;
    let page = text(&r);
    assert!(!page.contains("\"><script>"), "{page}");
    assert!(
        page.contains("value=\"/x&quot;&gt;&lt;script&gt;\""),
        "{page}"
    );
    let r = gw
        .get("/auth/login?return_to=%2F%2Fevil.example", &[])
        .await;
    assert!(text(&r).contains("name=\"return_to\" value=\"/\""));
    assert_eq!(gw.hits(), 0);
}

#[tokio::test]
async fn without_browser_the_login_page_and_get_refresh_are_405() {
    let gw = Gateway::start(Conf::new().store(StoreKind::Memory)).await;
    gw.get("/auth/login", &[("accept", HTML)])
        .await
        .assert_error(405, "method_not_allowed");
    gw.get("/auth/refresh", &[("accept", HTML)])
        .await
        .assert_error(405, "method_not_allowed");
    // And a form login is what it was: not JSON, 400.
    let r = form_login(&gw, &[("username", "alice"), ("password", ALICE_PW)], &[]).await;
    r.assert_error(400, "bad_request");
    assert!(r.set_cookies().is_empty());
}

// ---------------------------------------------------------------------------------------------
// What the upstream is told
// ---------------------------------------------------------------------------------------------

/// A `Cookie` header with the three gateway cookies among two of the app's own.
fn mixed_cookie(jar: &Jar) -> String {
    format!(
        "theme=dark; {ACCESS}={}; {CSRF}={}; {REFRESH}={}; lang=en",
        jar.get(ACCESS),
        jar.get(CSRF),
        jar.get(REFRESH)
    )
}

async fn browser_cookies_never_reach_the_upstream_without_forward_authorization(store: StoreKind) {
    let gw = gateway!(conf(store, "").section("[identity]\nforward_authorization = false"));
    let jar = browser_login(&gw, "alice", "web").await;
    let cookie = mixed_cookie(&jar);
    for path in ["/api/me", "/public/x", "/optional/x"] {
        let r = gw.get(path, &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 200, "{path}: {}", text(&r));
        assert_eq!(r.seen("cookie"), ["theme=dark; lang=en"], "{path}");
        assert!(r.seen("authorization").is_empty());
    }
    let r = gw.get("/api/me", &[("cookie", &cookie)]).await;
    assert_eq!(
        r.seen("x-user-id"),
        ["1001"],
        "authenticated by the cookie it removed"
    );
    // Only gateway cookies: no Cookie header left at all.
    let only = format!("{ACCESS}={}", jar.get(ACCESS));
    let r = gw.get("/api/me", &[("cookie", &only)]).await;
    assert_eq!(r.status, 200);
    assert!(r.seen("cookie").is_empty(), "{:?}", r.seen("cookie"));
}

/// HTTP/2 splits `Cookie` into crumbs, one header each: the access cookie in one of them
/// authenticates, the CSRF check applies, and the gateway's cookies are taken out of them.
async fn http2_cookie_crumbs_authenticate_are_csrf_checked_and_stripped(store: StoreKind) {
    let gw = gateway!(conf(store, "").section("[identity]\nforward_authorization = false"));
    let jar = browser_login(&gw, "alice", "web").await;
    // HTTP/2 only (prior knowledge): no `Host` header, the `:authority`.
    let client = h2c_client();
    let access = format!("{ACCESS}={}", jar.get(ACCESS));
    let csrf = format!("{CSRF}={}", jar.get(CSRF));
    let request = |method: &str, origin: &str| {
        http::Request::builder()
            .method(method)
            .uri(gw.url("/api/orders"))
            .header("cookie", "theme=dark")
            .header("cookie", access.as_str())
            .header("cookie", csrf.as_str())
            .header("cookie", "lang=en")
            .header("origin", origin)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    let own = origin(&gw);
    let r = crate::support::send(&client, request("POST", &own)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("cookie"), ["theme=dark; lang=en"]);
    let before = gw.hits();
    let r = crate::support::send(&client, request("POST", EVIL)).await;
    r.assert_error(403, "csrf_failed");
    assert_eq!(gw.hits(), before);

    // The login form over HTTP/2, from the gateway's own page.
    let login = http::Request::post(gw.url("/auth/login"))
        .header("content-type", FORM)
        .header("origin", own.as_str())
        .body(http_body_util::Full::new(Bytes::from(format!(
            "username=alice&password={}",
            enc(ALICE_PW)
        ))))
        .unwrap();
    let r = crate::support::send(&client, login).await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(names(&r), [ACCESS, REFRESH, CSRF]);
}

async fn the_refresh_cookie_never_reaches_the_upstream(store: StoreKind) {
    // forward_authorization = true (the default): the token travels on as it came.
    let gw = gateway!(conf(store, ""));
    let jar = browser_login(&gw, "alice", "web").await;
    let cookie = mixed_cookie(&jar);
    for path in ["/api/me", "/public/x"] {
        let r = gw.get(path, &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 200, "{path}: {}", text(&r));
        let want = format!(
            "theme=dark; {ACCESS}={}; {CSRF}={}; lang=en",
            jar.get(ACCESS),
            jar.get(CSRF)
        );
        assert_eq!(r.seen("cookie"), [want], "{path}");
    }
}

async fn insecure_cookies_drop_secure(store: StoreKind) {
    let gw = gateway!(conf(store, "insecure_cookies = true"));
    let own = origin(&gw);
    let r = form_login(
        &gw,
        &[("username", "alice"), ("password", ALICE_PW)],
        &[("origin", &own)],
    )
    .await;
    assert_eq!(r.status, 303);
    for c in set_cookies(&r) {
        assert_ne!(c.secure(), Some(true), "{c}");
        assert_eq!(c.same_site(), Some(SameSite::Lax), "{c}");
    }
    let jar = Jar::from(&r);
    let r = send(&gw, "POST", "/auth/logout", &jar, &[("origin", &own)]).await;
    assert_cookies_expired(&r);
    assert!(r.set_cookies().iter().all(|c| !c.contains("Secure")));
}

/// What the legacy login saw of each request: its `Cookie` header and its body.
type Seen = Arc<std::sync::Mutex<Vec<(Option<String>, String)>>>;

/// A legacy login: 200 with bob's identity for `password=legacy-pw`, 401 otherwise.
async fn legacy_login(seen: Seen) -> Upstream {
    Upstream::start(move |req: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            use http_body_util::BodyExt;
            let cookie = req
                .headers()
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            let ok = body.contains("password=legacy-pw");
            seen.lock().unwrap().push((cookie, body));
            let (status, answer) = if ok {
                (200, r#"{"data":{"id":7,"username":"bob"}}"#)
            } else {
                (401, r#"{"msg":"bad password"}"#)
            };
            let mut r = http::Response::new(authgate::body::full(answer));
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            r
        }
    })
    .await
}

async fn a_form_login_through_the_legacy_login_passes_the_form_on_but_no_gateway_cookie(
    store: StoreKind,
) {
    let seen = Seen::default();
    let legacy = legacy_login(seen.clone()).await;
    let gw = gateway!(conf(store, "")
        .login(&format!(
            "backend = \"upstream\"\nupstream_url = \"http://{}/api/login\"\n\
             user_id_pointer = \"/data/id\"\nuser_name_pointer = \"/data/username\"",
            legacy.addr
        ))
        .section("[identity]\nforward_authorization = false"));
    let own = origin(&gw);
    let form = "username=bob&password=legacy-pw&return_to=%2Fx".to_owned();
    let r = post_form(&gw, "/auth/login", form.clone(), &[("origin", &own)]).await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/x"));
    let jar = Jar::from(&r);
    assert_eq!(payload_of(jar.get(ACCESS))["sub"], "7");
    assert_eq!(
        seen.lock().unwrap()[0],
        (None, form.clone()),
        "the form as it came"
    );

    // Logging in again from the same browser: its own cookies go to the legacy login, the
    // gateway's never (no token reaches an upstream with forward_authorization = false).
    let cookie = format!("JSESSIONID=abc; {}", mixed_cookie(&jar));
    let r = post_form(
        &gw,
        "/auth/login",
        form,
        &[("origin", &own), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    let wrong = "username=bob&password=nope".to_owned();
    let r = post_form(
        &gw,
        "/auth/login",
        wrong,
        &[("origin", &own), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(
        r.header("location"),
        Some("/auth/login?return_to=/&error=invalid_credentials")
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (cookie, _) in &seen[1..] {
        assert_eq!(
            cookie.as_deref(),
            Some("JSESSIONID=abc; theme=dark; lang=en")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

#[test]
fn check_refuses_browser_with_another_token_cookie_or_no_login_backend() {
    let bin = env!("CARGO_BIN_EXE_authgate");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), users_toml()).unwrap();
    let up = "127.0.0.1:9".parse().unwrap();
    let check = |name: &str, conf: Conf| {
        let path = dir.path().join(name);
        std::fs::write(&path, conf.render(up)).unwrap();
        std::process::Command::new(bin)
            .args(["check", "-c"])
            .arg(&path)
            .env("T_SECRET", SECRET)
            .env("T_ADMIN", ADMIN_TOKEN)
            .output()
            .expect("run authgate check")
    };
    let browser = "[browser]\nenabled = true";
    let good = check(
        "good.toml",
        Conf::new().store(StoreKind::Memory).section(browser),
    );
    assert_eq!(good.status.code(), Some(0), "{good:?}");
    let same = check(
        "same.toml",
        Conf::new()
            .store(StoreKind::Memory)
            .token("cookie = \"authgate_access\"")
            .section(browser),
    );
    assert_eq!(
        same.status.code(),
        Some(0),
        "the same name is fine: {same:?}"
    );

    let other = check(
        "other.toml",
        Conf::new()
            .store(StoreKind::Memory)
            .token("cookie = \"session\"")
            .section(browser),
    );
    assert_eq!(other.status.code(), Some(1), "{other:?}");
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("token.cookie"), "{err}");

    // The stateless gateway of Conf::new() has login.backend = "none".
    let none = check("none.toml", Conf::new().section(browser));
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        err.contains("browser.enabled") && err.contains("login backend"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The login page and the captcha
// ---------------------------------------------------------------------------------------------

/// The hidden `captcha_id` of a login page, if it shows a challenge.
fn page_captcha_id(html: &str) -> Option<String> {
    let at = html.find("name=\"captcha_id\" value=\"")? + "name=\"captcha_id\" value=\"".len();
    Some(html[at..].split('"').next()?.to_owned())
}

async fn the_login_page_shows_the_captcha_and_the_form_answers_it(store: StoreKind) {
    let gw = gateway!(conf(store, "").section("[login.captcha]\nmode = \"always\""));
    let own = origin(&gw);
    // The page draws a challenge: a PNG, its id in a hidden field, an answer field.
    let page = gw.get("/auth/login?return_to=/orders", &[]).await;
    assert_eq!(page.status, 200);
    let html = text(&page);
    assert!(html.contains("<img src=\"data:image/png;base64,"), "{html}");
    assert!(html.contains("name=\"captcha\""), "{html}");
    let id = page_captcha_id(&html).expect("a captcha_id field");
    // A wrong answer: back to the page with error=invalid_captcha, which shows a new one.
    let r = form_login(
        &gw,
        &[
            ("username", "alice"),
            ("password", ALICE_PW),
            ("captcha_id", &id),
            ("captcha", "wrong!"),
            ("return_to", "/orders"),
        ],
        &[("origin", &own)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    let location = r.header("location").unwrap_or_default().to_owned();
    assert!(location.contains("error=invalid_captcha"), "{location}");
    let again = gw.get(&location, &[]).await;
    let id2 = page_captcha_id(&text(&again)).expect("a new challenge after a wrong answer");
    assert_ne!(id2, id);
    // The right answer (in upper case) logs in with the cookies.
    let answer = gw
        .app
        .store
        .captcha_answer(&id2, gw.now_ms())
        .await
        .unwrap()
        .expect("a live challenge");
    let r = form_login(
        &gw,
        &[
            ("username", "alice"),
            ("password", ALICE_PW),
            ("captcha_id", &id2),
            ("captcha", &answer.to_uppercase()),
            ("return_to", "/orders"),
        ],
        &[("origin", &own)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/orders"));
    assert_eq!(names(&r), [ACCESS, REFRESH, CSRF]);
    // Without the mode, the page draws nothing.
    let plain = gateway!(conf(store, ""));
    let html = text(&plain.get("/auth/login", &[]).await);
    assert!(page_captcha_id(&html).is_none(), "{html}");
}

/// A WebSocket handshake is a GET, but the page that opens it talks to the app with the
/// user's cookies: one from another origin is refused like an unsafe request; the same
/// origin's, or one with a bearer token, reaches the upstream.
async fn a_cross_site_websocket_handshake_with_the_cookie_is_refused(store: StoreKind) {
    let gw = gateway!(conf(store, "csrf = \"double_submit\""));
    let jar = browser_login(&gw, "alice", "web").await;
    let own = origin(&gw);
    let upgrade = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut h = upgrade.to_vec();
        h.extend_from_slice(extra);
        h
    };
    let before = gw.hits();
    for extra in [
        vec![("origin", EVIL), ("sec-fetch-site", "cross-site")],
        vec![
            ("origin", "https://sub.127.0.0.1.nip.io"),
            ("sec-fetch-site", "same-site"),
        ],
        vec![("origin", "null")],
        vec![],
    ] {
        let r = send(&gw, "GET", "/api/ws", &jar, &with(&extra)).await;
        assert_eq!(r.status, 403, "{extra:?}: {}", text(&r));
        assert_eq!(r.code(), "csrf_failed", "{extra:?}");
    }
    assert_eq!(
        gw.hits(),
        before,
        "a refused handshake reached the upstream"
    );

    // The own origin's handshake goes on (no page can add X-CSRF-Token to one).
    let mut h = upgrade.to_vec();
    h.extend_from_slice(&[("origin", own.as_str()), ("sec-fetch-site", "same-origin")]);
    let r = send(&gw, "GET", "/api/ws", &jar, &h).await;
    assert_ne!(r.status, 403, "{}", text(&r));
    assert_eq!(gw.hits(), before + 1);

    // A bearer token is no cookie: not subject to it.
    let mut h = with(&[("origin", EVIL)]);
    let bearer = format!("Bearer {}", jar.get(ACCESS));
    h.push(("authorization", &bearer));
    let r = gw.request("GET", "/api/ws", &h, Bytes::new()).await;
    assert_ne!(r.status, 403, "{}", text(&r));
    assert_eq!(gw.hits(), before + 2);
}
