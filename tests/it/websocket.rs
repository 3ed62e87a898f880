//! WebSocket upgrades through the gateway: tokio-tungstenite client → gateway →
//! tokio-tungstenite echo server, authenticated like any request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as ClientResponse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::*;

/// A WebSocket echo server; reports each handshake's request headers and path.
struct WsEcho {
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<(String, HeaderMap)>,
    connections: Arc<AtomicUsize>,
    /// The Close frames the server received.
    closes: mpsc::UnboundedReceiver<Option<CloseFrame>>,
}

async fn ws_echo() -> WsEcho {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, handshakes) = mpsc::unbounded_channel();
    let (close_tx, closes) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            let close_tx = close_tx.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let callback = |req: &Request, resp: Response| {
                    let _ = tx.send((req.uri().path().to_owned(), req.headers().clone()));
                    Ok(resp)
                };
                let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                let (mut sink, mut source) = ws.split();
                while let Some(Ok(msg)) = source.next().await {
                    if let Message::Close(frame) = msg {
                        let _ = close_tx.send(frame);
                        break;
                    }
                    if (msg.is_text() || msg.is_binary()) && sink.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    WsEcho {
        addr,
        handshakes,
        connections,
        closes,
    }
}

async fn gateway_in_front_of(ws: &WsEcho) -> Gateway {
    let conf = Conf::new().urls(vec![format!("http://{}", ws.addr)]);
    Gateway::start(conf).await
}

/// A WebSocket client's end of a tunnel through the gateway.
type Client = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `path` on `gw` with `Authorization: Bearer token` and the `extra`
/// headers; the upgrade must succeed.
async fn connect_with_token(
    gw: &Gateway,
    path: &str,
    token: &str,
    extra: &[(&'static str, &'static str)],
) -> (Client, ClientResponse) {
    let mut req = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    for (name, value) in extra {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    within(
        "the handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("the upgrade succeeds")
}

/// Sends `msg` and asserts that the echo server's answer, the next frame, is `msg` again.
async fn assert_echoed<S>(client: &mut WebSocketStream<S>, msg: Message)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    within("send", client.send(msg.clone())).await.unwrap();
    let echoed = within("the echo", client.next()).await.unwrap().unwrap();
    assert_eq!(echoed, msg);
}

#[tokio::test]
async fn websocket_upgrade_passes_through_with_identity() {
    let mut ws = ws_echo().await;
    let gw = gateway_in_front_of(&ws).await;
    let token = gw.mint(&alice());
    let spoof = [("x-user-id", "666")];
    let (mut client, resp) = connect_with_token(&gw, "/ws/chat", &token, &spoof).await;
    assert_eq!(resp.status(), 101);

    let (path, headers) = within("the upstream handshake", ws.handshakes.recv())
        .await
        .unwrap();
    assert_eq!(path, "/ws/chat");
    let ids: Vec<_> = headers.get_all("x-user-id").iter().collect();
    assert_eq!(
        ids,
        ["1001"],
        "the upstream sees only the gateway's identity"
    );

    assert_echoed(&mut client, Message::text("hello through the gateway")).await;
    assert_echoed(&mut client, Message::binary(vec![1u8, 2, 3])).await;
    client.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_upgrade_on_public_route() {
    let ws = ws_echo().await;
    let gw = gateway_in_front_of(&ws).await;
    let (mut client, _) = within(
        "the handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/public/ws", gw.addr)),
    )
    .await
    .expect("the upgrade succeeds");
    for i in 0..5 {
        assert_echoed(&mut client, Message::text(format!("message {i}"))).await;
    }
}

#[tokio::test]
async fn websocket_upgrade_without_token_is_refused_and_never_forwarded() {
    let ws = ws_echo().await;
    let gw = gateway_in_front_of(&ws).await;
    let err = within(
        "the handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", gw.addr)),
    )
    .await
    .expect_err("the upgrade must fail");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected an HTTP 401, got {other:?}"),
    }
    assert_eq!(ws.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn websocket_of_an_ended_session_gets_a_close_frame_1008() {
    let mut ws = ws_echo().await;
    let upstream = Upstream {
        addr: ws.addr,
        hits: Arc::new(AtomicUsize::new(0)),
        complete: Arc::new(AtomicUsize::new(0)),
    };
    let gw = Gateway::start(Conf::new().store(StoreKind::Memory).upstream(upstream)).await;
    let pair = gw.login_ok("alice", "web").await;
    let (mut client, _) = connect_with_token(&gw, "/ws/chat", &pair.access, &[]).await;
    // Frames in flight both ways before the end, so the tunnel has frames to keep whole.
    for i in 0..3 {
        let text = format!("message {i} {}", "x".repeat(200 * i));
        assert_echoed(&mut client, Message::text(text)).await;
    }

    let r = gw.with_token("POST", "/auth/logout", &pair.access).await;
    assert_eq!(r.status, 204);

    let want = CloseFrame {
        code: CloseCode::Policy,
        reason: "session ended".into(),
    };
    // The very next frame is the Close: nothing else was in flight.
    let closed = match within("the close frame", client.next()).await {
        Some(Ok(Message::Close(frame))) => frame,
        Some(Ok(other)) => panic!("expected a Close frame, got {other:?}"),
        Some(Err(e)) => panic!("the connection ended without a Close frame: {e}"),
        None => panic!("the connection ended without a Close frame"),
    };
    assert_eq!(closed, Some(want.clone()));
    // The upstream is told too (a masked Close frame, which tungstenite insists on).
    let upstream_close = within("the upstream's close frame", ws.closes.recv())
        .await
        .unwrap();
    assert_eq!(upstream_close, Some(want));
}

/// The key of the raw upgrade requests below, and its accept (the example of RFC 6455 §1.3).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The upstream's real answer to an upgrade request with [`KEY`].
fn real_101() -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
    )
}

