//! `GET /auth/verify`, the forward-auth endpoint: it fails closed without the original request
//! from a trusted proxy, judges that request by its route exactly as the proxy path would
//! (every `auth` mode, every requirement, the same refusals), and marks every 401/403 with
//! `X-Auth-Error` for the proxy in front to relay.

use crate::support::*;

async fn gateway() -> Gateway {
    Gateway::start(Conf::new().server(TRUST_LOOPBACK)).await
}

fn refused(r: &Resp, status: u16, code: &str) {
    r.assert_error(status, code);
    if status == 401 || status == 403 {
        assert_eq!(r.header("x-auth-error"), Some(code), "{:?}", r.headers);
    }
}

#[tokio::test]
async fn without_the_original_request_it_fails_closed() {
    let gw = gateway().await;
    let admin = gw.mint(&alice());
    // No X-Forwarded-Uri: 400, whatever the token (it used to answer as for "/" and skip the
    // route's requirements).
    let no_uri: [&[(&str, &str)]; 3] = [
        &[],
        &[("x-forwarded-method", "GET")],
        &[("x-forwarded-uri", "")],
    ];
    for token in [None, Some(admin.as_str())] {
        for forwarded in no_uri {
            let r = gw.verify_with(forwarded, token).await;
            refused(&r, 400, "bad_request");
        }
    }
    let unclear: [&[(&str, &str)]; 2] = [
        // Two different URIs: which one would the proxy have meant?
        &[
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-uri", "/admin/x"),
        ],
        // A method that is not one.
        &[
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-method", "G(E)T"),
        ],
    ];
    for forwarded in unclear {
        refused(&gw.verify_with(forwarded, None).await, 400, "bad_request");
    }
    assert_eq!(gw.upstream.hits(), 0, "verify never forwards");
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_refused() {
    // No trusted_proxies: the test client is not a proxy whose word counts.
    let gw = Gateway::start(Conf::new()).await;
    let bob = gw.mint(&bob());
    for uri in ["/public/x", "/admin/x", "/api/x"] {
        refused(
            &gw.verify_with(&[("x-forwarded-uri", uri)], Some(&bob))
                .await,
            400,
            "bad_request",
        );
    }
}

#[tokio::test]
async fn the_matched_routes_auth_and_requirements_apply() {
    let gw = gateway().await;
    let (admin, user) = (gw.mint(&alice()), gw.mint(&bob()));
    let uri = |u| [("x-forwarded-uri", u)];

    // public: 200 with no identity, token or not.
    for token in [None, Some(admin.as_str())] {
        let r = gw.verify_with(&uri("/public/x?y=1"), token).await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-user-id").is_none(), "{:?}", r.headers);
    }
    // optional: identity if any, anonymous otherwise, a bad token ignored.
    let r = gw.verify_with(&uri("/optional/x"), Some(&user)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-user-id"), Some("2002"));
    for token in [None, Some("not.a.token")] {
        let r = gw.verify_with(&uri("/optional/x"), token).await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-user-id").is_none());
    }
    // required: the token is needed.
    refused(
        &gw.verify_with(&uri("/api/x"), None).await,
        401,
        "missing_token",
    );
    refused(
        &gw.verify_with(&uri("/api/x"), Some("not.a.token")).await,
        401,
        "invalid_token",
    );
    let r = gw.verify_with(&uri("/api/x"), Some(&user)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-user-id"), Some("2002"));
    assert_eq!(r.header("x-session-id"), Some("sess-bob"));
    // require_roles: a non-admin is 403 (the reported hole), the admin passes.
    refused(
        &gw.verify_with(&uri("/admin/x"), Some(&user)).await,
        403,
        "forbidden",
    );
    refused(
        &gw.verify_with(&uri("/admin/x"), None).await,
        401,
        "missing_token",
    );
    assert_eq!(
        gw.verify_with(&uri("/admin/x"), Some(&admin)).await.status,
        200
    );
    // require_tenants likewise.
    refused(
        &gw.verify_with(&uri("/acme/x"), Some(&user)).await,
        403,
        "forbidden",
    );
    assert_eq!(
        gw.verify_with(&uri("/acme/x"), Some(&admin)).await.status,
        200
    );
    // The URI is canonicalised like a request path: no way around the route.
    for trick in ["/public/../admin/x", "/public/%2e%2e/admin/x", "//admin/x"] {
        refused(
            &gw.verify_with(&uri(trick), Some(&user)).await,
            403,
            "forbidden",
        );
    }
    refused(
        &gw.verify_with(&uri("/public/%252e%252e/admin/x"), Some(&user))
            .await,
        400,
        "bad_request",
    );
    // An absolute URL is read for its path.
    refused(
        &gw.verify_with(&uri("https://app.example.com/admin/x?a=b"), Some(&user))
            .await,
        403,
        "forbidden",
    );
    assert_eq!(gw.upstream.hits(), 0, "verify never forwards");
}

#[tokio::test]
async fn the_method_selects_the_route_and_defaults_to_get() {
    let gw = gateway().await;
    let method = |m| {
        [
            ("x-forwarded-uri", "/get-only/x"),
            ("x-forwarded-method", m),
        ]
    };
    assert_eq!(gw.verify_with(&method("GET"), None).await.status, 200);
    assert_eq!(
        gw.verify_with(&[("x-forwarded-uri", "/get-only/x")], None)
            .await
            .status,
        200
    );
    refused(
        &gw.verify_with(&method("POST"), None).await,
        405,
        "method_not_allowed",
    );
    // OPTIONS is an ordinary method here too: a preflight-shaped original request on a
    // protected route still needs the token.
    let r = gw
        .verify_with(
            &[
                ("x-forwarded-uri", "/api/x"),
                ("x-forwarded-method", "OPTIONS"),
                ("origin", "https://x.example"),
                ("access-control-request-method", "GET"),
            ],
            None,
        )
        .await;
    refused(&r, 401, "missing_token");
    refused(
        &gw.verify_with(&[("x-forwarded-uri", "/nowhere/../..")], None)
            .await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn optional_routes_refuse_what_the_proxy_path_refuses() {
    let gw = gateway().await;
    let (a, b) = (gw.mint(&alice()), gw.mint(&bob()));
    // A bearer and a cookie that disagree is a 400 on both paths (the old verify swallowed it).
    let conf = Conf::new().server(TRUST_LOOPBACK).token("cookie = \"tok\"");
    let gw2 = Gateway::start(conf).await;
    let (a2, b2) = (gw2.mint(&alice()), gw2.mint(&bob()));
    let cookie = format!("tok={b2}");
    let auth = format!("Bearer {a2}");
    let headers = [
        ("x-forwarded-uri", "/optional/x"),
        ("authorization", auth.as_str()),
        ("cookie", cookie.as_str()),
    ];
    refused(&gw2.verify_with(&headers, None).await, 400, "bad_request");
    gw2.request(
        "GET",
        "/optional/x",
        &[
            ("authorization", auth.as_str()),
            ("cookie", cookie.as_str()),
        ],
        bytes::Bytes::new(),
    )
    .await
    .assert_error(400, "bad_request");
    // Two Authorization headers likewise.
    let (ha, hb) = (format!("Bearer {a}"), format!("Bearer {b}"));
    let headers = [
        ("x-forwarded-uri", "/optional/x"),
        ("authorization", ha.as_str()),
        ("authorization", hb.as_str()),
    ];
    refused(&gw.verify_with(&headers, None).await, 400, "bad_request");
}

#[tokio::test]
async fn its_silent_refresh_is_the_proxy_paths_and_is_counted() {
    let gw = gateway().await;
    let admin = gw.admin.clone();
    let before = metric(&admin, "authgate_silent_refreshes_total", &[]).await;
    let old = gw.mint_expiring_in(&alice(), 60);
    let r = gw
        .verify_with(&[("x-forwarded-uri", "/api/x")], Some(&old))
        .await;
    assert_eq!(r.status, 200);
    let fresh = r
        .header("refresh-token")
        .expect("a silent refresh")
        .to_owned();
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(payload_of(&fresh)["sid"], "sess-alice");
    let after = metric(&admin, "authgate_silent_refreshes_total", &[]).await;
    assert!(after >= before + 1.0, "{before} -> {after}");
    // The proxy path hands the same session the same token.
    let r = gw.get_auth("/api/x", &old).await;
    assert_eq!(r.header("refresh-token"), Some(fresh.as_str()));
    // A public route's verify mints nothing.
    let r = gw
        .verify_with(&[("x-forwarded-uri", "/public/x")], Some(&old))
        .await;
    assert!(r.header("refresh-token").is_none());
}

#[tokio::test]
async fn proxy_path_refusals_carry_x_auth_error_too() {
    let gw = gateway().await;
    let r = gw.get("/api/x", &[]).await;
    refused(&r, 401, "missing_token");
    let r = gw.get_auth("/admin/x", &gw.mint(&bob())).await;
    refused(&r, 403, "forbidden");
}

/// Not only 401/403: every error of verify names its code in `X-Auth-Error`, since a proxy such
/// as nginx's auth_request keeps no body (and turns these statuses into a 500 of its own).
#[tokio::test]
async fn every_error_of_verify_carries_x_auth_error() {
    let gw = gateway().await;
    let r = gw.verify_with(&[], None).await;
    r.assert_error(400, "bad_request");
    assert_eq!(r.header("x-auth-error"), Some("bad_request"));
    let r = gw
        .verify_with(
            &[
                ("x-forwarded-uri", "/get-only/x"),
                ("x-forwarded-method", "POST"),
            ],
            None,
        )
        .await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("x-auth-error"), Some("method_not_allowed"));
}

/// The store lost: 503 `store_unavailable` with `Retry-After` and `X-Auth-Error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_503_with_retry_after_and_x_auth_error() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis).server(TRUST_LOOPBACK));
    let alice = gw.login_ok("alice", "web").await;
    assert_eq!(gw.verify("/api/x", Some(&alice.access)).await.status, 200);
    gw.stop_redis().await;
    let r = gw.verify("/api/x", Some(&alice.access)).await;
    r.assert_error(503, "store_unavailable");
    assert_eq!(r.header("x-auth-error"), Some("store_unavailable"));
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
}
