//! The login captcha (issue 11 point 7; contract §2 `[login.captcha]`, §5 `GET /auth/captcha`
//! and the captcha paragraph, §7, §8) through HTTP against the real gateway on port 0: the
//! endpoint's answer, `always` and `after_failures` (per username, per IP), single use, the
//! TTL on the gateway's clock, challenges of other ids, nothing counted toward lock-out, the
//! legacy login's body untouched, the per-IP rate limit with the store's count, and (from the
//! binary's stderr) the `captcha_failed` audit line.
//!
//! A test learns a challenge's answer by reading the store (`SessionStore::captcha_answer`,
//! which nothing in the gateway calls): what a person reads off the picture.
//!
//! Every case runs on both stores (`both_stores!`: memory, and a `redis-server` of its own).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use authgate::session::SessionStore;

use crate::support::*;

both_stores!(
    off_means_no_endpoint_and_no_captcha,
    the_endpoint_answers_a_png_challenge_never_cached,
    always_refuses_a_login_without_a_captcha_whatever_the_password,
    a_wrong_answer_is_invalid_and_spends_the_challenge,
    the_right_answer_in_any_case_logs_in_once,
    expired_foreign_and_unknown_challenges_are_refused,
    after_failures_asks_once_a_username_has_failed,
    after_failures_asks_once_an_ip_has_failed,
    captcha_refusals_never_count_toward_lockout,
    the_legacy_login_gets_the_body_as_sent,
    the_endpoint_is_rate_limited_per_ip_and_stores_only_what_it_answered,
);

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
const DATA_URL: &str = "data:image/png;base64,";

/// A gateway with the test users and `[login.captcha]` of these lines.
fn conf(store: StoreKind, captcha: &str) -> Conf {
    Conf::new()
        .store(store)
        .section(&format!("[login.captcha]\n{captcha}"))
}

/// A new challenge from `GET /auth/captcha` (as seen from `ip`, when the gateway trusts the
/// test's loopback peer) and its answer, read off the store.
async fn challenge_from(gw: &Gateway, ip: Option<&str>) -> (String, String) {
    let headers: Vec<(&str, &str)> = ip.map(|ip| ("x-forwarded-for", ip)).into_iter().collect();
    let r = gw.get("/auth/captcha", &headers).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["captcha_id"]
        .as_str()
        .expect("a captcha_id")
        .to_owned();
    let answer = gw
        .app
        .store
        .captcha_answer(&id, gw.now_ms())
        .await
        .expect("the store answers")
        .expect("a live challenge");
    (id, answer)
}

async fn challenge(gw: &Gateway) -> (String, String) {
    challenge_from(gw, None).await
}

/// `POST /auth/login` with the captcha fields given (from `ip` as `X-Forwarded-For`).
async fn login(
    gw: &Gateway,
    user: &str,
    password: &str,
    captcha: (Option<&str>, Option<&str>),
    ip: Option<&str>,
) -> Resp {
    let mut body = json!({"username": user, "password": password});
    if let Some(id) = captcha.0 {
        body["captcha_id"] = id.into();
    }
    if let Some(answer) = captcha.1 {
        body["captcha"] = answer.into();
    }
    gw.post(
        "/auth/login",
        ip.map(|ip| ("x-forwarded-for", ip)),
        body.to_string(),
    )
    .await
}

/// Asserts a 401 of the captcha: its code, also in `X-Auth-Error`, and no Bearer challenge
/// (no bearer token was presented, as for `invalid_credentials`).
#[track_caller]
fn assert_captcha_refused(r: &Resp, code: &str) {
    r.assert_error(401, code);
    assert_eq!(r.header("x-auth-error"), Some(code));
    assert_eq!(r.header("www-authenticate"), None);
}

async fn off_means_no_endpoint_and_no_captcha(store: StoreKind) {
    let gw = gateway!(Conf::new().store(store));
    for method in ["GET", "POST", "HEAD"] {
        let r = gw.request(method, "/auth/captcha", &[], Bytes::new()).await;
        assert_eq!(r.status, 404, "{method}");
        if method != "HEAD" {
            assert_eq!(r.code(), "not_found");
        }
    }
    // Logins need none, and captcha fields in the body change nothing.
    Pair::from_resp(&login(&gw, "alice", ALICE_PW, (None, None), None).await);
    let r = login(&gw, "alice", ALICE_PW, (Some("x"), Some("y")), None).await;
    Pair::from_resp(&r);
}

