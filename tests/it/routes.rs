//! Auth modes (public / optional / required), route matching (404, 405, strip_prefix) and
//! route requirements (require_roles, require_tenants).

use crate::support::*;

#[tokio::test]
async fn public_route_forwards_without_a_token() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw.get("/public/hello?x=1", &[]).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/public/hello");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["method"], "GET");
    assert!(r.seen("x-user-id").is_empty());
    assert_eq!(gw.upstream.hits(), 1);
}

#[tokio::test]
async fn public_route_ignores_a_token_and_injects_nothing() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let r = gw.get_auth("/public/x", &token).await;
    assert_eq!(r.status, 200);
    assert!(r.seen("x-user-id").is_empty());
}

#[tokio::test]
async fn required_route_without_token_is_401_missing_token() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw.get("/api/orders", &[]).await;
    r.assert_error(401, "missing_token");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="authgate", error="invalid_request""#)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn required_route_with_another_auth_scheme_is_missing_token() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .get("/api/orders", &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    r.assert_error(401, "missing_token");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn required_route_with_valid_token_injects_identity() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let r = gw.get_auth("/api/orders", &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-user-name"), ["alice"]);
    assert_eq!(r.seen("x-tenant-id"), ["acme"]);
    assert_eq!(r.seen("x-user-roles"), ["admin"]);
    assert_eq!(r.seen("x-session-id"), ["sess-alice"]);
    assert_eq!(r.seen("x-user-platform"), ["web"]);
    // forward_authorization defaults to true.
    assert_eq!(r.seen("authorization"), [format!("Bearer {token}")]);
    // A fresh token gets no refresh header.
    assert!(r.header("refresh-token").is_none());
    assert_eq!(gw.upstream.hits(), 1);
}

#[tokio::test]
async fn invalid_token_401_has_www_authenticate_invalid_token() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw.get_auth("/api/orders", "not-a-jwt").await;
    r.assert_error(401, "invalid_token");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="authgate", error="invalid_token""#)
    );
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn optional_route_without_token_forwards_without_identity() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw.get("/optional/feed", &[("x-user-id", "666")]).await;
    assert_eq!(r.status, 200);
    assert!(r.seen("x-user-id").is_empty());
}

#[tokio::test]
async fn optional_route_with_valid_token_adds_identity() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let r = gw.get_auth("/optional/feed", &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
}

#[tokio::test]
async fn optional_route_with_bad_token_forwards_without_identity() {
    let gw = Gateway::start(Conf::new()).await;
    let forged = jwt_hs256(
        &hs256_header(),
        &good_claims(),
        b"not-the-secret-but-32-bytes-long!!",
    );
    let r = gw
        .get(
            "/optional/feed",
            &[
                ("authorization", &format!("Bearer {forged}")),
                ("x-user-id", "1001"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.seen("x-user-id").is_empty());
    assert!(r.seen("x-user-roles").is_empty());
}

#[tokio::test]
async fn optional_route_with_expired_token_forwards_without_identity() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint_at(&alice(), gw.now() - 3 * 3600);
    let r = gw.get_auth("/optional/feed", &token).await;
    assert_eq!(r.status, 200);
    assert!(r.seen("x-user-id").is_empty());
}

#[tokio::test]
async fn no_matching_route_is_404_no_route() {
    let routes = r#"
[[routes]]
path = "/public"
upstream = "up"
auth = "public"
"#;
    let gw = Gateway::start(Conf::new().routes(routes)).await;
    let r = gw.get("/elsewhere", &[]).await;
    r.assert_error(404, "no_route");
    assert_eq!(gw.upstream.hits(), 0);
    // Prefixes match on segment boundaries only.
    gw.get("/publicity", &[])
        .await
        .assert_error(404, "no_route");
    assert_eq!(gw.get("/public", &[]).await.status, 200);
    assert_eq!(gw.upstream.hits(), 1);
}

/// Routes where nothing but `/get-only` matches `/get-only/...`.
const METHOD_ROUTES: &str = r#"
[[routes]]
path = "/get-only"
upstream = "up"
auth = "public"
methods = ["GET"]

[[routes]]
path = "/public"
upstream = "up"
auth = "public"
"#;

#[tokio::test]
async fn method_not_listed_is_405() {
    let gw = Gateway::start(Conf::new().routes(METHOD_ROUTES)).await;
    let r = gw.request("POST", "/get-only/x", &[], "data".into()).await;
    r.assert_error(405, "method_not_allowed");
    let r = gw.request("DELETE", "/get-only", &[], "".into()).await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(gw.upstream.hits(), 0);
    assert_eq!(gw.get("/get-only/x", &[]).await.status, 200);
    // HEAD rides along with GET.
    let r = gw.request("HEAD", "/get-only/x", &[], "".into()).await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.upstream.hits(), 2);
}

