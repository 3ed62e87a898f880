//! Keep-alive HTTP/1.1 connections to one upstream, each driven by the request task that is
//! using it.
//!
//! hyper-util's legacy client runs every connection in a task of its own and hands requests
//! and responses to it over channels: two task wake-ups and a hashed pool lookup per request.
//! Here a request takes an idle connection (or opens one), polls the connection itself while
//! it waits for the answer, and the response body keeps polling it while it streams; when the
//! body is complete the connection goes back to the pool. A connection that is dropped half
//! way (client gone, timeout) is closed, never reused.
//!
//! Callgrind counted about a quarter fewer instructions per proxied request than the legacy
//! client (BENCHMARKS.md).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::errors::{Failure, UpstreamErrors};
use crate::body::Body;

type Io = TokioIo<TcpStream>;

/// hyper's connection with upgrade support (its type can't be named; boxed once per
/// connection).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send + Sync>>;

/// One upstream connection: the request sender and the connection state machine.
pub(crate) struct Conn {
    tx: http1::SendRequest<Body>,
    conn: Driver,
}

impl Conn {
    /// Drives the connection; true while it is open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.as_mut().poll(cx).is_pending()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections of one upstream, newest last.
pub(crate) struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// How often idle connections are checked for a close by the upstream and for expiry.
    sweep_every: Duration,
    /// Whether the sweeper task runs (started with the first idle connection).
    sweeping: AtomicBool,
    /// The upstream's error counters: a response body that breaks off is counted by the
    /// body itself (the only one to see it), which holds the pool anyway.
    pub(super) errors: UpstreamErrors,
}

/// Why an exchange failed.
pub(crate) enum SendError {
    Connect(std::io::Error),
    Exchange(hyper::Error),
}

impl SendError {
    /// The kind of failure, or `None` when it was not the upstream's.
    pub(super) fn failure(&self) -> Option<Failure> {
        match self {
            SendError::Connect(_) => Some(Failure::Connect),
            SendError::Exchange(e) => Failure::of_exchange(e),
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Exchange(e) => write!(f, "{e}"),
        }
    }
}

impl Pool {
    pub(crate) fn new(
        max_idle: usize,
        idle_timeout: Duration,
        sweep_every: Duration,
        errors: UpstreamErrors,
    ) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            sweep_every,
            sweeping: AtomicBool::new(false),
            errors,
        })
    }

    /// Drops idle connections that the upstream closed or that outlived the idle timeout.
    fn sweep_once(&self) {
        let now = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.lock().retain_mut(|i| {
            now.duration_since(i.since) < self.idle_timeout
                && i.conn.drive(&mut cx)
                && i.conn.tx.is_ready()
        });
    }

    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest idle connection that is still open and ready for a request.
    fn checkout(&self, cx: &mut Context<'_>) -> Option<Conn> {
        loop {
            let mut idle = self.lock().pop_back()?;
            if idle.since.elapsed() < self.idle_timeout
                && idle.conn.drive(cx)
                && idle.conn.tx.is_ready()
            {
                return Some(idle.conn);
            }
            // Closed by the upstream, expired, or not idle after all: dropped (closed).
        }
    }

    fn checkin(self: &Arc<Self>, conn: Conn) {
        let now = Instant::now();
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            // A body dropped while a runtime shuts down has none to spawn on.
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(sweep(Arc::downgrade(self)))),
                Err(_) => self.sweeping.store(false, Ordering::Relaxed),
            }
        }
        let mut idle = self.lock();
        // The oldest go first: past the idle timeout, or beyond the bound.
        while idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= self.idle_timeout)
            || idle.len() >= self.max_idle
        {
            if idle.pop_front().is_none() {
                break;
            }
        }
        if self.max_idle > 0 {
            idle.push_back(Idle { conn, since: now });
        }
    }

    async fn open(connect: impl Future<Output = std::io::Result<Io>>) -> Result<Conn, SendError> {
        let io = connect.await.map_err(SendError::Connect)?;
        let (tx, conn) = http1::handshake(io).await.map_err(SendError::Exchange)?;
        Ok(Conn {
            tx,
            conn: Box::pin(conn.with_upgrades()),
        })
    }

    /// Sends `req` on an idle connection, or on a new one from `connect`. A request that an
    /// idle connection closed before it was sent is retried once on a new connection.
    pub(crate) fn send<'a, C, F>(
        self: &'a Arc<Self>,
        req: Request<Body>,
        connect: C,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, SendError>> + Send + 'a
    where
        C: Fn() -> F + Send + 'a,
        F: Future<Output = std::io::Result<Io>> + Send + 'a,
    {
        // An async block, not an async fn: that would keep the request twice in the future.
        let mut req = req;
        async move {
            loop {
                let (mut conn, fresh) = match poll_fn(|cx| Poll::Ready(self.checkout(cx))).await {
                    Some(c) => (c, false),
                    // Boxed: connecting is rare and its futures are large; inline they would
                    // be part of (and moved with) every request's future.
                    None => (Box::pin(Self::open(connect())).await?, true),
                };
                let mut answer = std::pin::pin!(conn.tx.try_send_request(req));
                let result = poll_fn(|cx| {
                    let open = conn.drive(cx);
                    match answer.as_mut().poll(cx) {
                        Poll::Ready(r) => Poll::Ready((r, open)),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await;
                match result {
                    (Ok(resp), open) => {
                        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                            // The connection hands its socket over to the upgrade when it
                            // ends (often already within the poll that delivered the 101).
                            if open {
                                tokio::spawn(conn.conn);
                            }
                            return Ok(resp.map(|body| UpstreamBody::new(body, None, None)));
                        }
                        let keep = open.then_some(conn);
                        let pool = self.clone();
                        return Ok(resp.map(|body| UpstreamBody::new(body, keep, Some(pool))));
                    }
                    (Err(mut e), _) => match e.take_message() {
                        Some(back) if !fresh => req = back,
                        _ => return Err(SendError::Exchange(e.into_error())),
                    },
                }
            }
        }
    }
}

/// Sweeps a pool's idle connections every `sweep_every`, until the pool is gone (a reload
/// replaced it). Without it, a burst's connections would stay open, possibly half-closed by
/// the upstream, until the next request of that upstream.
async fn sweep(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(p) => p.sweep_every,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.sweep_once(),
            None => return,
        }
    }
}

