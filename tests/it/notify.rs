//! `[notify]`: signed session events at a real HTTP receiver started by the test
//! (`support::receiver`), for every kind of session end and for logins, on both stores and
//! with two instances on one Redis (each event once); the faults (a receiver down, slower
//! than the timeout, answering 500, answering 200 after the timeout, a full queue during a
//! logout-all, a reload changing the url while events wait); the signature refused under a
//! wrong secret or an old timestamp; the README's Python and Java verifiers run for real.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use authgate::app::{App, NotifyCounts};
use authgate::session::{Lifetimes, NewSession, SessionStore};
use authgate::tokens::AccessIdentity;

use crate::support::*;

/// `[notify]` to `urls` with the test secret, then `extra` lines.
fn section(urls: &[String], extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[notify]\nurls = [{}]\nsecret_env = \"T_NOTIFY\"\n{extra}\n",
        urls.join(", ")
    )
}

/// A series' value in the gateway's `/metrics`, if shown.
fn value(body: &[u8], series: &str) -> Option<u64> {
    let text = String::from_utf8_lossy(body);
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits (bounded) until the gateway's own `[notify]` count `pick` is `want` (the
/// `authgate_notify_*` metrics are the process's, shared by the suite's gateways).
async fn count_is(app: &App, pick: fn(&NotifyCounts) -> u64, want: u64) {
    poll_until(
        &format!("a notify count of {want}, {:?} now", app.notify_counts()),
        || std::future::ready(app.notify_counts()),
        |c| pick(c) == want,
    )
    .await;
}

fn sent(c: &NotifyCounts) -> u64 {
    c.sent
}

fn undelivered(c: &NotifyCounts) -> u64 {
    c.undelivered
}

fn queue_full(c: &NotifyCounts) -> u64 {
    c.queue_full
}

const UNDELIVERED: &str = "authgate_notify_failures_total{reason=\"undelivered\"}";

type What = (String, String, String);

fn what(sid: &str, event: &str, reason: &str) -> What {
    (sid.to_owned(), event.to_owned(), reason.to_owned())
}

/// How many times each `(session_id, event, reason)` arrived.
fn tally(got: &[Delivery]) -> BTreeMap<What, usize> {
    let mut m = BTreeMap::new();
    for d in got {
        *m.entry(d.what()).or_insert(0) += 1;
    }
    m
}

fn once(expected: &[What]) -> BTreeMap<What, usize> {
    expected.iter().map(|w| (w.clone(), 1)).collect()
}

/// Waits (bounded) until the receiver got each of `want` once and nothing else; every
/// delivery. On a timeout, the difference.
async fn arrived_once(recv: &Receiver, want: &[What]) -> Vec<Delivery> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = recv.got();
        if tally(&got) == once(want) || Instant::now() > deadline {
            assert_eq!(tally(&got), once(want));
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every delivery is signed, JSON, on the path configured, with exactly the contract's
/// fields, and holds no token of `tokens`.
fn assert_well_formed(got: &[Delivery], tokens: &[&str]) {
    for d in got {
        assert_eq!(d.verified, Ok(()), "{:?}", d.json);
        assert_eq!(d.content_type.as_deref(), Some("application/json"));
        assert_eq!(d.path, "/hooks/session");
        let keys: Vec<&str> = d
            .json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "event",
                "platform",
                "reason",
                "request_id",
                "session_id",
                "ts",
                "user_id"
            ]
        );
        assert!(d.json["ts"]
            .as_u64()
            .is_some_and(|t| t.abs_diff(now()) < 60));
        let body = String::from_utf8_lossy(&d.body);
        for t in tokens {
            assert!(!body.contains(t), "a token in an event: {body}");
        }
    }
}

