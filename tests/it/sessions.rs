//! Sessions and the token lifecycle (issue 3, contract §3, §5, §6, §7) through HTTP against the
//! real gateway on port 0: login with the users file and the upstream backend, lock-out,
//! rotation with grace and theft detection, logout, kick-out per platform, the session list,
//! forward-auth, JWKS and the admin API.
//!
//! Every case is one `async fn case(store)` run twice by `both_stores!`: once with the memory
//! store and once with a `redis-server` of its own (skipped loudly without the binary, a
//! failure with `CI` set). The store faults (Redis killed, frozen, restarted; the gateway
//! restarted; two instances on one Redis) are in `session_faults.rs`, a submodule. Bugs found
//! were tests marked as ignored until they were fixed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::support::*;

#[path = "session_faults.rs"]
mod faults;

#[path = "session_cache.rs"]
mod cache;

both_stores!(
    login_answers_a_full_token_pair,
    login_refuses_bad_input_with_400,
    wrong_password_and_unknown_user_get_the_same_401,
    username_lockout_holds_even_with_the_right_password,
    unknown_usernames_lock_like_known_ones,
    lock_ends_after_its_duration,
    parallel_wrong_passwords_are_not_all_checked,
    ip_lockout_counts_failures_across_usernames,
    lockout_uses_the_client_ip_from_trusted_proxies_only,
    login_flood_is_cut_off_per_ip,
    oversized_login_body_is_refused,
    login_token_injects_identity_on_a_required_route,
    refresh_rotates_and_spends_the_old_token,
    refresh_refuses_unknown_garbage_and_ended_tokens,
    refresh_of_an_expired_session_is_refused,
    refresh_extends_the_idle_limit,
    max_lifetime_caps_the_session_across_refreshes,
    silent_refresh_of_a_session_token_stays_bound_to_the_session,
    concurrent_rotations_of_one_users_sessions_do_not_interfere,
    parallel_refreshes_share_one_successor,
    parent_after_grace_is_theft_of_that_session_alone,
    older_generation_is_theft_without_waiting,
    logout_ends_access_and_refresh_token,
    logout_all_ends_every_session_of_the_user,
    same_platform_login_kicks_out_other_platforms_do_not,
    parallel_logins_on_one_platform_leave_one_session,
    session_list_and_deleting_own_sessions,
    verify_answers_identity_headers,
    verify_applies_the_original_routes_rules_from_trusted_proxies,
    jwks_is_404_for_hs256,
    jwks_publishes_the_es256_key,
    admin_api_lists_and_revokes_sessions,
    admin_api_addresses_users_by_percent_encoded_id,
    admin_api_is_off_without_its_token_variable,
    non_ascii_users_get_their_identity,
    upstream_login_backend,
    upstream_login_unreachable_or_unusable_is_502,
    legacy_200_with_an_error_code_is_a_failed_login,
    lockout_keys_on_username_pointer_and_refuses_duplicate_keys,
    optional_route_ignores_an_ended_session,
    a_token_naming_another_users_session_is_refused,
    stateless_mode_ignores_sessions_on_requests_but_not_on_refresh,
);

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Sends `n` requests at once: `request(i, probe)` is the `i`-th, each in a task of its own,
/// all released together by a barrier. Their answers, in order (each awaited `within`).
async fn at_once<T, Fut>(
    gw: &Gateway,
    n: usize,
    what: &str,
    request: impl Fn(usize, Probe) -> Fut,
) -> Vec<T>
where
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let request = request(i, gw.probe());
            tokio::spawn(async move {
                barrier.wait().await;
                request.await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(within(what, t).await.expect("task"));
    }
    answers
}

// ---------------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------------

async fn login_answers_a_full_token_pair(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let before = gw.now();
    let body = json!({"username": "alice", "password": ALICE_PW}).to_string();
    let r = gw
        .request(
            "POST",
            "/auth/login",
            &[
                ("content-type", "application/json"),
                ("x-platform", "app"),
                ("x-device-id", "phone-7"),
            ],
            Bytes::from(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 7200, "default access_ttl is 2h");
    let exp = j["access_token_expires_at"].as_u64().expect("expires_at");
    assert!((before + 7200..=gw.now() + 7200).contains(&exp), "{j}");
    let rexp = j["refresh_token_expires_at"]
        .as_u64()
        .expect("refresh expiry");
    assert!(
        (before + 30 * 86400..=gw.now() + 30 * 86400).contains(&rexp),
        "refresh_ttl 30d: {j}"
    );
    let sid = j["session_id"].as_str().expect("session_id");
    let random_sid = sid.rsplit('.').next().unwrap();
    assert!(random_sid.len() >= 22, "at least 128 random bits: {sid}");
    assert_eq!(j["platform"], "app");
    assert_eq!(j["user"], json!({"id": "1001", "name": "alice"}));
    assert!(
        j.get("upstream").is_none(),
        "users_file logins carry no upstream body"
    );

    let refresh = j["refresh_token"].as_str().expect("refresh_token");
    let random_part = refresh.rsplit('.').next().unwrap();
    assert!(
        random_part.len() >= 43,
        "at least 256 random bits: {refresh}"
    );

    let access = j["access_token"].as_str().expect("access_token");
    let header = header_of(access);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], "k1");
    let c = payload_of(access);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], AUDIENCE);
    assert_eq!(c["sub"], "1001");
    assert_eq!(c["name"], "alice");
    assert_eq!(c["sid"], sid);
    assert_eq!(c["plat"], "app");
    assert_eq!(c["tenant"], "acme");
    assert_eq!(c["roles"], json!(["admin", "ops"]));
    assert_eq!(c["exp"].as_u64(), Some(exp));
    assert!(c["iat"].as_u64().unwrap() >= before);
    assert!(!c["jti"].as_str().unwrap().is_empty());

    // Two logins: two sessions, two different pairs.
    let other = gw.login_ok("alice", "web").await;
    assert_ne!(other.sid, sid);
    assert_ne!(other.refresh, refresh);
    assert_eq!(gw.hits(), 0, "login never reaches the upstream");
}

async fn login_refuses_bad_input_with_400(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    for body in [
        r#"{"username": "alice", "password": "#,
        "username=alice&password=x",
        "",
        r#"["alice", "x"]"#,
        r#"{"username": "alice"}"#,
        r#"{"password": "x"}"#,
        r#"{"username": "", "password": "x"}"#,
        r#"{"username": "alice", "password": ""}"#,
        r#"{"username": 1001, "password": "x"}"#,
    ] {
        let r = gw.post("/auth/login", None, body.to_owned()).await;
        assert_eq!(r.status, 400, "{body:?}: {}", text(&r));
        assert_eq!(r.code(), "bad_request", "{body:?}");
    }
    // An unknown platform, even with the right password.
    let body = json!({"username": "alice", "password": ALICE_PW}).to_string();
    for platform in ["tv", "WEB", ""] {
        let r = gw
            .post("/auth/login", Some(("x-platform", platform)), body.clone())
            .await;
        r.assert_error(400, "bad_request");
    }
    // Wrong methods.
    let r = gw.get("/auth/login", &[]).await;
    r.assert_error(405, "method_not_allowed");
    // None of it counted as a failed login: alice still logs in on every platform.
    for p in ["web", "h5", "app"] {
        gw.login_ok("alice", p).await;
    }
    assert_eq!(gw.hits(), 0);
}