async fn the_endpoint_answers_a_png_challenge_never_cached(store: StoreKind) {
    let gw = gateway!(conf(store, "mode = \"always\"\nttl = \"90s\""));
    let r = gw.get("/auth/captcha", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    let mut keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["captcha_id", "expires_in", "image"], "{j}");
    assert_eq!(j["expires_in"], 90);
    let id = j["captcha_id"].as_str().unwrap();
    assert_eq!(id.len(), 22, "128 bits, base64url: {id}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let image = j["image"].as_str().unwrap();
    let b64 = image.strip_prefix(DATA_URL).expect("a PNG data URL");
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    assert!(png.starts_with(PNG), "not a PNG");
    // Every challenge is new.
    let (other, _) = challenge(&gw).await;
    assert_ne!(other, id);
    // Other methods: 405.
    for method in ["POST", "PUT", "DELETE", "HEAD"] {
        let r = gw.request(method, "/auth/captcha", &[], Bytes::new()).await;
        assert_eq!(r.status, 405, "{method}");
    }
    assert!(
        metric(&gw.admin, "authgate_captchas_total", &["result=\"issued\""]).await >= 2.0,
        "issued challenges are counted"
    );
}

async fn always_refuses_a_login_without_a_captcha_whatever_the_password(store: StoreKind) {
    let gw = gateway!(conf(store, "mode = \"always\""));
    // The password is not looked at: right or wrong, the answer is the same.
    for pw in [ALICE_PW, "wrong"] {
        let r = login(&gw, "alice", pw, (None, None), None).await;
        assert_captcha_refused(&r, "captcha_required");
    }
    // An answer without an id, an id without an answer.
    let (id, answer) = challenge(&gw).await;
    let r = login(&gw, "alice", ALICE_PW, (None, Some(&answer)), None).await;
    assert_captcha_refused(&r, "captcha_required");
    let r = login(&gw, "alice", ALICE_PW, (Some(&id), None), None).await;
    assert_captcha_refused(&r, "captcha_required");
    // That spent it: the right answer now is too late.
    let r = login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), None).await;
    assert_captcha_refused(&r, "captcha_required");
    // Not JSON strings.
    let (id, _) = challenge(&gw).await;
    let body = json!({"username": "alice", "password": ALICE_PW, "captcha_id": [id], "captcha": 5});
    let r = gw.post("/auth/login", None, body.to_string()).await;
    assert_captcha_refused(&r, "captcha_required");
}

async fn a_wrong_answer_is_invalid_and_spends_the_challenge(store: StoreKind) {
    let gw = gateway!(conf(store, "mode = \"always\""));
    let (id, answer) = challenge(&gw).await;
    // No answer is ever "wrong!" (the alphabet has no `o`, `g` or `!`).
    let r = login(&gw, "alice", ALICE_PW, (Some(&id), Some("wrong!")), None).await;
    assert_captcha_refused(&r, "invalid_captcha");
    let r = login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), None).await;
    assert_captcha_refused(&r, "captcha_required");
    assert_eq!(
        gw.app.store.captcha_answer(&id, gw.now_ms()).await.unwrap(),
        None,
        "spent"
    );
}

async fn the_right_answer_in_any_case_logs_in_once(store: StoreKind) {
    let gw = gateway!(conf(store, "mode = \"always\""));
    let (id, answer) = challenge(&gw).await;
    let typed = format!("  {}\t", answer.to_uppercase());
    let r = login(&gw, "alice", ALICE_PW, (Some(&id), Some(&typed)), None).await;
    let p = Pair::from_resp(&r);
    assert_eq!(p.json["user"], json!({"id": "1001", "name": "alice"}));
    gw.assert_passes(&p).await;
    // Answered twice: the second is too late.
    let r = login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), None).await;
    assert_captcha_refused(&r, "captcha_required");
    // A right captcha does not make a wrong password right.
    let (id, answer) = challenge(&gw).await;
    login(&gw, "alice", "wrong", (Some(&id), Some(&answer)), None)
        .await
        .assert_error(401, "invalid_credentials");
}

