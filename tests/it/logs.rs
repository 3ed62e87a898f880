//! The gateway's logs as an operator reads them (contract §4.8, §8): the access line of each
//! kind of request, `X-Request-Id` (made, kept from a trusted proxy, replaced from anyone
//! else) on the answer, upstream, in the error JSON and in the audit lines; `traceparent`
//! passing through; `log.access = false`; refusal lines with their context; the attempted
//! username and the admin's address in the audit lines; Redis lost and back once each; and the
//! leak check that every gateway of the suite runs over its lines (`support::logs`).

use std::collections::HashSet;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::logs::{access_line, find_lines, leaks, wait_line};
use crate::support::*;

/// The id the gateway put on an answer.
fn id_of(r: &Resp) -> String {
    r.header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on {} {:?}", r.status, r.headers))
        .to_owned()
}

fn is_made_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `2025-01-01T00:00:00.000Z`
fn is_rfc3339(ts: &Value) -> bool {
    let t = ts.as_str().unwrap_or_default().as_bytes();
    t.len() == 24 && t[4] == b'-' && t[10] == b'T' && t[19] == b'.' && t[23] == b'Z'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_request_s_access_line_has_every_field_and_never_the_query() {
    let gw = gateway!(Conf::new().store(StoreKind::Memory));
    let p = gw.login_ok("alice", "web").await;
    let r = gw.get_auth("/api/./me?token=never-logged", &p.access).await;
    assert_eq!(r.status, 200);
    let id = id_of(&r);
    assert!(is_made_id(&id), "{id}");
    assert_eq!(
        r.seen("x-request-id"),
        [id.as_str()],
        "the upstream sees it"
    );
    let v = access_line(&id).await;
    assert!(is_rfc3339(&v["ts"]), "{v}");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/api/me", "canonical, without the query: {v}");
    assert_eq!(v["route"], "/");
    assert_eq!(v["status"], 200);
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(v["user_id"], "1001");
    assert_eq!(v["session_id"], p.sid.as_str());
    assert_eq!(v["upstream"], "up");
    assert!(v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{v}");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert!(!v.to_string().contains("never-logged"), "{v}");
}

#[tokio::test]
async fn refused_requests_have_their_code_user_and_no_upstream() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw.get_auth("/admin/x", &gw.mint(&bob())).await;
    r.assert_error(403, "forbidden");
    let v = access_line(&id_of(&r)).await;
    assert_eq!(v["status"], 403);
    assert_eq!(v["error"], "forbidden");
    assert_eq!(v["route"], "/admin");
    assert_eq!(v["user_id"], "2002");
    assert_eq!(v["session_id"], "sess-bob");
    assert!(v["upstream"].is_null(), "nothing went upstream: {v}");

    let r = gw.get("/api/x", &[]).await;
    r.assert_error(401, "missing_token");
    let v = access_line(&id_of(&r)).await;
    assert_eq!(
        (v["status"].as_u64(), v["error"].as_str()),
        (Some(401), Some("missing_token"))
    );
    assert!(v["user_id"].is_null() && v["upstream"].is_null(), "{v}");
}

#[tokio::test]
async fn a_refusal_s_line_says_path_client_request_id_and_cause() {
    let gw = Gateway::start(Conf::new()).await;
    let forged = jwt_hs256(
        &hs256_header(),
        &good_claims(),
        b"not-the-gateway-secret-at-all!!",
    );
    let r = gw.get_auth("/api/x?q=1", &forged).await;
    r.assert_error(401, "invalid_token");
    let id = id_of(&r);
    let want = id.clone();
    let v = wait_line("the refusal line", move |v| {
        v["message"] == "refused" && v["request_id"] == want.as_str()
    })
    .await;
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["code"], "invalid_token");
    assert_eq!(v["status"], 401);
    assert_eq!(v["path"], "/api/x");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert!(v["reason"].is_string(), "the cause: {v}");
}

