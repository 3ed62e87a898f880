//! Store faults and restarts (issue 3): Redis killed during traffic (503 `store_unavailable`
//! with `Retry-After` on protected routes, public routes fine, no session lost), Redis restarted
//! (recovery without a gateway restart), Redis frozen (bounded 503s, answers kept matched after),
//! a rotation cut off by a store timeout, `on_store_error = "allow_stateless"`, the gateway
//! started while Redis is down or restarted on the same store, two gateway instances sharing
//! one Redis, and the Redis key hygiene (a TTL on every key, one hash tag per user).
//!
//! A submodule of `sessions` (so `cargo test --test it sessions` runs it too).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// Asserts the 503 of an unreachable store: code, `Retry-After`, no `WWW-Authenticate` (the
/// client must keep its tokens).
#[track_caller]
fn assert_store_down(r: &Resp, what: &str) {
    assert_eq!(
        r.status,
        503,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.code(), "store_unavailable", "{what}");
    assert!(r.header("retry-after").is_some(), "{what}: {:?}", r.headers);
    assert!(r.header("www-authenticate").is_none(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_during_traffic_denies_with_503_then_recovers() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis).server(TRUST_LOOPBACK));
    let alice = gw.login_ok("alice", "web").await;
    let bob = gw.login_ok("bob", "app").await;
    let ended = gw.login_ok("alice", "app").await;
    assert_eq!(
        gw.with_token("POST", "/auth/logout", &ended.access)
            .await
            .status,
        204
    );
    gw.redis().save();
    // Created after the snapshot: lost with the store's data.
    let lost = gw.login_ok("alice", "h5").await;
    gw.assert_passes(&alice).await;

    // Traffic on a protected route while Redis goes away and comes back: never a 401. The
    // gate lets the test hold the traffic back while it counts what reaches the upstream.
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let traffic = {
        let probe = gw.probe();
        let stop = stop.clone();
        let gate = gate.clone();
        let token = alice.access.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let r = {
                    let _turn = gate.lock().await;
                    probe.get_auth("/api/traffic", &token).await
                };
                seen.push((r.status, r.header("retry-after").is_some()));
                // Told to stop, it stops at its first 200: the store's circuit breaker lets
                // one probe through, so a request racing the test's own probe may still be
                // refused.
                if stop.load(Ordering::SeqCst) && r.status == 200 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            seen
        })
    };

    gw.stop_redis().await;
    let held = gate.lock().await;
    let hits = gw.hits();
    // Protected routes: 503 with Retry-After, for live and ended sessions alike; each one
    // counted in `authgate_store_errors_total` (a lower bound: the registry is shared).
    let errors = super::metric(&gw.admin, "authgate_store_errors_total", &[]).await;
    for (path, token) in [
        ("/api/x", &alice.access),
        ("/admin/x", &alice.access),
        ("/api/x", &bob.access),
        ("/api/x", &ended.access),
    ] {
        let r = gw.get_auth(path, token).await;
        assert_store_down(&r, path);
    }
    let now_errors = super::metric(&gw.admin, "authgate_store_errors_total", &[]).await;
    assert!(
        now_errors - errors >= 4.0,
        "store errors {errors} -> {now_errors}"
    );
    assert_eq!(gw.hits(), hits, "nothing refused reached the upstream");
    drop(held);
    // Public routes and optional routes without a token: fine.
    let r = gw.get("/public/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.get("/optional/x", &[]).await.status, 200);
    // Token checks that need no store still answer as usual.
    gw.get("/api/x", &[])
        .await
        .assert_error(401, "missing_token");
    gw.get_auth("/api/x", "garbage")
        .await
        .assert_error(401, "invalid_token");
    // The endpoints that need the store: 503, never a 401.
    assert_store_down(&gw.login("alice", ALICE_PW).await, "login");
    // A wrong password counts on in this instance (see
    // `lockout_still_bites_while_redis_is_down`), but answers as a right one does: a 503.
    assert_store_down(&gw.login("alice", "wrong").await, "a wrong login");
    assert_store_down(&gw.refresh(&alice.refresh).await, "refresh");
    assert_store_down(
        &gw.with_token("POST", "/auth/logout", &alice.access).await,
        "logout",
    );
    assert_store_down(
        &gw.with_token("GET", "/auth/sessions", &alice.access).await,
        "sessions",
    );
    assert_store_down(&gw.verify("/api/x", Some(&alice.access)).await, "verify");
    assert_store_down(
        &gw.verify("/optional/x", Some(&alice.access)).await,
        "verify of an optional route",
    );
    assert_eq!(gw.admin_call("GET", "/readyz", None).await.status, 503);
    assert_eq!(gw.admin_call("GET", "/healthz", None).await.status, 200);
    let r = gw
        .admin_call("GET", "/admin/users/1001/sessions", Some(ADMIN_TOKEN))
        .await;
    assert_store_down(&r, "admin list");

    // Redis back on the same port with the snapshot, the gateway untouched.
    gw.redis().restart();
    gw.until_ready("/readyz after the Redis restart").await;
    let probe = gw.probe();
    let token = alice.access.clone();
    poll_until(
        "a protected route after the Redis restart",
        || probe.get_auth("/api/x", &token),
        |r| r.status != 503,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let seen = within("the traffic task", traffic).await.expect("traffic");
    assert!(
        seen.iter()
            .all(|&(s, retry)| s == 200 || (s == 503 && retry)),
        "only 200 and 503 with Retry-After during the outage: {seen:?}"
    );
    assert!(seen.iter().any(|&(s, _)| s == 503), "the outage was seen");
    assert_eq!(seen.last().map(|s| s.0), Some(200), "{seen:?}");

    // No session was lost or ended by the outage; what ended before stays ended; what the
    // store lost is refused as revoked (401), not as unavailable.
    gw.assert_passes(&alice).await;
    gw.assert_passes(&bob).await;
    gw.assert_refused(&ended.access, "session_revoked").await;
    gw.assert_refused(&lost.access, "session_revoked").await;
    let a1 = Pair::from_resp(&gw.refresh(&alice.refresh).await);
    assert_eq!(a1.sid, alice.sid);
    gw.assert_passes(&a1).await;
    let fresh = gw.login_ok("alice", "h5").await;
    gw.assert_passes(&fresh).await;
    assert_eq!(
        gw.with_token("POST", "/auth/logout", &fresh.access)
            .await
            .status,
        204
    );
    gw.assert_refused(&fresh.access, "session_revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_stateless_passes_valid_tokens_while_redis_is_down() {
    let mut gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .session("on_store_error = \"allow_stateless\"")
        .server(TRUST_LOOPBACK));
    let alice = gw.login_ok("alice", "web").await;
    let ended = gw.login_ok("alice", "app").await;
    gw.with_token("POST", "/auth/logout", &ended.access).await;
    gw.assert_refused(&ended.access, "session_revoked").await;

    gw.stop_redis().await;
    // Signature and claims alone decide: the upstream sees the identity.
    let r = gw.get_auth("/api/x", &alice.access).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-session-id"), [alice.sid.as_str()]);
    assert_eq!(gw.verify("/api/x", Some(&alice.access)).await.status, 200);
    // Bad tokens are still refused; public routes still pass.
    gw.get("/api/x", &[])
        .await
        .assert_error(401, "missing_token");
    gw.get_auth("/api/x", "garbage")
        .await
        .assert_error(401, "invalid_token");
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);
    // What cannot be done without the store is still a 503 (no token handed out unsaved).
    assert_store_down(&gw.login("alice", ALICE_PW).await, "login");
    assert_store_down(&gw.refresh(&alice.refresh).await, "refresh");

    // Back (empty: no snapshot): the stateful check is in force again.
    gw.redis().restart();
    let probe = gw.probe();
    let token = alice.access.clone();
    let r = poll_until(
        "the stateful check after the Redis restart",
        || probe.get_auth("/api/x", &token),
        |r| r.status == 401,
    )
    .await;
    assert_eq!(r.code(), "session_revoked");
    let fresh = gw.login_ok("alice", "web").await;
    gw.assert_passes(&fresh).await;
}

