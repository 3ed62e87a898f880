//! Which protocol a new connection speaks, told before anything is read from it.
//!
//! A plaintext connection's first bytes are peeked (not read): the HTTP/2 client preface
//! means h2c by prior knowledge, anything else that cannot start it is HTTP/1.1, and a preface
//! cut short is left to hyper-util's auto builder, which reads until it knows. A TLS
//! connection says it with ALPN instead (`tls.rs`). Either way the connection is then served
//! by hyper's HTTP/1 or HTTP/2 server directly (`conn.rs`): the auto builder replays the bytes
//! it read, which makes hyper grow its read buffer from 8 to 16 KiB on every connection.

use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client preface.
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a new connection speaks, as far as can be told before reading from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Speaks {
    /// Bytes that cannot start the HTTP/2 preface (or ALPN `http/1.1`).
    Http1,
    /// The whole HTTP/2 preface (or ALPN `h2`).
    Http2,
    /// Served by the auto builder, which reads until it knows.
    Unsure,
    /// The peer closed (or the socket failed) before sending anything.
    Nothing,
}

/// A client transport the listener can serve.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready once it is known what the peer speaks; consumes nothing.
    fn poll_speaks(&self, cx: &mut Context<'_>) -> Poll<Speaks>;
}

impl Transport for tokio::net::TcpStream {
    fn poll_speaks(&self, cx: &mut Context<'_>) -> Poll<Speaks> {
        let mut buf = [0u8; H2_PREFACE.len()];
        let mut rb = ReadBuf::new(&mut buf);
        Poll::Ready(match ready!(self.poll_peek(cx, &mut rb)) {
            Ok(0) | Err(_) => Speaks::Nothing,
            Ok(n) if !H2_PREFACE.starts_with(&rb.filled()[..n]) => Speaks::Http1,
            Ok(n) if n == H2_PREFACE.len() => Speaks::Http2,
            // A partial preface: more bytes are on their way (peeking again would spin).
            Ok(_) => Speaks::Unsure,
        })
    }
}

#[cfg(test)]
mod tests;
