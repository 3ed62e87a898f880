//! The WebSocket tunnel: bytes copied both ways between an upgraded client and upstream
//! connection, and, when the session it belongs to ends, a clean close: a Close frame with
//! code 1008 (policy violation) and the reason "session ended" to the client, and a masked
//! one to the upstream, so both learn why instead of seeing the connection drop (1006). On
//! the gateway's shutdown signal every tunnel closes the same way with 1001 (going away),
//! and shutdown waits for it (within `shutdown_grace`).
//!
//! A tunnel opens only after a real WebSocket handshake ([`ClientUpgrade::accepted_by`]: the
//! 101 names `websocket` and carries the `Sec-WebSocket-Accept` of the client's key). An
//! upstream that answers 101 and goes on speaking HTTP would otherwise read whatever the
//! client sends next as requests the gateway never checked. For the same reason nothing the
//! client sent before the 101 goes through: a WebSocket client waits for the 101 (RFC 6455
//! §4.1), so bytes hyper had already read past the upgrade request (a request pipelined
//! behind it) end the tunnel instead of being passed on.
//!
//! The tunnel copies raw bytes and never buffers a message. To write a frame of its own it
//! follows the frame headers of each direction ([`FrameTracker`]: lengths only, payloads are
//! skipped) and stops copying only at a frame boundary; a frame already on its way is
//! finished first (within [`CLOSE_GRACE`]), never cut. Any tunnel can be closed so (the
//! shutdown signal reaches them all), so every tunnel follows its frames.
//!
//! A side that takes no bytes for `send_timeout` ends the tunnel (both connections closed),
//! so a peer that stops reading never pins the other one. A quiet tunnel has no deadline:
//! WebSocket peers keep their own pings.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::shutdown::{Signal, Work};
use crate::streams::Entry;

/// The GUID a WebSocket server appends to the client's key (RFC 6455 §1.3).
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How many bytes have been read from a client connection's socket so far. The server puts
/// one in the extensions of each HTTP/1.1 upgrade request; comparing it around the tunnel's
/// first read tells bytes hyper had buffered before the 101 from bytes read after it.
pub(crate) trait SocketReads: Send + Sync {
    fn bytes_read(&self) -> u64;
}

/// The request extension holding a connection's [`SocketReads`].
#[derive(Clone)]
pub(crate) struct ClientReads(pub Arc<dyn SocketReads>);

/// What a client's WebSocket upgrade request leaves for the answer: hyper's upgrade handle,
/// the key the upstream's accept must match, and the connection's read counter.
pub(crate) struct ClientUpgrade {
    on: hyper::upgrade::OnUpgrade,
    key: Option<HeaderValue>,
    reads: Option<Arc<dyn SocketReads>>,
}

impl ClientUpgrade {
    /// Takes the upgrade out of a WebSocket upgrade request's extensions (hyper put the
    /// handle there) and headers.
    pub(crate) fn take(extensions: &mut http::Extensions, headers: &HeaderMap) -> Option<Self> {
        let on = extensions.remove::<hyper::upgrade::OnUpgrade>()?;
        Some(Self {
            on,
            key: headers.get(header::SEC_WEBSOCKET_KEY).cloned(),
            reads: extensions.remove::<ClientReads>().map(|r| r.0),
        })
    }

    /// Whether the upstream's 101 completes the WebSocket handshake this request began
    /// (RFC 6455 §4.1): `Upgrade: websocket`, `Connection: upgrade` and the accept of our key.
    pub(crate) fn accepted_by(&self, answer: &HeaderMap) -> bool {
        let Some(key) = &self.key else {
            return false;
        };
        let upgrade = answer
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
        let accept = answer
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == websocket_accept(key.as_bytes()).as_bytes());
        upgrade && accept && super::connection_lists(answer, "upgrade")
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of SHA-1 of the key and the GUID.
fn websocket_accept(key: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(ctx.finish().as_ref())
}

/// How long a tunnel whose session ended may take to reach frame boundaries and send its
/// Close frames before it is dropped (the contract closes a session's streams within a
/// second).
const CLOSE_GRACE: Duration = Duration::from_millis(900);

/// Why the gateway closes a tunnel, and so the Close frame both sides get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The session ended: 1008, policy violation (RFC 6455 §7.4.1).
    SessionEnded,
    /// The gateway is shutting down: 1001, going away.
    GoingAway,
}