async fn wrong_password_and_unknown_user_get_the_same_401(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let wrong = gw.login("alice", "not-her-password").await;
    wrong.assert_error(401, "invalid_credentials");
    // No bearer token was presented: a Bearer `invalid_token` challenge would be false.
    assert_eq!(wrong.header("www-authenticate"), None);
    let unknown = gw.login("mallory", "whatever").await;
    unknown.assert_error(401, "invalid_credentials");
    // The same body for both, but for each request's own id.
    let without_id = |r: &Resp| {
        let mut v = r.json();
        assert!(v["request_id"].is_string(), "{v}");
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    assert_eq!(
        without_id(&wrong),
        without_id(&unknown),
        "the same body for both"
    );
    // The password of another user is just as wrong.
    gw.login("alice", BOB_PW)
        .await
        .assert_error(401, "invalid_credentials");
    assert!(wrong.json().get("access_token").is_none());
    assert_eq!(gw.hits(), 0);
}

async fn username_lockout_holds_even_with_the_right_password(store: StoreKind) {
    let gw = gateway!(Conf::new()
        .store(store)
        .lockout("max_failures = 3\nwindow = \"1m\"\nduration = \"10m\""));
    for _ in 0..3 {
        gw.login("alice", "wrong")
            .await
            .assert_error(401, "invalid_credentials");
    }
    let r = gw.login("alice", ALICE_PW).await;
    r.assert_error(429, "account_locked");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After on 429")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=600).contains(&retry), "{retry}");
    // The lock is per username (case-insensitive), not on the whole gateway.
    gw.login("ALICE", ALICE_PW)
        .await
        .assert_error(429, "account_locked");
    gw.login_ok("bob", "web").await;
}

async fn unknown_usernames_lock_like_known_ones(store: StoreKind) {
    // Otherwise the lock-out would tell which usernames exist.
    let gw = gateway!(Conf::new().store(store).lockout("max_failures = 3"));
    let mut answers = Vec::new();
    for user in ["alice", "mallory"] {
        for _ in 0..4 {
            let r = gw.login(user, "wrong").await;
            answers.push((user, r.status, r.code(), r.header("retry-after").is_some()));
        }
    }
    let shape = |user: &str| -> Vec<_> {
        answers
            .iter()
            .filter(|a| a.0 == user)
            .map(|a| (a.1, a.2.clone(), a.3))
            .collect()
    };
    assert_eq!(shape("alice"), shape("mallory"));
    assert_eq!(shape("alice")[3].0, 429);
}

async fn lock_ends_after_its_duration(store: StoreKind) {
    // Ten minutes, passed on the gateway's clock: a lock that ignored it would still hold.
    let gw = gateway!(Conf::new()
        .store(store)
        .lockout("max_failures = 2\nwindow = \"1m\"\nduration = \"10m\""));
    for _ in 0..2 {
        gw.login("alice", "wrong").await;
    }
    let r = gw.login("alice", ALICE_PW).await;
    r.assert_error(429, "account_locked");
    assert_eq!(r.header("retry-after"), Some("600"));
    // Shortly before its end it still holds, and says how little is left...
    gw.advance(Duration::from_secs(595));
    let r = gw.login("alice", ALICE_PW).await;
    r.assert_error(429, "account_locked");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    // ...and it is over once its duration has passed since the failure (to the millisecond:
    // issue 15; Redis still holds the lock's key, by its own clock).
    gw.advance(Duration::from_secs(5));
    let p = gw.login_ok("alice", "web").await;
    gw.assert_passes(&p).await;
}

async fn parallel_wrong_passwords_are_not_all_checked(store: StoreKind) {
    // max_failures = 3: of 12 guesses sent at once, at most 3 may be checked (401); the rest
    // must be refused as locked (429), or one lock window allows as many guesses as fit in
    // flight.
    let gw = gateway!(Conf::new().store(store).lockout("max_failures = 3"));
    let statuses = at_once(&gw, 12, "a parallel login", |i, probe| async move {
        probe.login("alice", &format!("guess-{i}")).await.status
    })
    .await;
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(checked <= 3, "{checked} guesses were checked: {statuses:?}");
}

async fn ip_lockout_counts_failures_across_usernames(store: StoreKind) {
    let gw = gateway!(Conf::new()
        .store(store)
        .lockout("max_failures = 100\nmax_failures_per_ip = 3\nwindow = \"1m\""));
    for user in ["alice", "mallory", "trudy"] {
        gw.login(user, "wrong")
            .await
            .assert_error(401, "invalid_credentials");
    }
    let r = gw.login("bob", BOB_PW).await;
    r.assert_error(429, "account_locked");
    assert!(r.header("retry-after").is_some());
    // X-Forwarded-For from an untrusted peer is not believed: no way out of the IP lock.
    let body = json!({"username": "bob", "password": BOB_PW}).to_string();
    gw.post(
        "/auth/login",
        Some(("x-forwarded-for", "198.51.100.77")),
        body,
    )
    .await
    .assert_error(429, "account_locked");
}

async fn lockout_uses_the_client_ip_from_trusted_proxies_only(store: StoreKind) {
    let gw = gateway!(Conf::new()
        .store(store)
        .server(TRUST_LOOPBACK)
        .lockout("max_failures = 100\nmax_failures_per_ip = 2"));
    let from = |ip: &'static str, user: &str, pw: &str| {
        let body = json!({"username": user, "password": pw}).to_string();
        let gw = &gw;
        async move {
            gw.post("/auth/login", Some(("x-forwarded-for", ip)), body)
                .await
        }
    };
    for user in ["mallory", "trudy"] {
        from("203.0.113.5", user, "x")
            .await
            .assert_error(401, "invalid_credentials");
    }
    from("203.0.113.5", "alice", ALICE_PW)
        .await
        .assert_error(429, "account_locked");
    // Another client behind the same proxy is not locked, and its session records its IP.
    let p = Pair::from_resp(&from("198.51.100.7", "alice", ALICE_PW).await);
    let r = gw.with_token("GET", "/auth/sessions", &p.access).await;
    assert_eq!(
        r.json()["sessions"][0]["ip"],
        "198.51.100.7",
        "{}",
        text(&r)
    );
}

async fn login_flood_is_cut_off_per_ip(store: StoreKind) {
    // Far beyond 20 attempts per second from one IP; refused before the body is even looked at.
    let gw = gateway!(Conf::new().store(store));
    let mut limited = 0;
    for _ in 0..100 {
        let r = gw.post("/auth/login", None, "{".to_owned()).await;
        match r.status {
            400 => assert_eq!(r.code(), "bad_request"),
            429 => {
                assert_eq!(r.code(), "rate_limited");
                assert_eq!(r.header("retry-after"), Some("1"));
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", text(&r)),
        }
    }
    assert!(limited > 0, "no attempt was refused");
}

async fn oversized_login_body_is_refused(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).lockout("max_failures = 1"));
    let big = json!({"username": "alice", "password": "x".repeat(70 * 1024)}).to_string();
    let r = gw.post("/auth/login", None, big).await;
    // Read with a limit: 413 (login/mod.rs still speaks of a 400 here); not a failed login.
    r.assert_error(413, "payload_too_large");
    gw.login_ok("alice", "web").await;
}