/// A WebSocket upgrade request for `path` on a public route, with a request pipelined right
/// behind it in the same write that spoofs the user id.
fn upgrade_with_a_request_behind(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n\
         GET /public/next HTTP/1.1\r\nHost: gw.test\r\nX-User-Id: spoofed\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// What a raw upstream saw on one connection.
#[derive(Debug)]
enum Seen {
    /// The request head.
    Head(usize, String),
    /// Bytes after the head of an upgrade request.
    After(usize, Vec<u8>),
    /// The connection closed.
    Closed(usize),
}

/// A raw upstream: it answers a WebSocket upgrade request with `answer_101` and then reports
/// every byte that follows; any other request gets a 200 and a close. Everything it sees is
/// reported, by connection number.
async fn raw_upstream(answer_101: String) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            n += 1;
            let (tx, answer_101, id) = (tx.clone(), answer_101.clone(), n);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 16 * 1024];
                let end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let upgrade = head.to_ascii_lowercase().contains("upgrade: websocket");
                let _ = tx.send(Seen::Head(id, head));
                if !upgrade {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                }
                let _ = stream.write_all(answer_101.as_bytes()).await;
                if buf.len() > end {
                    let _ = tx.send(Seen::After(id, buf[end..].to_vec()));
                }
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            let _ = tx.send(Seen::After(id, chunk[..k].to_vec()));
                        }
                    }
                }
                let _ = tx.send(Seen::Closed(id));
            });
        }
    });
    (addr, rx)
}

async fn gateway_in_front_of_raw(addr: SocketAddr, server: &str) -> Gateway {
    let conf = Conf::new()
        .urls(vec![format!("http://{addr}")])
        .server(server);
    Gateway::start(conf).await
}

/// Reads `stream` until the peer closes (or resets), returning what came.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

#[tokio::test]
async fn a_101_that_is_no_websocket_handshake_is_502_and_opens_no_tunnel() {
    use tokio::io::AsyncWriteExt;
    let fakes = [
        // Switches nothing: the upstream goes on reading HTTP.
        "HTTP/1.1 101 Switching Protocols\r\n\r\n".to_owned(),
        // Names websocket, but the accept is not that of the key.
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
            .to_owned(),
        // The right accept, but another protocol.
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        ),
    ];
    for fake in fakes {
        let (addr, mut seen) = raw_upstream(fake.clone()).await;
        let gw = gateway_in_front_of_raw(addr, "").await;
        let mut client = TcpStream::connect(gw.addr).await.unwrap();
        client
            .write_all(&upgrade_with_a_request_behind("/public/ws"))
            .await
            .unwrap();
        let answers = within("the answers and the close", read_to_end(&mut client)).await;
        let answers = String::from_utf8_lossy(&answers);
        assert!(answers.starts_with("HTTP/1.1 502"), "{fake:?}: {answers}");
        assert!(answers.contains("upstream_unavailable"), "{answers}");
        // The upgrade connection is dropped by the gateway with nothing sent after the head.
        let mut events = Vec::new();
        within("the fake upgrade's connection to close", async {
            loop {
                let e = seen.recv().await.unwrap();
                let closed = matches!(e, Seen::Closed(1));
                events.push(e);
                if closed {
                    break;
                }
            }
        })
        .await;
        while let Ok(e) = seen.try_recv() {
            events.push(e);
        }
        for e in &events {
            match e {
                Seen::After(id, bytes) => panic!(
                    "{fake:?}: bytes reached upstream connection {id} raw: {:?}",
                    String::from_utf8_lossy(bytes)
                ),
                Seen::Head(_, head) => assert!(!head.contains("spoofed"), "{head}"),
                Seen::Closed(_) => {}
            }
        }
    }
}

#[tokio::test]
async fn bytes_sent_before_the_101_never_reach_the_upstream_as_tunnel_data() {
    use tokio::io::AsyncWriteExt;
    let (addr, mut seen) = raw_upstream(real_101()).await;
    let gw = gateway_in_front_of_raw(addr, "").await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(&upgrade_with_a_request_behind("/public/ws"))
        .await
        .unwrap();
    // The handshake is real, so the client gets its 101; what it had pipelined behind the
    // upgrade request ends the tunnel instead of going through.
    let answer = within("the 101 and the close", read_to_end(&mut client)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    match within("the upstream's head", seen.recv()).await.unwrap() {
        Seen::Head(1, _) => {}
        other => panic!("expected the upgrade's head, got {other:?}"),
    }
    match within("the upstream connection to close", seen.recv())
        .await
        .unwrap()
    {
        Seen::Closed(1) => {}
        Seen::After(_, bytes) => panic!(
            "bytes sent before the 101 reached the upstream: {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_tunnel_whose_client_stops_reading_is_closed_at_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A real handshake, then the upstream sends as fast as it can until it no longer can.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (gone_tx, mut gone) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = stream.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..k]);
        }
        stream.write_all(real_101().as_bytes()).await.unwrap();
        let data = vec![0u8; 64 * 1024];
        while stream.write_all(&data).await.is_ok() {}
        let _ = gone_tx.send(());
    });
    let gw = gateway_in_front_of_raw(addr, "send_timeout = \"300ms\"").await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    let upgrade = format!(
        "GET /public/ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    client.write_all(upgrade.as_bytes()).await.unwrap();
    // The client reads nothing: the tunnel gives up on it and closes the upstream connection.
    within("the upstream connection to be closed", gone.recv())
        .await
        .unwrap();
    within(
        "the client connection to be closed",
        read_to_end(&mut client),
    )
    .await;
}
