//! What an operator reads on the admin `/metrics`: requests in flight (requests, not
//! connections), upstream errors by kind, the build, and the Grafana dashboard in
//! `examples/grafana/` built on them. The registry is shared by every test of this binary,
//! so each test uses series of its own (its own upstream names) or allows for other tests'
//! scrapes of the shared gauges.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use authgate::body::full;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::support::*;

/// The admin `/metrics` text.
async fn scrape(gw: &Gateway) -> String {
    let r = gw.admin.get("/metrics", &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body.to_vec()).expect("UTF-8 metrics")
}

/// The series of `name` in `text` whose labels include all of `labels`: (labels, value).
fn series<'t>(text: &'t str, name: &str, labels: &[&str]) -> Vec<(&'t str, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labelled, value) = rest.rsplit_once(' ')?;
            let ok = labelled.is_empty() && labels.is_empty()
                || labelled.starts_with('{') && labels.iter().all(|w| labelled.contains(w));
            Some((labelled, value.parse().ok()?)).filter(|_| ok)
        })
        .collect()
}

/// The value of `authgate_requests_in_flight`, once it reads `want` (a few scrapes: another
/// test's scrape may set the shared gauge between ours and its rendering); panics otherwise.
async fn in_flight_reads(gw: &Gateway, want: f64) {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let text = scrape(gw).await;
        let v = series(&text, "authgate_requests_in_flight", &[]);
        assert_eq!(v.len(), 1, "{text}");
        if v[0].1 == want {
            return;
        }
        seen.push(v[0].1);
    }
    panic!("authgate_requests_in_flight: {seen:?}, want {want}");
}

#[tokio::test]
async fn requests_in_flight_counts_requests_on_http1_and_each_h2_stream_not_connections() {
    // The upstream holds every request under /public/slow until the test releases it, and
    // tells the test when one arrived; others it answers at once.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    let upstream = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let arrived = arrived_tx.clone();
        async move {
            if req.uri().path().ends_with("/slow") {
                let (release, released) = oneshot::channel();
                let _ = arrived.send(release);
                let _ = released.await;
            }
            Response::new(full("done"))
        }
    })
    .await;
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    in_flight_reads(&gw, 0.0).await;

    // An HTTP/1.1 keep-alive connection with one finished request: open, nothing in flight.
    let mut h1 = TcpStream::connect(gw.addr).await.unwrap();
    let head = b"GET /public/fast HTTP/1.1\r\nHost: gw\r\n\r\n";
    h1.write_all(head).await.unwrap();
    read_one_response(&mut h1).await;
    // One h2c connection, warmed up by a finished request, then three streams held on it.
    let h2 = h2c_client();
    let url = gw.url("/public/fast");
    let get = |url: String| Request::get(url).body(Full::<Bytes>::default()).unwrap();
    assert_eq!(send(&h2, get(url)).await.status, 200);
    in_flight_reads(&gw, 0.0).await;

    let streams: Vec<_> = (0..3)
        .map(|_| {
            let (h2, url) = (h2.clone(), gw.url("/public/slow"));
            tokio::spawn(async move { send(&h2, get(url)).await.status })
        })
        .collect();
    h1.write_all(b"GET /public/slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut releases = Vec::new();
    for _ in 0..4 {
        releases.push(within("a held request", arrived.recv()).await.unwrap());
    }
    // Four requests on two connections; the scrape on the admin listener is not one.
    in_flight_reads(&gw, 4.0).await;

    releases.pop().unwrap().send(()).unwrap();
    in_flight_reads(&gw, 3.0).await;
    for release in releases {
        release.send(()).unwrap();
    }
    for s in streams {
        assert_eq!(within("an h2 answer", s).await.unwrap(), 200);
    }
    read_one_response(&mut h1).await;
    // Both connections are still open, and nothing is in flight.
    in_flight_reads(&gw, 0.0).await;
    h1.write_all(head).await.unwrap();
    read_one_response(&mut h1).await;
}

