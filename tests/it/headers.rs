//! Header hygiene: identity headers a client sends never reach the upstream (any spelling, any
//! route), Connection can't remove what the gateway injects, X-Forwarded-* is replaced from
//! untrusted peers and extended from trusted ones, Host is kept, Authorization optionally
//! withheld.

use crate::support::*;

/// Every spelling of every identity header, each set to a spoofed value.
const SPOOFS: &str = "X-User-Id: 666\r\nX_User_Id: 667\r\nx-user-id: 668\r\nX-USER-ID: 669\r\n\
X_USER_NAME: mallory\r\nX-Tenant-Id: evil\r\nx_tenant_id: evil2\r\nX-User-Roles: admin\r\n\
X-Session-Id: s-evil\r\nX-User-Platform: evil\r\n";

fn assert_no_spoof(r: &Resp) {
    let echo = r.json();
    let headers = echo["headers"].as_object().expect("headers");
    for (name, values) in headers {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        if [
            "x-user-id",
            "x-user-name",
            "x-tenant-id",
            "x-user-roles",
            "x-session-id",
            "x-user-platform",
        ]
        .contains(&folded.as_str())
        {
            for v in values.as_array().expect("values") {
                let v = v.as_str().expect("string");
                assert!(
                    !["666", "667", "668", "669", "mallory", "evil", "evil2", "admin", "s-evil"]
                        .contains(&v),
                    "spoofed {name}: {v} reached the upstream"
                );
            }
        }
    }
}

#[tokio::test]
async fn identity_spoofing_on_public_route_is_stripped() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw.raw_get("/public/x", SPOOFS).await;
    assert_eq!(r.status, 200);
    assert_no_spoof(&r);
    for name in [
        "x-user-id",
        "x_user_id",
        "x-user-name",
        "x_user_name",
        "x-tenant-id",
        "x_tenant_id",
        "x-user-roles",
        "x-session-id",
        "x-user-platform",
    ] {
        assert!(
            r.seen(name).is_empty(),
            "{name} reached the upstream on a public route"
        );
    }
    // Other headers pass.
    let r = gw
        .raw_get("/public/x", "X-User-Idx: keep\r\nX-Other: 1\r\n")
        .await;
    assert_eq!(r.seen("x-user-idx"), ["keep"]);
    assert_eq!(r.seen("x-other"), ["1"]);
}

#[tokio::test]
async fn identity_spoofing_via_http_client_on_public_route_is_stripped() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .get("/public/x", &[("x-user-id", "666"), ("x_user_id", "667")])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.seen("x-user-id").is_empty());
    assert!(r.seen("x_user_id").is_empty());
}

#[tokio::test]
async fn identity_spoofing_on_protected_route_sees_only_the_gateways_values() {
    let gw = Gateway::start(Conf::new()).await;
    let mut id = bob();
    id.tenant = None;
    let token = gw.mint(&id);
    let r = gw
        .raw_get(
            "/api/x",
            &format!("{SPOOFS}Authorization: Bearer {token}\r\n"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["2002"]);
    assert_eq!(r.seen("x-user-name"), ["bob"]);
    assert_eq!(r.seen("x-user-roles"), ["user"]);
    assert_eq!(r.seen("x-session-id"), ["sess-bob"]);
    assert_eq!(r.seen("x-user-platform"), ["app"]);
    // Bob's token has no tenant: the spoofed one must not survive in its place.
    assert!(r.seen("x-tenant-id").is_empty());
    for name in ["x_user_id", "x_user_name", "x_tenant_id"] {
        assert!(r.seen(name).is_empty(), "{name} reached the upstream");
    }
    assert_no_spoof(&r);
}

#[tokio::test]
async fn identity_spoofing_on_optional_route_without_token_is_stripped() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw.raw_get("/optional/x", SPOOFS).await;
    assert_eq!(r.status, 200);
    assert!(r.seen("x-user-id").is_empty());
    assert!(r.seen("x_user_id").is_empty());
    assert_no_spoof(&r);
}

