//! The admin listener's probes and graceful shutdown.

use std::time::Duration;

use authgate::body::full;
use http::Response;
use tokio::sync::{mpsc, oneshot};

use crate::support::*;

#[tokio::test]
async fn healthz_and_readyz_on_the_admin_listener() {
    let gw = Gateway::start(Conf::new()).await;
    let admin = gw.admin.clone();
    for path in ["/healthz", "/readyz"] {
        let r = admin.get(path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
    }
    let r = admin.get("/metrics", &[]).await;
    assert_eq!(r.status, 200);
    // Unknown admin paths are a JSON 404.
    admin.get("/nope", &[]).await.assert_error(404, "not_found");
    // The proxy listener does not serve them: they are ordinary (protected) paths there.
    gw.get("/healthz", &[])
        .await
        .assert_error(401, "missing_token");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new_connections() {
    // The upstream tells the test when the request arrived, then waits to be released.
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    let upstream = Upstream::start(move |_req| {
        let arrived = arrived_tx.clone();
        async move {
            let (release_tx, release_rx) = oneshot::channel();
            let _ = arrived.send(release_tx);
            let _ = release_rx.await;
            Response::new(full("finished"))
        }
    })
    .await;
    let mut gw = Gateway::start(Conf::new().upstream(upstream)).await;
    let addr = gw.addr;
    let probe = gw.probe();
    let in_flight = tokio::spawn(async move { probe.raw_get("/public/slow", "").await });
    let release = within("the request to reach the upstream", arrived_rx.recv())
        .await
        .unwrap();

    let handle = gw.handle.take().unwrap();
    let mut shutdown = tokio::spawn(handle.shutdown());

    // The listener closes promptly, while the request is still in flight. There is no event
    // to await for that, so poll (bounded).
    within("the listener to close", async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(!in_flight.is_finished());
    // Shutdown waits for the in-flight request.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut shutdown)
            .await
            .is_err(),
        "shutdown returned with a request in flight"
    );

    release.send(()).unwrap();
    let r = within("the in-flight answer", in_flight).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), b"finished");
    within("shutdown to complete", shutdown).await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a new connection was accepted after shutdown"
    );
}

/// Shuts `gw` down and checks it took far less than its 5 s `shutdown_grace`.
async fn shut_down_promptly(gw: &mut Gateway) {
    let started = std::time::Instant::now();
    within("shutdown", gw.shutdown()).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_with_nothing_in_flight_is_prompt() {
    let mut gw = Gateway::start(Conf::new()).await;
    // An idle keep-alive connection must not hold shutdown for the whole grace period.
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);
    let addr = gw.addr;
    shut_down_promptly(&mut gw).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_connection_that_never_spoke_does_not_hold_shutdown() {
    use tokio::io::AsyncReadExt;
    let mut gw = Gateway::start(Conf::new()).await;
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Accepted in order: once a later connection is answered, the silent one is being served.
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);
    shut_down_promptly(&mut gw).await;
    let mut chunk = [0u8; 16];
    let n = within("the silent connection's close", silent.read(&mut chunk))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn requests_are_counted_by_route_and_status() {
    // Route patterns of their own: the metrics registry is shared by every test.
    let gw = Gateway::start(Conf::new().routes(
        r#"
[[routes]]
path = "/counted-open"
upstream = "up"
auth = "public"

[[routes]]
path = "/counted-closed"
upstream = "up"
auth = "required"
"#,
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(gw.get("/counted-open/x", &[]).await.status, 200);
    }
    gw.get("/counted-closed/x", &[])
        .await
        .assert_error(401, "missing_token");
    let token = gw.mint(&alice());
    let auth = format!("Bearer {token}");
    for _ in 0..2 {
        let r = gw
            .get("/counted-closed/y", &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(requests_total(&gw.admin, "/counted-open", "200").await, 3);
    assert_eq!(requests_total(&gw.admin, "/counted-closed", "401").await, 1);
    assert_eq!(requests_total(&gw.admin, "/counted-closed", "200").await, 2);
    assert_eq!(requests_total(&gw.admin, "/counted-open", "401").await, 0);
}

#[tokio::test]
async fn upstream_duration_is_a_prometheus_histogram() {
    let gw = Gateway::start(Conf::new()).await;
    assert_eq!(gw.get("/public/timed", &[]).await.status, 200);
    let body = gw.admin.get("/metrics", &[]).await.body;
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("# TYPE authgate_upstream_duration_seconds histogram"),
        "{text}"
    );
    // Buckets up to +Inf, a sum and a count that includes the request above (the registry
    // is shared by every test, so at least 1).
    assert!(text.contains("authgate_upstream_duration_seconds_bucket{le=\"0.0005\"}"));
    assert!(text.contains("authgate_upstream_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(text.contains("authgate_upstream_duration_seconds_sum"));
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("authgate_upstream_duration_seconds_count "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(count.is_some_and(|n| n >= 1), "{text}");
}

#[tokio::test]
async fn shutdown_cuts_a_response_still_streaming_after_shutdown_grace() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    // The upstream sends one chunk and hands its body sender to the test: the rest never
    // comes unless the test sends it.
    let (upstream, mut senders_rx) = held_stream(Bytes::from_static(b"first"), None).await;
    let mut gw = Gateway::start(
        Conf::new()
            .server("shutdown_grace = \"300ms\"")
            .upstream(upstream),
    )
    .await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(gw.url("/public/stream"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = within("the response head", client.request(req))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("no body error");
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first"));
    let sender = within("the upstream's body sender", senders_rx.recv())
        .await
        .unwrap();

    within("shutdown", gw.shutdown()).await;
    // Past the grace the response is cut: the client's body ends unfinished...
    let rest = within("the response to be cut", body.collect()).await;
    assert!(rest.is_err(), "the stream ended as if complete");
    // ...and the upstream connection feeding it is closed (its next chunks cannot be sent).
    within("the upstream connection to be closed", async {
        while sender.send(Bytes::from_static(b"more")).await.is_ok() {}
    })
    .await;
}
