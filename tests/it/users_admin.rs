//! Issue 8 (contract §3, §6, §7): a user removed from the users file keeps no session (on
//! `POST /admin/reload`, on a change the file watch sees, and on every refresh even when no
//! reload saw the removal); `DELETE /admin/lockouts/{username}`; the JSON shape of every admin
//! error.
//!
//! Each case runs on the memory store and on a `redis-server` of its own (`both_stores!`);
//! the store-fault case is Redis only.

use std::time::{Duration, Instant};

use authgate::session::{NewSession, SessionState};
use bytes::Bytes;

use crate::support::*;

both_stores!(
    removed_user_loses_sessions_on_admin_reload,
    removed_user_is_seen_by_the_file_watch,
    refresh_rechecks_the_user_without_a_reload,
    user_put_back_before_the_reload_keeps_sessions,
    admin_unlock_clears_a_lockout_at_once,
    admin_errors_use_the_json_shape,
    stateless_removed_user_gets_no_silent_refresh,
);

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The test users file without the `[[users]]` entry of `username`.
fn users_without(username: &str) -> String {
    let full = users_toml();
    let kept: Vec<&str> = full
        .split("[[users]]")
        .filter(|entry| !entry.contains(&format!("username = \"{username}\"")))
        .collect();
    assert_eq!(
        kept.len() + 1,
        full.split("[[users]]").count(),
        "{username} is in the test users file"
    );
    kept.join("[[users]]")
}

async fn admin_reload(gw: &Gateway) {
    let r = gw
        .admin_call("POST", "/admin/reload", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
}

/// Bob's sessions end, alice's do not: access 401 `session_revoked`, refresh gives no tokens.
async fn assert_bob_removed_alice_kept(gw: &Gateway, bob: &[Pair], alice: &Pair) {
    for p in bob {
        gw.assert_ended(p, "session_revoked").await;
    }
    gw.assert_passes(alice).await;
    let fresh = Pair::from_resp(&gw.refresh(&alice.refresh).await);
    assert_eq!(fresh.sid, alice.sid);
    gw.assert_passes(&fresh).await;
    // The removed user cannot log in again either.
    gw.login("bob", BOB_PW)
        .await
        .assert_error(401, "invalid_credentials");
}

async fn removed_user_loses_sessions_on_admin_reload(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).run_from_file());
    let alice = gw.login_ok("alice", "web").await;
    let bob = [
        gw.login_ok("bob", "web").await,
        gw.login_ok("bob", "app").await,
    ];
    gw.assert_passes(&bob[0]).await;

    // Written in place (not renamed), so that it is the admin reload that is tested; the
    // watch may reload too, which changes nothing.
    std::fs::write(gw.dir.path().join("users.toml"), users_without("bob")).unwrap();
    admin_reload(&gw).await;
    // The reload answers once the sessions are ended: no waiting needed.
    assert_bob_removed_alice_kept(&gw, &bob, &alice).await;
    let r = gw
        .admin_call("GET", "/admin/users/2002/sessions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.json()["sessions"], serde_json::json!([]), "{}", text(&r));
    // Ended as revoked (not replaced, not logout).
    let s = gw
        .app
        .store
        .get("2002", &bob[1].sid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.state,
        SessionState::Ended(authgate::session::EndReason::Revoked)
    );
}

async fn removed_user_is_seen_by_the_file_watch(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).run_from_file());
    let alice = gw.login_ok("alice", "web").await;
    let bob = gw.login_ok("bob", "web").await;

    replace_by_rename(&gw.dir.path().join("users.toml"), &users_without("bob"));
    // No signal, no admin call: the watch on the users file's folder reloads.
    poll_until(
        "bob's session to end after the users file changed",
        || gw.get_auth("/api/me", &bob.access),
        |r| r.status == 401,
    )
    .await;
    assert_bob_removed_alice_kept(&gw, &[bob], &alice).await;
}

