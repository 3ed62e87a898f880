//! The forward-auth recipes of `examples/` proven with the real servers: nginx (`auth_request`)
//! and Caddy (`forward_auth`), each started from its example file on loopback in front of a
//! real gateway and an app (the echo upstream, which adds a `refresh-token` of its own to every
//! answer, so that a leak of the app's copy shows). For each: the identity reaches the app and
//! a client's spoofed copies do not; a near-expiry token's refresh header reaches the client and
//! not the app; a revoked session, a missing token, a missing role and a wrong method are
//! refused with authgate's code visible to the client; a public route passes; a Redis outage is
//! a 503 with `Retry-After` and the code. Skipped loudly without nginx or caddy (failed under
//! `CI`).

use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use crate::support::*;

/// The identity headers of the default `[identity]`, as the echo upstream reports them.
const IDENTITY: [&str; 6] = [
    "x-user-id",
    "x-user-name",
    "x-tenant-id",
    "x-user-roles",
    "x-session-id",
    "x-user-platform",
];

/// A client's attempt to pass an identity: every header, in both spellings.
const SPOOFED: [(&str, &str); 8] = [
    ("X-User-Id", "evil"),
    ("X_User_Id", "evil"),
    ("x-user-name", "evil"),
    ("X-Tenant-Id", "evil"),
    ("X-User-Roles", "admin"),
    ("X-Session-Id", "evil"),
    ("X_Session_Id", "evil"),
    ("X-User-Platform", "evil"),
];

/// The app adds a refresh header of its own to every answer: the recipes must hide it.
fn app_refresh_header(h: &mut http::HeaderMap) {
    h.insert("refresh-token", HeaderValue::from_static("from-the-app"));
}

/// A gateway (sessions in memory, trusting the loopback proxy) and `front` in front of it and
/// its app; `None` when `front` is not installed (announced).
async fn setup(front: Front) -> Option<(Gateway, FrontProxy)> {
    let app = Upstream::echo_with(app_refresh_header).await;
    let conf = Conf::new()
        .store(StoreKind::Memory)
        .server(TRUST_LOOPBACK)
        .upstream(app);
    let gw = Gateway::start(conf).await;
    let proxy = FrontProxy::start(front, gw.addr, gw.upstream.addr).await?;
    Some((gw, proxy))
}

/// `method path` through the proxy with `headers`, and `Authorization: Bearer token` if given.
async fn call(
    via: &Probe,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = headers.to_vec();
    if let Some(a) = auth.as_deref() {
        h.push(("authorization", a));
    }
    via.request(method, path, &h, Bytes::new()).await
}

/// The identity headers the app saw, each with its values, any spelling (`_` or `-`) folded.
fn seen_identity(r: &Resp) -> Vec<(String, Vec<String>)> {
    let j = r.json();
    let headers = j["headers"].as_object().expect("an echo answer");
    headers
        .iter()
        .filter(|(k, _)| IDENTITY.contains(&k.replace('_', "-").as_str()))
        .map(|(k, v)| {
            let values = v
                .as_array()
                .expect("values")
                .iter()
                .map(|s| s.as_str().expect("text").to_owned())
                .collect();
            (k.clone(), values)
        })
        .collect()
}

