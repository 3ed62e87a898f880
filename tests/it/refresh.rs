//! Silent refresh (contract §4.6): a token near expiry gets a fresh one for the same session in
//! `refresh-token`, with `Cache-Control: no-store` and `Access-Control-Expose-Headers`; one
//! token per session for concurrent requests; the upstream can never set the header itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use authgate::body::full;
use http::Response;
use tokio::sync::Barrier;

use crate::support::*;

fn expose_lists(r: &Resp, name: &str) -> bool {
    r.headers
        .get_all("access-control-expose-headers")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .any(|n| n.trim().eq_ignore_ascii_case(name))
}

#[tokio::test]
async fn token_near_expiry_gets_a_fresh_one() {
    let gw = Gateway::start(Conf::new()).await;
    let old = gw.mint_expiring_in(&alice(), 60);
    let before = gw.now();
    let r = gw.get_auth("/api/x", &old).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    let fresh = r
        .header("refresh-token")
        .expect("a refresh-token header")
        .to_owned();
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(expose_lists(&r, "refresh-token"), "{:?}", r.headers);

    let (o, n) = (payload_of(&old), payload_of(&fresh));
    for claim in [
        "sub", "sid", "name", "plat", "tenant", "roles", "iss", "aud",
    ] {
        assert_eq!(o[claim], n[claim], "{claim}");
    }
    assert_ne!(o["jti"], n["jti"]);
    assert!(n["iat"].as_u64().unwrap() >= before);
    assert!(n["exp"].as_u64().unwrap() >= before + 7200);
    assert!(n["exp"].as_u64().unwrap() > o["exp"].as_u64().unwrap());

    // The new token works and, being fresh, brings no further refresh.
    let r = gw.get_auth("/admin/x", &fresh).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-session-id"), ["sess-alice"]);
    assert!(r.header("refresh-token").is_none());
    // The old one stays valid until it expires.
    assert_eq!(gw.get_auth("/api/x", &old).await.status, 200);
}

#[tokio::test]
async fn a_token_gets_its_refresh_once_the_clock_reaches_the_window() {
    let gw = Gateway::start(Conf::new()).await;
    // Minted with its whole life (2 h) ahead: far outside the 30 min window.
    let token = gw.mint(&alice());
    let r = gw.get_auth("/api/x", &token).await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
    // 1 h 40 min later by the gateway's clock: 20 min left, inside the window.
    gw.advance(Duration::from_secs(100 * 60));
    let before = gw.now();
    let r = gw.get_auth("/api/x", &token).await;
    assert_eq!(r.status, 200);
    let fresh = r
        .header("refresh-token")
        .expect("a refresh-token header once the window is reached")
        .to_owned();
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let n = payload_of(&fresh);
    let iat = n["iat"].as_u64().unwrap();
    assert!(
        (before..=gw.now()).contains(&iat),
        "minted at the gateway's time: {n}"
    );
    assert_eq!(n["exp"].as_u64(), Some(iat + 7200));
    // Past the old token's exp and leeway, it is refused (its verification was cached: the
    // cache, too, judges by the gateway's clock); the fresh one has its own life left.
    gw.advance(Duration::from_secs(30 * 60));
    let r = gw.get_auth("/api/x", &token).await;
    r.assert_error(401, "token_expired");
    let r = gw.get_auth("/api/x", &fresh).await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_none());
}

#[tokio::test]
async fn fresh_token_gets_no_refresh_and_no_forced_no_store() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let r = gw.get_auth("/api/x", &token).await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_none());
    assert!(r.header("cache-control").is_none());
    // Just outside the 30 min window: nothing either.
    let token = gw.mint_expiring_in(&alice(), 31 * 60);
    assert!(gw
        .get_auth("/api/x", &token)
        .await
        .header("refresh-token")
        .is_none());
}

#[tokio::test]
async fn optional_route_refreshes_a_valid_token_too() {
    let gw = Gateway::start(Conf::new()).await;
    let old = gw.mint_expiring_in(&alice(), 120);
    let r = gw.get_auth("/optional/x", &old).await;
    assert_eq!(r.status, 200);
    let fresh = r
        .header("refresh-token")
        .expect("refresh on an optional route");
    assert_eq!(payload_of(fresh)["sid"], "sess-alice");
}