/// A response body from the upstream; it drives its connection and returns it to the pool
/// once the whole body has been read.
pub(crate) struct UpstreamBody {
    body: Incoming,
    conn: Option<Conn>,
    pool: Option<Arc<Pool>>,
}

impl UpstreamBody {
    fn new(body: Incoming, conn: Option<Conn>, pool: Option<Arc<Pool>>) -> Self {
        Self { body, conn, pool }
    }

    /// The response is complete: the connection goes back to the pool if it is ready for
    /// another request. It is not when the upstream answered before reading the whole
    /// request body (an early 401 or 413): then it closes, which also ends the client's
    /// unread upload.
    fn release(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.as_ref()) {
            if conn.tx.is_ready() {
                pool.checkin(conn);
            }
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(conn) = this.conn.as_mut() {
            if !conn.drive(cx) {
                // Closed: the body sees the end or the error through its own channel.
                this.conn = None;
            }
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => {
                this.conn = None;
                if let Some(pool) = &this.pool {
                    pool.errors.count(Failure::Body);
                }
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Reusable only when the whole body was read; otherwise it closes with the drop.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that answers one request with a keep-alive 200, then closes the
    /// connection when told to.
    async fn answer_once(close: tokio::sync::oneshot::Receiver<()>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            let _ = close.await;
        });
        addr
    }

    #[tokio::test]
    async fn sweep_drops_idle_connections_the_upstream_closed() {
        let (close, closed) = tokio::sync::oneshot::channel();
        let addr = answer_once(closed).await;
        let pool = Pool::new(
            8,
            Duration::from_secs(90),
            Duration::from_millis(20),
            UpstreamErrors::noop(),
        );
        let req = Request::get("/")
            .header("host", "up")
            .body(crate::body::empty())
            .unwrap();
        let connect = || async move { Ok(TokioIo::new(TcpStream::connect(addr).await?)) };
        let resp = pool.send(req, connect).await.ok().expect("an answer");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(pool.idle_len(), 1, "the connection went back to the pool");
        // The upstream closes it; no request comes, yet the sweep finds out.
        close.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.idle_len() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the closed idle connection was never dropped");
    }
}
