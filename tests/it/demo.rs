//! `authgate demo`: the printed walk-through works whenever it is run, not only in the first
//! minute after start-up.

use crate::support::*;

#[tokio::test]
async fn the_silent_refresh_step_gets_its_near_expiry_token_when_it_runs() {
    let any = "127.0.0.1:0".parse().unwrap();
    let demo = authgate::demo::start(any, any)
        .await
        .expect("the demo starts");
    let gw = Probe::new(demo.handle.addr);
    // Step 5 fetches its token (`OLD=$(curl -s URL)`): nothing minted at start-up is printed.
    let url = demo
        .walkthrough
        .lines()
        .find_map(|l| l.strip_prefix("OLD=$(curl -s ")?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("step 5 does not fetch its token:\n{}", demo.walkthrough));
    let (authority, path) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .expect("an http URL");
    let tokens = Probe::new(authority.parse().expect("host:port"));
    let fetched_at = now();
    let first = tokens.get(&format!("/{path}"), &[]).await;
    assert_eq!(first.status, 200);
    let old = String::from_utf8(first.body.to_vec()).unwrap();
    // A minute left, counted from when it was asked for.
    let exp = payload_of(&old)["exp"].as_u64().expect("exp");
    assert!(
        (fetched_at + 59..=now() + 60).contains(&exp),
        "exp {exp}, fetched at {fetched_at}"
    );
    // Each run of the step gets its own.
    let second = tokens.get(&format!("/{path}"), &[]).await;
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
