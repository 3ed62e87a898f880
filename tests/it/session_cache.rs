//! The Redis store's local session cache (issue 14): proxied requests in steady state run no
//! Redis command at all (`INFO commandstats`, counted exactly), a logout on one gateway is
//! refused on another that had the session cached, and `local_cache = false` reads Redis on
//! every request.
//!
//! A submodule of `sessions` (so `cargo test --test it sessions` runs it too).

use crate::support::*;

/// Commands the gateway's Redis has run (`INFO commandstats`), but for the test's own `INFO`,
/// the subscriber's keep-alive `PING` (every 10 s) and the active-session counters (`HINCRBY`,
/// `EXPIRE`, `HDEL`), which each login updates in the background, a moment after answering.
fn commands_run(redis: &RedisServer) -> u64 {
    const ASIDE: [&str; 5] = ["info:", "ping:", "hincrby:", "expire:", "hdel:"];
    let info = redis.command(&["INFO", "commandstats"]).expect("INFO");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| !ASIDE.iter().any(|a| l.starts_with(a)))
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steady_state_proxied_requests_run_no_redis_command() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis));
    let alice = gw.login_ok("alice", "web").await;
    let bob = gw.login_ok("bob", "app").await;
    // The first request of each session reads it once.
    gw.assert_passes(&alice).await;
    gw.assert_passes(&bob).await;
    let before = commands_run(gw.redis());
    let hits = gw.hits();
    for _ in 0..100 {
        for p in [&alice, &bob] {
            let r = gw.get_auth("/api/x", &p.access).await;
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(gw.hits(), hits + 200, "every request was proxied");
    assert_eq!(
        commands_run(gw.redis()) - before,
        0,
        "Redis commands per proxied request in steady state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_cache_every_request_reads_redis() {
    let mut gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .session("local_cache = false"));
    let alice = gw.login_ok("alice", "web").await;
    gw.assert_passes(&alice).await;
    let before = commands_run(gw.redis());
    for _ in 0..20 {
        gw.assert_passes(&alice).await;
    }
    assert_eq!(commands_run(gw.redis()) - before, 20);
}

/// Logout, logout everywhere and a kick-out on gateway B, each of a session
/// gateway A has cached: A refuses it once the revocation has reached it, and from then on
/// every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ends_on_another_gateway_reach_a_cached_session() {
    let gw = gateway!(Conf::new().store(StoreKind::Redis));
    let (other, other_handle) = gw.sibling().await;

    let web = gw.login_ok("alice", "web").await;
    gw.assert_passes(&web).await;
    let r = other.with_token("POST", "/auth/logout", &web.access).await;
    assert_eq!(r.status, 204);
    gw.until_refused(&web.access, "session_revoked").await;
    for _ in 0..10 {
        gw.assert_refused(&web.access, "session_revoked").await;
    }

    // Kick-out by a login on the other gateway.
    let app1 = gw.login_ok("bob", "web").await;
    gw.assert_passes(&app1).await;
    let app2 = Pair::from_resp(&other.login("bob", BOB_PW).await);
    gw.until_refused(&app1.access, "session_replaced").await;
    gw.assert_passes(&app2).await;

    // Logout everywhere on the other gateway.
    let h5 = gw.login_ok("bob", "h5").await;
    gw.assert_passes(&h5).await;
    let r = other
        .with_token("POST", "/auth/logout-all", &app2.access)
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    gw.until_refused(&h5.access, "session_revoked").await;
    gw.until_refused(&app2.access, "session_revoked").await;
    within("the second gateway to stop", other_handle.shutdown()).await;
}