async fn expired_foreign_and_unknown_challenges_are_refused(store: StoreKind) {
    let gw = gateway!(conf(store, "mode = \"always\"\nttl = \"10s\""));
    // Live until its ttl is over, by the gateway's clock (Redis's own TTL is still running).
    let (id, answer) = challenge(&gw).await;
    gw.advance(Duration::from_secs(10));
    let r = login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), None).await;
    assert_captcha_refused(&r, "captcha_required");

    // Another challenge's answer for this id is wrong (and spends this one).
    let (a, answer_a) = challenge(&gw).await;
    let (b, answer_b) = loop {
        let (b, answer_b) = challenge(&gw).await;
        if answer_b != answer_a {
            break (b, answer_b);
        }
    };
    let r = login(&gw, "alice", ALICE_PW, (Some(&a), Some(&answer_b)), None).await;
    assert_captcha_refused(&r, "invalid_captcha");
    // The other one is untouched by that and still answers.
    let r = login(&gw, "alice", ALICE_PW, (Some(&b), Some(&answer_b)), None).await;
    Pair::from_resp(&r);

    // Ids never issued, well-formed or not.
    let (_, answer) = challenge(&gw).await;
    for id in ["AAAAAAAAAAAAAAAAAAAAAA", "not-an-id", "", &"x".repeat(5000)] {
        let r = login(&gw, "alice", ALICE_PW, (Some(id), Some(&answer)), None).await;
        assert_captcha_refused(&r, "captcha_required");
    }
}

async fn after_failures_asks_once_a_username_has_failed(store: StoreKind) {
    let gw = gateway!(conf(store, "mode = \"after_failures\"\nafter_failures = 2")
        .server(TRUST_LOOPBACK)
        .lockout("max_failures = 5\nmax_failures_per_ip = 50"));
    let (a, b, c) = (
        Some("203.0.113.1"),
        Some("203.0.113.2"),
        Some("203.0.113.3"),
    );
    // The first logins need none.
    for _ in 0..2 {
        login(&gw, "alice", "wrong", (None, None), a)
            .await
            .assert_error(401, "invalid_credentials");
    }
    // Now alice needs one, from any address; bob does not.
    let r = login(&gw, "Alice ", ALICE_PW, (None, None), b).await;
    assert_captcha_refused(&r, "captcha_required");
    Pair::from_resp(&login(&gw, "bob", BOB_PW, (None, None), b).await);
    let (id, answer) = challenge_from(&gw, b).await;
    Pair::from_resp(&login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), b).await);
    // Her success cleared her failures: no captcha any more (from an address with none).
    Pair::from_resp(&login(&gw, "alice", ALICE_PW, (None, None), c).await);
}

async fn after_failures_asks_once_an_ip_has_failed(store: StoreKind) {
    let gw = gateway!(conf(store, "mode = \"after_failures\"\nafter_failures = 2")
        .server(TRUST_LOOPBACK)
        .lockout("max_failures = 5\nmax_failures_per_ip = 50"));
    let (a, b) = (Some("198.51.100.1"), Some("198.51.100.2"));
    for user in ["mallory", "trudy"] {
        login(&gw, user, "guess", (None, None), a)
            .await
            .assert_error(401, "invalid_credentials");
    }
    // Everyone from that address needs one; from another, nobody.
    for user in ["bob", "alice"] {
        let r = login(&gw, user, password_of(user), (None, None), a).await;
        assert_captcha_refused(&r, "captcha_required");
    }
    Pair::from_resp(&login(&gw, "bob", BOB_PW, (None, None), b).await);
    let (id, answer) = challenge_from(&gw, a).await;
    Pair::from_resp(&login(&gw, "bob", BOB_PW, (Some(&id), Some(&answer)), a).await);
    // A success does not clear an address's failures: it still needs one.
    let r = login(&gw, "alice", ALICE_PW, (None, None), a).await;
    assert_captcha_refused(&r, "captcha_required");
}