async fn gateway_restart_on_the_same_store(store: StoreKind) {
    let mut gw = gateway!(Conf::new().store(store));
    let alice = gw.login_ok("alice", "web").await;
    let a1 = Pair::from_resp(&gw.refresh(&alice.refresh).await);
    let ended = gw.login_ok("alice", "app").await;
    gw.with_token("POST", "/auth/logout", &ended.access).await;
    let old_addr = gw.addr;
    gw.restart().await;
    assert_ne!(gw.addr, old_addr, "a new gateway");
    match store {
        StoreKind::Redis => {
            // Sessions survive: the access token works, the refresh token refreshes.
            gw.assert_passes(&a1).await;
            gw.assert_passes(&alice).await;
            gw.assert_refused(&ended.access, "session_revoked").await;
            let a2 = Pair::from_resp(&gw.refresh(&a1.refresh).await);
            assert_eq!(a2.sid, alice.sid);
            gw.assert_passes(&a2).await;
            // The spent grandparent is still recognised as theft after the restart.
            gw.refresh(&alice.refresh)
                .await
                .assert_error(401, "token_theft_detected");
            gw.assert_refused(&a2.access, "session_revoked").await;
        }
        StoreKind::Memory => {
            // Documented: the memory store loses its sessions on restart.
            gw.assert_ended(&a1, "session_revoked").await;
        }
    }
    let fresh = gw.login_ok("alice", "web").await;
    gw.assert_passes(&fresh).await;
}