async fn login_token_injects_identity_on_a_required_route(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let p = gw.login_ok("alice", "h5").await;
    // Forged identity headers from the client are replaced.
    let auth = format!("Bearer {}", p.access);
    let r = gw
        .get(
            "/admin/panel",
            &[
                ("authorization", &auth),
                ("x-user-id", "9999"),
                ("x_user_roles", "root"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-user-name"), ["alice"]);
    assert_eq!(r.seen("x-tenant-id"), ["acme"]);
    assert_eq!(r.seen("x-user-roles"), ["admin,ops"]);
    assert_eq!(r.seen("x-session-id"), [p.sid.as_str()]);
    assert_eq!(r.seen("x-user-platform"), ["h5"]);
    assert!(r.seen("x_user_roles").is_empty());
    // Bob (role user, tenant globex) is refused by the admin and acme routes.
    let b = gw.login_ok("bob", "web").await;
    let before = gw.hits();
    gw.get_auth("/admin/panel", &b.access)
        .await
        .assert_error(403, "forbidden");
    gw.get_auth("/acme/x", &b.access)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(gw.hits(), before);
    let r = gw.get_auth("/api/x", &b.access).await;
    assert_eq!(r.seen("x-user-id"), ["2002"]);
    assert_eq!(r.seen("x-user-platform"), ["web"]);
}

// ---------------------------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------------------------

async fn refresh_rotates_and_spends_the_old_token(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let p0 = gw.login_ok("alice", "web").await;
    let r = gw.refresh(&p0.refresh).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let p1 = Pair::from_resp(&r);
    assert_eq!(p1.sid, p0.sid, "the session id survives a refresh");
    assert_ne!(p1.refresh, p0.refresh);
    assert_ne!(p1.access, p0.access);
    assert_eq!(p1.json["platform"], "web");
    assert_eq!(p1.json["user"], json!({"id": "1001", "name": "alice"}));
    assert_eq!(payload_of(&p1.access)["sid"], p0.sid.as_str());
    gw.assert_passes(&p1).await;
    // The old access token stays valid until it expires: same session.
    gw.assert_passes(&p0).await;

    // The next rotation: the spent one (p0) is no longer current.
    let p2 = Pair::from_resp(&gw.refresh(&p1.refresh).await);
    assert_eq!(p2.sid, p0.sid);
    assert_ne!(p2.refresh, p1.refresh);
    gw.assert_passes(&p2).await;
    assert_eq!(
        gw.app.store.list("1001", gw.now_ms()).await.unwrap().len(),
        1
    );
}

async fn refresh_refuses_unknown_garbage_and_ended_tokens(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let p = gw.login_ok("alice", "web").await;
    // Garbage, an unknown session, a forged secret for a real session.
    let (sid, secret) = p.refresh.rsplit_once('.').unwrap();
    let flipped: String = secret
        .chars()
        .map(|c| if c == 'A' { 'B' } else { 'A' })
        .collect();
    let unknown_sid = {
        let (user, _) = sid.split_once('.').unwrap();
        format!("{user}.AAAAAAAAAAAAAAAAAAAAAA")
    };
    for token in [
        "garbage".to_owned(),
        String::new(),
        "a.b.c".to_owned(),
        format!("{sid}.{flipped}"),
        format!("{unknown_sid}.{secret}"),
        p.access.clone(),
    ] {
        let r = gw.refresh(&token).await;
        assert_eq!(r.status, 401, "{token:?}: {}", text(&r));
        assert_eq!(r.code(), "invalid_refresh_token", "{token:?}");
        assert_eq!(
            r.header("www-authenticate"),
            None,
            "{token:?}: no Bearer challenge"
        );
    }
    // None of that disturbed the session: the real token still rotates.
    let p1 = Pair::from_resp(&gw.refresh(&p.refresh).await);
    // A body that is not {"refresh_token": "..."}: 400.
    for body in ["", "{", r#"{"token": "x"}"#, r#"{"refresh_token": 7}"#] {
        let r = gw.post("/auth/refresh", None, body.to_owned()).await;
        r.assert_error(400, "bad_request");
    }
    // The refresh token of an ended session.
    let r = gw.with_token("POST", "/auth/logout", &p1.access).await;
    assert_eq!(r.status, 204);
    gw.refresh(&p1.refresh)
        .await
        .assert_error(401, "invalid_refresh_token");
    assert_eq!(gw.hits(), 0);
}

async fn refresh_of_an_expired_session_is_refused(store: StoreKind) {
    // max_lifetime caps the session at an hour (access_ttl may not exceed it), an hour that
    // passes on the gateway's clock.
    let gw = gateway!(Conf::new()
        .store(store)
        .token("access_ttl = \"1h\"\nmax_lifetime = \"1h\"\nsilent_refresh_window = \"0s\""));
    let before = gw.now();
    let p = gw.login_ok("alice", "web").await;
    let expires = p.json["refresh_token_expires_at"].as_u64().unwrap();
    assert!(
        (before + 3600..=gw.now() + 3600).contains(&expires),
        "{}",
        p.json
    );
    // The session ends exactly max_lifetime after its login (issue 15): at least that has
    // passed once the clock is an hour on.
    gw.advance(Duration::from_secs(3600));
    gw.refresh(&p.refresh)
        .await
        .assert_error(401, "invalid_refresh_token");
    // The access token is still within its leeway, but its session is over.
    gw.assert_refused(&p.access, "session_revoked").await;
    // Nothing is active any more.
    assert!(gw
        .app
        .store
        .list("1001", gw.now_ms())
        .await
        .unwrap()
        .is_empty());
}

async fn refresh_extends_the_idle_limit(store: StoreKind) {
    // refresh_ttl is an idle limit: an hour here, passed on the gateway's clock. access_ttl
    // must be shorter; just so much shorter that the idle session's access token is still
    // within its leeway (30 s) when the session ends, so what refuses it is the session.
    let gw = gateway!(Conf::new()
        .store(store)
        .token("access_ttl = \"3590s\"\nrefresh_ttl = \"1h\"\nsilent_refresh_window = \"0s\""));
    // Sessions end to the millisecond (issue 15), and the JSON shows whole seconds: time it
    // with the clock rather than with the seconds shown.
    let kept = gw.login_ok("alice", "web").await;
    let idle = gw.login_ok("alice", "app").await;
    let expiry = |p: &Pair| p.json["refresh_token_expires_at"].as_u64().unwrap();
    let e_kept = expiry(&kept);
    gw.advance(Duration::from_secs(30 * 60));
    let r = gw.refresh(&kept.refresh).await;
    let kept1 = Pair::from_resp(&r);
    assert!(
        expiry(&kept1) >= e_kept + 30 * 60,
        "{} vs {e_kept}",
        kept1.json
    );
    // Past the idle session's limit (an hour after its login: the clock has moved that much
    // since, and real time on top), well within the refreshed one's (an hour after a refresh
    // half an hour after the logins).
    gw.advance(Duration::from_secs(30 * 60));
    // Past the original idle limit: the refreshed session lives on, the idle one is over.
    gw.assert_passes(&kept1).await;
    gw.assert_ended(&idle, "session_revoked").await;
    Pair::from_resp(&gw.refresh(&kept1.refresh).await);
}

async fn max_lifetime_caps_the_session_across_refreshes(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).token("max_lifetime = \"3h\""));
    let p = gw.login_ok("alice", "web").await;
    let iat = payload_of(&p.access)["iat"].as_u64().unwrap();
    let cap = p.json["refresh_token_expires_at"].as_u64().unwrap();
    assert!((iat..=iat + 1).contains(&(cap - 3 * 3600)), "{}", p.json);
    let p1 = Pair::from_resp(&gw.refresh(&p.refresh).await);
    assert_eq!(p1.json["refresh_token_expires_at"].as_u64(), Some(cap));
    gw.assert_passes(&p1).await;
}

async fn silent_refresh_of_a_session_token_stays_bound_to_the_session(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).server(TRUST_LOOPBACK));
    let p = gw.login_ok("alice", "web").await;
    // The session's own claims, issued so long ago that 60 s are left (window: 30 min).
    let claims = payload_of(&p.access);
    let id = authgate::tokens::AccessIdentity {
        sub: "1001".into(),
        name: Some("alice".into()),
        sid: Some(p.sid.clone()),
        plat: Some("web".into()),
        tenant: Some("acme".into()),
        roles: Some(vec!["admin".into(), "ops".into()]),
    };
    assert_eq!(claims["sid"], p.sid.as_str());
    let old = gw.mint_expiring_in(&id, 60);
    let r = gw.get_auth("/api/x", &old).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let fresh = r
        .header("refresh-token")
        .expect("a silent refresh")
        .to_owned();
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(payload_of(&fresh)["sid"], p.sid.as_str());
    let r = gw.verify("/api/x", Some(&old)).await;
    assert_eq!(
        r.header("refresh-token"),
        Some(fresh.as_str()),
        "one token per session"
    );
    let fresh_pair = Pair {
        access: fresh.clone(),
        ..p.clone()
    };
    gw.assert_passes(&fresh_pair).await;
    // Ending the session ends the silently refreshed token too, and no new one is handed out.
    gw.with_token("POST", "/auth/logout", &p.access).await;
    gw.assert_refused(&fresh, "session_revoked").await;
    let r = gw.get_auth("/api/x", &old).await;
    r.assert_error(401, "session_revoked");
    assert!(r.header("refresh-token").is_none());
}