async fn captcha_refusals_never_count_toward_lockout(store: StoreKind) {
    // Always: far more captcha refusals than either limit, then the right login passes.
    let gw = gateway!(
        conf(store, "mode = \"always\"").lockout("max_failures = 2\nmax_failures_per_ip = 3")
    );
    for _ in 0..5 {
        let r = login(&gw, "alice", ALICE_PW, (None, None), None).await;
        assert_captcha_refused(&r, "captcha_required");
        let (id, _) = challenge(&gw).await;
        let r = login(&gw, "alice", "wrong", (Some(&id), Some("wrong!")), None).await;
        assert_captcha_refused(&r, "invalid_captcha");
    }
    let (id, answer) = challenge(&gw).await;
    Pair::from_resp(&login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), None).await);

    // After failures: the two failures that bring the captcha, then captcha refusals: had
    // those counted, the third attempt would have locked alice (max_failures = 3).
    let gw = gateway!(conf(store, "mode = \"after_failures\"\nafter_failures = 2")
        .lockout("max_failures = 3\nmax_failures_per_ip = 50"));
    for _ in 0..2 {
        login(&gw, "alice", "wrong", (None, None), None)
            .await
            .assert_error(401, "invalid_credentials");
    }
    for _ in 0..4 {
        let r = login(&gw, "alice", "wrong", (None, None), None).await;
        assert_captcha_refused(&r, "captcha_required");
    }
    let (id, answer) = challenge(&gw).await;
    Pair::from_resp(&login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), None).await);
}

async fn the_legacy_login_gets_the_body_as_sent(store: StoreKind) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let bodies = seen.clone();
    let legacy = Upstream::start(move |req| {
        let bodies = bodies.clone();
        async move {
            let b = req.into_body().collect().await.expect("body").to_bytes();
            bodies
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&b).expect("JSON"));
            let mut r = Response::new(authgate::body::full(r#"{"data":{"id":7}}"#));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
    })
    .await;
    let gw = gateway!(conf(store, "mode = \"always\"").login(&format!(
        "backend = \"upstream\"\nupstream_url = \"http://{}/api/login\"\nuser_id_pointer = \"/data/id\"",
        legacy.addr
    )));
    // Refused by the captcha: the legacy login is never asked.
    let r = login(&gw, "bob", "legacy-pw", (None, None), None).await;
    assert_captcha_refused(&r, "captcha_required");
    assert_eq!(legacy.hits(), 0);
    let (id, answer) = challenge(&gw).await;
    let body =
        json!({"username": "bob", "password": "legacy-pw", "captcha_id": id, "captcha": answer});
    let r = gw.post("/auth/login", None, body.to_string()).await;
    assert_eq!(Pair::from_resp(&r).json["user"]["id"], "7");
    assert_eq!(*seen.lock().unwrap(), [body], "passed on unchanged");
}

async fn the_endpoint_is_rate_limited_per_ip_and_stores_only_what_it_answered(store: StoreKind) {
    let mut gw = gateway!(conf(store, "mode = \"always\"").server(TRUST_LOOPBACK));
    let client = [("x-forwarded-for", "203.0.113.9")];
    let (mut answered, mut limited) = (0, 0);
    for _ in 0..40 {
        let r = gw.get("/auth/captcha", &client).await;
        match r.status {
            200 => answered += 1,
            429 => {
                assert_eq!(r.code(), "rate_limited");
                assert_eq!(r.header("retry-after"), Some("1"));
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert!(limited > 0, "no request was refused");
    assert!(answered >= 10, "the first ten of a second are answered");
    // Only what was answered is kept, each for its ttl (Redis: a key with a TTL).
    let prefix = gw.prefix.clone();
    match &gw.app.store {
        SessionStore::Memory(m) => {
            assert_eq!(m.captcha_count(), answered);
        }
        SessionStore::Redis(_) => {
            let keys = gw.redis().keys(&format!("{prefix}captcha:*"));
            assert_eq!(keys.len(), answered, "{keys:?}");
            for k in &keys {
                let pttl: i64 = gw.redis().command(&["PTTL", k]).unwrap().parse().unwrap();
                assert!(pttl > 0 && pttl <= 120_000, "{k}: {pttl}");
            }
        }
    }
    // Another address is not limited by this one.
    let other = [("x-forwarded-for", "203.0.113.10")];
    assert_eq!(gw.get("/auth/captcha", &other).await.status, 200);
}

/// Redis down: the failures count on in this instance (twice each, so a challenge is asked for
/// sooner, never later), challenges are issued and checked from its memory, and what was
/// counted there still holds once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_keeps_the_captcha_on_this_instance() {
    // A lock-out limit far enough above the captcha's that the weighted counts ask for the
    // captcha before they lock.
    let mut gw =
        gateway!(conf(StoreKind::Redis, "mode = \"after_failures\"").lockout("max_failures = 10"));
    gw.stop_redis().await;
    // Two failures, each counted twice here while Redis is gone: past `after_failures = 3`.
    // (Answered 503, as the right password is then.)
    for _ in 0..2 {
        login(&gw, "alice", "wrong", (None, None), None)
            .await
            .assert_error(503, "store_unavailable");
    }
    login(&gw, "alice", ALICE_PW, (None, None), None)
        .await
        .assert_error(401, "captcha_required");
    // A challenge comes from this instance's memory and is checked there; the right password
    // then gets 503, since no session can be stored.
    let (id, answer) = challenge(&gw).await;
    login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), None)
        .await
        .assert_error(503, "store_unavailable");
    gw.redis().restart();
    gw.until_ready("/readyz after the Redis restart").await;
    // The IP's failures counted here still ask for a challenge; one from Redis passes.
    login(&gw, "alice", ALICE_PW, (None, None), None)
        .await
        .assert_error(401, "captcha_required");
    let (id, answer) = challenge(&gw).await;
    Pair::from_resp(&login(&gw, "alice", ALICE_PW, (Some(&id), Some(&answer)), None).await);
}

