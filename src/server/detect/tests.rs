//! Preface sniffing against real sockets: what each first chunk of bytes is taken for, and
//! that peeking leaves every byte for the HTTP server.

use std::future::poll_fn;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A connected pair: the client, and the server end once `sent` has arrived on it.
async fn pair(sent: &[u8], close: bool) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    client.write_all(sent).await.unwrap();
    if close {
        client.shutdown().await.unwrap();
    }
    // Wait until every byte sent is readable on the server end.
    let mut buf = vec![0u8; sent.len().max(1)];
    while server.peek(&mut buf).await.unwrap() < sent.len() {
        tokio::task::yield_now().await;
    }
    (client, server)
}

async fn speaks(server: &TcpStream) -> Speaks {
    poll_fn(|cx| server.poll_speaks(cx)).await
}

#[tokio::test]
async fn the_first_bytes_tell_the_protocol_without_consuming_them() {
    let cases: &[(&[u8], Speaks)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Speaks::Http1),
        (b"G", Speaks::Http1),
        (b"PRX", Speaks::Http1),
        (H2_PREFACE, Speaks::Http2),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04",
            Speaks::Http2,
        ),
        // A preface cut short: the rest may still come, so the auto builder reads on.
        (b"PRI * HTTP/2.0\r\n", Speaks::Unsure),
        (b"P", Speaks::Unsure),
    ];
    for (sent, want) in cases {
        let (_client, server) = pair(sent, false).await;
        assert_eq!(
            speaks(&server).await,
            *want,
            "{:?}",
            String::from_utf8_lossy(sent)
        );
        // Peeked, not read: the HTTP server still sees every byte.
        let mut buf = vec![0u8; sent.len()];
        assert_eq!(server.try_read(&mut buf).unwrap(), sent.len());
        assert_eq!(&buf, sent);
    }
}

#[tokio::test]
async fn a_peer_that_closes_before_sending_speaks_nothing() {
    let (_client, server) = pair(b"", true).await;
    assert_eq!(speaks(&server).await, Speaks::Nothing);
}
