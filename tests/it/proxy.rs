//! The proxy itself: bodies stream both ways chunk by chunk (and a session's end cuts them),
//! h2c clients reach HTTP/1.1 upstreams, and the pieces of a forwarded request (method,
//! query, body) arrive intact.

use authgate::body::full;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::support::*;

#[tokio::test]
async fn streaming_response_passes_through_chunk_by_chunk() {
    // The upstream sends "first", then hands its body sender to the test, which releases
    // "second" only after the client has read "first" through the gateway.
    let (upstream, mut senders_rx) = held_stream(Bytes::from_static(b"first"), None).await;
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(gw.url("/public/stream"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = within("the response head", client.request(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();

    let mut got = Vec::new();
    while got.len() < 5 {
        let frame = within("the first chunk", body.frame())
            .await
            .expect("a frame")
            .expect("no body error");
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(got, b"first", "the second chunk cannot have been sent yet");

    let sender = within("the upstream's body sender", senders_rx.recv())
        .await
        .unwrap();
    sender.send(Bytes::from_static(b"second")).await.unwrap();
    drop(sender);
    let rest = within("the rest of the body", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));
}

#[tokio::test]
async fn a_download_with_a_content_length_is_cut_when_its_session_ends() {
    // A 1 MB answer with its Content-Length, of which the upstream sends a first chunk; the
    // test holds the rest.
    const LEN: usize = 1_000_000;
    let (upstream, mut senders_rx) = held_stream(Bytes::from(vec![b'x'; 1000]), Some(LEN)).await;
    let gw = Gateway::start(Conf::new().store(StoreKind::Memory).upstream(upstream)).await;
    let pair = gw.login_ok("alice", "web").await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(gw.url("/api/download"))
        .header("authorization", format!("Bearer {}", pair.access))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = within("the response head", client.request(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], LEN.to_string().as_str());
    let mut body = resp.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("no body error");
    assert_eq!(first.into_data().unwrap().len(), 1000);
    let sender = within("the upstream's body sender", senders_rx.recv())
        .await
        .unwrap();

    let r = gw.with_token("POST", "/auth/logout", &pair.access).await;
    assert_eq!(r.status, 204);
    let ended = std::time::Instant::now();
    // The rest never comes: the body ends short of its length, with an error, within the
    // second of the contract...
    let rest = within("the download to be cut", body.collect()).await;
    assert!(
        rest.is_err(),
        "the download went on after the session ended"
    );
    let took = ended.elapsed();
    assert!(
        took < std::time::Duration::from_secs(1),
        "cut after {took:?}"
    );
    // ...and the upstream connection feeding it is closed.
    within("the upstream connection to be closed", async {
        while sender.send(Bytes::from_static(b"more")).await.is_ok() {}
    })
    .await;
}

#[tokio::test]
async fn streaming_request_body_reaches_upstream_before_it_ends() {
    // The upstream reports each chunk as it arrives; the client sends the second chunk only
    // after the upstream has seen the first, so the gateway cannot be buffering the body.
    let (chunks_tx, mut chunks_rx) = mpsc::unbounded_channel::<Bytes>();
    let upstream = Upstream::start(move |req| {
        let chunks_tx = chunks_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut total = 0;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("body frame").into_data() {
                    total += data.len();
                    let _ = chunks_tx.send(data);
                }
            }
            Response::new(full(total.to_string()))
        }
    })
    .await;
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    let (tx, body) = ChannelBody::new();
    let req = Request::post(gw.url("/public/upload")).body(body).unwrap();
    let pending = tokio::spawn(client.request(req));

    tx.send(Bytes::from_static(b"one")).await.unwrap();
    let first = within("the first chunk upstream", chunks_rx.recv())
        .await
        .unwrap();
    assert_eq!(first, Bytes::from_static(b"one"));
    tx.send(Bytes::from_static(b"two!")).await.unwrap();
    drop(tx);

    let resp = within("the response", pending).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let total = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(total, Bytes::from_static(b"7"));
}

#[tokio::test]
async fn method_query_and_body_are_forwarded_intact() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .request(
            "PUT",
            "/public/items/7?a=1&b=%2F&c",
            &[("content-type", "application/json")],
            Bytes::from_static(br#"{"name":"x"}"#),
        )
        .await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/public/items/7");
    assert_eq!(echo["query"], "a=1&b=%2F&c");
    assert_eq!(echo["body_len"], 12);
    assert_eq!(r.seen("content-type"), ["application/json"]);
}

#[tokio::test]
async fn upstream_status_and_headers_pass_through() {
    let upstream = Upstream::start(|_req| async {
        Response::builder()
            .status(418)
            .header("x-legacy", "yes")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .body(full("teapot"))
            .unwrap()
    })
    .await;
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    let r = gw.get("/public/x", &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-legacy"), Some("yes"));
    assert_eq!(r.headers.get_all("set-cookie").iter().count(), 2);
    assert_eq!(r.body, Bytes::from_static(b"teapot"));
}

async fn h2c_through(gw: &Gateway) {
    let client = h2c_client();
    let req = Request::get(gw.url("/public/h2?x=1"))
        .header("x-user-id", "666")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = within("the h2c answer", client.request(req)).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["version"], "HTTP/1.1", "{echo}");
    assert_eq!(echo["path"], "/public/h2");
    assert_eq!(echo["query"], "x=1");
    assert!(echo["headers"]["x-user-id"].is_null(), "{echo}");
    // Host comes from :authority.
    assert_eq!(echo["headers"]["host"][0], gw.addr.to_string());

    // A protected route over h2c, with the token.
    let token = gw.mint(&alice());
    let req = Request::get(gw.url("/api/h2"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = within("the h2c answer", client.request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-user-id"][0], "1001");

    // And its refusals.
    let req = Request::get(gw.url("/api/h2"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = within("the h2c answer", client.request(req)).await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_forwarded_as_http11() {
    // The crate's own demo echo upstream, which reports the HTTP version it was spoken to in.
    let echo = authgate::demo::spawn_echo("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let conf = Conf::new().urls(vec![format!("http://{echo}")]);
    let gw = Gateway::start(conf).await;
    h2c_through(&gw).await;
}

/// A client socket whose first write carries at most `first` bytes, so that the HTTP/2
/// preface reaches the gateway in two pieces.
struct SplitFirstWrite {
    inner: tokio::net::TcpStream,
    first: Option<usize>,
}

impl tokio::io::AsyncRead for SplitFirstWrite {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SplitFirstWrite {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let cap = self.first.take().unwrap_or(data.len()).min(data.len());
        std::pin::Pin::new(&mut self.inner).poll_write(cx, &data[..cap])
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn h2c_preface_in_pieces_is_still_http2() {
    // Whether the gateway looks at the first piece alone or at both, it must serve h2.
    let gw = Gateway::start(Conf::new()).await;
    for first in [1, 9, 23] {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let io = SplitFirstWrite {
            inner: tcp,
            first: Some(first),
        };
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(io),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = Request::get(gw.url("/public/split"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = within("the h2c answer", send.send_request(req))
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2, "first write {first}");
        assert_eq!(resp.status(), 200, "first write {first}");
    }
    assert_eq!(gw.upstream.hits(), 3);
}

#[tokio::test]
async fn h2c_request_body_is_forwarded() {
    let gw = Gateway::start(Conf::new()).await;
    let client = h2c_client();
    let req = Request::post(gw.url("/public/upload"))
        .body(Full::new(Bytes::from(vec![b'q'; 100_000])))
        .unwrap();
    let resp = within("the h2c answer", client.request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_len"], 100_000);
    assert_eq!(echo["version"], "HTTP/1.1");
}

/// A raw HTTP/1.1 upstream that answers every request head with a small keep-alive `200 ok`
/// (it ignores bodies: the tests below send none). It counts the connections it accepts;
/// with `close_after_each` it closes each connection right after its first answer and then
/// reports the close on the returned channel.
async fn raw_upstream(
    close_after_each: bool,
) -> (Upstream, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed_rx) = mpsc::unbounded_channel();
    let (c, h) = (conns.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (h, closed_tx) = (h.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        h.fetch_add(1, Ordering::SeqCst);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if close_after_each {
                            drop(stream);
                            let _ = closed_tx.send(());
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    let upstream = Upstream {
        addr,
        hits,
        complete: Arc::new(AtomicUsize::new(0)),
    };
    (upstream, conns, closed_rx)
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (upstream, conns, _) = raw_upstream(false).await;
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    for i in 0..20 {
        let r = gw.get(&format!("/public/k{i}"), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.body, &b"ok"[..]);
    }
    assert_eq!(gw.upstream.hits(), 20);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "one upstream connection for all"
    );
}

#[tokio::test]
async fn upstream_closing_an_idle_connection_costs_no_request() {
    // The legacy app closes every connection after one answer (as a short keep-alive timeout
    // would). The gateway must notice the close and connect again, never answer 502.
    let (upstream, conns, mut closed) = raw_upstream(true).await;
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    for i in 0..5 {
        let r = gw.get(&format!("/public/c{i}"), &[]).await;
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
        // The upstream has closed that connection before the next request goes out.
        within("the upstream's close", closed.recv()).await.unwrap();
    }
    assert_eq!(gw.upstream.hits(), 5);
    assert_eq!(conns.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn request_without_host_gets_the_upstream_authority() {
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .raw(b"GET /public/nohost HTTP/1.0\r\n\r\n".to_vec())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("host"), [gw.upstream.addr.to_string()]);
}

#[tokio::test]
async fn upstream_answering_before_the_body_is_read_is_not_reused() {
    // The legacy app refuses an upload from its head alone (keep-alive, body unread). The
    // gateway relays the answer; that connection is still busy sending the client's body, so
    // it must be closed, not parked in the pool: the upstream sees it end.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno";
                stream.write_all(answer).await.unwrap();
                // Read (and drop) whatever comes until the gateway closes the connection.
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = ended_tx.send(());
            });
        }
    });
    let upstream = Upstream {
        addr,
        hits: Arc::new(AtomicUsize::new(0)),
        complete: Arc::new(AtomicUsize::new(0)),
    };
    let gw = Gateway::start(Conf::new().upstream(upstream)).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    let (tx, body) = ChannelBody::new();
    let req = Request::post(gw.url("/public/upload"))
        .header("content-length", "1000000")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(client.request(req));
    tx.send(Bytes::from(vec![b'x'; 1000])).await.unwrap();
    let resp = within("the early answer", pending).await.unwrap().unwrap();
    assert_eq!(resp.status(), 401);
    // Well before the pool's 5 s sweep would notice the connection is not idle.
    tokio::time::timeout(std::time::Duration::from_secs(3), ended_rx.recv())
        .await
        .expect("the busy upstream connection was kept open")
        .unwrap();
    drop(tx);
}