crate::both_stores!(gateway_restart_on_the_same_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_sessions_rotation_and_lockout() {
    let gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .lockout("max_failures = 3"));
    let (other, other_handle) = gw.sibling().await;
    let on_other = |token: &str| {
        let other = other.clone();
        let token = token.to_owned();
        async move { other.get_auth("/api/x", &token).await }
    };

    // A login on one instance is a session on the other.
    let web1 = gw.login_ok("alice", "web").await;
    let r = on_other(&web1.access).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-session-id"), [web1.sid.as_str()]);

    // Rotation on one, the parent within the grace on the other: the same successor.
    let p1 = Pair::from_resp(&gw.refresh(&web1.refresh).await);
    let r = other.refresh(&web1.refresh).await;
    assert_eq!(Pair::from_resp(&r).refresh, p1.refresh);

    // Kick-out by a login on the other instance.
    let web2 = Pair::from_resp(&other.login("alice", ALICE_PW).await);
    gw.assert_refused(&web1.access, "session_replaced").await;
    gw.assert_passes(&web2).await;

    // Logout on one instance ends the session on the other (which had it cached: it hears of
    // it through the revocation channel a moment later).
    let r = other.with_token("POST", "/auth/logout", &web2.access).await;
    assert_eq!(r.status, 204);
    gw.until_refused(&web2.access, "session_revoked").await;
    gw.assert_refused(&web2.access, "session_revoked").await;

    // Lock-out counters are shared: two failures here, one there, then locked here.
    gw.login("bob", "wrong")
        .await
        .assert_error(401, "invalid_credentials");
    gw.login("bob", "wrong")
        .await
        .assert_error(401, "invalid_credentials");
    other
        .login("bob", "wrong")
        .await
        .assert_error(401, "invalid_credentials");
    gw.login("bob", BOB_PW)
        .await
        .assert_error(429, "account_locked");
    within("the second instance to stop", other_handle.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_redis_key_has_a_ttl_and_a_users_keys_share_a_hash_tag() {
    let mut gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .lockout("max_failures = 2"));
    let web = gw.login_ok("alice", "web").await;
    let app = gw.login_ok("alice", "app").await;
    gw.login_ok("alice", "app").await; // kicks `app`
    gw.login_ok("bob", "web").await;
    let web1 = Pair::from_resp(&gw.refresh(&web.refresh).await);
    gw.with_token("POST", "/auth/logout", &web1.access).await;
    gw.refresh(&web.refresh).await; // an ended session's token: nothing stored
    for _ in 0..2 {
        gw.login("mallory", "x").await;
    }
    gw.login("mallory", "x")
        .await
        .assert_error(429, "account_locked");
    gw.assert_refused(&app.access, "session_replaced").await;
    let prefix = gw.prefix.clone();
    let keys = gw.redis().keys(&format!("{prefix}*"));
    assert!(keys.len() >= 3, "{keys:?}");
    for k in &keys {
        let ttl: i64 = gw.redis().command(&["TTL", k]).unwrap().parse().unwrap();
        assert!(ttl > 0, "{k} has no TTL ({ttl})");
    }
    // Everything of user 1001 sits in keys with one hash tag (Redis Cluster: one slot).
    let tags: std::collections::HashSet<&str> = keys
        .iter()
        .filter(|k| k.contains("1001"))
        .map(|k| {
            let open = k.find('{').unwrap_or_else(|| panic!("no hash tag in {k}"));
            let close = open + k[open..].find('}').expect("closing brace");
            &k[open..=close]
        })
        .collect();
    assert_eq!(tags.len(), 1, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_redis_is_a_503_within_the_timeout_and_answers_stay_matched() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis));
    let alice = gw.login_ok("alice", "web").await;
    let bob = gw.login_ok("bob", "web").await;
    let ended = gw.login_ok("alice", "app").await;
    gw.with_token("POST", "/auth/logout", &ended.access).await;

    gw.redis().freeze();
    // Requests queue up on the frozen connection and time out (the store's 1 s bound), all at
    // once: protected routes, a login, the readiness probe.
    let t0 = Instant::now();
    let calls: Vec<_> = [&alice.access, &bob.access, &ended.access]
        .into_iter()
        .map(|t| {
            let probe = gw.probe();
            let t = t.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let r = probe.get_auth("/api/x", &t).await;
                (r, started.elapsed())
            })
        })
        .collect();
    let (login, ready, public) = tokio::join!(
        gw.login("alice", ALICE_PW),
        gw.admin_call("GET", "/readyz", None),
        gw.get("/public/x", &[]),
    );
    for c in calls {
        let (r, took) = within("a request to a hung store", c).await.unwrap();
        assert_store_down(&r, "a protected route");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    assert_store_down(&login, "login");
    assert_eq!(ready.status, 503);
    assert_eq!(public.status, 200);
    // The login takes longer: its lock-out check waits out the store's bound, then (the
    // counters falling back to this instance) the password is verified (Argon2, slow in a
    // debug build) before the session cannot be stored.
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());

    // Thawed, Redis answers everything that queued up; late answers must not be taken for the
    // answers of later requests.
    gw.redis().thaw();
    gw.until_ready("/readyz after thawing").await;
    for _ in 0..3 {
        gw.assert_passes(&alice).await;
        gw.assert_passes(&bob).await;
        gw.assert_refused(&ended.access, "session_revoked").await;
        let r = gw.get_auth("/api/x", &bob.access).await;
        assert_eq!(r.seen("x-user-id"), ["2002"]);
    }
    let a1 = Pair::from_resp(&gw.refresh(&alice.refresh).await);
    assert_eq!(a1.sid, alice.sid);
    gw.assert_passes(&a1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_cut_off_by_a_store_timeout_can_be_retried() {
    // Writes held back for 1.5 s: the rotation outlives the store's 1 s bound (503), and may
    // still be applied afterwards. Retrying with the same token must give a pair of the same
    // session, not theft; reads go on meanwhile.
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis));
    let alice = gw.login_ok("alice", "web").await;
    gw.redis()
        .command(&["CLIENT", "PAUSE", "1500", "WRITE"])
        .expect("CLIENT PAUSE");
    let r = gw.refresh(&alice.refresh).await;
    assert_store_down(&r, "refresh during a write pause");
    gw.assert_passes(&alice).await;
    let token = alice.refresh.clone();
    let probe = gw.probe();
    let r = poll_until(
        "a refresh after the pause",
        || probe.refresh(&token),
        |r| r.status != 503,
    )
    .await;
    let a1 = Pair::from_resp(&r);
    assert_eq!(a1.sid, alice.sid);
    gw.assert_passes(&a1).await;
    let a2 = Pair::from_resp(&gw.refresh(&a1.refresh).await);
    gw.assert_passes(&a2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_starts_while_redis_is_down_and_picks_it_up() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis));
    gw.stop_redis().await;
    gw.restart().await;
    assert_eq!(gw.admin_call("GET", "/readyz", None).await.status, 503);
    assert_store_down(&gw.login("alice", ALICE_PW).await, "login");
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);
    gw.redis().restart();
    gw.until_ready("/readyz once Redis is up").await;
    let p = gw.login_ok("alice", "web").await;
    gw.assert_passes(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_breaker_fails_fast_while_redis_is_down_and_closes_when_it_is_back() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis));
    let alice = gw.login_ok("alice", "web").await;
    let rejections = "authgate_store_breaker_rejections_total";
    gw.redis().save();
    gw.redis().stop();
    // The calls that find Redis gone open the breaker...
    for _ in 0..5 {
        assert_store_down(&gw.get_auth("/api/x", &alice.access).await, "Redis gone");
    }
    // ...and then every request is refused by it, without a network call: each one is
    // counted as a rejection (a lower bound: the registry is shared by the tests).
    let before = metric(&gw.admin, rejections, &[]).await;
    for _ in 0..20 {
        assert_store_down(&gw.get_auth("/api/x", &alice.access).await, "breaker open");
    }
    let after = metric(&gw.admin, rejections, &[]).await;
    assert!(after - before >= 20.0, "rejections {before} -> {after}");
    // Without a token nothing needs the store.
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);

    gw.redis().restart();
    let probe = gw.probe();
    let token = alice.access.clone();
    poll_until(
        "a probe to close the breaker",
        || probe.get_auth("/api/x", &token),
        |r| r.status == 200,
    )
    .await;
    gw.assert_passes(&alice).await;
    gw.until_ready("/readyz with the breaker closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lockout_still_bites_while_redis_is_down() {
    let mut gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .lockout("max_failures = 4"));
    let admin = gw.admin.clone();
    let degraded = |op: &'static str| {
        let admin = admin.clone();
        async move {
            metric(
                &admin,
                "authgate_lockout_degraded_total",
                &[&format!("op=\"{op}\"")],
            )
            .await
        }
    };
    gw.redis().stop();
    let before = degraded("record_failure").await;
    // Each failure counts twice in this instance while Redis is gone: locked at the second.
    // Each answers 503, as a right password does then: an outage tells no password right.
    for _ in 0..2 {
        assert_store_down(&gw.login("bob", "wrong").await, "a wrong login");
    }
    let r = gw.login("bob", BOB_PW).await;
    r.assert_error(429, "account_locked");
    assert!(r.header("retry-after").is_some());
    assert!(degraded("record_failure").await - before >= 2.0);
    // Another account is not locked; its right password gets a 503, never a token that was
    // not stored.
    assert_store_down(&gw.login("alice", "wrong").await, "a wrong login");
    assert_store_down(
        &gw.login("alice", ALICE_PW).await,
        "a login with Redis down",
    );

    // Redis back (empty): the lock made here meanwhile still holds on this instance.
    gw.redis().restart();
    gw.until_ready("/readyz after the restart").await;
    gw.login("bob", BOB_PW)
        .await
        .assert_error(429, "account_locked");
    let alice = gw.login_ok("alice", "web").await;
    gw.assert_passes(&alice).await;
}