#[tokio::test]
async fn upstream_set_refresh_header_is_removed() {
    let upstream = Upstream::echo_with(|h| {
        h.insert(
            "refresh-token",
            http::HeaderValue::from_static("evil.upstream.token"),
        );
    })
    .await;
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    // Public route, no token.
    let r = gw.get("/public/x", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
    // Required route, fresh token.
    let token = gw.mint(&alice());
    let r = gw.get_auth("/api/x", &token).await;
    assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
    // Near expiry: only the gateway's token, once.
    let old = gw.mint_expiring_in(&alice(), 60);
    let r = gw.get_auth("/api/x", &old).await;
    let all: Vec<_> = r.headers.get_all("refresh-token").iter().collect();
    assert_eq!(all.len(), 1);
    assert_ne!(all[0], "evil.upstream.token");
    assert_eq!(payload_of(all[0].to_str().unwrap())["sub"], "1001");
}

#[tokio::test]
async fn concurrent_requests_of_one_session_get_the_same_token() {
    const N: usize = 16;
    // The upstream holds every request until all N are in flight at once.
    let barrier = Arc::new(Barrier::new(N));
    let upstream = Upstream::start(move |_req| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            Response::new(full("ok"))
        }
    })
    .await;
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    let ttl = 7200;
    let mut tasks = Vec::new();
    for i in 0..N as u64 {
        // N different tokens of the one session, all inside the window.
        let token = gw.mint_at(&alice(), gw.now() + 60 + i - ttl);
        let probe = gw.probe();
        tasks.push(tokio::spawn(async move {
            let r = probe.get_auth("/api/x", &token).await;
            assert_eq!(r.status, 200);
            r.header("refresh-token")
                .expect("refresh header")
                .to_owned()
        }));
    }
    let mut tokens = HashSet::new();
    for t in tasks {
        tokens.insert(within("the concurrent requests", t).await.unwrap());
    }
    assert_eq!(
        tokens.len(),
        1,
        "one session got {} different tokens",
        tokens.len()
    );
    let fresh = tokens.into_iter().next().unwrap();
    assert_eq!(payload_of(&fresh)["sid"], "sess-alice");
    assert_eq!(gw.upstream.hits(), N);
}

#[tokio::test]
async fn different_sessions_get_their_own_tokens() {
    let gw = Gateway::start(Conf::new()).await;
    let a = gw
        .get_auth("/api/x", &gw.mint_expiring_in(&alice(), 60))
        .await;
    let b = gw
        .get_auth("/api/x", &gw.mint_expiring_in(&bob(), 60))
        .await;
    let (a, b) = (
        payload_of(a.header("refresh-token").unwrap()),
        payload_of(b.header("refresh-token").unwrap()),
    );
    assert_eq!(
        (a["sub"].as_str(), a["sid"].as_str()),
        (Some("1001"), Some("sess-alice"))
    );
    assert_eq!(
        (b["sub"].as_str(), b["sid"].as_str()),
        (Some("2002"), Some("sess-bob"))
    );
}

#[tokio::test]
async fn token_without_session_id_is_never_silently_refreshed() {
    // Every authgate login creates a session: a token without `sid` was made by something else
    // holding a key of the ring, and re-minting it would make it ours for ever.
    let gw = Gateway::start(Conf::new()).await;
    let mut id = alice();
    id.sid = None;
    let r = gw.get_auth("/api/x", &gw.mint_expiring_in(&id, 60)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
}

#[tokio::test]
async fn custom_refresh_header_name_is_used_and_exposed() {
    let gw = Gateway::start(Conf::new().token("refresh_header = \"x-new-token\"")).await;
    let r = gw
        .get_auth("/api/x", &gw.mint_expiring_in(&alice(), 60))
        .await;
    assert!(r.header("x-new-token").is_some());
    assert!(r.header("refresh-token").is_none());
    assert!(expose_lists(&r, "x-new-token"), "{:?}", r.headers);
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn refresh_header_is_exposed_to_an_allowed_cors_origin() {
    let conf = Conf::new().section("[cors]\nallowed_origins = [\"https://app.example.com\"]");
    let gw = Gateway::start(conf).await;
    let old = gw.mint_expiring_in(&alice(), 60);
    let r = gw
        .get(
            "/api/x",
            &[
                ("authorization", &format!("Bearer {old}")),
                ("origin", "https://app.example.com"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_some());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(expose_lists(&r, "refresh-token"));
}

#[tokio::test]
async fn zero_window_turns_silent_refresh_off() {
    let gw = Gateway::start(Conf::new().token("silent_refresh_window = \"0s\"")).await;
    let r = gw
        .get_auth("/api/x", &gw.mint_expiring_in(&alice(), 60))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_none());
}