#[tokio::test]
async fn auth_endpoint_lines_carry_the_session_they_made() {
    let gw = gateway!(Conf::new().store(StoreKind::Memory));
    let r = gw.login_on("alice", ALICE_PW, Some("web")).await;
    let p = Pair::from_resp(&r);
    let v = access_line(&id_of(&r)).await;
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/auth/login");
    assert!(v["route"].is_null() && v["upstream"].is_null(), "{v}");
    assert_eq!(v["status"], 200);
    assert_eq!(v["user_id"], "1001");
    assert_eq!(v["session_id"], p.sid.as_str());

    let r = gw.login("alice", "wrong").await;
    r.assert_error(401, "invalid_credentials");
    let v = access_line(&id_of(&r)).await;
    assert_eq!(v["error"], "invalid_credentials");
    assert!(v["user_id"].is_null(), "{v}");
}

#[tokio::test]
async fn a_websocket_upgrade_has_its_access_line() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() && ws.send(m).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    let gw = Gateway::start(Conf::new().urls(vec![format!("http://{ws_addr}")])).await;
    let mut req = format!("ws://{}/ws?room=never-logged", gw.addr)
        .into_client_request()
        .unwrap();
    let auth = format!("Bearer {}", gw.mint(&alice()));
    crate::support::logs::secret(auth.trim_start_matches("Bearer "));
    req.headers_mut()
        .insert("authorization", auth.parse().unwrap());
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, resp) = within("the upgrade", tokio_tungstenite::client_async(req, stream))
        .await
        .expect("the upgrade succeeds");
    assert_eq!(resp.status(), 101);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    client.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        within("the echo", client.next()).await.unwrap().unwrap(),
        Message::text("hi")
    );
    let v = access_line(&id).await;
    assert_eq!(v["status"], 101);
    assert_eq!(v["path"], "/ws");
    assert_eq!(v["upstream"], "up");
    assert_eq!(v["user_id"], "1001");
}

#[tokio::test]
async fn a_trusted_proxy_s_id_is_kept_anyone_else_s_replaced() {
    let trusting = Gateway::start(Conf::new().server(TRUST_LOOPBACK)).await;
    let r = trusting
        .get("/public/x", &[("x-request-id", "edge-42:abc")])
        .await;
    assert_eq!(id_of(&r), "edge-42:abc");
    assert_eq!(r.seen("x-request-id"), ["edge-42:abc"]);
    assert_eq!(access_line("edge-42:abc").await["status"], 200);
    // Unusable even from a trusted proxy: too long, or not visible ASCII, or two of them.
    let long = "a".repeat(129);
    for bad in [
        &[("x-request-id", long.as_str())][..],
        &[("x-request-id", "a b")],
        &[("x-request-id", "one"), ("x-request-id", "two")],
    ] {
        let r = trusting.get("/public/x", bad).await;
        let id = id_of(&r);
        assert!(is_made_id(&id), "{bad:?}: {id}");
        assert_eq!(r.seen("x-request-id"), [id.as_str()], "{bad:?}");
    }

    let untrusting = Gateway::start(Conf::new()).await;
    let r = untrusting
        .get(
            "/public/x",
            &[("x-request-id", "spoofed"), ("x_request_id", "spoofed")],
        )
        .await;
    let id = id_of(&r);
    assert!(is_made_id(&id), "{id}");
    assert_eq!(r.seen("x-request-id"), [id.as_str()]);
    assert!(
        r.seen("x_request_id").is_empty(),
        "no underscore copy either"
    );
}

#[tokio::test]
async fn the_id_is_in_error_json_on_both_listeners_and_on_verify_answers() {
    let gw = gateway!(Conf::new().store(StoreKind::Memory).server(TRUST_LOOPBACK));
    let r = gw.get("/api/x", &[]).await;
    assert_eq!(r.json()["request_id"], id_of(&r).as_str());
    assert_eq!(r.code(), "missing_token", "the contract's fields stay");

    let r = gw
        .admin_call("DELETE", "/admin/sessions/nope", Some(ADMIN_TOKEN))
        .await;
    r.assert_error(404, "not_found");
    assert_eq!(r.json()["request_id"], id_of(&r).as_str());
    assert_eq!(access_line(&id_of(&r)).await["status"], 404);

    let p = gw.login_ok("alice", "web").await;
    let r = gw.verify("/api/me", Some(&p.access)).await;
    assert_eq!(r.status, 200);
    let v = access_line(&id_of(&r)).await;
    assert_eq!(v["path"], "/auth/verify");
    assert_eq!(v["route"], "/", "the route of the forwarded URI");
    assert_eq!(v["user_id"], "1001");
    let r = gw.verify("/api/me", None).await;
    assert_eq!(r.status, 401);
    assert!(is_made_id(&id_of(&r)));
}

