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
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

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
    Gateway::start_with(conf, Upstream::echo().await).await
}

#[tokio::test]
async fn websocket_upgrade_passes_through_with_identity() {
    let mut ws = ws_echo().await;
    let gw = gateway_in_front_of(&ws).await;
    let token = gw.mint(&alice());
    let mut req = format!("ws://{}/ws/chat", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req.headers_mut()
        .insert("x-user-id", "666".parse().unwrap());
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, resp) = within(
        "the handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("the upgrade succeeds");
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

    within(
        "send",
        client.send(Message::text("hello through the gateway")),
    )
    .await
    .unwrap();
    let echoed = within("the echo", client.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello through the gateway"));

    within("send", client.send(Message::binary(vec![1u8, 2, 3])))
        .await
        .unwrap();
    let echoed = within("the echo", client.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(vec![1u8, 2, 3]));
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
        let text = format!("message {i}");
        client.send(Message::text(text.clone())).await.unwrap();
        let echoed = within("the echo", client.next()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
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
    use crate::session_support::{Gw, Setup, StoreKind};
    let mut ws = ws_echo().await;
    let upstream = Upstream {
        addr: ws.addr,
        hits: Arc::new(AtomicUsize::new(0)),
        complete: Arc::new(AtomicUsize::new(0)),
    };
    let gw = Gw::start_with(StoreKind::Memory, Setup::new(), upstream)
        .await
        .expect("memory store");
    let pair = gw.login_ok("alice", "web").await;
    let mut req = format!("ws://{}/ws/chat", gw.probe.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", pair.access).parse().unwrap(),
    );
    let stream = TcpStream::connect(gw.probe.addr).await.unwrap();
    let (mut client, _) = within(
        "the handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("the upgrade succeeds");
    // Frames in flight both ways before the end, so the tunnel has frames to keep whole.
    for i in 0..3 {
        let text = format!("message {i} {}", "x".repeat(200 * i));
        client.send(Message::text(text.clone())).await.unwrap();
        let echoed = within("the echo", client.next()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
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