async fn concurrent_rotations_of_one_users_sessions_do_not_interfere(store: StoreKind) {
    // One user's sessions share one record (Redis: one key): rotations of different sessions
    // at once must not lose each other's updates.
    let gw = gateway!(Conf::new().store(store));
    let mut tasks = Vec::new();
    for platform in ["web", "h5", "app"] {
        let p = gw.login_ok("alice", platform).await;
        let probe = gw.probe();
        tasks.push(tokio::spawn(async move {
            let mut current = p.clone();
            for _ in 0..8 {
                let next = Pair::from_resp(&probe.refresh(&current.refresh).await);
                assert_eq!(next.sid, p.sid);
                current = next;
            }
            current
        }));
    }
    let mut last = Vec::new();
    for t in tasks {
        last.push(within("a rotation chain", t).await.expect("task"));
    }
    for p in &last {
        gw.assert_passes(p).await;
        Pair::from_resp(&gw.refresh(&p.refresh).await);
    }
    assert_eq!(
        gw.app.store.list("1001", gw.now_ms()).await.unwrap().len(),
        3
    );
}

async fn parallel_refreshes_share_one_successor(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let p = gw.login_ok("alice", "web").await;
    let other = gw.login_ok("alice", "app").await;
    let answers = at_once(&gw, 16, "a parallel refresh", |_, probe| {
        let token = p.refresh.clone();
        async move { probe.refresh(&token).await }
    })
    .await;
    let mut successors = std::collections::HashSet::new();
    for r in answers {
        let pair = Pair::from_resp(&r);
        assert_eq!(pair.sid, p.sid);
        successors.insert(pair.refresh);
    }
    assert_eq!(successors.len(), 1, "one successor: {successors:?}");
    let next = successors.into_iter().next().unwrap();
    assert_ne!(next, p.refresh);
    // No theft: the session is alive and its successor rotates on.
    gw.assert_passes(&p).await;
    let p2 = Pair::from_resp(&gw.refresh(&next).await);
    gw.assert_passes(&p2).await;
    gw.assert_passes(&other).await;
}

async fn parent_after_grace_is_theft_of_that_session_alone(store: StoreKind) {
    let gw = gateway!(Conf::new()
        .store(store)
        .session("refresh_reuse_grace = \"10s\""));
    let web = gw.login_ok("alice", "web").await;
    let app = gw.login_ok("alice", "app").await;
    let bob = gw.login_ok("bob", "web").await;
    let web1 = Pair::from_resp(&gw.refresh(&web.refresh).await);
    // The grace is honoured up to exactly 10 s after the rotation (issue 15); a millisecond
    // later on the gateway's clock the parent is no longer a retry.
    gw.advance(Duration::from_millis(10_001));
    let r = gw.refresh(&web.refresh).await;
    r.assert_error(401, "token_theft_detected");
    assert_eq!(
        r.header("www-authenticate"),
        None,
        "a refresh presents no bearer token"
    );
    // That session is over, access and refresh...
    gw.assert_refused(&web1.access, "session_revoked").await;
    gw.assert_refused(&web.access, "session_revoked").await;
    gw.refresh(&web1.refresh)
        .await
        .assert_error(401, "invalid_refresh_token");
    // ...the user's other session and other users are untouched.
    gw.assert_passes(&app).await;
    gw.assert_passes(&bob).await;
    let app1 = Pair::from_resp(&gw.refresh(&app.refresh).await);
    gw.assert_passes(&app1).await;
    let listed = gw.app.store.list("1001", gw.now_ms()).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [app.sid.as_str()]
    );
}

async fn older_generation_is_theft_without_waiting(store: StoreKind) {
    // The default grace (10s) covers only the immediate parent; the grandparent is theft.
    let gw = gateway!(Conf::new().store(store));
    let p0 = gw.login_ok("alice", "web").await;
    let other = gw.login_ok("alice", "h5").await;
    let p1 = Pair::from_resp(&gw.refresh(&p0.refresh).await);
    let p2 = Pair::from_resp(&gw.refresh(&p1.refresh).await);
    // The immediate parent within the grace: the same successor, not theft.
    let again = Pair::from_resp(&gw.refresh(&p1.refresh).await);
    assert_eq!(again.refresh, p2.refresh);
    gw.refresh(&p0.refresh)
        .await
        .assert_error(401, "token_theft_detected");
    gw.assert_ended(&p2, "session_revoked").await;
    gw.assert_passes(&other).await;
}

// ---------------------------------------------------------------------------------------------
// Logout, kick-out, the session list
// ---------------------------------------------------------------------------------------------

async fn logout_ends_access_and_refresh_token(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let p = gw.login_ok("alice", "web").await;
    let other = gw.login_ok("alice", "app").await;
    gw.assert_passes(&p).await;
    let r = gw.with_token("POST", "/auth/logout", &p.access).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert!(r.body.is_empty());
    gw.assert_ended(&p, "session_revoked").await;
    // Logging out again with the same token: the session is already gone.
    gw.with_token("POST", "/auth/logout", &p.access)
        .await
        .assert_error(401, "session_revoked");
    // Without a token.
    gw.post("/auth/logout", None, String::new())
        .await
        .assert_error(401, "missing_token");
    gw.assert_passes(&other).await;
}

async fn logout_all_ends_every_session_of_the_user(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let web = gw.login_ok("alice", "web").await;
    let app = gw.login_ok("alice", "app").await;
    let h5 = gw.login_ok("alice", "h5").await;
    let bob = gw.login_ok("bob", "web").await;
    let r = gw.with_token("POST", "/auth/logout-all", &app.access).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    for p in [&web, &app, &h5] {
        gw.assert_ended(p, "session_revoked").await;
    }
    gw.assert_passes(&bob).await;
    // A new login works afterwards.
    let fresh = gw.login_ok("alice", "web").await;
    gw.assert_passes(&fresh).await;
}