#[tokio::test]
async fn method_not_listed_never_falls_through_to_a_broader_route() {
    // The first route matching the path decides: POST to the GET-only route is a 405, and
    // never reaches the later catch-all, whatever its auth mode.
    let gw = Gateway::start(Conf::new()).await;
    gw.request("POST", "/get-only/x", &[], "data".into())
        .await
        .assert_error(405, "method_not_allowed");
    let token = gw.mint(&alice());
    let auth = format!("Bearer {token}");
    gw.request(
        "POST",
        "/get-only/x",
        &[("authorization", &auth)],
        "data".into(),
    )
    .await
    .assert_error(405, "method_not_allowed");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn require_roles_without_the_role_is_403_forbidden() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&bob());
    gw.get_auth("/admin/panel", &token)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn require_roles_without_any_roles_is_403() {
    let gw = Gateway::start(Conf::new()).await;
    let mut id = alice();
    id.roles = None;
    let token = gw.mint(&id);
    gw.get_auth("/admin/panel", &token)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn require_roles_with_the_role_passes() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let r = gw.get_auth("/admin/panel", &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_path(), "/admin/panel");
}

#[tokio::test]
async fn require_roles_without_token_is_401_not_403() {
    let gw = Gateway::start(Conf::new()).await;
    gw.get("/admin/panel", &[])
        .await
        .assert_error(401, "missing_token");
}

#[tokio::test]
async fn require_tenants_other_tenant_is_403() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&bob());
    gw.get_auth("/acme/books", &token)
        .await
        .assert_error(403, "forbidden");
    let mut id = alice();
    id.tenant = None;
    let token = gw.mint(&id);
    gw.get_auth("/acme/books", &token)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn require_tenants_right_tenant_passes() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let r = gw.get_auth("/acme/books", &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-tenant-id"), ["acme"]);
}

#[tokio::test]
async fn strip_prefix_forwards_the_rest() {
    let gw = Gateway::start(Conf::new()).await;
    assert_eq!(gw.get("/stripped/a/b", &[]).await.seen_path(), "/a/b");
    assert_eq!(gw.get("/stripped", &[]).await.seen_path(), "/");
}

#[tokio::test]
async fn first_matching_route_wins() {
    let routes = r#"
[[routes]]
exact = "/docs/secret"
upstream = "up"
auth = "required"

[[routes]]
path = "/docs"
upstream = "up"
auth = "public"

[[routes]]
glob = "/files/*/meta"
upstream = "up"
auth = "public"
"#;
    let gw = Gateway::start(Conf::new().routes(routes)).await;
    gw.get("/docs/secret", &[])
        .await
        .assert_error(401, "missing_token");
    assert_eq!(gw.get("/docs/secret/more", &[]).await.status, 200);
    assert_eq!(gw.get("/files/42/meta", &[]).await.status, 200);
    gw.get("/files/42/43/meta", &[])
        .await
        .assert_error(404, "no_route");
}