async fn every_session_end_arrives_once(store: StoreKind) {
    let recv = Receiver::start(&[Answer::Ok]).await;
    let gw = gateway!(Conf::new()
        .store(store)
        .run_from_file()
        .token("access_ttl = \"10m\"\nmax_lifetime = \"10m\"\nsilent_refresh_window = \"1m\"")
        .section(&section(
            &[recv.url("/hooks/session")],
            "events = [\"session_ended\", \"login\"]"
        )));
    let mut want = Vec::new();
    let mut pairs: Vec<Pair> = Vec::new();
    let login = |p: &Pair, want: &mut Vec<What>, pairs: &mut Vec<Pair>| {
        want.push(what(&p.sid, "login", "-"));
        pairs.push(Pair {
            access: p.access.clone(),
            refresh: p.refresh.clone(),
            sid: p.sid.clone(),
            json: p.json.clone(),
        });
    };

    // Kick-out: a second login on web (max 1) replaces the first.
    let a1 = gw.login_ok("alice", "web").await;
    login(&a1, &mut want, &mut pairs);
    let a2 = gw.login_ok("alice", "web").await;
    login(&a2, &mut want, &mut pairs);
    want.push(what(&a1.sid, "session_ended", "replaced"));
    // Logout.
    let r = gw.with_token("POST", "/auth/logout", &a2.access).await;
    assert_eq!(r.status, 204);
    want.push(what(&a2.sid, "session_ended", "logout"));
    // Logout-all: every session of the user, each once.
    let b1 = gw.login_ok("alice", "app").await;
    let b2 = gw.login_ok("alice", "h5").await;
    login(&b1, &mut want, &mut pairs);
    login(&b2, &mut want, &mut pairs);
    let r = gw.with_token("POST", "/auth/logout-all", &b1.access).await;
    assert_eq!(r.status, 204);
    want.push(what(&b1.sid, "session_ended", "logout_all"));
    want.push(what(&b2.sid, "session_ended", "logout_all"));
    // The user's own session list, then the admin API by id and by user.
    let c1 = gw.login_ok("bob", "web").await;
    let c2 = gw.login_ok("bob", "app").await;
    login(&c1, &mut want, &mut pairs);
    login(&c2, &mut want, &mut pairs);
    let r = gw
        .with_token("DELETE", &format!("/auth/sessions/{}", c2.sid), &c1.access)
        .await;
    assert_eq!(r.status, 204);
    want.push(what(&c2.sid, "session_ended", "revoked"));
    let r = gw
        .admin_call(
            "DELETE",
            &format!("/admin/sessions/{}", c1.sid),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(r.status, 204);
    want.push(what(&c1.sid, "session_ended", "revoked"));
    let d1 = gw.login_ok("bob", "h5").await;
    login(&d1, &mut want, &mut pairs);
    let r = gw
        .admin_call("DELETE", "/admin/users/2002/sessions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    want.push(what(&d1.sid, "session_ended", "revoked"));
    // Theft: the first refresh token again after the grace.
    let e1 = gw.login_ok("alice", "web").await;
    login(&e1, &mut want, &mut pairs);
    let e2 = Pair::from_resp(&gw.refresh(&e1.refresh).await);
    pairs.push(e2);
    gw.advance(Duration::from_secs(11));
    let r = gw.refresh(&e1.refresh).await;
    assert_eq!(r.status, 401);
    want.push(what(&e1.sid, "session_ended", "theft"));
    // A user removed from the users file (seen by a reload).
    let f1 = gw.login_ok("张三", "web").await;
    let f2 = gw.login_ok("张三", "app").await;
    login(&f1, &mut want, &mut pairs);
    login(&f2, &mut want, &mut pairs);
    let users = users_toml()
        .split("[[users]]")
        .filter(|u| !u.contains(ZHANG_ID))
        .collect::<Vec<_>>()
        .join("[[users]]");
    std::fs::write(gw.dir.path().join("users.toml"), users).unwrap();
    let r = gw
        .admin_call("POST", "/admin/reload", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    want.push(what(&f1.sid, "session_ended", "user_removed"));
    want.push(what(&f2.sid, "session_ended", "user_removed"));
    // Expiry (max_lifetime 10 min), noticed by a request with a still valid access token
    // (the 30 s leeway) and by a refresh.
    let g1 = gw.login_ok("alice", "app").await;
    let g2 = gw.login_ok("alice", "h5").await;
    login(&g1, &mut want, &mut pairs);
    login(&g2, &mut want, &mut pairs);
    gw.advance(Duration::from_secs(601));
    gw.assert_refused(&g1.access, "session_revoked").await;
    gw.assert_refused(&g1.access, "session_revoked").await;
    let r = gw.refresh(&g2.refresh).await;
    assert_eq!(r.status, 401);
    let r = gw.refresh(&g2.refresh).await;
    assert_eq!(r.status, 401);
    want.push(what(&g1.sid, "session_ended", "expired"));
    want.push(what(&g2.sid, "session_ended", "expired"));

    let got = arrived_once(&recv, &want).await;
    count_is(&gw.app, sent, want.len() as u64).await;
    let tokens: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.access.as_str(), p.refresh.as_str()])
        .collect();
    assert_well_formed(&got, &tokens);
    for d in &got {
        let (sid, event, _) = d.what();
        let owner = pairs.iter().find(|p| p.sid == sid).unwrap();
        assert_eq!(d.json["user_id"], owner.json["user"]["id"], "{:?}", d.json);
        if event == "login" {
            assert!(d.json["reason"].is_null());
        }
        assert!(["web", "app", "h5"].contains(&d.json["platform"].as_str().unwrap()));
    }
    // The logout's event carries the logout request's id.
    let logout = got.iter().find(|d| d.what().2 == "logout").unwrap();
    assert_eq!(logout.json["platform"], "web");
    assert!(logout.json["request_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
}

crate::both_stores!(every_session_end_arrives_once);

/// The memory store's sweep drops sessions past their idle limit: each is told once, with no
/// request id. (Redis expires its keys by itself and tells nobody: README.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_sweep_tells_of_expiry() {
    let recv = Receiver::start(&[Answer::Ok]).await;
    let gw = fault_gateway(&[recv.url("/hooks/session")], "").await;
    let p = gw.login_ok("alice", "web").await;
    gw.advance(Duration::from_secs(31 * 24 * 3600));
    let SessionStore::Memory(m) = &gw.app.store else {
        panic!("a memory gateway");
    };
    m.sweep(gw.now_ms());
    let got = recv.wait_for(1).await;
    assert_eq!(
        tally(&got),
        once(&[what(&p.sid, "session_ended", "expired")])
    );
    assert!(got[0].json["request_id"].is_null());
    // Told once: a refresh afterwards (the session is gone) tells nobody again.
    assert_eq!(gw.refresh(&p.refresh).await.status, 401);
    m.sweep(gw.now_ms());
    count_is(&gw.app, sent, 1).await;
    assert_eq!(recv.got().len(), 1);
}

/// Two instances on one Redis, both configured to notify: each end is told by the instance
/// that ended the session, never by the other one that hears it on the revocation channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_send_each_event_once() {
    let recv = Receiver::start(&[Answer::Ok]).await;
    let gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .token("access_ttl = \"10m\"\nmax_lifetime = \"10m\"\nsilent_refresh_window = \"1m\"")
        .section(&section(&[recv.url("/hooks/session")], "")));
    let (other, handle) = gw.sibling().await;
    let mut want = Vec::new();

    let a1 = gw.login_ok("alice", "web").await;
    // Kicked out by a login on the other instance.
    let a2 = Pair::from_resp(&other.login("alice", ALICE_PW).await);
    want.push(what(&a1.sid, "session_ended", "replaced"));
    // Logged out here.
    assert_eq!(
        gw.with_token("POST", "/auth/logout", &a2.access)
            .await
            .status,
        204
    );
    want.push(what(&a2.sid, "session_ended", "logout"));
    // Logout-all there.
    let b1 = gw.login_ok("alice", "app").await;
    let b2 = Pair::from_resp(&other.login_on("alice", ALICE_PW, Some("h5")).await);
    let r = other
        .with_token("POST", "/auth/logout-all", &b1.access)
        .await;
    assert_eq!(r.status, 204);
    want.push(what(&b1.sid, "session_ended", "logout_all"));
    want.push(what(&b2.sid, "session_ended", "logout_all"));
    // Both instances notice the same expiry; one marks it.
    let c1 = gw.login_ok("bob", "web").await;
    gw.advance(Duration::from_secs(601));
    handle.app.clock.advance(Duration::from_secs(601));
    let (x, y) = tokio::join!(
        gw.get_auth("/api/me", &c1.access),
        other.get_auth("/api/me", &c1.access)
    );
    assert_eq!((x.status, y.status), (401, 401));
    want.push(what(&c1.sid, "session_ended", "expired"));

    let got = arrived_once(&recv, &want).await;
    poll_until(
        "both instances' sent counts to add up",
        || std::future::ready(gw.app.notify_counts().sent + handle.app.notify_counts().sent),
        |n| *n == want.len() as u64,
    )
    .await;
    assert_eq!(tally(&recv.got()), once(&want));
    assert_well_formed(
        &got,
        &[a1.access.as_str(), a2.refresh.as_str(), b1.access.as_str()],
    );
    within("the second instance to stop", handle.shutdown()).await;
}