/// Reads one whole response (it has a length) from a keep-alive connection.
async fn read_one_response(stream: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    within("a response", async {
        while response_len(&buf).is_none() {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let r = parse_response(&buf).unwrap();
    assert_eq!(r.status, 200);
    r
}

/// What a fake upstream does with each request head.
#[derive(Clone, Copy)]
enum Fake {
    /// Never answers (the connection stays open).
    Silent,
    /// Closes the connection.
    Close,
    /// Writes these bytes, then waits for the gateway to close.
    Answer(&'static [u8]),
    /// Writes these bytes and closes.
    AnswerAndClose(&'static [u8]),
}

/// A raw TCP upstream doing `fake` with every connection.
async fn fake_upstream(fake: Fake) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let hold = match fake {
                    Fake::Close => false,
                    Fake::Silent => true,
                    Fake::Answer(bytes) => stream.write_all(bytes).await.is_ok(),
                    Fake::AnswerAndClose(bytes) => {
                        let _ = stream.write_all(bytes).await;
                        false
                    }
                };
                if hold {
                    // Until the gateway closes its end.
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

const UPGRADE: &str = "GET /bad_upgrade/ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn upstream_errors_are_counted_by_upstream_and_kind_and_a_5xx_is_not_one() {
    let fakes: [(&str, Option<Fake>); 7] = [
        ("connect", None),
        ("timeout", Some(Fake::Silent)),
        ("reset", Some(Fake::Close)),
        (
            "protocol",
            Some(Fake::AnswerAndClose(b"SSH-2.0-OpenSSH\r\n\r\n")),
        ),
        (
            "bad_upgrade",
            Some(Fake::Answer(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")),
        ),
        (
            "body",
            Some(Fake::AnswerAndClose(
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ncut short",
            )),
        ),
        (
            "5xx",
            Some(Fake::Answer(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            )),
        ),
    ];
    // One upstream (named after this test) and one public route per case.
    let (mut upstreams, mut routes) = (String::new(), String::new());
    for (case, fake) in fakes {
        let addr = match fake {
            None => dead_addr().await,
            Some(f) => fake_upstream(f).await,
        };
        upstreams.push_str(&format!(
            "[[upstreams]]\nname = \"errs-{case}\"\nurls = [\"http://{addr}\"]\n\n"
        ));
        routes.push_str(&format!(
            "[[routes]]\npath = \"/{case}\"\nupstream = \"errs-{case}\"\nauth = \"public\"\n\n"
        ));
    }
    let gw = Gateway::start(
        Conf::new()
            .server("request_timeout = \"500ms\"")
            .section(&upstreams)
            .routes(&routes),
    )
    .await;
    // Every upstream's series are there at 0 before anything went wrong.
    let text = scrape(&gw).await;
    for (case, _) in fakes {
        let up = format!("upstream=\"errs-{case}\"");
        let found = series(&text, "authgate_upstream_errors_total", &[&up]);
        assert_eq!(found.len(), 6, "{case}: {found:?}");
        assert!(found.iter().all(|(_, v)| *v == 0.0), "{case}: {found:?}");
    }

    gw.get("/connect/x", &[])
        .await
        .assert_error(502, "upstream_unavailable");
    gw.get("/timeout/x", &[])
        .await
        .assert_error(504, "upstream_timeout");
    gw.get("/reset/x", &[])
        .await
        .assert_error(502, "upstream_unavailable");
    gw.get("/protocol/x", &[])
        .await
        .assert_error(502, "upstream_unavailable");
    let r = raw(gw.addr, UPGRADE.as_bytes().to_vec()).await.unwrap();
    r.assert_error(502, "upstream_unavailable");
    // The upstream's head came, then its body broke off: the client never gets a whole
    // response (hyper may not even have flushed the head when the connection is dropped).
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET /body/x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    within("the cut response to end", client.read_to_end(&mut got))
        .await
        .ok();
    assert!(
        response_len(&got).is_none() && !got.ends_with(b"\r\n0\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(gw.get("/5xx/x", &[]).await.status, 503);

    let text = scrape(&gw).await;
    for (case, _) in fakes {
        let up = format!("upstream=\"errs-{case}\"");
        let found = series(&text, "authgate_upstream_errors_total", &[&up]);
        for (labels, v) in found {
            let want = if labels.contains(&format!("kind=\"{case}\"")) {
                1.0
            } else {
                0.0
            };
            assert_eq!(v, want, "{case}: {labels} {v}");
        }
    }
}

#[tokio::test]
async fn build_info_names_the_running_version() {
    let gw = Gateway::start(Conf::new()).await;
    let text = scrape(&gw).await;
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        series(&text, "authgate_build_info", &[&version]),
        [(format!("{{{version}}}").as_str(), 1.0)]
    );
    assert!(text.contains("# TYPE authgate_build_info gauge"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------------------------

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/grafana/authgate.json"
);

/// Every PromQL text of the dashboard: the panels' `expr` and the variables' queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The `authgate_*` names in a query.
fn metric_names(query: &str) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("authgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// The labels of every `by (...)` in a query.
fn grouping_labels(query: &str) -> BTreeSet<&str> {
    let mut labels = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("by (") {
        let tail = &rest[at + 4..];
        let end = tail.find(')').expect("closed by (...)");
        labels.extend(tail[..end].split(',').map(str::trim));
        rest = &tail[end..];
    }
    labels
}

/// The metric names on `/metrics` (histograms by their `_bucket`/`_sum`/`_count` series
/// too), each with the label names its series carry.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if let Some(inside) = line[name_end..]
            .strip_prefix('{')
            .and_then(|l| l.split_once('}'))
        {
            for pair in inside.0.split(',').filter(|p| !p.is_empty()) {
                labels.insert(pair.split('=').next().unwrap().to_owned());
            }
        }
    }
    out
}

#[test]
fn the_dashboard_is_importable_with_a_prometheus_datasource_variable() {
    let text = std::fs::read_to_string(DASHBOARD).expect("examples/grafana/authgate.json");
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(d["title"].is_string() && d["schemaVersion"].is_u64(), "{d}");
    let vars = d["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {p}"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{p}");
        }
        if p["type"] == "row" {
            continue;
        }
        titles.push(p["title"].as_str().unwrap().to_owned());
        assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{}", p["title"]);
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{t}");
        }
    }
    // The panels the issue asks for.
    for want in [
        "Requests by status",
        "Requests by route",
        "Auth failures by reason",
        "Requests in flight",
        "Upstream latency",
        "Upstream errors",
        "Logins by result",
        "Sessions active",
        "Silent refreshes",
        "Session store errors",
        "Config reloads",
        "JWKS fetches",
        "Build",
    ] {
        assert!(
            titles.iter().any(|t| t == want),
            "no panel {want:?}: {titles:?}"
        );
    }
}

/// Every metric (and every label it groups by) that the dashboard's queries name is on the
/// real gateway's `/metrics` after some traffic: a login, a failed one, a refused request,
/// a proxied one, an identity provider's keys fetched.
#[tokio::test]
async fn every_metric_the_dashboard_uses_is_exported_by_the_gateway() {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let idp = Idp::start_at("/dashboard", vec![key]).await;
    let gw = Gateway::start(
        Conf::new()
            .store(StoreKind::Memory)
            .section(&idp.issuer_toml("algorithms = [\"RS256\"]")),
    )
    .await;
    gw.login_ok("alice", "web").await;
    assert_eq!(gw.login("alice", "wrong-password").await.status, 401);
    gw.get("/api/x", &[])
        .await
        .assert_error(401, "missing_token");
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);
    idp.wait_for_fetches(1).await;
    let issuer = format!("issuer=\"{}\"", idp.issuer());
    let text = poll_until(
        "the key fetch to be counted",
        || scrape(&gw),
        |t| !series(t, "authgate_jwks_fetches_total", &[&issuer]).is_empty(),
    )
    .await;
    let exported = exported(&text);

    let d: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut all = Vec::new();
    queries(&d, &mut all);
    assert!(all.len() > 10, "{all:?}");
    let mut used = BTreeSet::new();
    for q in &all {
        let names = metric_names(q);
        assert!(!names.is_empty(), "a query without an authgate metric: {q}");
        for name in &names {
            assert!(
                exported.contains_key(*name),
                "{name} (in {q}) is not on /metrics:\n{text}"
            );
            used.insert(
                name.strip_suffix("_bucket")
                    .or_else(|| name.strip_suffix("_sum"))
                    .or_else(|| name.strip_suffix("_count"))
                    .filter(|base| text.contains(&format!("# TYPE {base} histogram")))
                    .unwrap_or(name)
                    .to_owned(),
            );
        }
        for label in grouping_labels(q) {
            assert!(
                label == "instance"
                    || names
                        .iter()
                        .any(|n| exported.get(*n).is_some_and(|l| l.contains(label))),
                "{q} groups by {label}, which none of {names:?} carries"
            );
        }
    }
    // Histograms are used by their series and counted once, by their own name.
    assert!(
        used.contains("authgate_upstream_duration_seconds"),
        "{used:?}"
    );
}