async fn same_platform_login_kicks_out_other_platforms_do_not(store: StoreKind) {
    let gw = gateway!(Conf::new()
        .store(store)
        .platforms("max_sessions = { web = 1, h5 = 1, app = 2 }"));
    let web1 = gw.login_ok("alice", "web").await;
    let app1 = gw.login_ok("alice", "app").await;
    // A login on app does not touch web.
    gw.assert_passes(&web1).await;
    let app2 = gw.login_ok("alice", "app").await;
    // app allows two.
    gw.assert_passes(&app1).await;
    gw.assert_passes(&app2).await;
    // Another user's web login does not kick alice.
    gw.login_ok("bob", "web").await;
    gw.assert_passes(&web1).await;

    let web2 = gw.login_ok("alice", "web").await;
    gw.assert_ended(&web1, "session_replaced").await;
    gw.assert_passes(&web2).await;
    gw.assert_passes(&app1).await;
    gw.assert_passes(&app2).await;
    // A third app login ends the oldest app session.
    let app3 = gw.login_ok("alice", "app").await;
    gw.assert_refused(&app1.access, "session_replaced").await;
    gw.assert_passes(&app2).await;
    gw.assert_passes(&app3).await;
    // No platform header: the default platform (web) kicks web2.
    let dflt = Pair::from_resp(&gw.login("alice", ALICE_PW).await);
    assert_eq!(dflt.json["platform"], "web");
    gw.assert_refused(&web2.access, "session_replaced").await;
}

async fn parallel_logins_on_one_platform_leave_one_session(store: StoreKind) {
    // Attempts in flight count toward the lock-out limit until they succeed (that is what
    // stops parallel guessing), so this kick-out test raises the limit above its 8 logins.
    let gw = gateway!(Conf::new().store(store).lockout("max_failures = 50"));
    let answers = at_once(&gw, 8, "a parallel login", |_, probe| async move {
        probe.login("alice", ALICE_PW).await
    })
    .await;
    let pairs: Vec<Pair> = answers.iter().map(Pair::from_resp).collect();
    let mut alive = Vec::new();
    for p in &pairs {
        let r = gw.get_auth("/api/x", &p.access).await;
        match r.status {
            200 => alive.push(p.sid.clone()),
            401 => assert_eq!(r.code(), "session_replaced"),
            other => panic!("unexpected {other}: {}", text(&r)),
        }
    }
    assert_eq!(
        alive.len(),
        1,
        "max_sessions web = 1, atomically: {alive:?}"
    );
    let listed = gw.app.store.list("1001", gw.now_ms()).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        alive
    );
}

async fn session_list_and_deleting_own_sessions(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let before = gw.now();
    let body = json!({"username": "alice", "password": ALICE_PW}).to_string();
    let web = Pair::from_resp(
        &gw.request(
            "POST",
            "/auth/login",
            &[
                ("content-type", "application/json"),
                ("x-device-id", "laptop-1"),
                ("user-agent", "TestBrowser/1.0"),
            ],
            Bytes::from(body),
        )
        .await,
    );
    let app = gw.login_ok("alice", "app").await;
    let bob = gw.login_ok("bob", "web").await;
    let ended = gw.login_ok("alice", "h5").await;
    gw.with_token("POST", "/auth/logout", &ended.access).await;

    let r = gw.with_token("GET", "/auth/sessions", &web.access).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let list = r.json()["sessions"].as_array().expect("sessions").clone();
    assert_eq!(list.len(), 2, "active sessions only: {list:?}");
    let find = |sid: &str| -> Value {
        list.iter()
            .find(|s| s["session_id"] == sid)
            .unwrap_or_else(|| panic!("{sid} not listed: {list:?}"))
            .clone()
    };
    let w = find(&web.sid);
    assert_eq!(w["platform"], "web");
    assert_eq!(w["device"], "laptop-1");
    assert_eq!(w["user_agent"], "TestBrowser/1.0");
    assert_eq!(w["ip"], "127.0.0.1");
    assert_eq!(w["current"], true);
    for k in ["created_at", "last_seen_at"] {
        let t = w[k].as_u64().unwrap_or_else(|| panic!("{k}: {w}"));
        assert!((before..=gw.now()).contains(&t), "{k}: {w}");
    }
    let a = find(&app.sid);
    assert_eq!(a["platform"], "app");
    assert_eq!(a["current"], false);

    // Someone else's session, an ended one, a made-up one: 404, nothing changes.
    for id in [
        bob.sid.as_str(),
        ended.sid.as_str(),
        "nonsense",
        "MTAwMQ.AAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = gw
            .with_token("DELETE", &format!("/auth/sessions/{id}"), &web.access)
            .await;
        r.assert_error(404, "not_found");
    }
    gw.assert_passes(&bob).await;
    // One's own other session: 204, and its tokens are dead.
    let r = gw
        .with_token(
            "DELETE",
            &format!("/auth/sessions/{}", app.sid),
            &web.access,
        )
        .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    gw.assert_ended(&app, "session_revoked").await;
    gw.assert_passes(&web).await;
    let r = gw.with_token("GET", "/auth/sessions", &web.access).await;
    let list = r.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["session_id"], web.sid.as_str());
    // Without a token, or with a dead one.
    gw.get("/auth/sessions", &[])
        .await
        .assert_error(401, "missing_token");
    gw.with_token("GET", "/auth/sessions", &app.access)
        .await
        .assert_error(401, "session_revoked");
    assert_eq!(
        gw.hits(),
        2,
        "only the two assert_passes reached the upstream"
    );
    // Deleting the current session is a logout.
    let r = gw
        .with_token(
            "DELETE",
            &format!("/auth/sessions/{}", web.sid),
            &web.access,
        )
        .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    gw.assert_refused(&web.access, "session_revoked").await;
}

async fn verify_answers_identity_headers(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).server(TRUST_LOOPBACK));
    let p = gw.login_ok("alice", "app").await;
    let r = gw.verify("/api/x", Some(&p.access)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("x-user-id"), Some("1001"));
    assert_eq!(r.header("x-user-name"), Some("alice"));
    assert_eq!(r.header("x-tenant-id"), Some("acme"));
    assert_eq!(r.header("x-user-roles"), Some("admin,ops"));
    assert_eq!(r.header("x-session-id"), Some(p.sid.as_str()));
    assert_eq!(r.header("x-user-platform"), Some("app"));
    for (token, code) in [
        (None, "missing_token"),
        (Some("not.a.token"), "invalid_token"),
    ] {
        let r = gw.verify("/api/x", token).await;
        r.assert_error(401, code);
        assert_eq!(r.header("x-auth-error"), Some(code));
    }
    gw.with_token("POST", "/auth/logout", &p.access).await;
    let r = gw.verify("/api/x", Some(&p.access)).await;
    r.assert_error(401, "session_revoked");
    assert_eq!(r.header("x-auth-error"), Some("session_revoked"));
    assert_eq!(gw.hits(), 0);
}

async fn verify_applies_the_original_routes_rules_from_trusted_proxies(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).server(TRUST_LOOPBACK));
    let alice = gw.login_ok("alice", "web").await;
    let bob = gw.login_ok("bob", "web").await;
    // A role-restricted route: alice (admin) yes, bob no.
    let r = gw.verify("/admin/panel?x=1", Some(&alice.access)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("x-session-id"), Some(alice.sid.as_str()));
    gw.verify("/admin/panel", Some(&bob.access))
        .await
        .assert_error(403, "forbidden");
    // A public route needs no token; an optional one ignores an ended session.
    let r = gw.verify("/public/x", None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-user-id").is_none());
    gw.with_token("POST", "/auth/logout", &bob.access).await;
    let r = gw.verify("/optional/x", Some(&bob.access)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r.header("x-user-id").is_none());
    // A required route with the ended session: refused as such.
    gw.verify("/api/x", Some(&bob.access))
        .await
        .assert_error(401, "session_revoked");
    assert_eq!(gw.hits(), 0, "verify never forwards");
}

async fn jwks_is_404_for_hs256(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    gw.get("/.well-known/jwks.json", &[])
        .await
        .assert_error(404, "not_found");
}

