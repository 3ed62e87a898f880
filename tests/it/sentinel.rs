//! Redis Sentinel (issue 14): a gateway on `session.redis_sentinel` in front of a real master,
//! replica and three sentinels (`tests/it/support/redis.rs`). A failover forced with
//! `SENTINEL FAILOVER` under load answers only 200 or 503 and loses no session or rotation that
//! was acknowledged before it; a login or rotation no replica acknowledged (`WAIT`) is a 503,
//! never a token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// Starts the set off the async worker (it waits for the sentinels to settle).
async fn sentinels() -> Option<Arc<RedisSentinels>> {
    tokio::task::spawn_blocking(RedisSentinels::start)
        .await
        .expect("starting the sentinels")
        .map(Arc::new)
}

/// Asks `ask` every 100 ms until `done` holds, for at most `limit` (a failover and the old
/// master's catching up take longer than the harness's usual bound).
async fn poll_for<T, Fut: std::future::Future<Output = T>>(
    what: &str,
    limit: Duration,
    mut ask: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let answer = ask().await;
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_under_load_answers_200_or_503_and_loses_no_acknowledged_session() {
    let Some(set) = sentinels().await else {
        return;
    };
    let gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .session(&set.config_line()));
    // Acknowledged before the failover: two logins and a rotation.
    let alice = gw.login_ok("alice", "web").await;
    let bob = gw.login_ok("bob", "app").await;
    let bob1 = Pair::from_resp(&gw.refresh(&bob.refresh).await);
    let old_master = set.master_port();
    let replica = set
        .nodes
        .iter()
        .find(|n| n.port() != old_master)
        .expect("a replica");
    let on_replica = replica.keys(&format!("{}*", gw.prefix));
    assert!(
        on_replica.iter().any(|k| k.contains("1001"))
            && on_replica.iter().any(|k| k.contains("2002")),
        "the sessions were on the replica when the login answered: {on_replica:?}"
    );

    // Load: protected requests and logins (on another platform: no kick-out of `alice`).
    let stop = Arc::new(AtomicBool::new(false));
    let requests = {
        let (probe, stop, token) = (gw.probe(), stop.clone(), alice.access.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                seen.push(probe.get_auth("/api/load", &token).await.status);
                // Pacing, not synchronisation: load, not a busy loop on two shared cores.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let logins = {
        let (probe, stop) = (gw.probe(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                seen.push(probe.login_on("alice", ALICE_PW, Some("h5")).await.status);
                // Pacing: well under the flood guard's 20 logins a second per IP.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        })
    };
    let new_master = {
        let set = set.clone();
        tokio::task::spawn_blocking(move || set.failover())
            .await
            .expect("failover")
    };
    assert_ne!(new_master, old_master);
    // Followed without a restart: requests pass, and logins are acknowledged again once the
    // old master has rejoined as the new one's replica.
    let probe = gw.probe();
    let token = alice.access.clone();
    poll_for(
        "a protected request after the failover",
        Duration::from_secs(30),
        || probe.get_auth("/api/x", &token),
        |r| r.status == 200,
    )
    .await;
    poll_for(
        "a login after the failover",
        Duration::from_secs(60),
        || probe.login_on("bob", BOB_PW, Some("h5")),
        |r| r.status == 200,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let requests = within("the request loop", requests).await.unwrap();
    let logins = within("the login loop", logins).await.unwrap();
    for (what, seen) in [("requests", &requests), ("logins", &logins)] {
        assert!(
            seen.iter().all(|&s| s == 200 || s == 503),
            "{what}: only 200 or 503 during the failover: {seen:?}"
        );
        assert!(!seen.is_empty(), "{what}: the load ran");
    }

    // Nothing acknowledged before was lost: the sessions pass, the rotated pair refreshes,
    // the spent parent is still known (theft), logout still ends a session.
    gw.assert_passes(&alice).await;
    gw.assert_passes(&bob1).await;
    let bob2 = Pair::from_resp(&gw.refresh(&bob1.refresh).await);
    assert_eq!(bob2.sid, bob.sid);
    gw.assert_passes(&bob2).await;
    let r = gw.with_token("POST", "/auth/logout", &alice.access).await;
    assert_eq!(r.status, 204);
    gw.assert_refused(&alice.access, "session_revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_or_rotation_no_replica_acknowledged_is_a_503_never_a_token() {
    let Some(set) = sentinels().await else {
        return;
    };
    let gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .session(&set.config_line()));
    let alice = gw.login_ok("alice", "web").await;
    let master = set.master_port();
    let replica = set
        .nodes
        .iter()
        .find(|n| n.port() != master)
        .expect("a replica");

    replica.freeze();
    let r = gw.login("bob", BOB_PW).await;
    r.assert_error(503, "store_unavailable");
    gw.refresh(&alice.refresh)
        .await
        .assert_error(503, "store_unavailable");
    // Reads wait for nobody.
    gw.assert_passes(&alice).await;
    replica.thaw();

    let probe = gw.probe();
    poll_for(
        "a login once the replica answers",
        Duration::from_secs(20),
        || probe.login("bob", BOB_PW),
        |r| r.status == 200,
    )
    .await;
    // The refresh cut off above may have rotated: its retry within the grace gets a pair of
    // the same session.
    let a1 = Pair::from_resp(&gw.refresh(&alice.refresh).await);
    assert_eq!(a1.sid, alice.sid);
    gw.assert_passes(&a1).await;
}