/// A lapsed session no request met, dropped from the user's record by a login of the same
/// user on another platform (two at once, one on each instance): told once, reason
/// `expired`, by the instance whose login dropped it, with that login's request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lapsed_session_dropped_by_a_login_is_told_once_across_instances() {
    let recv = Receiver::start(&[Answer::Ok]).await;
    let gw = gateway!(Conf::new()
        .store(StoreKind::Redis)
        .token("access_ttl = \"10m\"\nmax_lifetime = \"10m\"\nsilent_refresh_window = \"1m\"")
        .section(&section(&[recv.url("/hooks/session")], "")));
    let (other, handle) = gw.sibling().await;
    let lapsed = gw.login_ok("alice", "web").await;
    let kept = gw.login_ok("bob", "web").await;
    gw.advance(Duration::from_secs(601));
    handle.app.clock.advance(Duration::from_secs(601));
    let (x, y) = tokio::join!(
        other.login_on("alice", ALICE_PW, Some("app")),
        gw.login_on("alice", ALICE_PW, Some("h5"))
    );
    assert_eq!((x.status, y.status), (200, 200));
    let want = [what(&lapsed.sid, "session_ended", "expired")];
    let got = arrived_once(&recv, &want).await;
    poll_until(
        "both instances' sent counts to add up",
        || std::future::ready(gw.app.notify_counts().sent + handle.app.notify_counts().sent),
        |n| *n == 1,
    )
    .await;
    assert_well_formed(&got, &[lapsed.access.as_str(), lapsed.refresh.as_str()]);
    assert_eq!(got[0].json["user_id"], lapsed.json["user"]["id"]);
    assert_eq!(got[0].json["platform"], "web");
    assert!(got[0].json["request_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    // Gone from the record: its token meets nothing to mark, so nothing is told again.
    gw.assert_refused(&lapsed.access, "session_revoked").await;
    assert_eq!(gw.refresh(&lapsed.refresh).await.status, 401);
    // Bob's lapsed session is his own: marked by his next request, told once too.
    gw.assert_refused(&kept.access, "session_revoked").await;
    let want = [want[0].clone(), what(&kept.sid, "session_ended", "expired")];
    arrived_once(&recv, &want).await;
    within("the second instance to stop", handle.shutdown()).await;
}

/// A gateway (memory store) notifying `urls`, with short timeouts for the fault tests.
async fn fault_gateway(urls: &[String], extra: &str) -> Gateway {
    Gateway::start(
        Conf::new()
            .store(StoreKind::Memory)
            .section(&section(urls, extra)),
    )
    .await
}

/// One session ended by a logout; its id.
async fn logout_once(gw: &Gateway) -> String {
    let p = gw.login_ok("alice", "web").await;
    assert_eq!(
        gw.with_token("POST", "/auth/logout", &p.access)
            .await
            .status,
        204
    );
    p.sid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_is_down_is_retried_then_dropped_and_counted() {
    let dead = dead_addr().await;
    let gw = fault_gateway(
        &[format!("http://{dead}/hooks/session")],
        "timeout = \"300ms\"\nretries = 2",
    )
    .await;
    let t = Instant::now();
    logout_once(&gw).await;
    logout_once(&gw).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    count_is(&gw.app, undelivered, 2).await;
    count_is(&gw.app, sent, 0).await;
    // The metric is the process's (other tests' gateways count there too): at least these.
    let r = gw.admin.get("/metrics", &[]).await;
    assert!(
        value(&r.body, UNDELIVERED).is_some_and(|n| n >= 2),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_500_is_retried_a_later_200_delivers_and_500s_to_the_end_drop() {
    let recv = Receiver::start(&[Answer::Status(500), Answer::Ok]).await;
    let gw = fault_gateway(
        &[recv.url("/hooks/session")],
        "timeout = \"1s\"\nretries = 1",
    )
    .await;
    let sid = logout_once(&gw).await;
    let got = recv.wait_for(2).await;
    count_is(&gw.app, sent, 1).await;
    assert_eq!(
        tally(&got),
        BTreeMap::from([(what(&sid, "session_ended", "logout"), 2)])
    );
    // The same event both times, signed afresh each time.
    assert_eq!(got[0].body, got[1].body);
    assert!(got.iter().all(|d| d.verified.is_ok()));

    recv.set(&[Answer::Status(500)]);
    let sid = logout_once(&gw).await;
    count_is(&gw.app, undelivered, 1).await;
    let got = recv.got();
    assert_eq!(
        tally(&got[2..]),
        BTreeMap::from([(what(&sid, "session_ended", "logout"), 2)])
    );
    count_is(&gw.app, sent, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_slower_than_the_timeout_is_retried_then_dropped() {
    // No answer at all: each attempt gives up at the timeout.
    let recv = Receiver::start(&[Answer::Hang]).await;
    let gw = fault_gateway(
        &[recv.url("/hooks/session")],
        "timeout = \"300ms\"\nretries = 1",
    )
    .await;
    logout_once(&gw).await;
    count_is(&gw.app, undelivered, 1).await;
    assert_eq!(recv.got().len(), 2, "the first attempt and one retry");

    // 200, but only after the timeout: too late, the same.
    recv.set(&[Answer::After(Duration::from_millis(900))]);
    recv.release();
    logout_once(&gw).await;
    count_is(&gw.app, undelivered, 2).await;
    assert_eq!(recv.got().len(), 4);
    count_is(&gw.app, sent, 0).await;
}

/// A logout-all of a user with 100 sessions while the receiver holds every delivery: the
/// logout answers while the receiver is still holding (it is never waited for), the events
/// beyond `max_queue` (and the few in flight) are dropped and counted, and the rest go out
/// once the receiver answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_drops_and_counts_and_never_slows_a_logout_all() {
    let recv = Receiver::start(&[Answer::Hang]).await;
    // A timeout far beyond the test's own bound: a logout that waited for a delivery would
    // fail the test rather than pass slowly.
    let gw = Gateway::start(Conf::new().store(StoreKind::Memory).section(&section(
        &[recv.url("/hooks/session")],
        "timeout = \"60s\"\nmax_queue = 10\nretries = 0",
    )))
    .await;
    // First fill the workers: four logouts whose deliveries the receiver holds.
    for _ in 0..authgate_workers() {
        logout_once(&gw).await;
    }
    recv.wait_holding(authgate_workers()).await;
    let lifetimes: Lifetimes = gw.app.live().lifetimes;
    let mut sids = Vec::new();
    for _ in 0..100 {
        let new = NewSession {
            user_id: "1001".into(),
            user_name: "alice".into(),
            tenant: None,
            roles: vec![],
            platform: "app".into(),
            device: None,
            ip: "127.0.0.1".into(),
            user_agent: None,
        };
        let c = gw
            .app
            .store
            .create(new, Some(100), lifetimes, gw.now_ms())
            .await
            .unwrap();
        assert!(c.kicked.is_empty());
        sids.push(c.session.id);
    }
    let access = gw.mint(&alice_on(&sids[0], "app"));
    let r = within(
        "a logout-all while the receiver holds every delivery",
        gw.with_token("POST", "/auth/logout-all", &access),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        recv.holding(),
        authgate_workers(),
        "answered while the receiver still held"
    );
    // Ten of the hundred wait in the queue; the other ninety were dropped at once.
    count_is(&gw.app, queue_full, 90).await;
    recv.set(&[Answer::Ok]);
    recv.release();
    count_is(&gw.app, sent, (authgate_workers() + 10) as u64).await;
    let got = recv.got();
    let ended: Vec<String> = got
        .iter()
        .filter(|d| d.what().2 == "logout_all")
        .map(|d| d.what().0)
        .collect();
    assert_eq!(ended.len(), 10);
    assert!(ended.iter().all(|s| sids.contains(s)));
    count_is(&gw.app, undelivered, 0).await;
}

/// An access token's identity for alice's session `sid` on `platform`.
fn alice_on(sid: &str, platform: &str) -> AccessIdentity {
    AccessIdentity {
        sub: "1001".into(),
        name: Some("alice".into()),
        sid: Some(sid.into()),
        plat: Some(platform.into()),
        tenant: None,
        roles: None,
    }
}

/// Deliveries at once (`notify::WORKERS`).
fn authgate_workers() -> usize {
    4
}

/// A reload that changes the url while events wait (four held by the old receiver, four
/// queued behind them): every one goes to the new url, the held ones at their next attempt;
/// none is lost. A reload with a secret too short is refused with its key and the old
/// config keeps notifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_sends_waiting_events_to_the_new_url() {
    let old = Receiver::start(&[Answer::Hang]).await;
    let new = Receiver::start(&[Answer::Ok]).await;
    let extra = "timeout = \"500ms\"\nretries = 5";
    let conf = Conf::new()
        .store(StoreKind::Memory)
        .platforms("max_sessions = { web = 1, h5 = 1, app = 10 }")
        .run_from_file()
        .section(&section(&[old.url("/hooks/session")], extra));
    let gw = Gateway::start(conf).await;
    let path = gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&path).unwrap();

    // Refused: the secret file holds 10 bytes.
    std::fs::write(gw.dir.path().join("short.key"), "0123456789").unwrap();
    let bad = text.replace("secret_env = \"T_NOTIFY\"", "secret_file = \"short.key\"");
    std::fs::write(&path, &bad).unwrap();
    let r = gw
        .admin_call("POST", "/admin/reload", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 400);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("notify.secret_file: the secret in")
            && body.contains("is 10 bytes; at least 32"),
        "{body}"
    );

    let mut sids = Vec::new();
    for _ in 0..8 {
        sids.push(gw.login_ok("alice", "app").await);
    }
    let r = gw
        .with_token("POST", "/auth/logout-all", &sids[0].access)
        .await;
    assert_eq!(r.status, 204);
    old.wait_holding(authgate_workers()).await;

    std::fs::write(
        &path,
        text.replace(&old.url("/hooks/session"), &new.url("/hooks/session")),
    )
    .unwrap();
    let r = gw
        .admin_call("POST", "/admin/reload", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let got = new.wait_for(8).await;
    let want: Vec<What> = sids
        .iter()
        .map(|p| what(&p.sid, "session_ended", "logout_all"))
        .collect();
    count_is(&gw.app, sent, 8).await;
    assert_eq!(tally(&new.got()), once(&want));
    assert_well_formed(&got, &[]);
    count_is(&gw.app, undelivered, 0).await;
    // The old receiver saw the four first attempts, never answered.
    assert!(old.got().len() >= authgate_workers());
}

/// The receiver's check refuses an event signed with another secret (it answers 400, and the
/// gateway drops the event after its retries) and one whose timestamp is too old; it takes
/// the genuine one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receivers_refuse_a_wrong_secret_and_an_old_timestamp() {
    let wrong = Receiver::with_secret(&[Answer::Ok], b"another-secret-of-thirty-two-bytes!!").await;
    let gw = fault_gateway(
        &[wrong.url("/hooks/session")],
        "timeout = \"1s\"\nretries = 0",
    )
    .await;
    logout_once(&gw).await;
    let got = wrong.wait_for(1).await;
    assert_eq!(got[0].verified, Err("signature mismatch".to_owned()));
    count_is(&gw.app, undelivered, 1).await;

    let right = Receiver::start(&[Answer::Ok]).await;
    let gw = fault_gateway(&[right.url("/hooks/session")], "").await;
    logout_once(&gw).await;
    let d = right.wait_for(1).await.remove(0);
    assert_eq!(d.verified, Ok(()));
    let key = NOTIFY_SECRET.as_bytes();
    let t: u64 = d.signature["t=".len()..d.signature.find(',').unwrap()]
        .parse()
        .unwrap();
    assert_eq!(
        verify(key, &d.signature, &d.body, t + TOLERANCE, TOLERANCE),
        Ok(())
    );
    assert!(
        verify(key, &d.signature, &d.body, t + TOLERANCE + 1, TOLERANCE)
            .unwrap_err()
            .contains("too old")
    );
    // A replay under a fresh timestamp does not match the signature.
    let replayed = d
        .signature
        .replacen(&format!("t={t}"), &format!("t={}", t + 1), 1);
    assert!(verify(key, &replayed, &d.body, t + 1, TOLERANCE).is_err());
    let mut tampered = d.body.to_vec();
    tampered[2] ^= 1;
    assert!(verify(key, &d.signature, &tampered, t, TOLERANCE).is_err());
}

/// The code block of the README that follows `marker` (a line of its own), whole.
fn readme_block(marker: &str) -> String {
    let readme = include_str!("../../README.md");
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README has {marker}"))
        .1;
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

/// A real event and its forgeries, for the README's verifiers: `(secret, header, body, now,
/// expected)`.
async fn cases_for_the_readme() -> Vec<(String, String, Vec<u8>, u64, bool)> {
    let recv = Receiver::start(&[Answer::Ok]).await;
    let gw = fault_gateway(&[recv.url("/hooks/session")], "").await;
    logout_once(&gw).await;
    let d = recv.wait_for(1).await.remove(0);
    let t: u64 = d.signature["t=".len()..d.signature.find(',').unwrap()]
        .parse()
        .unwrap();
    let body = d.body.to_vec();
    let mut tampered = body.clone();
    tampered[2] ^= 1;
    let s = NOTIFY_SECRET.to_owned();
    vec![
        (s.clone(), d.signature.clone(), body.clone(), t + 5, true),
        (
            "x".repeat(40),
            d.signature.clone(),
            body.clone(),
            t + 5,
            false,
        ),
        (
            s.clone(),
            d.signature.clone(),
            body.clone(),
            t + TOLERANCE + 1,
            false,
        ),
        (s.clone(), d.signature.clone(), tampered, t, false),
        (s, "t=1,v1=00".into(), body, t, false),
    ]
}

/// The README's Python verifier, run by `python3` on a real event and its forgeries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_python_verifier_takes_real_events_and_refuses_forgeries() {
    if !program_or_skip(
        "python3",
        &["--version"],
        "python3",
        "the README's Python verifier",
    ) {
        return;
    }
    let code = readme_block("<!-- notify: python verifier -->");
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{code}\nimport sys\nsecret, header, body, now = sys.argv[1], sys.argv[2], open(sys.argv[3], 'rb').read(), int(sys.argv[4])\nprint(verify(secret.encode(), header, body, now=now))\n"
    );
    std::fs::write(dir.path().join("v.py"), script).unwrap();
    for (i, (secret, header, body, at, want)) in
        cases_for_the_readme().await.into_iter().enumerate()
    {
        let body_path = dir.path().join(format!("body{i}"));
        std::fs::write(&body_path, &body).unwrap();
        let out = std::process::Command::new("python3")
            .arg(dir.path().join("v.py"))
            .args([&secret, &header])
            .arg(&body_path)
            .arg(at.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(said, if want { "True" } else { "False" }, "case {i}");
    }
}

/// The README's Java verifier, compiled by `javac` and run on a real event and its forgeries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_java_verifier_takes_real_events_and_refuses_forgeries() {
    if !program_or_skip(
        "javac",
        &["-version"],
        "default-jdk-headless",
        "the README's Java verifier",
    ) {
        return;
    }
    let code = readme_block("<!-- notify: java verifier -->");
    let dir = tempfile::tempdir().unwrap();
    let main = "\nclass Check {\n  public static void main(String[] a) throws Exception {\n    byte[] body = java.nio.file.Files.readAllBytes(java.nio.file.Path.of(a[2]));\n    System.out.println(AuthgateSignature.verify(a[0].getBytes(java.nio.charset.StandardCharsets.UTF_8), a[1], body, Long.parseLong(a[3]), 300));\n  }\n}\n";
    std::fs::write(
        dir.path().join("AuthgateSignature.java"),
        format!("{code}{main}"),
    )
    .unwrap();
    let out = std::process::Command::new("javac")
        .arg("-d")
        .arg(dir.path())
        .arg(dir.path().join("AuthgateSignature.java"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, (secret, header, body, at, want)) in
        cases_for_the_readme().await.into_iter().enumerate()
    {
        let body_path = dir.path().join(format!("body{i}"));
        std::fs::write(&body_path, &body).unwrap();
        let out = std::process::Command::new("java")
            .arg("-cp")
            .arg(dir.path())
            .arg("Check")
            .args([&secret, &header])
            .arg(&body_path)
            .arg(at.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(said, if want { "true" } else { "false" }, "case {i}");
    }
}

/// Not a test but a measurement (`cargo test --test it notify::measure -- --ignored
/// --nocapture`): delivery latency from a logout to the event's arrival at a local receiver,
/// and the logout's own latency with a receiver that answers and with one that hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn measure_delivery_and_logout_latency() {
    const N: usize = 300;
    fn pct(v: &mut [Duration], p: f64) -> Duration {
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
    async fn run(answer: Answer) -> (Vec<Duration>, Vec<Duration>) {
        let recv = Receiver::start(&[answer]).await;
        let gw = fault_gateway(
            &[recv.url("/hooks/session")],
            "timeout = \"2s\"\nretries = 0",
        )
        .await;
        let mut logout = Vec::new();
        let mut started = Vec::new();
        let lifetimes = gw.app.live().lifetimes;
        for _ in 0..N {
            // Sessions made in the store (a login per iteration would meet the flood guard).
            let new = NewSession {
                user_id: "1001".into(),
                user_name: "alice".into(),
                tenant: None,
                roles: vec![],
                platform: "web".into(),
                device: None,
                ip: "127.0.0.1".into(),
                user_agent: None,
            };
            let c = gw
                .app
                .store
                .create(new, None, lifetimes, gw.now_ms())
                .await
                .unwrap();
            let access = gw.mint(&alice_on(&c.session.id, "web"));
            let t = Instant::now();
            assert_eq!(
                gw.with_token("POST", "/auth/logout", &access).await.status,
                204
            );
            logout.push(t.elapsed());
            started.push((c.session.id, t));
        }
        let mut delivery = Vec::new();
        if answer == Answer::Ok {
            let got = recv.wait_for(N).await;
            for (sid, t) in started {
                let d = got.iter().find(|d| d.what().0 == sid).unwrap();
                delivery.push(d.at - t);
            }
        }
        (logout, delivery)
    }
    let (mut ok_logout, mut delivery) = run(Answer::Ok).await;
    let (mut hang_logout, _) = run(Answer::Hang).await;
    println!(
        "delivery (logout sent -> event at the receiver): median {:?}, p99 {:?}",
        pct(&mut delivery, 0.5),
        pct(&mut delivery, 0.99)
    );
    println!(
        "logout, receiver answering: median {:?}, p99 {:?}",
        pct(&mut ok_logout, 0.5),
        pct(&mut ok_logout, 0.99)
    );
    println!(
        "logout, receiver hanging:   median {:?}, p99 {:?}",
        pct(&mut hang_logout, 0.5),
        pct(&mut hang_logout, 0.99)
    );
}