/// `captcha_failed` in the binary's own stderr, with the attempted username and the reason,
/// for both refusals; never the password.
#[test]
fn captcha_failed_is_audited_with_the_attempted_username() {
    let dir = tempfile::tempdir().expect("config folder");
    std::fs::write(dir.path().join("users.toml"), users_toml()).expect("users.toml");
    let upstream = "127.0.0.1:9".parse().expect("an address");
    let text = conf(StoreKind::Memory, "mode = \"always\"").render(upstream);
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, text).expect("gateway.toml");
    // Killed on drop, whatever the test comes to.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(["run", "-c"])
            .arg(&config)
            .env("T_SECRET", SECRET)
            .env("T_ADMIN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn authgate"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push(line.clone());
            let _ = tx.send(line);
        }
        all
    });
    let next = |what: &str, pick: &dyn Fn(&Value) -> bool| loop {
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("authgate logged no {what}"));
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if pick(&v) {
                return (v, line);
            }
        }
    };
    let (listening, _) = next("`listening` line", &|v| {
        v["fields"]["message"] == "listening" || v["message"] == "listening"
    });
    let addr = listening["fields"]["addr"]
        .as_str()
        .or(listening["addr"].as_str())
        .unwrap_or_else(|| panic!("no address in {listening}"))
        .parse()
        .expect("an address");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let probe = Probe::new(addr);
    let audited = |what: &str| {
        next(what, &|v| {
            v["audit"] == true && v["event"] == "captcha_failed"
        })
    };

    let body = json!({"username": "carol", "password": "secret-pw"}).to_string();
    let r = rt.block_on(probe.post("/auth/login", None, body));
    assert_eq!(r.status, 401);
    let (v, line) = audited("captcha_failed line");
    assert_eq!(v["username"], "carol", "{line}");
    assert_eq!(v["reason"], "captcha_required", "{line}");
    assert_eq!(v["ip"], "127.0.0.1", "{line}");
    assert_eq!(v["platform"], "web", "{line}");
    assert!(!line.contains("secret-pw"), "{line}");

    let r = rt.block_on(probe.get("/auth/captcha", &[]));
    let id = r.json()["captcha_id"].as_str().unwrap().to_owned();
    let body =
        json!({"username": "dave", "password": "secret-pw", "captcha_id": id, "captcha": "wrong!"});
    let r = rt.block_on(probe.post("/auth/login", None, body.to_string()));
    assert_eq!(r.status, 401);
    let (v, line) = audited("second captcha_failed line");
    assert_eq!(v["username"], "dave", "{line}");
    assert_eq!(v["reason"], "invalid_captcha", "{line}");
    assert!(!line.contains("secret-pw"), "{line}");
    // Everything it wrote, through the suite's leak check.
    drop(child);
    crate::support::logs::check_lines(&reader.join().expect("the stderr reader"));
}