async fn jwks_publishes_the_es256_key(store: StoreKind) {
    fn keys(dir: &std::path::Path) {
        authgate::tokens::keygen::keygen("ES256", dir).expect("keygen ES256");
    }
    let gw = gateway!(Conf::new()
        .store(store)
        .prepare(keys)
        .token_base("algorithm = \"ES256\"\nprivate_key_file = \"private.pem\"\nkid = \"es1\""));
    let r = gw.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let jwks = r.json();
    let keys = jwks["keys"].as_array().expect("keys");
    let k = keys
        .iter()
        .find(|k| k["kid"] == "es1")
        .unwrap_or_else(|| panic!("no key es1: {jwks}"));
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert!(k.get("d").is_none(), "no private part: {k}");
    // Tokens of a login are ES256 with that kid, and work.
    let p = gw.login_ok("alice", "web").await;
    let header = header_of(&p.access);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "es1");
    gw.assert_passes(&p).await;
}

// ---------------------------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------------------------

async fn admin_api_lists_and_revokes_sessions(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let web = gw.login_ok("alice", "web").await;
    let app = gw.login_ok("alice", "app").await;
    let h5 = gw.login_ok("alice", "h5").await;
    let bob = gw.login_ok("bob", "web").await;

    let r = gw.admin_call("GET", "/readyz", None).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(gw.admin_call("GET", "/healthz", None).await.status, 200);

    // Without the token, with a wrong one: 401, nothing revoked.
    for token in [None, Some("wrong"), Some("")] {
        for (m, path) in [
            ("GET", "/admin/users/1001/sessions"),
            ("DELETE", "/admin/users/1001/sessions"),
            ("DELETE", &*format!("/admin/sessions/{}", web.sid)),
        ] {
            let r = gw.admin_call(m, path, token).await;
            assert_eq!(r.status, 401, "{m} {path} {token:?}: {}", text(&r));
        }
    }
    gw.assert_passes(&web).await;

    let r = gw
        .admin_call("GET", "/admin/users/1001/sessions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let list = r.json()["sessions"].as_array().expect("sessions").clone();
    let mut ids: Vec<&str> = list
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![web.sid.as_str(), app.sid.as_str(), h5.sid.as_str()];
    want.sort();
    assert_eq!(ids, want);

    // One session by id: 204, then 404.
    let path = format!("/admin/sessions/{}", h5.sid);
    let r = gw.admin_call("DELETE", &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    gw.assert_refused(&h5.access, "session_revoked").await;
    gw.admin_call("DELETE", &path, Some(ADMIN_TOKEN))
        .await
        .assert_error(404, "not_found");
    gw.admin_call("DELETE", "/admin/sessions/nonsense", Some(ADMIN_TOKEN))
        .await
        .assert_error(404, "not_found");
    gw.assert_passes(&web).await;

    // All of a user's sessions: the count of those still active.
    let r = gw
        .admin_call("DELETE", "/admin/users/1001/sessions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json(), json!({"revoked": 2}));
    for p in [&web, &app] {
        gw.assert_ended(p, "session_revoked").await;
    }
    gw.assert_passes(&bob).await;
    let r = gw
        .admin_call("GET", "/admin/users/1001/sessions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.json()["sessions"], json!([]));
    let r = gw
        .admin_call("DELETE", "/admin/users/1001/sessions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.json(), json!({"revoked": 0}));
}

async fn non_ascii_users_get_their_identity(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let p = gw.login_ok("张三", "web").await;
    assert_eq!(p.json["user"], json!({"id": ZHANG_ID, "name": "张三"}));
    // Never silently left out: the upstream gets the user (encoded as the gateway documents).
    let r = gw.get_auth("/api/x", &p.access).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.seen("x-user-id").len(), 1, "{}", text(&r));
    assert_eq!(
        r.seen("x-user-name"),
        ["%E5%BC%A0%E4%B8%89"],
        "{}",
        text(&r)
    );
    assert_eq!(r.seen("x-session-id"), [p.sid.as_str()]);
    let r = gw.with_token("GET", "/auth/sessions", &p.access).await;
    assert_eq!(r.json()["sessions"][0]["session_id"], p.sid.as_str());
    gw.login_ok("张三", "app").await;
    let r = gw
        .with_token("DELETE", &format!("/auth/sessions/{}", p.sid), &p.access)
        .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    gw.assert_refused(&p.access, "session_revoked").await;
}

async fn admin_api_addresses_users_by_percent_encoded_id(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let p = gw.login_ok("张三", "web").await;
    // "用户 1003", percent-encoded as any HTTP client must send it.
    let encoded: String = ZHANG_ID
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let path = format!("/admin/users/{encoded}/sessions");
    let r = gw.admin_call("GET", &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        r.json()["sessions"][0]["session_id"],
        p.sid.as_str(),
        "{path}: {}",
        text(&r)
    );
    let r = gw.admin_call("DELETE", &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(r.json(), json!({"revoked": 1}), "{path}");
    gw.assert_refused(&p.access, "session_revoked").await;
}

async fn admin_api_is_off_without_its_token_variable(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).admin_env("T_UNSET_ADMIN_TOKEN"));
    let p = gw.login_ok("alice", "web").await;
    for token in [None, Some(ADMIN_TOKEN), Some("")] {
        let r = gw
            .admin_call("DELETE", "/admin/users/1001/sessions", token)
            .await;
        r.assert_error(404, "not_found");
    }
    gw.assert_passes(&p).await;
    assert_eq!(gw.admin_call("GET", "/readyz", None).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Upstream login backend
// ---------------------------------------------------------------------------------------------

/// What a legacy login answers: its status, its JSON body, and headers beside
/// `Content-Type: application/json`.
type LegacyAnswer = (u16, String, &'static [(&'static str, &'static str)]);

/// A legacy application's login: `answer` judges each request by its `Cookie` header (`""`
/// without one) and its JSON body (`null` when it is not JSON).
async fn legacy_upstream(answer: fn(&str, &Value) -> LegacyAnswer) -> Upstream {
    Upstream::start(
        move |req: http::Request<hyper::body::Incoming>| async move {
            let cookie = req
                .headers()
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, body, headers) = answer(&cookie, &v);
            let mut resp = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            for (name, value) in headers {
                resp = resp.header(*name, *value);
            }
            resp.body(authgate::body::full(body)).unwrap()
        },
    )
    .await
}

/// `store`'s gateway with the upstream login backend: the legacy login at `legacy`
/// (`/api/login`), the user id at `/data/id`, and `more` lines of `[login]`.
fn upstream_login(store: StoreKind, legacy: SocketAddr, more: &str) -> Conf {
    Conf::new().store(store).login(&format!(
        "backend = \"upstream\"\nupstream_url = \"http://{legacy}/api/login\"\n\
         user_id_pointer = \"/data/id\"\n{more}"
    ))
}

/// The legacy application's login: 200 with bob's identity for the right body, 401 (with a
/// header and body of its own) otherwise.
async fn legacy_login() -> Upstream {
    legacy_upstream(|_, v| {
        let (status, answer) = if *v == json!({"username": "bob", "password": "legacy-pw"}) {
            (200, r#"{"data":{"id":7,"username":"bob","roles":["ops"]}}"#)
        } else {
            (401, r#"{"code":40101,"msg":"bad password"}"#)
        };
        (status, answer.to_owned(), &[("x-legacy", "yes")])
    })
    .await
}

async fn upstream_login_backend(store: StoreKind) {
    let legacy = legacy_login().await;
    let gw = gateway!(upstream_login(
        store,
        legacy.addr,
        "user_name_pointer = \"/data/username\"\nroles_pointer = \"/data/roles\""
    )
    .lockout("max_failures = 2\nwindow = \"1m\""));
    let right = json!({"username": "bob", "password": "legacy-pw"}).to_string();
    let r = gw
        .post("/auth/login", Some(("x-platform", "app")), right.clone())
        .await;
    let p = Pair::from_resp(&r);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        p.json["upstream"],
        json!({"data": {"id": 7, "username": "bob", "roles": ["ops"]}})
    );
    assert_eq!(p.json["user"], json!({"id": "7", "name": "bob"}));
    assert_eq!(p.json["platform"], "app");
    let seen = gw.get_auth("/api/x", &p.access).await;
    assert_eq!(seen.seen("x-user-id"), ["7"]);
    assert_eq!(seen.seen("x-user-name"), ["bob"]);
    assert_eq!(seen.seen("x-user-roles"), ["ops"]);
    assert!(
        seen.seen("x-tenant-id").is_empty(),
        "no tenant pointer, no tenant"
    );
    assert_eq!(legacy.hits(), 1);

    // A refusal of the legacy login is relayed as it is, and counts toward lock-out.
    let wrong = json!({"username": "bob", "password": "nope"}).to_string();
    for _ in 0..2 {
        let r = gw.post("/auth/login", None, wrong.clone()).await;
        assert_eq!(r.status, 401);
        assert_eq!(&r.body[..], br#"{"code":40101,"msg":"bad password"}"#);
        assert_eq!(r.header("x-legacy"), Some("yes"));
    }
    assert_eq!(legacy.hits(), 3);
    let r = gw.post("/auth/login", None, right).await;
    r.assert_error(429, "account_locked");
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        legacy.hits(),
        3,
        "a locked login never reaches the legacy login"
    );
    // The session from before the lock is unaffected.
    gw.assert_passes(&p).await;
}

// ---------------------------------------------------------------------------------------------
// Optional routes
// ---------------------------------------------------------------------------------------------

async fn optional_route_ignores_an_ended_session(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    let p = gw.login_ok("alice", "web").await;
    let r = gw.get_auth("/optional/x", &p.access).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-session-id"), [p.sid.as_str()]);
    gw.with_token("POST", "/auth/logout", &p.access).await;
    let r = gw
        .get(
            "/optional/x",
            &[
                ("authorization", &format!("Bearer {}", p.access)),
                ("x-user-id", "1001"),
            ],
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "an ended session is ignored, not refused: {}",
        text(&r)
    );
    assert!(r.seen("x-user-id").is_empty(), "no identity: {}", text(&r));
    assert!(r.seen("x-session-id").is_empty());
    // Kicked out too.
    let a = gw.login_ok("alice", "app").await;
    gw.login_ok("alice", "app").await;
    let r = gw.get_auth("/optional/x", &a.access).await;
    assert_eq!(r.status, 200);
    assert!(r.seen("x-user-id").is_empty());
}

async fn upstream_login_unreachable_or_unusable_is_502(store: StoreKind) {
    // A legacy login that cannot be reached (a 2xx without a user id is a failed login now:
    // see `legacy_200_with_an_error_code_is_a_failed_login`).
    {
        let gw = gateway!(upstream_login(store, dead_addr().await, "").lockout("max_failures = 1"));
        let body = json!({"username": "bob", "password": "x"}).to_string();
        for _ in 0..2 {
            // Twice: an unavailable legacy login is not a failed login (no lock-out).
            let r = gw.post("/auth/login", None, body.clone()).await;
            r.assert_error(502, "upstream_unavailable");
            assert!(
                !text(&r).contains("127.0.0.1"),
                "no internals: {}",
                text(&r)
            );
        }
    }
}

/// A legacy login in the style of many Java and PHP apps: always 200, the verdict in `code`,
/// a `JSESSIONID` cookie that its captcha is tied to.
async fn legacy_code_login() -> Upstream {
    legacy_upstream(|cookie, v| {
        let right = *v == json!({"username": "carol", "password": "legacy-pw"});
        let answer = match (right, cookie.contains("JSESSIONID=j1")) {
            (true, true) => json!({"code": 0, "data": {"id": 9, "username": "carol"}}),
            (true, false) => json!({"code": 4001, "msg": "captcha session missing"}),
            (false, _) => json!({"code": 500, "msg": "password wrong"}),
        };
        let set_cookie = &[("set-cookie", "JSESSIONID=j1; Path=/; HttpOnly")];
        (200, answer.to_string(), set_cookie)
    })
    .await
}

async fn legacy_200_with_an_error_code_is_a_failed_login(store: StoreKind) {
    let legacy = legacy_code_login().await;
    let gw = gateway!(upstream_login(
        store,
        legacy.addr,
        "user_name_pointer = \"/data/username\"\nsuccess_pointer = \"/code\"\nsuccess_value = 0"
    )
    .lockout("max_failures = 3\nwindow = \"1m\""));
    let post = |body: Value, cookie: Option<&'static str>| {
        gw.post(
            "/auth/login",
            cookie.map(|c| ("cookie", c)),
            body.to_string(),
        )
    };
    let right = json!({"username": "carol", "password": "legacy-pw"});
    // The right password without the legacy session cookie: the legacy app says no (200 with
    // code 4001), which is a failed login with its JSON, and its Set-Cookie comes back.
    let r = post(right.clone(), None).await;
    r.assert_error(401, "invalid_credentials");
    assert_eq!(r.json()["upstream"]["code"], 4001);
    let set_cookie: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
    assert_eq!(set_cookie, ["JSESSIONID=j1; Path=/; HttpOnly"]);
    // With the cookie the client got, the login works: the Cookie reached the legacy login
    // and the cookie is set again beside the token pair.
    let r = post(right.clone(), Some("JSESSIONID=j1")).await;
    let p = Pair::from_resp(&r);
    assert_eq!(p.json["upstream"]["code"], 0);
    assert_eq!(p.json["user"], json!({"id": "9", "name": "carol"}));
    assert_eq!(
        r.header("set-cookie"),
        Some("JSESSIONID=j1; Path=/; HttpOnly")
    );
    gw.assert_passes(&p).await;

    // Wrong passwords, 200 {"code":500}: each a 401 with the legacy JSON, counted toward
    // lock-out (it used to be a 502 and never locked).
    let wrong = json!({"username": "carol", "password": "guess"});
    for _ in 0..3 {
        let r = post(wrong.clone(), Some("JSESSIONID=j1")).await;
        r.assert_error(401, "invalid_credentials");
        assert_eq!(
            r.json()["upstream"],
            json!({"code": 500, "msg": "password wrong"})
        );
    }
    // The third failure of the window locks the account: then even the right password is
    // refused without asking the legacy login.
    let hits = legacy.hits();
    post(right, Some("JSESSIONID=j1"))
        .await
        .assert_error(429, "account_locked");
    assert_eq!(
        legacy.hits(),
        hits,
        "a locked login never reaches the legacy login"
    );
}

async fn a_token_naming_another_users_session_is_refused(store: StoreKind) {
    // A validly signed token (e.g. minted by a buggy or older issuer) whose `sid` is alice's
    // session but whose `sub` is bob: the session must be the token user's own.
    let gw = gateway!(Conf::new().store(store));
    let alice = gw.login_ok("alice", "web").await;
    let id = authgate::tokens::AccessIdentity {
        sub: "2002".into(),
        name: Some("bob".into()),
        sid: Some(alice.sid.clone()),
        plat: Some("web".into()),
        tenant: None,
        roles: None,
    };
    let forged = gw.mint(&id);
    gw.assert_refused(&forged, "session_revoked").await;
    // And a token without a session id is refused in stateful mode.
    let id = authgate::tokens::AccessIdentity { sid: None, ..id };
    let sessionless = gw.mint(&id);
    gw.assert_refused(&sessionless, "session_revoked").await;
    gw.assert_passes(&alice).await;
}

async fn stateless_mode_ignores_sessions_on_requests_but_not_on_refresh(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store).session("mode = \"stateless\""));
    let p = gw.login_ok("alice", "web").await;
    let r = gw.with_token("POST", "/auth/logout", &p.access).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    // Signature and claims only: the access token lives until it expires...
    let r = gw.get_auth("/api/x", &p.access).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.seen("x-session-id"), [p.sid.as_str()]);
    // ...but the session is over: no new tokens for it.
    gw.refresh(&p.refresh)
        .await
        .assert_error(401, "invalid_refresh_token");
}

/// The contract's metrics (§8) move with what they count. The registry is shared by every
/// test of this binary, so each check is a lower bound on the increase.
#[tokio::test]
async fn contract_metrics_count_logins_failures_refreshes_and_sessions() {
    let gw = gateway!(Conf::new().store(StoreKind::Memory));
    let admin = &gw.admin;
    let logins_ok = metric(admin, "authgate_logins_total", &["result=\"success\""]).await;
    let logins_bad = metric(admin, "authgate_logins_total", &["result=\"failure\""]).await;
    let missing = metric(
        admin,
        "authgate_auth_failures_total",
        &["reason=\"missing_token\""],
    )
    .await;
    let refreshes = metric(admin, "authgate_silent_refreshes_total", &[]).await;

    let p = gw.login_ok("alice", "web").await;
    gw.login_ok("bob", "app").await;
    assert_eq!(gw.login("alice", "wrong-password").await.status, 401);
    gw.get("/api/x", &[])
        .await
        .assert_error(401, "missing_token");
    // A token of alice's session with 60 s left: the answer carries a fresh one.
    let id = authgate::tokens::AccessIdentity {
        sub: "1001".into(),
        name: Some("alice".into()),
        sid: Some(p.sid.clone()),
        plat: Some("web".into()),
        tenant: Some("acme".into()),
        roles: None,
    };
    let old = gw.mint_expiring_in(&id, 60);
    let r = gw.get_auth("/api/x", &old).await;
    assert!(r.header("refresh-token").is_some(), "{}", text(&r));

    let at_least = |what: &str, before: f64, after: f64, n: f64| {
        assert!(
            after - before >= n,
            "{what}: {before} -> {after}, want +{n}"
        );
    };
    let now_ok = metric(admin, "authgate_logins_total", &["result=\"success\""]).await;
    at_least("successful logins", logins_ok, now_ok, 2.0);
    let now_bad = metric(admin, "authgate_logins_total", &["result=\"failure\""]).await;
    at_least("failed logins", logins_bad, now_bad, 1.0);
    let now_missing = metric(
        admin,
        "authgate_auth_failures_total",
        &["reason=\"missing_token\""],
    )
    .await;
    at_least("missing_token failures", missing, now_missing, 1.0);
    let now_refreshes = metric(admin, "authgate_silent_refreshes_total", &[]).await;
    at_least("silent refreshes", refreshes, now_refreshes, 1.0);
    // A gauge, set from this gateway's store on each scrape: alice's and bob's sessions.
    // (Another test's scrape may set the shared gauge between ours and its rendering, so
    // a few scrapes are allowed.)
    let mut seen = Vec::new();
    for _ in 0..5 {
        let v = metric(admin, "authgate_sessions_active", &[]).await;
        if v == 2.0 {
            return;
        }
        seen.push(v);
    }
    panic!("authgate_sessions_active: {seen:?}, want 2");
}

/// A legacy login that reads the account from `login` (not `username`).
async fn legacy_login_field() -> Upstream {
    legacy_upstream(|_, v| {
        let ok = v["login"] == "carol" && v["password"] == "legacy-pw";
        let (status, answer) = if ok {
            (200, r#"{"data":{"id":9}}"#)
        } else {
            (401, r#"{"msg":"no"}"#)
        };
        (status, answer.to_owned(), &[])
    })
    .await
}

async fn lockout_keys_on_username_pointer_and_refuses_duplicate_keys(store: StoreKind) {
    let legacy = legacy_login_field().await;
    let gw = gateway!(
        upstream_login(store, legacy.addr, "username_pointer = \"/login\"")
            .lockout("max_failures = 3\nmax_failures_per_ip = 1000\nwindow = \"1m\"")
    );
    // The decoy trick: a new `username` each time, the legacy app reads `login`.
    for (i, name) in ["carol", "Carol", " carol "].iter().enumerate() {
        let body = json!({"username": format!("decoy{i}"), "login": name, "password": "guess"});
        let r = gw.post("/auth/login", None, body.to_string()).await;
        assert_eq!(r.status, 401, "{}", text(&r));
    }
    let right = json!({"username": "decoy9", "login": "carol", "password": "legacy-pw"});
    let hits = legacy.hits();
    gw.post("/auth/login", None, right.to_string())
        .await
        .assert_error(429, "account_locked");
    assert_eq!(
        legacy.hits(),
        hits,
        "a locked account never reaches the legacy login"
    );
    // Duplicate keys: 400 before anything is counted or sent on.
    for (ctype, body) in [
        (
            "application/json",
            r#"{"login":"decoy","login":"dave","password":"x"}"#,
        ),
        (
            "application/x-www-form-urlencoded",
            "login=decoy&login=dave&password=x",
        ),
    ] {
        gw.request(
            "POST",
            "/auth/login",
            &[("content-type", ctype)],
            Bytes::from(body),
        )
        .await
        .assert_error(400, "bad_request");
    }
    assert_eq!(legacy.hits(), hits);
}

/// A method an endpoint of ours does not take is 405 with the `Allow` header HTTP requires
/// (RFC 9110 §15.5.6), naming the methods it takes in this configuration: the login page and
/// the cookie refresh only with `[browser]` on. (Found by Schemathesis's
/// allow_header_conformance in tests/schema.sh: these 405s had no `Allow`.) An empty session
/// id names no session: 404, not a 405 that would offer DELETE.
#[tokio::test]
async fn endpoint_405s_name_the_methods_in_allow() {
    let gw = Gateway::start(Conf::new().store(StoreKind::Memory)).await;
    for (method, path, allow) in [
        ("PATCH", "/auth/login", "POST"),
        ("GET", "/auth/login", "POST"),
        ("PUT", "/auth/refresh", "POST"),
        ("GET", "/auth/refresh", "POST"),
        ("GET", "/auth/logout", "POST"),
        ("DELETE", "/auth/logout-all", "POST"),
        ("POST", "/auth/sessions", "GET"),
        ("GET", "/auth/sessions/abc", "DELETE"),
        ("POST", "/auth/verify", "GET, HEAD"),
        ("TRACE", "/.well-known/jwks.json", "GET, HEAD"),
    ] {
        let r = gw.request(method, path, &[], Bytes::new()).await;
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    for method in ["GET", "DELETE"] {
        let r = gw
            .request(method, "/auth/sessions/", &[], Bytes::new())
            .await;
        r.assert_error(404, "not_found");
        assert_eq!(r.header("allow"), None, "{method}");
    }

    let gw = Gateway::start(
        Conf::new()
            .store(StoreKind::Memory)
            .section("[browser]\nenabled = true")
            .section("[login.captcha]\nmode = \"always\""),
    )
    .await;
    for (method, path, allow) in [
        ("PUT", "/auth/login", "GET, HEAD, POST"),
        ("DELETE", "/auth/refresh", "GET, POST"),
        ("POST", "/auth/captcha", "GET"),
    ] {
        let r = gw.request(method, path, &[], Bytes::new()).await;
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    assert_eq!(gw.hits(), 0);
}