impl Closing {
    fn code(self) -> u16 {
        match self {
            Closing::SessionEnded => 1008,
            Closing::GoingAway => 1001,
        }
    }

    fn reason(self) -> &'static [u8] {
        match self {
            Closing::SessionEnded => b"session ended",
            Closing::GoingAway => b"going away",
        }
    }
}

/// Copies bytes both ways between an upgraded client and upstream connection until either
/// side closes, or the session it belongs to ends, or `stop` (the shutdown signal) comes;
/// then both get a Close frame. `_work` is held to the end: shutdown waits for it.
pub(crate) async fn tunnel(
    client: ClientUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    session: Option<Arc<Entry>>,
    send_timeout: Duration,
    mut stop: Signal,
    _work: Work,
) {
    let ClientUpgrade { on, reads, .. } = client;
    let Some((client, upstream)) = upgraded(on, upstream, &mut stop).await else {
        return;
    };
    let (client_rd, client_wr) = tokio::io::split(TokioIo::new(client));
    let client_rd = FreshOnly {
        inner: client_rd,
        reads,
    };
    let (upstream_rd, upstream_wr) = tokio::io::split(TokioIo::new(upstream));
    let (closing_tx, closing_rx) = watch::channel(None);
    let down = pump(
        upstream_rd,
        client_wr,
        closing_rx.clone(),
        Side::ToClient,
        send_timeout,
    );
    let up = pump(
        client_rd,
        upstream_wr,
        closing_rx,
        Side::ToUpstream,
        send_timeout,
    );
    let both = async { tokio::try_join!(down, up) };
    tokio::pin!(both);
    let result = tokio::select! {
        r = &mut both => r,
        why = closing(session.as_deref(), &mut stop) => {
            let _ = closing_tx.send(Some(why));
            match tokio::time::timeout(CLOSE_GRACE, &mut both).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("tunnel reached no frame boundary in time; dropped");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "tunnel ended");
    }
}

/// Both sides' upgraded connections, once hyper has handed them over; `None` if either
/// upgrade failed or the shutdown signal came first.
async fn upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    stop: &mut Signal,
) -> Option<(hyper::upgrade::Upgraded, hyper::upgrade::Upgraded)> {
    let both = tokio::select! {
        both = async { tokio::join!(client, upstream) } => both,
        _ = stop.signalled() => return None,
    };
    match both {
        (Ok(c), Ok(u)) => Some((c, u)),
        (c, u) => {
            tracing::debug!(
                client_ok = c.is_ok(),
                upstream_ok = u.is_ok(),
                "upgrade failed"
            );
            None
        }
    }
}

/// Resolves when the gateway must close the tunnel, with why: its session ended, or the
/// shutdown signal came. Without a session, only the signal can end it.
async fn closing(session: Option<&Entry>, stop: &mut Signal) -> Closing {
    let ended = async {
        match session {
            Some(entry) => entry.ended().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ended => {
            tracing::info!("session ended: closing its tunnel");
            Closing::SessionEnded
        }
        _ = stop.signalled() => {
            tracing::debug!("shutting down: closing a tunnel");
            Closing::GoingAway
        }
    }
}

/// The client's side of a tunnel, refusing bytes that hyper had read before the 101: the
/// first read must come from the socket (the read counter grows by as much as it returns).
/// Without a counter (never the case for the server's own connections) every read passes.
struct FreshOnly<R> {
    inner: R,
    reads: Option<Arc<dyn SocketReads>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for FreshOnly<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let Some(reads) = &this.reads else {
            return std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let (before, filled) = (reads.bytes_read(), buf.filled().len());
        let r = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, buf));
        let got = (buf.filled().len() - filled) as u64;
        if got > 0 {
            if reads.bytes_read() - before < got {
                tracing::info!("client sent bytes before the upgrade was accepted; tunnel closed");
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bytes sent before the 101",
                )));
            }
            // hyper's buffer is served first: once a read came from the socket it is empty.
            this.reads = None;
        }
        std::task::Poll::Ready(r)
    }
}

/// Which way a pump copies, and so which Close frame it writes when stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Upstream → client: server frames, unmasked; our Close is unmasked too.
    ToClient,
    /// Client → upstream: client frames, masked; our Close must be masked (RFC 6455 §5.3).
    ToUpstream,
}

