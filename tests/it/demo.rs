//! `authgate demo`: the printed walk-through works whenever it is run, not only in the first
//! minute after start-up, and its identity provider's tokens pass as foreign tokens.

use crate::support::*;

/// Where the walk-through's `VAR=$(curl -s URL)` line fetches from: a client for the URL's
/// host and port, and its path.
fn fetched_by(walkthrough: &str, var: &str) -> (Probe, String) {
    let prefix = format!("{var}=$(curl -s ");
    let url = walkthrough
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no {var}=$(curl -s URL) line:\n{walkthrough}"));
    let (authority, path) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .expect("an http URL");
    (
        Probe::new(authority.parse().expect("host:port")),
        format!("/{path}"),
    )
}

#[tokio::test]
async fn the_silent_refresh_step_gets_its_near_expiry_token_when_it_runs() {
    let any = "127.0.0.1:0".parse().unwrap();
    let demo = authgate::demo::start(any, any)
        .await
        .expect("the demo starts");
    let gw = Probe::new(demo.handle.addr);
    // Step 5 fetches its token (`OLD=$(curl -s URL)`): nothing minted at start-up is printed.
    let (tokens, path) = fetched_by(&demo.walkthrough, "OLD");
    let fetched_at = now();
    let first = tokens.get(&path, &[]).await;
    assert_eq!(first.status, 200);
    let old = String::from_utf8(first.body.to_vec()).unwrap();
    // A minute left, counted from when it was asked for.
    let exp = payload_of(&old)["exp"].as_u64().expect("exp");
    assert!(
        (fetched_at + 59..=now() + 60).contains(&exp),
        "exp {exp}, fetched at {fetched_at}"
    );
    // Each run of the step gets its own.
    let second = tokens.get(&path, &[]).await;
    assert_ne!(second.body, first.body);
    let old = String::from_utf8(second.body.to_vec()).unwrap();

    // The step's call: 200, and a fresh token rides back in `refresh-token`, which works.
    let r = gw.get_auth("/api/orders", &old).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let fresh = r
        .header("refresh-token")
        .expect("a silently refreshed token");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(gw.get_auth("/api/orders", fresh).await.status, 200);
    demo.handle.shutdown().await;
}

#[tokio::test]
async fn the_identity_provider_step_passes_a_foreign_token_with_its_user() {
    let any = "127.0.0.1:0".parse().unwrap();
    let demo = authgate::demo::start(any, any)
        .await
        .expect("the demo starts");
    let gw = Probe::new(demo.handle.addr);
    // Step 9: `IDP=$(curl -s URL)`, then the protected call with it.
    let (idp, path) = fetched_by(&demo.walkthrough, "IDP");
    let fetched = idp.get(&path, &[]).await;
    assert_eq!(fetched.status, 200);
    let token = String::from_utf8(fetched.body.to_vec()).unwrap();
    let claims = payload_of(&token);
    assert_eq!(claims["sub"], "idp-user-7");
    assert!(claims["iss"].as_str().unwrap().starts_with("http://"));

    // The gateway's first key fetch (by discovery) may still be under way: 503 until then.
    let r = poll_until(
        "the demo identity provider's keys",
        || gw.get_auth("/api/orders", &token),
        |r| r.status != 503,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-user-id"], serde_json::json!(["idp-user-7"]));
    assert_eq!(seen["x-user-name"], serde_json::json!(["carol"]));
    assert_eq!(seen["x-tenant-id"], serde_json::json!(["acme"]));
    assert_eq!(seen["x-user-roles"], serde_json::json!(["viewer"]));
    assert!(seen.get("x-session-id").is_none(), "{seen}");
    // A foreign token is never refreshed.
    assert_eq!(r.header("refresh-token"), None);
    demo.handle.shutdown().await;
}

/// Issue 13: the single-page app is served through the gateway on its public route, without a
/// token, with its own CSP, and its `authgate.js` is the library `clients/js` ships; the route
/// takes GET and HEAD only.
#[tokio::test]
async fn the_single_page_app_and_the_shipped_client_are_served_on_a_public_route() {
    let any = "127.0.0.1:0".parse().unwrap();
    let demo = authgate::demo::start(any, any)
        .await
        .expect("the demo starts");
    let gw = Probe::new(demo.handle.addr);
    assert!(demo.walkthrough.contains("/spa/"), "{}", demo.walkthrough);
    let page = gw.get("/spa/", &[("accept", "text/html")]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(String::from_utf8_lossy(&page.body).contains(r#"src="app.js""#));
    let lib = gw.get("/spa/authgate.js", &[]).await;
    assert_eq!(lib.status, 200);
    assert_eq!(
        lib.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let shipped = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/index.js"))
        .expect("clients/js/index.js");
    assert_eq!(
        lib.body.as_ref(),
        shipped.as_slice(),
        "the library as shipped"
    );
    let posted = gw.post("/spa/", None, String::new()).await;
    assert_eq!(posted.status, 405);
    // Any other path still needs a token, and the echo stays JSON for scripts.
    assert_eq!(gw.get("/spaces", &[]).await.status, 401);
    demo.handle.shutdown().await;
}
