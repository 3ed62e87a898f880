//! Limits and failures: request bodies over `max_body_bytes` (declared and streamed), slow
//! request heads and endpoint bodies, clients that stop reading, an upstream that is down, slow, or one of two
//! urls dead.

use std::time::{Duration, Instant};

use authgate::body::full;
use http::Response;

use crate::support::*;

const MAX_BODY: &str = "max_body_bytes = 1024";

#[tokio::test]
async fn body_over_limit_with_content_length_is_413_and_never_forwarded() {
    let gw = Gateway::start(Conf::new().server(MAX_BODY)).await;
    let body = "x".repeat(4096);
    let r = gw
        .raw(format!(
            "POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ))
        .await;
    r.assert_error(413, "payload_too_large");
    assert_eq!(gw.upstream.hits(), 0, "the upstream saw the request head");
    assert_eq!(gw.upstream.complete(), 0);
}

/// Sends a request whose unread body holds a second request, then (if the connection is
/// still open) a last request with `Connection: close`, and returns everything the gateway
/// wrote back until it closed.
async fn smuggle_after(gw: &Gateway, method_path: &str, padding: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let inner = "GET /public/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let body = format!("{inner}{}", "p".repeat(padding));
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let first = format!(
        "{method_path} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(first.as_bytes()).await.unwrap();
    let mut transcript = Vec::new();
    let mut chunk = [0u8; 8192];
    within("the first answer", async {
        while response_len(&transcript).is_none() {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => transcript.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let last = "GET /public/last HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";
    let _ = stream.write_all(last.as_bytes()).await;
    within("the connection to close", async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => transcript.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&transcript).into_owned()
}

#[tokio::test]
async fn refused_body_is_never_read_as_a_second_request() {
    let gw = Gateway::start(Conf::new().server(MAX_BODY)).await;
    for (request, padding, status) in [
        // 413 on the declared length, body unread.
        ("POST /public/upload", 4096, "413"),
        // 401 before the body is read.
        ("POST /api/upload", 0, "401"),
        // 400 on the path before the body is read.
        ("POST /public/..;/x", 0, "400"),
    ] {
        let transcript = smuggle_after(&gw, request, padding).await;
        assert!(
            transcript.starts_with(&format!("HTTP/1.1 {status}")),
            "{request}: {transcript}"
        );
        assert!(
            !transcript.contains("/public/smuggled"),
            "{request}: a request hidden in a refused body was served: {transcript}"
        );
    }
}

#[tokio::test]
async fn body_over_limit_chunked_is_413_and_never_complete_upstream() {
    let gw = Gateway::start(Conf::new().server(MAX_BODY)).await;
    let chunk = "y".repeat(512);
    let mut req = String::from(
        "POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
    );
    for _ in 0..8 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    let r = gw.raw(req).await;
    r.assert_error(413, "payload_too_large");
    assert_eq!(
        gw.upstream.complete(),
        0,
        "the upstream got the whole oversized body"
    );
}

#[tokio::test]
async fn body_over_limit_over_h2c_is_413() {
    let gw = Gateway::start(Conf::new().server(MAX_BODY)).await;
    let client = h2c_client();
    let req = http::Request::post(gw.url("/public/upload"))
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            4096
        ])))
        .unwrap();
    let resp = within("the h2c answer", client.request(req)).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(gw.upstream.complete(), 0);
}

#[tokio::test]
async fn body_at_the_limit_passes() {
    let gw = Gateway::start(Conf::new().server(MAX_BODY)).await;
    let r = gw
        .request("POST", "/public/upload", &[], "z".repeat(1024).into())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 1024);
    // Chunked within the limit as well.
    let r = gw
        .raw(
            "POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n200\r\n"
                .to_owned()
                + &"a".repeat(512)
                + "\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 512);
    assert_eq!(gw.upstream.complete(), 2);
}

#[tokio::test]
async fn body_over_limit_on_a_protected_route_without_token_is_401() {
    // Authentication comes first; either way nothing reaches the upstream.
    let gw = Gateway::start(Conf::new().server(MAX_BODY)).await;
    let r = gw
        .request("POST", "/api/upload", &[], "x".repeat(4096).into())
        .await;
    r.assert_error(401, "missing_token");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn head_over_a_small_max_header_bytes_is_431() {
    let gw = Gateway::start(Conf::new().server("max_header_bytes = 2048")).await;
    let filler = "f".repeat(5000);
    let r = gw
        .raw_get("/public/x", &format!("X-Filler: {filler}\r\n"))
        .await;
    assert_eq!(r.status, 431);
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn head_over_default_max_header_bytes_is_431() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .raw_get(
            "/public/x",
            &format!("X-Filler: {}\r\n", "f".repeat(20_000)),
        )
        .await;
    assert_eq!(r.status, 431);
    // Just under the 16 KiB default passes.
    let r = gw
        .raw_get(
            "/public/x",
            &format!("X-Filler: {}\r\n", "f".repeat(12_000)),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.upstream.hits(), 1);
}

#[tokio::test]
async fn upstream_down_is_502_upstream_unavailable() {
    let dead = dead_addr().await;
    let gw = Gateway::start(Conf::new().urls(vec![format!("http://{dead}")])).await;
    let r = gw.get("/public/x", &[]).await;
    r.assert_error(502, "upstream_unavailable");
    // Nothing internal leaks into the message.
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        !msg.contains("127.0.0.1") && !msg.contains(&dead.port().to_string()),
        "{msg}"
    );
    let token = gw.mint(&alice());
    gw.get_auth("/api/x", &token)
        .await
        .assert_error(502, "upstream_unavailable");
}

/// An upstream that takes every request (and says so on the channel) but answers only after
/// 30 s, far beyond any test's timeouts.
async fn slow_upstream() -> (Upstream, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let slow = Upstream::start(move |_req| {
        let seen = seen_tx.clone();
        async move {
            let _ = seen.send(());
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(full("late"))
        }
    })
    .await;
    (slow, seen_rx)
}

#[tokio::test]
async fn upstream_slower_than_request_timeout_is_504() {
    let (slow, mut seen_rx) = slow_upstream().await;
    let gw = Gateway::start(
        Conf::new()
            .server("request_timeout = \"200ms\"")
            .upstream(slow),
    )
    .await;
    let started = Instant::now();
    let r = gw.get("/public/slow", &[]).await;
    let took = started.elapsed();
    r.assert_error(504, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(200),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    within("the upstream to have seen the request", seen_rx.recv()).await;
}

#[tokio::test]
async fn round_robin_skips_a_dead_url() {
    let dead = dead_addr().await;
    // The live upstream closes each connection after one answer, so every request is a new
    // connect and the round robin starts at the dead url for about half of them.
    let echo = Upstream::echo_with(|h| {
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    })
    .await;
    let conf = Conf::new().urls(vec![
        format!("http://{dead}"),
        format!("http://{}", echo.addr),
    ]);
    let gw = Gateway::start(conf.upstream(echo)).await;
    for i in 0..8 {
        let r = gw.get(&format!("/public/{i}"), &[]).await;
        assert_eq!(
            r.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(gw.upstream.hits(), 8);
}

#[tokio::test]
async fn round_robin_uses_every_live_url() {
    // Each upstream closes its connection after one answer, so every request needs a new
    // connect and the round robin advances.
    let close = |h: &mut http::HeaderMap| {
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    };
    let a = Upstream::echo_with(close).await;
    let b = Upstream::echo_with(close).await;
    let b_hits = b.hits.clone();
    let conf = Conf::new().urls(vec![
        format!("http://{}", a.addr),
        format!("http://{}", b.addr),
    ]);
    let gw = Gateway::start(conf.upstream(a)).await;
    for i in 0..8 {
        let r = gw.raw_get(&format!("/public/{i}"), "").await;
        assert_eq!(r.status, 200);
    }
    let a_hits = gw.upstream.hits();
    let b_hits = b_hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(a_hits + b_hits, 8);
    assert!(a_hits >= 1 && b_hits >= 1, "a={a_hits} b={b_hits}");
}

#[tokio::test]
async fn slow_request_head_is_cut_at_header_timeout() {
    let gw = Gateway::start(Conf::new().server("header_timeout = \"300ms\"")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert_slow_head_is_cut(&mut stream, "/public/x").await;
    assert_eq!(gw.upstream.hits(), 0);
}

/// Sends the start of a `GET path` head on `stream` and stalls: the gateway must cut the
/// connection (EOF or reset, or a 408 but never a forwarded answer) at `header_timeout`
/// (300 ms), not wait forever.
async fn assert_slow_head_is_cut(stream: &mut tokio::net::TcpStream, path: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let head = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nX-Slow: ");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = within("the gateway to cut the slow head", stream.read(&mut buf))
        .await
        .unwrap_or(0);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(took >= Duration::from_millis(250), "cut after {took:?}");
    assert!(took < Duration::from_secs(3), "cut after {took:?}");
}

/// Sends a whole `GET path` on the keep-alive `stream` and asserts that a 200 answers it.
async fn get_ok(stream: &mut tokio::net::TcpStream, path: &str) {
    use tokio::io::AsyncWriteExt;
    let head = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_one(stream).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// Reads one whole response from a keep-alive connection.
async fn read_one(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    within("an answer", async {
        while response_len(&buf).is_none() {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before answering: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    buf
}

#[tokio::test]
async fn head_sent_in_pieces_within_header_timeout_is_served() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start(Conf::new().server("header_timeout = \"500ms\"")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /public/a HTTP/1.1\r\n")
        .await
        .unwrap();
    // Well inside the timeout: a slow but not too slow client.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"Host: gw.test\r\n\r\n").await.unwrap();
    let answer = read_one(&mut stream).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn keep_alive_wait_between_requests_is_not_a_slow_head() {
    let gw = Gateway::start(Conf::new().server("header_timeout = \"300ms\"")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    get_ok(&mut stream, "/public/a").await;
    // Longer than header_timeout, shorter than idle_timeout (60 s): the connection stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    get_ok(&mut stream, "/public/b").await;
    assert_eq!(gw.upstream.hits(), 2);
}

/// The watchdog arms one timer for the earliest deadline; after an idle gap that is the idle
/// deadline (60 s here), so a head starting then must move it up to `header_timeout`.
#[tokio::test]
async fn slow_head_after_a_keep_alive_gap_is_cut_at_header_timeout() {
    let gw = Gateway::start(Conf::new().server("header_timeout = \"300ms\"")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    for gap in [Duration::ZERO, Duration::from_millis(700)] {
        get_ok(&mut stream, "/public/a").await;
        tokio::time::sleep(gap).await;
    }
    assert_slow_head_is_cut(&mut stream, "/public/b").await;
    assert_eq!(gw.upstream.hits(), 2);
}

/// Part of a second head arrives in the same segment as a whole first request: the head
/// clock never starts for it, and a graceful idle close would wait for it for ever. The
/// connection must still close (idle timeout, then at most a header timeout).
#[tokio::test]
async fn partial_head_pipelined_behind_a_request_does_not_hold_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw =
        Gateway::start(Conf::new().server("idle_timeout = \"300ms\"\nheader_timeout = \"300ms\""))
            .await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /public/a HTTP/1.1\r\nHost: gw.test\r\n\r\nGET /public/b HTTP/1.1\r\nX-Sl")
        .await
        .unwrap();
    assert!(read_one(&mut stream).await.starts_with(b"HTTP/1.1 200"));
    let mut chunk = [0u8; 256];
    let closed = within("the gateway to close the connection", async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    closed.await;
    assert_eq!(gw.upstream.hits(), 1);
}

/// Waits for the gateway to close `stream` (EOF or reset, with no bytes before it) and says
/// how long after `since` that was.
async fn closed_after(stream: &mut tokio::net::TcpStream, since: Instant) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 64];
    let n = within("the idle close", stream.read(&mut chunk))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "unexpected bytes before the close");
    since.elapsed()
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_at_idle_timeout() {
    let gw = Gateway::start(Conf::new().server("idle_timeout = \"300ms\"")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Read the whole (keep-alive) answer, then wait for the gateway to close the connection.
    get_ok(&mut stream, "/public/x").await;
    let idle = closed_after(&mut stream, Instant::now()).await;
    assert!(idle >= Duration::from_millis(250), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(5), "closed after {idle:?}");
}

#[tokio::test]
async fn connection_that_never_speaks_is_closed_at_idle_timeout() {
    let gw = Gateway::start(Conf::new().server("idle_timeout = \"300ms\"")).await;
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let idle = closed_after(&mut stream, started).await;
    assert!(idle >= Duration::from_millis(250), "closed after {idle:?}");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn h2_connection_whose_stream_was_cancelled_still_closes_when_idle() {
    use http_body_util::Empty;
    let (slow, mut seen_rx) = slow_upstream().await;
    let gw = Gateway::start(
        Conf::new()
            .server("idle_timeout = \"300ms\"")
            .upstream(slow),
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = closed_tx.send(());
    });
    let req = http::Request::get(gw.url("/public/slow"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let answer = send.send_request(req);
    within("the upstream to get the request", seen_rx.recv()).await;
    // Give up on the answer: the client resets the stream, and the gateway drops the request.
    drop(answer);
    // With nothing in flight any more, the connection is idle and is closed.
    within("the idle h2 connection to be closed", closed_rx)
        .await
        .unwrap();
}

/// Sends one keep-alive request on `stream` and reads its whole answer.
async fn exchange(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while response_len(&buf).is_none() {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn max_connections_leaves_the_rest_in_the_backlog_and_the_admin_reachable() {
    use tokio::net::TcpStream;
    let gw = Gateway::start(Conf::new().server("max_connections = 2")).await;
    let admin = gw.admin.clone();
    // Two connections, each answered once and then left idle: they hold both slots.
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    for conn in [&mut first, &mut second] {
        let answer = within("an answer", exchange(conn, "/public/held")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // A third connects (the kernel's backlog takes it) but is not served while both are held.
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    let waiting = tokio::spawn(async move {
        let answer = exchange(&mut third, "/public/third").await;
        (answer, third)
    });
    let mut waiting = std::pin::pin!(waiting);
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.as_mut()).await;
    assert!(early.is_err(), "served beyond max_connections: {early:?}");
    // The admin listener is not counted.
    assert_eq!(admin.get("/healthz", &[]).await.status, 200);
    assert!(!waiting.is_finished(), "served beyond max_connections");
    // One held connection closes: its slot goes to the waiting one.
    drop(first);
    let (answer, _third) = within("the waiting connection's answer", waiting)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(admin.get("/healthz", &[]).await.status, 200);
    drop(second);
}

/// An upstream whose answer never ends: 64 KiB chunks as fast as they are taken. It says on
/// the channel when its connection is gone (the chunk it was sending could not be sent).
async fn endless_upstream() -> (Upstream, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use http_body_util::BodyExt;
    let (gone_tx, gone_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let up = Upstream::start(move |_req| {
        let gone = gone_tx.clone();
        async move {
            let (tx, body) = ChannelBody::new();
            tokio::spawn(async move {
                let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                while tx.send(chunk.clone()).await.is_ok() {}
                let _ = gone.send(());
            });
            Response::new(body.boxed())
        }
    })
    .await;
    (up, gone_rx)
}

#[tokio::test]
async fn client_that_stops_reading_is_cut_at_send_timeout_with_its_upstream_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // With a long idle timeout, and with a short one (the idle close used to wait for the
    // response without any bound).
    for idle in ["60s", "200ms"] {
        let (up, mut gone) = endless_upstream().await;
        let conf = Conf::new().server(&format!(
            "send_timeout = \"300ms\"\nidle_timeout = \"{idle}\""
        ));
        let gw = Gateway::start(conf.upstream(up)).await;
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        stream
            .write_all(b"GET /public/big HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await
            .unwrap();
        // The client reads nothing: once the buffers are full the gateway gives up on it, and
        // the upstream connection that fed the answer is closed too.
        within("the upstream connection to be closed", gone.recv())
            .await
            .unwrap();
        // The client's connection ends after what was already buffered.
        within("the client connection to be closed", async {
            let mut chunk = vec![0u8; 256 * 1024];
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

#[tokio::test]
async fn endpoint_body_trickling_in_is_cut_at_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(
        Conf::new()
            .store(StoreKind::Memory)
            .server("header_timeout = \"1s\""),
    )
    .await;
    for path in ["/auth/login", "/auth/refresh"] {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        // One byte every 200 ms (20 s for the whole body) until the gateway closes.
        let trickle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if wr.write_all(b" ").await.is_err() {
                    break;
                }
            }
        });
        let answer = within("the answer and the close", async {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = rd.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
        .await;
        let took = started.elapsed();
        trickle.abort();
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("\"request_timeout\""), "{path}: {answer}");
        assert!(took >= Duration::from_millis(900), "{path}: after {took:?}");
        assert!(took < Duration::from_secs(5), "{path}: after {took:?}");
    }
}
