//! CORS: with `[cors]` on the gateway answers preflights itself (no token, upstream never hit)
//! and decorates its own errors for allowed origins; with it off OPTIONS is an ordinary method:
//! a preflight-shaped request gets exactly what the route's `auth` and `methods` say.

use crate::support::*;

const APP: &str = "https://app.example.com";

fn cors_on() -> Conf {
    Conf::new().section(&format!("[cors]\nallowed_origins = [\"{APP}\"]"))
}

fn preflight(origin: &str) -> Vec<(&str, &str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ]
}

#[tokio::test]
async fn preflight_is_answered_by_the_gateway() {
    let gw = Gateway::start(cors_on()).await;
    let r = gw
        .request("OPTIONS", "/api/orders", &preflight(APP), "".into())
        .await;
    assert!(r.status == 204 || r.status == 200, "status {}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let methods = r
        .header("access-control-allow-methods")
        .expect("allow-methods");
    assert!(methods.contains("POST"), "{methods}");
    let allowed = r
        .header("access-control-allow-headers")
        .expect("allow-headers")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.header("access-control-allow-credentials").is_none());
    assert_eq!(gw.upstream.hits(), 0, "the preflight reached the upstream");
    // On a route with a method list and on one needing a role, too.
    for path in ["/get-only/x", "/admin/x"] {
        let r = gw
            .request("OPTIONS", path, &preflight(APP), "".into())
            .await;
        assert!(r.status == 204 || r.status == 200, "{path}: {}", r.status);
    }
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn preflight_from_another_origin_gets_no_allow_origin() {
    let gw = Gateway::start(cors_on()).await;
    let r = gw
        .request(
            "OPTIONS",
            "/api/orders",
            &preflight("https://evil.example"),
            "".into(),
        )
        .await;
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn errors_carry_cors_headers_for_an_allowed_origin() {
    let gw = Gateway::start(cors_on()).await;
    let r = gw.get("/api/orders", &[("origin", APP)]).await;
    r.assert_error(401, "missing_token");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let r = gw
        .get(
            "/api/orders",
            &[("origin", APP), ("authorization", "Bearer junk")],
        )
        .await;
    r.assert_error(401, "invalid_token");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let r = gw.get_auth("/admin/x", &gw.mint(&bob())).await;
    r.assert_error(403, "forbidden");
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "no Origin sent"
    );
    let r = gw
        .raw_get("/public/..;/x", &format!("Origin: {APP}\r\n"))
        .await;
    r.assert_error(400, "bad_request");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    // Not for an origin that is not allowed.
    let r = gw
        .get("/api/orders", &[("origin", "https://evil.example")])
        .await;
    r.assert_error(401, "missing_token");
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn no_route_and_405_carry_cors_headers() {
    let routes = r#"
[[routes]]
path = "/get-only"
upstream = "up"
auth = "public"
methods = ["GET"]
"#;
    let gw = Gateway::start(cors_on().routes(routes)).await;
    let r = gw.get("/nowhere", &[("origin", APP)]).await;
    r.assert_error(404, "no_route");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let r = gw
        .request("POST", "/get-only/x", &[("origin", APP)], "".into())
        .await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    // A preflight for a path no route matches is still the gateway's to answer.
    let r = gw
        .request("OPTIONS", "/nowhere", &preflight(APP), "".into())
        .await;
    assert!(r.status == 204 || r.status == 200, "status {}", r.status);
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn forwarded_answers_carry_cors_headers_too() {
    let gw = Gateway::start(cors_on()).await;
    let r = gw.get("/public/x", &[("origin", APP)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn allow_credentials_is_sent_when_configured() {
    let conf = Conf::new().section(&format!(
        "[cors]\nallowed_origins = [\"{APP}\"]\nallow_credentials = true\nmax_age = \"1m\""
    ));
    let gw = Gateway::start(conf).await;
    let r = gw
        .request("OPTIONS", "/api/x", &preflight(APP), "".into())
        .await;
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("60"));
    let r = gw.get("/api/x", &[("origin", APP)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

#[tokio::test]
async fn plain_options_is_not_a_preflight() {
    // Without Access-Control-Request-Method it is an ordinary request: the token is needed.
    let gw = Gateway::start(cors_on()).await;
    let r = gw
        .request("OPTIONS", "/api/x", &[("origin", APP)], "".into())
        .await;
    r.assert_error(401, "missing_token");
    assert_eq!(gw.upstream.hits(), 0);
}

/// The operator's report: a preflight-shaped OPTIONS with a body and a query, on protected
/// routes, with `[cors]` off.
fn preflight_with_body() -> (Vec<(&'static str, &'static str)>, bytes::Bytes) {
    (
        vec![
            ("origin", "https://x.example"),
            ("access-control-request-method", "GET"),
            ("content-type", "application/json"),
        ],
        bytes::Bytes::from_static(br#"{"confirm":true}"#),
    )
}

#[tokio::test]
async fn preflight_shaped_options_needs_a_token_when_cors_is_off() {
    // The usual routes, behind three with method lists (one of them also needing a role).
    let routes = format!(
        r#"
[[routes]]
path = "/ro"
upstream = "up"
auth = "required"
methods = ["GET", "HEAD"]

[[routes]]
path = "/rw"
upstream = "up"
auth = "required"
methods = ["GET", "OPTIONS"]

[[routes]]
path = "/admin-ro"
upstream = "up"
auth = "required"
methods = ["GET", "OPTIONS"]
require_roles = ["admin"]
{ROUTES}"#
    );
    let gw = Gateway::start(Conf::new().routes(&routes)).await;
    let (headers, body) = preflight_with_body();
    let ask = |path: &'static str, extra: Vec<(&'static str, String)>| {
        let mut h: Vec<(&str, String)> =
            headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        h.extend(extra);
        let gw = &gw;
        let body = body.clone();
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            gw.request("OPTIONS", path, &h, body).await
        }
    };
    // No token: every protected shape refuses, and nothing reaches the upstream.
    for path in [
        "/api/delete-account?id=42",
        "/rw/item",
        "/admin/users",
        "/acme/x",
        "/admin-ro/x",
    ] {
        ask(path, vec![]).await.assert_error(401, "missing_token");
    }
    // A method list without OPTIONS is a 405 whatever the auth mode.
    for path in ["/get-only/x", "/ro/item"] {
        ask(path, vec![])
            .await
            .assert_error(405, "method_not_allowed");
    }
    assert_eq!(
        gw.upstream.hits(),
        0,
        "a preflight-shaped request got through"
    );

    // With a token, the route's requirements apply to OPTIONS like to any other method.
    let bob = format!("Bearer {}", gw.mint(&bob()));
    for path in ["/admin/users", "/admin-ro/x"] {
        ask(path, vec![("authorization", bob.clone())])
            .await
            .assert_error(403, "forbidden");
    }
    assert_eq!(gw.upstream.hits(), 0);
    let admin = format!("Bearer {}", gw.mint(&alice()));
    let r = ask("/admin-ro/x", vec![("authorization", admin)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "OPTIONS");
    assert_eq!(r.seen("x-user-id"), [alice().sub]);

    // A public route forwards it, as it would any method, with the body and the query.
    let r = ask("/public/x?id=42", vec![]).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["method"], "OPTIONS");
    assert!(r.seen("x-user-id").is_empty());
    // The gateway adds no CORS headers of its own.
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn forwarded_preflight_still_strips_spoofed_identity() {
    let gw = Gateway::start(Conf::new()).await;
    let mut headers = preflight(APP);
    headers.push(("x-user-id", "666"));
    let r = gw
        .request("OPTIONS", "/public/x", &headers, "".into())
        .await;
    assert_eq!(r.status, 200);
    assert!(r.seen("x-user-id").is_empty());
}
