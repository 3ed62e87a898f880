//! The `upstream` login backend: the legacy application's own login decides.
//!
//! The client's login body is POSTed unchanged to `login.upstream_url` (with its
//! `Content-Type`, `Accept`, `Accept-Language`, `User-Agent` and `Cookie`, and
//! `X-Forwarded-For` set to the client IP). A 2xx answer is a success when it is JSON, holds
//! `success_value` at `success_pointer` (if configured) and a user id at `user_id_pointer`:
//! the identity is read from it with the configured JSON pointers and the whole body is handed
//! back for the `"upstream"` member of the token pair. A 2xx that is none of that is a failed
//! login ([`LoginOutcome::Rejected`]: legacy apps answer `200 {"code":500,"msg":"password
//! wrong"}`), counted for lock-out like a 401. Any other status is relayed to the client
//! unchanged (status, headers without the hop-by-hop ones, body); a 3xx or a 4xx but 429
//! counts as a failed login. The legacy login's `Set-Cookie` values reach the client in every
//! case.
//!
//! The exchange is bounded: 2 s to connect, [`EXCHANGE_TIMEOUT`] for the whole exchange
//! including the body, which is buffered up to [`MAX_RESPONSE_BYTES`]. A refused connection,
//! a timeout or an over-long body are [`LoginOutcome::Unavailable`] (502) with the cause in
//! the log, never in the response.
//! Only `http://` is supported for now; an `https://` login URL answers `Unavailable` (logged).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tracing::Level;

use super::{LoginIdentity, LoginOutcome};
use crate::config::UpstreamLogin;
use crate::logs::scope::{self, note};

/// Time allowed to connect to the legacy login.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for the whole exchange: connect, request, answer head and body.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body read from the legacy login (2xx or relayed).
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Request headers of the client passed on to the legacy login (`Cookie`: a captcha or a
/// CSRF token of the legacy app is often tied to its session cookie).
const PASSED_ON: [header::HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::USER_AGENT,
    header::COOKIE,
];

/// The legacy login of one config snapshot and a pooled client towards it.
pub(crate) struct UpstreamBackend {
    cfg: UpstreamLogin,
    client: Client<HttpConnector, Full<Bytes>>,
    exchange_timeout: Duration,
}

impl UpstreamBackend {
    pub(crate) fn new(cfg: &UpstreamLogin) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        if cfg.url.scheme_str() != Some("http") {
            tracing::warn!(url = %cfg.url, "login.upstream_url: only http:// is supported; logins will fail with 502");
        }
        Self {
            cfg: cfg.clone(),
            client,
            exchange_timeout: EXCHANGE_TIMEOUT,
        }
    }

    /// Posts the login to the legacy app and judges its answer.
    pub(crate) async fn authenticate(
        &self,
        body: Bytes,
        headers: &HeaderMap,
        client_ip: IpAddr,
    ) -> LoginOutcome {
        if self.cfg.url.scheme_str() != Some("http") {
            tracing::error!(url = %self.cfg.url, "upstream login: only http:// login URLs are supported");
            return LoginOutcome::Unavailable;
        }
        let req = self.request(body, headers, client_ip);
        let (parts, bytes) = match self.exchange(req).await {
            Some(answer) => answer,
            None => return LoginOutcome::Unavailable,
        };
        if !parts.status.is_success() {
            return relay(parts, bytes);
        }
        self.judge(&parts, &bytes)
    }

    /// The legacy app's whole answer (head and a body within [`MAX_RESPONSE_BYTES`]) within
    /// the exchange timeout; `None` (logged) when there is none.
    async fn exchange(&self, req: Request<Full<Bytes>>) -> Option<(http::response::Parts, Bytes)> {
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((parts, bytes))
        };
        match tokio::time::timeout(self.exchange_timeout, exchange).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(e)) => {
                note(Level::WARN, format!("upstream login {}: {e}", self.cfg.url));
                None
            }
            Err(_) => {
                note(
                    Level::WARN,
                    format!(
                        "upstream login {}: no answer within {} ms",
                        self.cfg.url,
                        self.exchange_timeout.as_millis()
                    ),
                );
                None
            }
        }
    }

    /// A 2xx answer: a success only if it is JSON, holds `success_value` at
    /// `success_pointer` (when set) and a usable identity.
    fn judge(&self, parts: &http::response::Parts, bytes: &Bytes) -> LoginOutcome {
        let set_cookies: Vec<HeaderValue> = parts
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        let json: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                note(
                    Level::WARN,
                    format!(
                        "upstream login {}: the {} answer is not JSON ({e}); counted as a failed login",
                        self.cfg.url, parts.status
                    ),
                );
                return LoginOutcome::Rejected {
                    upstream_body: None,
                    set_cookies,
                };
            }
        };
        if !self.success_rule_holds(parts, &json) {
            return LoginOutcome::Rejected {
                upstream_body: Some(json),
                set_cookies,
            };
        }
        match identity(&self.cfg, json) {
            Ok(mut id) => {
                id.set_cookies = set_cookies;
                LoginOutcome::Success(id)
            }
            Err(Unusable::NoUser(why, json)) => {
                note(
                    Level::WARN,
                    format!(
                        "upstream login {}: the {} answer: {why} (user_id_pointer {}); counted as a failed login",
                        self.cfg.url, parts.status, self.cfg.user_id_pointer
                    ),
                );
                LoginOutcome::Rejected {
                    upstream_body: Some(json),
                    set_cookies,
                }
            }
            Err(Unusable::BadValue { field, why }) => {
                note(
                    Level::ERROR,
                    format!(
                        "upstream login {}: the answer's {field} {why}; refused (502), not counted as a failed login",
                        self.cfg.url
                    ),
                );
                LoginOutcome::BadIdentity { field }
            }
        }
    }

    /// Whether `success_pointer` holds `success_value` (always, without a rule); logged if not.
    fn success_rule_holds(&self, parts: &http::response::Parts, json: &Value) -> bool {
        let Some(rule) = &self.cfg.success else {
            return true;
        };
        let found = json.pointer(&rule.pointer);
        if found.is_some_and(|v| same_scalar(v, &rule.value)) {
            return true;
        }
        note(
            Level::INFO,
            format!(
                "upstream login {}: the {} answer's success_pointer {} holds {}, not {}; a failed login",
                self.cfg.url,
                parts.status,
                rule.pointer,
                found.map_or_else(|| "nothing".to_owned(), |v| v.to_string()),
                rule.value
            ),
        );
        false
    }

    fn request(&self, body: Bytes, headers: &HeaderMap, client_ip: IpAddr) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.cfg.url.clone();
        let out = req.headers_mut();
        for name in PASSED_ON {
            for v in headers.get_all(&name) {
                out.append(name.clone(), v.clone());
            }
        }
        out.insert(
            header::HeaderName::from_static("x-forwarded-for"),
            // An IP address's text is always a valid header value.
            HeaderValue::try_from(client_ip.to_canonical().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
        );
        if let Some(id) = scope::with(|s| s.id().clone()) {
            out.insert(crate::logs::request_id::X_REQUEST_ID, id);
        }
        req
    }
}