async fn refresh_rechecks_the_user_without_a_reload(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    // A session of a user the users file does not have (removed while the gateway was down):
    // made in the store directly, as the earlier gateway would have.
    let live = gw.app.live();
    let created = gw
        .app
        .store
        .create(
            NewSession {
                user_id: "9999".into(),
                user_name: "gone".into(),
                tenant: None,
                roles: vec![],
                platform: "web".into(),
                device: None,
                ip: "127.0.0.1".into(),
                user_agent: None,
            },
            None,
            live.lifetimes,
            gw.now_ms(),
        )
        .await
        .unwrap();
    let sid = created.session.id.clone();
    let r = gw.refresh(created.refresh_token.as_str()).await;
    r.assert_error(401, "invalid_refresh_token");
    assert!(r.json().get("access_token").is_none(), "{}", text(&r));
    // The session is ended, not just refused once.
    let s = gw.app.store.get("9999", &sid).await.unwrap().unwrap();
    assert_eq!(
        s.state,
        SessionState::Ended(authgate::session::EndReason::Revoked)
    );
    // A user who is in the file refreshes as always.
    let alice = gw.login_ok("alice", "web").await;
    Pair::from_resp(&gw.refresh(&alice.refresh).await);
}

async fn user_put_back_before_the_reload_keeps_sessions(store: StoreKind) {
    // Compared by id between the snapshots: a reload that still has the user ends nothing,
    // even when its username changed.
    let gw = gateway!(Conf::new().store(store).run_from_file());
    let bob = gw.login_ok("bob", "web").await;
    let renamed = users_toml().replace("username = \"bob\"", "username = \"robert\"");
    std::fs::write(gw.dir.path().join("users.toml"), renamed).unwrap();
    admin_reload(&gw).await;
    gw.assert_passes(&bob).await;
    Pair::from_resp(&gw.refresh(&bob.refresh).await);
}