#[tokio::test]
async fn connection_header_cannot_remove_injected_identity() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let r = gw
        .raw_get(
            "/api/x",
            &format!(
                "Authorization: Bearer {token}\r\nX-Custom: 1\r\n\
                 Connection: X-User-Id, X-Tenant-Id, x_user_roles, X-Custom, X-Forwarded-For\r\n"
            ),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-tenant-id"), ["acme"]);
    assert_eq!(r.seen("x-user-roles"), ["admin"]);
    assert_eq!(r.seen("x-forwarded-for"), ["127.0.0.1"]);
    // What Connection names from the client's own headers is hop-by-hop and goes.
    assert!(r.seen("x-custom").is_empty());
}

#[tokio::test]
async fn connection_header_cannot_remove_authorization_check() {
    // `Connection: Authorization` must not make a required route forget its token.
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .raw_get(
            "/api/x",
            "Authorization: Bearer junk\r\nConnection: Authorization\r\n",
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .raw_get(
            "/public/x",
            "Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
             Proxy-Foo: 1\r\nUpgrade: h2c\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    for name in [
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-foo",
        "upgrade",
    ] {
        assert!(r.seen(name).is_empty(), "{name} was forwarded");
    }
}

#[tokio::test]
async fn x_forwarded_from_untrusted_peer_is_replaced() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .raw_get(
            "/public/x",
            "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: evil.example\r\nX-Real-IP: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.seen("x-forwarded-proto"), ["http"]);
    assert_eq!(r.seen("x-forwarded-host"), ["gw.test"]);
    assert_eq!(r.seen("x-real-ip"), ["127.0.0.1"]);
    assert!(r.seen("forwarded").is_empty());
}

#[tokio::test]
async fn other_x_forwarded_headers_from_untrusted_peer_are_not_forwarded() {
    // Legacy apps that sat behind oauth2-proxy trust X-Forwarded-User / -Email; frameworks
    // build URLs from -Port / -Prefix. From an untrusted peer none of it may pass.
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .raw_get(
            "/public/x",
            "X-Forwarded-User: admin\r\nX-Forwarded-Email: admin@example.com\r\n\
             X-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /admin\r\nX-Forwarded-Server: evil\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    let forwarded: Vec<&String> = echo["headers"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("x-forwarded-"))
        .collect();
    assert_eq!(
        forwarded,
        ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"],
        "{echo}"
    );
}

#[tokio::test]
async fn x_forwarded_for_from_trusted_peer_is_extended() {
    let gw = Gateway::start(Conf::new().server("trusted_proxies = [\"127.0.0.1/32\"]")).await;
    let r = gw
        .raw_get(
            "/public/x",
            "X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-forwarded-for"), ["1.2.3.4, 10.0.0.1, 127.0.0.1"]);
    assert_eq!(r.seen("x-forwarded-proto"), ["https"]);
    assert_eq!(r.seen("x-real-ip"), ["10.0.0.1"]);
    // Without an incoming header, the peer starts the list.
    let r = gw.raw_get("/public/x", "").await;
    assert_eq!(r.seen("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn host_is_kept() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .raw("GET /public/x HTTP/1.1\r\nHost: legacy.example:8443\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("host"), ["legacy.example:8443"]);
    assert_eq!(r.seen("x-forwarded-host"), ["legacy.example:8443"]);
    // Through the HTTP client too (Host derived from the URL).
    let r = gw.get("/public/x", &[("host", "app.example")]).await;
    assert_eq!(r.seen("host"), ["app.example"]);
}

#[tokio::test]
async fn forward_authorization_false_withholds_token_and_cookie() {
    let conf = Conf::new()
        .token("cookie = \"at\"")
        .section("[identity]\nforward_authorization = false");
    let gw = Gateway::start(conf).await;
    let token = gw.mint(&alice());
    let r = gw
        .get(
            "/api/x",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("cookie", &format!("theme=dark; at={token}; lang=en")),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert!(r.seen("authorization").is_empty());
    assert_eq!(r.seen("cookie"), ["theme=dark; lang=en"]);
}

#[tokio::test]
async fn custom_identity_header_names_are_stripped_and_injected() {
    let conf = Conf::new().section("[identity]\nuser_id = \"X-Remote-User\"");
    let gw = Gateway::start(conf).await;
    let r = gw.raw_get("/public/x", "X_Remote_User: root\r\n").await;
    assert!(r.seen("x_remote_user").is_empty());
    let token = gw.mint(&alice());
    let r = gw
        .raw_get(
            "/api/x",
            &format!("Authorization: Bearer {token}\r\nX-Remote-User: root\r\n"),
        )
        .await;
    assert_eq!(r.seen("x-remote-user"), ["1001"]);
}

#[tokio::test]
async fn underscore_spellings_of_forwarding_headers_never_reach_the_upstream() {
    for trusted in [false, true] {
        let conf = if trusted {
            Conf::new().server("trusted_proxies = [\"127.0.0.1/32\"]")
        } else {
            Conf::new()
        };
        let gw = Gateway::start(conf).await;
        let r = gw
            .raw_get(
                "/public/x",
                "X_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nX_Original_URL: /admin\r\n\
                 X_Rewrite_URL: /admin\r\nX_Forwarded_Host: evil.example\r\n\
                 X_Forwarded_Proto: https\r\nTransfer_Encoding: chunked\r\n",
            )
            .await;
        assert_eq!(r.status, 200);
        let echo = r.json();
        for (name, _) in echo["headers"].as_object().expect("headers") {
            assert!(
                !name.contains('_'),
                "{name} reached the upstream (trusted: {trusted})"
            );
        }
        assert_eq!(r.seen("x-real-ip"), ["127.0.0.1"]);
        assert_eq!(r.seen("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(r.seen("x-forwarded-host"), ["gw.test"]);
    }
}

#[tokio::test]
async fn method_override_headers_do_not_dodge_methods() {
    let routes = r#"
[[routes]]
path = "/ro"
upstream = "up"
auth = "public"
methods = ["GET"]
"#;
    let gw = Gateway::start(Conf::new().routes(routes)).await;
    gw.request("DELETE", "/ro/item", &[], "".into())
        .await
        .assert_error(405, "method_not_allowed");
    let r = gw
        .raw_get(
            "/ro/item",
            "X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\n\
             X-Method-Override: DELETE\r\nX_HTTP_Method_Override: DELETE\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "GET");
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x_http_method_override",
    ] {
        assert!(r.seen(name).is_empty(), "{name} reached the upstream");
    }
}

#[tokio::test]
async fn connect_and_trace_are_405_unless_listed() {
    let routes = r#"
[[routes]]
path = "/trace-ok"
upstream = "up"
auth = "public"
methods = ["TRACE"]

[[routes]]
path = "/public"
upstream = "up"
auth = "public"
"#;
    let gw = Gateway::start(Conf::new().routes(routes)).await;
    for method in ["TRACE", "CONNECT"] {
        let r = gw
            .raw(format!(
                "{method} /public/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert!(
            r.status == 405 || r.status == 400,
            "{method}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = gw
        .raw("TRACE /public/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(gw.upstream.hits(), 0);
    // Listed: forwarded.
    let r = gw
        .raw("TRACE /trace-ok/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "TRACE");
}

#[tokio::test]
async fn a_trusted_forwarded_for_with_ports_names_the_client() {
    let conf = Conf::new().server("trusted_proxies = [\"127.0.0.1/32\", \"198.51.100.7/32\"]");
    let gw = Gateway::start(conf).await;
    for (xff, client) in [
        ("6.6.6.6, 198.51.100.7:1234", "6.6.6.6"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("6.6.6.6, garbage, 198.51.100.7", "198.51.100.7"),
    ] {
        let r = gw
            .raw_get("/public/x", &format!("X-Forwarded-For: {xff}\r\n"))
            .await;
        assert_eq!(r.seen("x-real-ip"), [client], "{xff}");
    }
}

#[tokio::test]
async fn http2_cookie_crumbs_reach_the_upstream_as_one_header() {
    use http_body_util::{BodyExt, Full};
    let gw = Gateway::start(Conf::new()).await;
    let client = h2c_client();
    let req = http::Request::get(gw.url("/public/c"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = within("the h2c answer", client.request(req)).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        echo["headers"]["cookie"],
        serde_json::json!(["a=1; b=2; c=3"])
    );
}