#[tokio::test]
async fn trace_context_passes_through_unchanged() {
    let gw = Gateway::start(Conf::new()).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ts = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let r = gw
        .get("/public/x", &[("traceparent", tp), ("tracestate", ts)])
        .await;
    assert_eq!(r.seen("traceparent"), [tp]);
    assert_eq!(r.seen("tracestate"), [ts]);
}

#[tokio::test]
async fn access_false_writes_no_access_line_but_keeps_the_id() {
    let gw = Gateway::start(Conf::new().section("[log]\naccess = false")).await;
    let r = gw.get("/public/x", &[]).await;
    assert_eq!(r.status, 200);
    let id = id_of(&r);
    assert_eq!(r.seen("x-request-id"), [id.as_str()]);
    let same = id.clone();
    let found = find_lines(move |v| v["request_id"] == same.as_str()).await;
    assert!(found.is_empty(), "{found:?}");
    // The counter of lines a full queue dropped is there from the start.
    let metrics = gw.admin.get("/metrics", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("authgate_log_lines_dropped_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_carry_the_username_the_admin_s_address_and_the_request_id() {
    let gw = gateway!(Conf::new()
        .store(StoreKind::Memory)
        .lockout("max_failures = 2\nwindow = \"1m\"\nduration = \"10m\""));
    let audit = |event: &'static str, id: String| {
        wait_line(event, move |v| {
            v["audit"] == true && v["event"] == event && v["request_id"] == id.as_str()
        })
    };
    let r = gw.login("bob", "wrong-1").await;
    let v = audit("login_failed", id_of(&r)).await;
    assert_eq!(v["username"], "bob");
    assert_eq!(v["ip"], "127.0.0.1");
    let r = gw.login("bob", "wrong-2").await;
    let v = audit("account_locked", id_of(&r)).await;
    assert_eq!(v["username"], "bob");
    let r = gw.login("bob", BOB_PW).await;
    r.assert_error(429, "account_locked");
    assert_eq!(audit("account_locked", id_of(&r)).await["username"], "bob");

    let p = gw.login_ok("alice", "web").await;
    let r = gw
        .admin_call(
            "DELETE",
            &format!("/admin/sessions/{}", p.sid),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(r.status, 204);
    let v = audit("admin_revoke", id_of(&r)).await;
    assert_eq!(v["ip"], "127.0.0.1");
    assert_eq!(v["session_id"], p.sid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_and_back_are_one_line_each() {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis));
    let p = gw.login_ok("alice", "web").await;
    gw.assert_passes(&p).await;
    let at = format!("127.0.0.1:{}", gw.redis().port());
    gw.redis().save();
    gw.stop_redis().await;
    for _ in 0..3 {
        gw.get_auth("/api/me", &p.access)
            .await
            .assert_error(503, "store_unavailable");
    }
    gw.redis().restart();
    gw.until_ready("Redis back").await;
    gw.assert_passes(&p).await;
    let mine = |what: &'static str| {
        let at = at.clone();
        move |v: &Value| {
            v["redis"] == at.as_str() && v["message"].as_str().is_some_and(|m| m.starts_with(what))
        }
    };
    wait_line("session store back", mine("session store back")).await;
    assert_eq!(find_lines(mine("session store lost")).await.len(), 1);
    assert_eq!(find_lines(mine("session store back")).await.len(), 1);
}

#[test]
fn the_leak_check_finds_tokens_cookie_values_and_queries() {
    let secrets: HashSet<String> = ["csrf-value-0123456789abcdef".to_owned()].into();
    let queries: HashSet<String> = ["return_to=%2Fa".to_owned()].into();
    let line = |path: &str| {
        format!(
            r#"{{"access":true,"ts":"2025-01-01T00:00:00.000Z","request_id":"abc","method":"GET","path":"{path}","status":200,"client_ip":"127.0.0.1"}}"#
        )
    };
    assert!(leaks(&line("/api/me"), &secrets, &queries).is_empty());
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMDAxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    let refresh = format!("MTAwMQ.{}.{}", "a".repeat(22), "b".repeat(43));
    for (leaky, kind) in [
        (line(&format!("/api/{jwt}")), "a JWT"),
        (format!(r#"{{"message":"token {jwt}"}}"#), "a JWT"),
        (line(&format!("/x/{refresh}")), "a refresh token"),
        (line("/x csrf-value-0123456789abcdef"), "the secret"),
        (line("/auth/login?return_to=%2Fa%2Fb"), "the query"),
    ] {
        let found = leaks(&leaky, &secrets, &queries);
        assert!(
            found.iter().any(|f| f.starts_with(kind)),
            "{kind} not found in {leaky}: {found:?}"
        );
    }
    // A session id alone (two segments) is not a refresh token; "did you mean x?" no query.
    let sid = format!("MTAwMQ.{}", "a".repeat(22));
    assert!(leaks(&line(&format!("/x/{sid}")), &secrets, &queries).is_empty());
    assert!(leaks(
        r#"{"message":"did you mean access_ttl?"}"#,
        &secrets,
        &queries
    )
    .is_empty());
}

/// The check runs over real lines: a secret a client sent, written into the capture the way
/// a leaking gateway would, fails it.
#[tokio::test]
async fn the_suite_wide_check_fails_on_a_leaked_cookie_value() {
    let gw = Gateway::start(Conf::new()).await;
    let cookie = "leak-probe-cookie-value-0123456789";
    let r = gw
        .get("/public/x", &[("cookie", &format!("sid={cookie}"))])
        .await;
    assert_eq!(r.status, 200);
    let mut line = access_line(&id_of(&r)).await;
    line["path"] = format!("/public/{cookie}").into();
    let caught = std::panic::catch_unwind(|| {
        crate::support::logs::check_lines(&[line.to_string()]);
    });
    assert!(caught.is_err(), "the leak went unnoticed");
}

/// `authgate --log-format json|text run`: the access line is the contract's JSON line, or a
/// readable text line; the refusal line (an upstream that refuses connections) names its
/// cause with the request's context either way.
#[test]
fn the_binary_writes_json_or_text_access_lines_as_asked() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let text = Conf::new().render("127.0.0.1:9".parse().unwrap());
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, text).unwrap();
        struct Running(std::process::Child);
        impl Drop for Running {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut child = Running(
            Command::new(env!("CARGO_BIN_EXE_authgate"))
                .args(["--log-format", format, "run", "-c"])
                .arg(&config)
                .env("T_SECRET", SECRET)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn authgate"),
        );
        let stderr = child.0.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push(line.clone());
                let _ = tx.send(line);
            }
            all
        });
        let next = |pick: &dyn Fn(&str) -> bool| loop {
            let line = rx.recv_timeout(WAIT).expect("a log line in time");
            if pick(&line) {
                return line;
            }
        };
        let listening = next(&|l| l.contains("listening"));
        let addr: std::net::SocketAddr = if format == "json" {
            let v: Value = serde_json::from_str(&listening).unwrap();
            v["addr"].as_str().unwrap().parse().unwrap()
        } else {
            let at = listening.find("addr=").expect("addr= in the text line") + 5;
            listening[at..].split(' ').next().unwrap().parse().unwrap()
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let r = rt.block_on(Probe::new(addr).get("/public/x?q=never-logged", &[]));
        r.assert_error(502, "upstream_unavailable");
        let id = id_of(&r);
        let refusal = next(&|l| l.contains(&id) && l.contains("refused"));
        let access = next(&|l| l.contains(&id) && l.contains("access"));
        if format == "json" {
            let v: Value = serde_json::from_str(&access).unwrap();
            assert_eq!(v["access"], true, "{access}");
            assert_eq!(v["status"], 502);
            assert_eq!(v["error"], "upstream_unavailable");
            assert_eq!(v["upstream"], "up");
            let v: Value = serde_json::from_str(&refusal).unwrap();
            assert_eq!(v["level"], "WARN", "{refusal}");
            assert_eq!(v["path"], "/public/x");
            assert!(
                v["reason"].as_str().unwrap().contains("connect failed"),
                "{refusal}"
            );
        } else {
            assert!(
                access.contains(" INFO access: GET /public/x 502 "),
                "{access}"
            );
            assert!(access.contains(" error=upstream_unavailable route=/public upstream=up "));
            assert!(access.contains(&format!("client_ip=127.0.0.1 request_id={id}")));
            assert!(!access.contains('{'), "{access}");
            assert!(refusal.contains("WARN"), "{refusal}");
            assert!(refusal.contains("path=/public/x"), "{refusal}");
            assert!(refusal.contains("connect failed"), "{refusal}");
        }
        drop(child);
        let lines = reader.join().unwrap();
        assert!(
            lines.iter().all(|l| !l.contains("never-logged")),
            "{lines:?}"
        );
        crate::support::logs::check_lines(&lines);
    }
}