async fn admin_unlock_clears_a_lockout_at_once(store: StoreKind) {
    let gw = gateway!(Conf::new()
        .store(store)
        .lockout("max_failures = 3\nmax_failures_per_ip = 50\nduration = \"10m\""));
    for _ in 0..3 {
        gw.login("alice", "wrong")
            .await
            .assert_error(401, "invalid_credentials");
    }
    gw.login("alice", ALICE_PW)
        .await
        .assert_error(429, "account_locked");

    // Without the admin token nothing is unlocked.
    let r = gw.admin_call("DELETE", "/admin/lockouts/alice", None).await;
    r.assert_error(401, "missing_token");
    gw.login("alice", ALICE_PW)
        .await
        .assert_error(429, "account_locked");

    // Percent-decoded and case-folded like the lock-out key: "Alice " unlocks "alice".
    let r = gw
        .admin_call("DELETE", "/admin/lockouts/Alice%20", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    // At once, and with a fresh count: the right password logs in, two failures do not lock.
    gw.login_ok("alice", "web").await;
    for _ in 0..2 {
        gw.login("alice", "wrong")
            .await
            .assert_error(401, "invalid_credentials");
    }
    gw.login_ok("alice", "web").await;

    // A username that was never locked: 204 all the same (nothing to clear).
    let r = gw
        .admin_call(
            "DELETE",
            "/admin/lockouts/%E5%BC%A0%E4%B8%89",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(r.status, 204, "{}", text(&r));
}

async fn admin_errors_use_the_json_shape(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let call = |method: &'static str, path: &'static str, token: Option<&'static str>| {
        gw.admin_call(method, path, token)
    };
    let www = |r: &Resp| r.header("www-authenticate").map(str::to_owned);

    let r = call("DELETE", "/admin/lockouts/alice", None).await;
    r.assert_error(401, "missing_token");
    assert_eq!(
        www(&r).as_deref(),
        Some(r#"Bearer realm="authgate", error="invalid_request""#)
    );
    for wrong in ["wrong", ""] {
        let r = call("GET", "/admin/users/1001/sessions", Some(wrong)).await;
        r.assert_error(401, "invalid_token");
        assert_eq!(
            www(&r).as_deref(),
            Some(r#"Bearer realm="authgate", error="invalid_token""#)
        );
    }
    let r = gw
        .admin
        .request(
            "POST",
            "/admin/reload",
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
            Bytes::new(),
        )
        .await;
    r.assert_error(401, "invalid_token");

    let t = Some(ADMIN_TOKEN);
    for path in [
        "/admin/nothing",
        "/admin",
        "/nowhere",
        "/admin/lockouts/a/b",
    ] {
        call("GET", path, t).await.assert_error(404, "not_found");
    }
    for (method, path, allow) in [
        ("POST", "/admin/lockouts/alice", "DELETE"),
        ("GET", "/admin/sessions/x", "DELETE"),
        ("GET", "/admin/reload", "POST"),
        ("PUT", "/admin/users/1001/sessions", "GET, DELETE"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/metrics", "GET"),
    ] {
        let r = call(method, path, t).await;
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    call("DELETE", "/admin/lockouts/%FF", t)
        .await
        .assert_error(400, "bad_request");
    call("DELETE", "/admin/lockouts/%20", t)
        .await
        .assert_error(400, "bad_request");
    // `Gateway::start` loads config text, so its source is a folder, which does not read as a
    // config file: the reload is refused with the problems beside the usual fields.
    let r = call("POST", "/admin/reload", t).await;
    r.assert_error(400, "bad_request");
    assert!(r.json()["problems"].is_array(), "{}", text(&r));
    let r = call("GET", "/admin/nothing", t).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
}

/// A store error while ending a removed user's sessions does not fail the reload or lose the
/// new config; the sessions end once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_down_during_the_reload_is_retried() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis).run_from_file());
    let bob = gw.login_ok("bob", "web").await;
    gw.redis().save();
    gw.stop_redis().await;
    std::fs::write(gw.dir.path().join("users.toml"), users_without("bob")).unwrap();
    admin_reload(&gw).await;
    // The readiness probe's refusal is an admin error like the others.
    gw.admin_call("GET", "/readyz", None)
        .await
        .assert_error(503, "store_unavailable");
    gw.redis().restart();
    // Retried after 1 s, then 2 s, 4 s: well before the late pass of every reload (10 s), so
    // this is the retry at work.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let r = gw.get_auth("/api/me", &bob.access).await;
        if r.status == 401 {
            r.assert_error(401, "session_revoked");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob's session never ended: {}",
            text(&r)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.login("bob", BOB_PW)
        .await
        .assert_error(401, "invalid_credentials");
}

/// The removal happened while the gateway was down: the session is still in Redis, and the
/// first refresh after the restart refuses it and ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_after_a_restart_without_the_user_is_refused() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis));
    let bob = gw.login_ok("bob", "web").await;
    std::fs::write(gw.dir.path().join("users.toml"), users_without("bob")).unwrap();
    gw.restart().await;
    gw.refresh(&bob.refresh)
        .await
        .assert_error(401, "invalid_refresh_token");
    gw.assert_refused(&bob.access, "session_revoked").await;
}

/// Stateless mode keeps no session to end, so a removed user's access must end with the token
/// it holds: silent refresh no longer re-mints it (nor does `/auth/refresh`).
async fn stateless_removed_user_gets_no_silent_refresh(store: StoreKind) {
    let gw = gateway!(Conf::new()
        .store(store)
        .session("mode = \"stateless\"")
        .run_from_file());
    let bob = gw.login_ok("bob", "web").await;
    let alice = gw.login_ok("alice", "web").await;
    // Tokens of their sessions with 60 s left (window: 30 min).
    let near_expiry = |p: &Pair| {
        let claims = payload_of(&p.access);
        let id = authgate::tokens::AccessIdentity {
            sub: claims["sub"].as_str().unwrap().into(),
            name: claims["name"].as_str().map(Into::into),
            sid: Some(p.sid.clone()),
            plat: Some("web".into()),
            tenant: None,
            roles: None,
        };
        gw.mint_expiring_in(&id, 60)
    };
    let (old_bob, old_alice) = (near_expiry(&bob), near_expiry(&alice));
    let r = gw.get_auth("/api/x", &old_bob).await;
    assert!(
        r.header("refresh-token").is_some(),
        "control: {:?}",
        r.headers
    );

    std::fs::write(gw.dir.path().join("users.toml"), users_without("bob")).unwrap();
    admin_reload(&gw).await;
    // Another token of bob's session (the shared one from before is not handed out either).
    let r = gw.get_auth("/api/x", &near_expiry(&bob)).await;
    assert_eq!(
        r.status, 200,
        "stateless: the token itself is valid until it expires"
    );
    assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
    gw.refresh(&bob.refresh)
        .await
        .assert_error(401, "invalid_refresh_token");
    // Alice still gets hers.
    let r = gw.get_auth("/api/x", &old_alice).await;
    assert!(r.header("refresh-token").is_some());
}