/// Copies `from` to `to` until `from` ends (then shuts `to` down, passing the half-close on)
/// or `closing` says why the gateway closes the tunnel; then it copies on only to the end of
/// the frame under way, writes its Close frame and shuts `to` down. A write `to` does not
/// take within `send_timeout` is an error, which ends the tunnel.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    mut closing: watch::Receiver<Option<Closing>>,
    side: Side,
    send_timeout: Duration,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // A write taken at once never arms the timer (the timeout polls the write first).
    let stalled = || std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading");
    let mut frames = FrameTracker::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut stopping = None;
    loop {
        if let (Some(why), true) = (stopping, frames.at_boundary()) {
            // A frame that does not parse means the stream is not what it seemed: better no
            // Close than one written into the middle of something else.
            if !frames.lost {
                tokio::time::timeout(send_timeout, to.write_all(&close_frame(side, why)))
                    .await
                    .map_err(|_| stalled())??;
            }
            let _ = to.shutdown().await;
            return Ok(());
        }
        let n = tokio::select! {
            // The stop first: once it has come, a read that is ready as well (the other
            // side's end, perhaps in answer to the Close the other pump just sent) must not
            // win the draw and end this side without its Close.
            biased;
            changed = closing.changed(), if stopping.is_none() => {
                // The sender lives as long as the tunnel; gone, it can only mean stop.
                stopping = match changed {
                    Ok(()) => *closing.borrow_and_update(),
                    Err(_) => Some(Closing::GoingAway),
                };
                continue;
            }
            n = from.read(&mut buf) => n?,
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let upto = frames.advance(&buf[..n], stopping.is_some());
        tokio::time::timeout(send_timeout, to.write_all(&buf[..upto]))
            .await
            .map_err(|_| stalled())??;
    }
}

/// A Close frame with the code and reason of `why`: unmasked to the client, masked with a
/// random key to the upstream.
fn close_frame(side: Side, why: Closing) -> Vec<u8> {
    let reason = why.reason();
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&why.code().to_be_bytes());
    payload.extend_from_slice(reason);
    // FIN + opcode 0x8 (Close); the payload is under 126 bytes, so one length byte.
    let mut frame = vec![0x88, payload.len() as u8];
    if side == Side::ToUpstream {
        frame[1] |= 0x80;
        let mut key = [0u8; 4];
        // The masking key only has to be unpredictable to the page that wrote the frames
        // (RFC 6455 §10.3); the gateway wrote this one, so a fixed key on failure is harmless.
        let _ = aws_lc_rs::rand::fill(&mut key);
        frame.extend_from_slice(&key);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    frame.extend_from_slice(&payload);
    frame
}

/// Follows the frame headers of one direction of a WebSocket stream (RFC 6455 §5.2), to
/// know where frames end. Payloads are skipped by length, never looked at.
#[derive(Debug, Default)]
struct FrameTracker {
    /// The header of the frame being read, as far as it has arrived (at most 14 bytes).
    head: [u8; 14],
    head_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A header that cannot be valid (a 64-bit length with its top bit set) was seen.
    lost: bool,
}