/// A reload is one line saying what changed and which keys wait for a restart; a refused
/// one is one line with every problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_one_line_saying_what_changed() {
    let gw = gateway!(Conf::new().store(StoreKind::Memory).run_from_file());
    let path = gw.dir.path().join("gateway.toml");
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = text.replacen(
        "\nlisten = \"127.0.0.1:0\"",
        "\nlisten = \"127.0.0.1:1\"",
        1,
    ) + "\n[[routes]]\npath = \"/extra\"\nupstream = \"up\"\n";
    replace_by_rename(&path, &changed);
    let at = shown.clone();
    let v = wait_line("the reload line", move |v| {
        v["path"] == at.as_str()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reloaded"))
    })
    .await;
    assert_eq!(v["level"], "WARN", "a restart is needed: {v}");
    assert_eq!(v["changes"], "routes +/extra", "{v}");
    assert_eq!(v["restart_needed"], "server.listen", "{v}");

    let broken = changed.replace("upstream = \"up\"\n", "upstream = \"nope\"\n")
        + "\n[cors]\nmax_age = \"forever\"\n";
    replace_by_rename(&path, &broken);
    let at = shown.clone();
    let v = wait_line("the refused reload line", move |v| {
        v["path"] == at.as_str()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reload refused"))
    })
    .await;
    assert_eq!(v["level"], "ERROR");
    assert!(
        v["problems"].as_str().is_some_and(|p| p.contains("; ")),
        "every problem: {v}"
    );
    let at = shown.clone();
    let refused = find_lines(move |v| {
        v["path"] == at.as_str()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reload refused"))
    })
    .await;
    assert_eq!(refused.len(), 1, "{refused:?}");
}