/// Whether the value found at `success_pointer` is `success_value`: equal JSON, or the same
/// text for a string against a number or boolean (`"0"` is `0`: legacy apps are not
/// consistent about quoting their codes).
fn same_scalar(found: &Value, want: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    found == want || (text(found).is_some() && text(found) == text(want))
}

/// A non-2xx answer, relayed: status, headers without hop-by-hop ones, body.
fn relay(parts: http::response::Parts, body: Bytes) -> LoginOutcome {
    let s = parts.status;
    let counts_as_failure =
        s.is_redirection() || (s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS);
    let mut response = Response::from_parts(parts, crate::body::full(body));
    crate::proxy::strip_hop_by_hop(response.headers_mut(), false, |_| false);
    LoginOutcome::Relay {
        response,
        counts_as_failure,
    }
}

/// Reads the identity out of a 2xx JSON answer; the answer itself goes along (and comes back
/// with the reason when it names no user).
fn identity(cfg: &UpstreamLogin, json: Value) -> Result<LoginIdentity, Unusable> {
    let Some(user_id) = json.pointer(&cfg.user_id_pointer).and_then(scalar) else {
        let why = format!(
            "no string or number at user_id_pointer {:?}",
            cfg.user_id_pointer
        );
        return Err(Unusable::NoUser(why, json));
    };
    let at = |p: &Option<String>| p.as_deref().and_then(|p| json.pointer(p));
    let user_name = at(&cfg.user_name_pointer)
        .and_then(scalar)
        .unwrap_or_else(|| user_id.clone());
    let tenant = at(&cfg.tenant_pointer).and_then(scalar);
    let roles = at(&cfg.roles_pointer).map(roles).unwrap_or_default();
    // Identity values become headers: refused, never trimmed (contract §4.4).
    let fields = [
        ("user_id", Some(&user_id)),
        ("user_name", Some(&user_name)),
        ("tenant", tenant.as_ref()),
    ];
    let roles_iter = roles.iter().map(|r| ("roles", Some(r)));
    for (field, v) in fields.into_iter().chain(roles_iter) {
        if let Some(why) = v.and_then(|v| crate::tokens::identity_value_problem(v)) {
            return Err(Unusable::BadValue { field, why });
        }
    }
    Ok(LoginIdentity {
        user_id,
        user_name,
        tenant,
        roles,
        upstream_body: Some(json),
        set_cookies: Vec::new(),
    })
}