impl FrameTracker {
    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0
    }

    /// Follows `bytes` and returns how many of them to pass on: all of them, or with
    /// `stop_at_boundary` only those up to the first frame boundary (0 when already at one).
    fn advance(&mut self, bytes: &[u8], stop_at_boundary: bool) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            if stop_at_boundary && self.at_boundary() {
                return i;
            }
            if self.payload_left > 0 {
                let take = self.payload_left.min((bytes.len() - i) as u64);
                self.payload_left -= take;
                // `take` is at most `bytes.len() - i`, so it fits in usize.
                i += take as usize;
                continue;
            }
            self.head[self.head_len] = bytes[i];
            self.head_len += 1;
            i += 1;
            if self.head_len < 2 {
                continue;
            }
            let masked = self.head[1] & 0x80 != 0;
            let ext = match self.head[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let need = 2 + ext + if masked { 4 } else { 0 };
            if self.head_len < need {
                continue;
            }
            let len = match ext {
                0 => u64::from(self.head[1] & 0x7f),
                2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                _ => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.head[2..10]);
                    u64::from_be_bytes(b)
                }
            };
            if len >> 63 != 0 {
                self.lost = true;
            }
            self.head_len = 0;
            self.payload_left = len;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame header: FIN + opcode, the mask bit and the payload length, in the shortest form.
    fn frame(opcode: u8, masked: bool, payload_len: usize) -> Vec<u8> {
        let mask = if masked { 0x80 } else { 0 };
        let mut out = vec![0x80 | opcode];
        match payload_len {
            0..=125 => out.push(mask | payload_len as u8),
            126..=65535 => {
                out.push(mask | 126);
                out.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                out.push(mask | 127);
                out.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        out.extend(std::iter::repeat_n(b'x', payload_len));
        out
    }

    #[test]
    fn boundaries_are_found_whatever_the_chunking() {
        for masked in [false, true] {
            let frames = [
                frame(1, masked, 5),
                frame(2, masked, 0),
                frame(2, masked, 300),
                frame(1, masked, 70_000),
                frame(9, masked, 3),
            ];
            let ends: Vec<usize> = frames
                .iter()
                .scan(0, |at, f| {
                    *at += f.len();
                    Some(*at)
                })
                .collect();
            let stream: Vec<u8> = frames.concat();
            for chunk in [1, 2, 3, 7, 1000, stream.len()] {
                let mut t = FrameTracker::default();
                let mut at = 0;
                for piece in stream.chunks(chunk) {
                    assert_eq!(t.advance(piece, false), piece.len());
                    at += piece.len();
                    assert_eq!(
                        t.at_boundary(),
                        ends.contains(&at),
                        "chunk {chunk}, at {at}"
                    );
                }
                assert!(!t.lost);
            }
        }
    }

    #[test]
    fn stopping_passes_on_only_the_rest_of_the_current_frame() {
        let stream = [frame(1, false, 10), frame(1, false, 10)].concat();
        let mut t = FrameTracker::default();
        // 5 bytes into the first frame (2 header + 3 payload)...
        assert_eq!(t.advance(&stream[..5], false), 5);
        // ...stopping: the first frame's last 7 bytes go, nothing of the second.
        assert_eq!(t.advance(&stream[5..], true), 7);
        assert!(t.at_boundary());
        // At a boundary already: nothing more.
        assert_eq!(t.advance(&stream[12..], true), 0);
        // A header split over reads is finished too.
        let mut t = FrameTracker::default();
        let big = frame(2, false, 200);
        assert_eq!(t.advance(&big[..1], false), 1);
        assert_eq!(t.advance(&big[1..], true), big.len() - 1);
        assert!(t.at_boundary());
    }

    #[test]
    fn close_frames_carry_1008_and_the_reason() {
        const REASON: &[u8] = b"session ended";
        let plain = close_frame(Side::ToClient, Closing::SessionEnded);
        assert_eq!(&plain[..2], &[0x88, 15]);
        assert_eq!(&plain[2..4], &1008u16.to_be_bytes());
        assert_eq!(&plain[4..], REASON);
        let masked = close_frame(Side::ToUpstream, Closing::SessionEnded);
        assert_eq!(&masked[..2], &[0x88, 0x80 | 15]);
        let key = &masked[2..6];
        let payload: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(&payload[..2], &1008u16.to_be_bytes());
        assert_eq!(&payload[2..], REASON);
        // Our own frames parse as exactly one frame.
        let mut t = FrameTracker::default();
        assert_eq!(t.advance(&masked, false), masked.len());
        assert!(t.at_boundary());
    }

    #[test]
    fn shutdown_closes_with_1001_going_away() {
        let plain = close_frame(Side::ToClient, Closing::GoingAway);
        assert_eq!(&plain[..2], &[0x88, 12]);
        assert_eq!(&plain[2..4], &1001u16.to_be_bytes());
        assert_eq!(&plain[4..], b"going away");
        let masked = close_frame(Side::ToUpstream, Closing::GoingAway);
        assert_eq!(&masked[..2], &[0x88, 0x80 | 12]);
        let mut t = FrameTracker::default();
        assert_eq!(t.advance(&masked, false), masked.len());
        assert!(t.at_boundary());
    }

    #[test]
    fn the_accept_is_that_of_rfc_6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn an_impossible_length_marks_the_stream_lost() {
        let mut t = FrameTracker::default();
        let mut head = vec![0x82, 127];
        head.extend_from_slice(&u64::MAX.to_be_bytes());
        t.advance(&head, false);
        assert!(t.lost);
    }
}