/// An issuer whose keys cannot be fetched is one line, however often the retry fails the
/// same way; the first fetch that works says which keys it loaded, as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_key_failures_are_told_once_and_the_recovery_names_the_keys() {
    let key = IdpKey::generate("k-logs", jsonwebtoken::Algorithm::ES256);
    let idp = Idp::start(vec![key]).await;
    idp.set_fault(Fault::Status500);
    let extra = format!(
        "discovery = false\njwks_url = {:?}\nalgorithms = [\"ES256\"]",
        idp.jwks_url()
    );
    let gw = Gateway::start(Conf::new().section(&idp.issuer_toml(&extra))).await;
    let issuer = idp.issuer();
    let about = move |what: &'static str| {
        let issuer = issuer.clone();
        move |v: &Value| {
            v["issuer"] == issuer.as_str()
                && v["message"].as_str().is_some_and(|m| m.starts_with(what))
        }
    };
    // A fetch is over (and the next one scheduled from the gateway's clock) once it is
    // counted; only then may the clock move on.
    let label = format!("issuer=\"{}\"", idp.issuer());
    let fetched = |n: f64| {
        let label = label.clone();
        let admin = gw.admin.clone();
        async move {
            let labels = [label.as_str()];
            poll_until(
                "the fetch to be counted",
                || metric(&admin, "authgate_jwks_fetches_total", &labels),
                |v| *v >= n,
            )
            .await;
        }
    };
    fetched(1.0).await;
    wait_line("the failed fetch", about("issuer keys: fetch failed;")).await;
    for n in 2..=3 {
        gw.advance(std::time::Duration::from_secs(31));
        fetched(f64::from(n)).await;
    }
    idp.set_fault(Fault::None);
    gw.advance(std::time::Duration::from_secs(31));
    let v = wait_line("the loaded keys", about("issuer keys: loaded")).await;
    assert_eq!(v["kids"], "k-logs", "{v}");
    let failed = find_lines(about("issuer keys: fetch failed;")).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
}