/// Why a 2xx answer gives no identity.
enum Unusable {
    /// No user id at the pointer: a failed login (the legacy app's way of saying no).
    NoUser(String, Value),
    /// An identity value that cannot be a header: the legacy app is broken, not the password.
    BadValue {
        field: &'static str,
        why: &'static str,
    },
}

/// A non-empty string, or a number as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Roles from an array of strings (numbers too) or a comma-separated string; each trimmed,
/// empty ones dropped, commas inside array items split (the roles header is comma-separated).
fn roles(v: &Value) -> Vec<String> {
    let items: Vec<String> = match v {
        Value::Array(a) => a.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    };
    items
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex};

    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));

    /// What the fake legacy login saw.
    #[derive(Default, Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    /// A legacy login on 127.0.0.1:0 answering every request with `status`, `headers`, `body`.
    async fn legacy(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
    ) -> (SocketAddr, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, incoming) = req.into_parts();
                        let got = incoming.collect().await.unwrap().to_bytes();
                        *record.lock().unwrap() = Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_owned(),
                            headers: parts.headers,
                            body: got,
                        };
                        let mut resp = Response::builder().status(status);
                        for (k, v) in headers {
                            resp = resp.header(*k, *v);
                        }
                        Ok::<_, Infallible>(
                            resp.body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    fn cfg(addr: SocketAddr) -> UpstreamLogin {
        UpstreamLogin {
            url: format!("http://{addr}/api/login").parse().unwrap(),
            user_id_pointer: "/data/id".into(),
            user_name_pointer: Some("/data/username".into()),
            tenant_pointer: Some("/data/tenant".into()),
            roles_pointer: Some("/data/roles".into()),
            success: None,
        }
    }

    fn with_success(addr: SocketAddr, pointer: &str, value: Value) -> UpstreamLogin {
        UpstreamLogin {
            success: Some(crate::config::SuccessRule {
                pointer: pointer.into(),
                value,
            }),
            ..cfg(addr)
        }
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("test-agent/1"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer not-for-the-login"),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h
    }

    #[tokio::test]
    async fn a_2xx_answer_gives_the_identity_by_pointers_and_the_body_goes_through_unchanged() {
        let (addr, seen) = legacy(
            200,
            &[("content-type", "application/json")],
            r#"{"code":0,"data":{"id":1001,"username":"alice","tenant":"acme","roles":["admin","ops, audit"]}}"#,
        )
        .await;
        let b = UpstreamBackend::new(&cfg(addr));
        let body = Bytes::from_static(b"user=alice&pass=%C3%A9+x&\x00\xff");
        let out = b
            .authenticate(body.clone(), &client_headers(), CLIENT)
            .await;
        let LoginOutcome::Success(id) = out else {
            panic!("expected success");
        };
        assert_eq!(id.user_id, "1001");
        assert_eq!(id.user_name, "alice");
        assert_eq!(id.tenant.as_deref(), Some("acme"));
        assert_eq!(id.roles, ["admin", "ops", "audit"]);
        assert_eq!(id.upstream_body.unwrap()["code"], 0);

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/api/login");
        assert_eq!(seen.body, body, "byte for byte");
        assert_eq!(
            seen.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(seen.headers["accept"], "application/json");
        assert_eq!(seen.headers["user-agent"], "test-agent/1");
        assert_eq!(seen.headers["x-forwarded-for"], "198.51.100.9");
        assert!(seen.headers.get("authorization").is_none());
    }

    #[tokio::test]
    async fn roles_as_a_comma_string_and_defaults_for_missing_fields() {
        let (addr, _) = legacy(200, &[], r#"{"data":{"id":"u-7","roles":"a, b,,c"}}"#).await;
        let b = UpstreamBackend::new(&cfg(addr));
        let LoginOutcome::Success(id) = b
            .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
            .await
        else {
            panic!("expected success");
        };
        assert_eq!(id.user_id, "u-7");
        assert_eq!(id.user_name, "u-7", "the name defaults to the id");
        assert_eq!(id.tenant, None);
        assert_eq!(id.roles, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_2xx_without_a_user_id_or_not_json_is_a_failed_login() {
        for (body, json) in [
            (r#"{"data":{}}"#, true),
            (r#"{"data":{"id":""}}"#, true),
            (r#"{"data":{"id":null}}"#, true),
            ("<html>ok</html>", false),
        ] {
            let (addr, _) = legacy(200, &[("set-cookie", "JSESSIONID=1")], body).await;
            let b = UpstreamBackend::new(&cfg(addr));
            let out = b
                .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
                .await;
            let LoginOutcome::Rejected {
                upstream_body,
                set_cookies,
            } = out
            else {
                panic!("expected a failed login for {body}");
            };
            assert_eq!(upstream_body.is_some(), json, "{body}");
            assert_eq!(set_cookies, ["JSESSIONID=1"], "{body}");
        }
    }

    /// Legacy apps answer `200 {"code":500,"msg":"password wrong"}`.
    /// A legacy answer whose identity would make headers the app misreads is a 502 naming the
    /// field, not a failed login and never a trimmed value.
    #[tokio::test]
    async fn identity_values_that_cannot_be_headers_are_refused() {
        let cases: &[(&str, &str)] = &[
            (r#"{"data":{"id":" 1001"}}"#, "user_id"),
            (r#"{"data":{"id":"1001\r\nX-User-Id: 1"}}"#, "user_id"),
            (r#"{"data":{"id":7,"username":"bob\t"}}"#, "user_name"),
            (r#"{"data":{"id":7,"tenant":"acme\t"}}"#, "tenant"),
            (r#"{"data":{"id":7,"roles":["admin\u0000"]}}"#, "roles"),
        ];
        for (body, field) in cases {
            let (addr, _) = legacy(200, &[], body).await;
            let b = UpstreamBackend::new(&cfg(addr));
            let out = b
                .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
                .await;
            assert!(
                matches!(out, LoginOutcome::BadIdentity { field: f } if f == *field),
                "{body}: {out:?}"
            );
        }
        let long = format!(r#"{{"data":{{"id":7,"username":"{}"}}}}"#, "n".repeat(256));
        let (addr, _) = legacy(200, &[], Box::leak(long.into_boxed_str())).await;
        let out = UpstreamBackend::new(&cfg(addr))
            .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
            .await;
        assert!(
            matches!(out, LoginOutcome::BadIdentity { field: "user_name" }),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn a_2xx_whose_success_pointer_differs_is_a_failed_login() {
        let ok = r#"{"code":0,"data":{"id":7}}"#;
        let cases: &[(&str, &str, Value, bool)] = &[
            (ok, "/code", Value::from(0), true),
            (
                r#"{"code":"0","data":{"id":7}}"#,
                "/code",
                Value::from(0),
                true,
            ),
            (ok, "/code", Value::from("0"), true),
            (
                r#"{"ok":true,"data":{"id":7}}"#,
                "/ok",
                Value::from(true),
                true,
            ),
            (
                r#"{"ok":"true","data":{"id":7}}"#,
                "/ok",
                Value::from(true),
                true,
            ),
            (
                r#"{"code":500,"msg":"password wrong","data":{"id":7}}"#,
                "/code",
                Value::from(0),
                false,
            ),
            (
                r#"{"code":500,"msg":"password wrong"}"#,
                "/code",
                Value::from(0),
                false,
            ),
            (r#"{"data":{"id":7}}"#, "/code", Value::from(0), false),
            (
                r#"{"code":null,"data":{"id":7}}"#,
                "/code",
                Value::from(0),
                false,
            ),
            (
                r#"{"code":[0],"data":{"id":7}}"#,
                "/code",
                Value::from(0),
                false,
            ),
            (
                r#"{"code":"00","data":{"id":7}}"#,
                "/code",
                Value::from(0),
                false,
            ),
            (
                r#"{"r":{"status":"SUCCESS"},"data":{"id":7}}"#,
                "/r/status",
                Value::from("SUCCESS"),
                true,
            ),
        ];
        for (body, pointer, value, success) in cases {
            let (addr, _) = legacy(200, &[], body).await;
            let b = UpstreamBackend::new(&with_success(addr, pointer, value.clone()));
            let out = b
                .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
                .await;
            match (out, success) {
                (LoginOutcome::Success(id), true) => assert_eq!(id.user_id, "7"),
                (LoginOutcome::Rejected { upstream_body, .. }, false) => {
                    let want: Value = serde_json::from_str(body).unwrap();
                    assert_eq!(upstream_body, Some(want), "{body}");
                }
                (other, _) => panic!("{body} at {pointer} = {value}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn cookies_go_to_the_legacy_login_and_its_set_cookies_come_back() {
        let (addr, seen) = legacy(
            200,
            &[
                ("content-type", "application/json"),
                ("set-cookie", "JSESSIONID=abc; Path=/; HttpOnly"),
                ("set-cookie", "remember=1"),
            ],
            r#"{"data":{"id":7}}"#,
        )
        .await;
        let b = UpstreamBackend::new(&cfg(addr));
        let mut h = client_headers();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("JSESSIONID=abc; captcha=x"),
        );
        let out = b.authenticate(Bytes::new(), &h, CLIENT).await;
        let LoginOutcome::Success(id) = out else {
            panic!("expected success: {out:?}");
        };
        assert_eq!(
            id.set_cookies,
            ["JSESSIONID=abc; Path=/; HttpOnly", "remember=1"]
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.headers[header::COOKIE], "JSESSIONID=abc; captcha=x");
    }

    #[tokio::test]
    async fn a_401_is_relayed_unchanged_and_counts_as_a_failure() {
        let (addr, _) = legacy(
            401,
            &[
                ("content-type", "application/json"),
                ("x-legacy", "yes"),
                ("set-cookie", "a=b"),
                ("connection", "x-legacy-hop"),
                ("x-legacy-hop", "1"),
                ("keep-alive", "timeout=5"),
            ],
            r#"{"msg":"wrong password"}"#,
        )
        .await;
        let b = UpstreamBackend::new(&cfg(addr));
        let out = b
            .authenticate(Bytes::from_static(b"{}"), &client_headers(), CLIENT)
            .await;
        let LoginOutcome::Relay {
            response,
            counts_as_failure,
        } = out
        else {
            panic!("expected relay");
        };
        assert!(counts_as_failure);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let h = response.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-legacy"], "yes");
        assert_eq!(h["set-cookie"], "a=b");
        for gone in ["connection", "x-legacy-hop", "keep-alive"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, Bytes::from_static(br#"{"msg":"wrong password"}"#));
    }

    #[tokio::test]
    async fn a_3xx_or_4xx_but_429_counts_and_a_5xx_does_not() {
        for (status, counts) in [
            (403, true),
            (400, true),
            (422, true),
            (404, true),
            (302, true),
            (303, true),
            (429, false),
            (500, false),
            (503, false),
        ] {
            let (addr, _) = legacy(status, &[], "no").await;
            let b = UpstreamBackend::new(&cfg(addr));
            let out = b
                .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
                .await;
            let LoginOutcome::Relay {
                response,
                counts_as_failure,
            } = out
            else {
                panic!("expected relay for {status}");
            };
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(counts_as_failure, counts, "{status}");
        }
    }

    #[tokio::test]
    async fn connection_refused_is_unavailable() {
        // Bind, learn the port, close: nothing listens there any more.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let b = UpstreamBackend::new(&cfg(addr));
        let out = b
            .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
            .await;
        assert!(matches!(out, LoginOutcome::Unavailable));
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_as_unavailable() {
        // Accepts, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut b = UpstreamBackend::new(&cfg(addr));
        b.exchange_timeout = Duration::from_millis(100);
        let out = b
            .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
            .await;
        assert!(matches!(out, LoginOutcome::Unavailable));
        hold.abort();
    }

    #[tokio::test]
    async fn https_is_unavailable_without_connecting() {
        let mut c = cfg("127.0.0.1:1".parse().unwrap());
        c.url = "https://127.0.0.1:1/login".parse().unwrap();
        let b = UpstreamBackend::new(&c);
        let out = b
            .authenticate(Bytes::new(), &HeaderMap::new(), CLIENT)
            .await;
        assert!(matches!(out, LoginOutcome::Unavailable));
    }

    #[test]
    fn roles_table() {
        for (json, want) in [
            (r#"["a","b"]"#, vec!["a", "b"]),
            (r#"" a , b ,""#, vec!["a", "b"]),
            (r#"["a,b", " c ", "", 7, null]"#, vec!["a", "b", "c", "7"]),
            (r#""""#, vec![]),
            (r#"null"#, vec![]),
            (r#"{"x":1}"#, vec![]),
        ] {
            let v: Value = serde_json::from_str(json).unwrap();
            assert_eq!(roles(&v), want, "{json}");
        }
    }
}