/// The identity the app saw, as (lower-case name, value), sorted; one value per header.
fn identity_of(r: &Resp) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = seen_identity(r)
        .into_iter()
        .map(|(k, mut v)| {
            assert_eq!(v.len(), 1, "{k} reached the app {} times: {v:?}", v.len());
            (k, v.remove(0))
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

/// A refusal as the client of the proxy sees it: the status, authgate's code in
/// `X-Auth-Error` and in the JSON body, and nothing reached the app.
#[track_caller]
fn assert_refused(front: Front, r: &Resp, status: u16, code: &str) {
    let name = front.name();
    assert_eq!(
        r.status,
        status,
        "{name}: {:?} {}",
        r.headers,
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.header("x-auth-error"),
        Some(code),
        "{name}: {:?}",
        r.headers
    );
    assert_eq!(r.code(), code, "{name}");
    assert!(
        r.header("refresh-token").is_none(),
        "{name}: a refusal carries a refresh header: {:?}",
        r.headers
    );
}

async fn recipe(front: Front) {
    let Some((gw, proxy)) = setup(front).await else {
        return;
    };
    let name = front.name();
    let via = proxy.probe();

    // authgate's own endpoints on the same origin, through the proxy; verify is not among them.
    let alice = Pair::from_resp(&via.login("alice", ALICE_PW).await);
    let bob = Pair::from_resp(&via.login("bob", BOB_PW).await);
    let zhang = Pair::from_resp(&via.login("张三", ZHANG_PW).await);
    let r = call(
        &via,
        "GET",
        "/auth/verify",
        None,
        &[("x-forwarded-uri", "/public/x")],
    )
    .await;
    assert_eq!(r.status, 404, "{name}: verify is for the proxy alone");

    // The identity reaches the app, and only authgate's: every spoofed copy is gone.
    let r = call(&via, "GET", "/api/me", Some(&alice.access), &SPOOFED).await;
    assert_eq!(
        r.status,
        200,
        "{name}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.seen_path(), "/api/me");
    let want = [
        ("x-user-id", "1001"),
        ("x-user-name", "alice"),
        ("x-tenant-id", "acme"),
        ("x-user-roles", "admin,ops"),
        ("x-session-id", alice.sid.as_str()),
        ("x-user-platform", "web"),
    ];
    assert_eq!(identity_of(&r), pairs(&want), "{name}");
    assert!(r.seen("refresh-token").is_empty(), "{name}");
    assert!(
        r.header("refresh-token").is_none(),
        "{name}: the app's own refresh header reached the client: {:?}",
        r.headers
    );
    // A user with no tenant and no roles: those headers are absent, not empty and not the
    // client's (Caddy 2.6 would send its placeholder text); the rest exactly as authgate's own
    // proxy path sends them (non-ASCII values percent-encoded).
    let r = call(&via, "GET", "/api/me", Some(&zhang.access), &SPOOFED).await;
    assert_eq!(r.status, 200, "{name}");
    let direct = gw.get_auth("/api/me", &zhang.access).await;
    assert_eq!(direct.status, 200);
    let names: Vec<String> = identity_of(&r).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "x-session-id",
            "x-user-id",
            "x-user-name",
            "x-user-platform"
        ],
        "{name}"
    );
    assert_eq!(identity_of(&r), identity_of(&direct), "{name}");

    // A public route passes, with no identity at all: neither authgate's nor the client's.
    let r = call(&via, "GET", "/public/x?a=1", Some(&alice.access), &SPOOFED).await;
    assert_eq!(r.status, 200, "{name}");
    assert_eq!(r.json()["query"], "a=1", "{name}");
    assert_eq!(seen_identity(&r), vec![], "{name}");
    let r = call(&via, "GET", "/public/x", None, &SPOOFED).await;
    assert_eq!(r.status, 200, "{name}");
    assert_eq!(seen_identity(&r), vec![], "{name}");
    assert!(r.header("refresh-token").is_none(), "{name}");

    // Refusals, each with authgate's code, none reaching the app.
    let hits = gw.hits();
    let r = call(&via, "GET", "/api/me", None, &SPOOFED).await;
    assert_refused(front, &r, 401, "missing_token");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{name}: {:?}",
        r.headers
    );
    let r = call(&via, "GET", "/api/me", Some("not.a.token"), &[]).await;
    assert_refused(front, &r, 401, "invalid_token");
    let r = call(&via, "GET", "/admin/x", Some(&bob.access), &[]).await;
    assert_refused(front, &r, 403, "forbidden");
    // Not a 401 or 403: nginx's auth_request would make it a 500.
    let r = call(&via, "POST", "/get-only/x", None, &[]).await;
    assert_refused(front, &r, 405, "method_not_allowed");
    // A revoked session (logged out through the proxy).
    let r = call(&via, "POST", "/auth/logout", Some(&bob.access), &[]).await;
    assert_eq!(
        r.status,
        204,
        "{name}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let r = call(&via, "GET", "/api/me", Some(&bob.access), &[]).await;
    assert_refused(front, &r, 401, "session_revoked");
    assert_eq!(gw.hits(), hits, "{name}: a refusal reached the app");

    // A token near expiry: the fresh one rides back to the client, never to the app, and the
    // answer is not to be stored. The app's own copy of the header never gets through.
    let ttl = gw.app.live().config.token.access_ttl;
    gw.advance(ttl - Duration::from_secs(600));
    let r = call(&via, "GET", "/api/me", Some(&alice.access), &[]).await;
    assert_eq!(
        r.status,
        200,
        "{name}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let fresh = r
        .header("refresh-token")
        .unwrap_or_else(|| panic!("{name}: no refresh header: {:?}", r.headers))
        .to_owned();
    assert_eq!(
        r.headers.get_all("refresh-token").iter().count(),
        1,
        "{name}: {:?}",
        r.headers
    );
    assert_ne!(fresh, "from-the-app", "{name}");
    assert_eq!(payload_of(&fresh)["sid"], alice.sid.as_str(), "{name}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
    assert!(
        r.seen("refresh-token").is_empty(),
        "{name}: the app got the token"
    );
    for (k, v) in r.json()["headers"].as_object().expect("headers") {
        assert!(
            !v.to_string().contains(&fresh),
            "{name}: the fresh token reached the app in {k}"
        );
    }
    // The fresh token passes, and needs no refresh yet.
    let r = call(&via, "GET", "/api/me", Some(&fresh), &[]).await;
    assert_eq!(r.status, 200, "{name}");
    assert_eq!(r.seen("x-session-id"), [alice.sid.as_str()], "{name}");
    assert!(r.header("refresh-token").is_none(), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_recipe_passes_identity_and_refresh_and_relays_refusals() {
    recipe(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_recipe_passes_identity_and_refresh_and_relays_refusals() {
    recipe(Front::Caddy).await;
}

/// The session store lost: the client sees 503 `store_unavailable` with `Retry-After` (never
/// a 401, so it keeps its tokens), not nginx's 500; public routes still pass.
async fn store_down(front: Front) {
    let mut gw = gateway!(Conf::new().store(StoreKind::Redis).server(TRUST_LOOPBACK));
    let Some(proxy) = FrontProxy::start(front, gw.addr, gw.upstream.addr).await else {
        return;
    };
    let name = front.name();
    let via = proxy.probe();
    let alice = Pair::from_resp(&via.login("alice", ALICE_PW).await);
    assert_eq!(
        call(&via, "GET", "/api/me", Some(&alice.access), &[])
            .await
            .status,
        200
    );
    gw.stop_redis().await;
    let r = call(&via, "GET", "/api/me", Some(&alice.access), &[]).await;
    assert_refused(front, &r, 503, "store_unavailable");
    assert!(r.header("retry-after").is_some(), "{name}: {:?}", r.headers);
    assert!(r.header("www-authenticate").is_none(), "{name}");
    assert_eq!(
        call(&via, "GET", "/public/x", None, &[]).await.status,
        200,
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_relays_a_store_outage_as_503_with_retry_after() {
    store_down(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_relays_a_store_outage_as_503_with_retry_after() {
    store_down(Front::Caddy).await;
}

/// authgate itself unreachable: nginx's recipe answers a JSON 502 `upstream_unavailable`
/// rather than its HTML 500, and the app is not asked.
#[tokio::test]
async fn nginx_without_authgate_answers_502_json() {
    let app = Upstream::echo().await;
    let Some(proxy) = FrontProxy::start(Front::Nginx, dead_addr().await, app.addr).await else {
        return;
    };
    let r = call(&proxy.probe(), "GET", "/public/x", None, &[]).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.code(), "upstream_unavailable");
    assert_eq!(app.hits(), 0);
}

/// The Caddyfile is as `caddy fmt` writes it (Caddy warns at every start otherwise).
#[test]
fn the_caddy_example_is_formatted() {
    if !program_or_skip("caddy", &["version"], "caddy", "the Caddyfile format check") {
        return;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CADDY_EXAMPLE);
    let out = std::process::Command::new("caddy")
        .arg("fmt")
        .arg(&path)
        .output()
        .expect("run caddy fmt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        example(CADDY_EXAMPLE),
        "run `caddy fmt --overwrite {CADDY_EXAMPLE}`"
    );
}
