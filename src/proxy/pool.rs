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
use std::sync::{Arc, Mutex};
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
}

/// Why an exchange failed.
pub(crate) enum SendError {
    Connect(std::io::Error),
    Exchange(hyper::Error),
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
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        })
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

    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
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
    pub(crate) async fn send<C, F>(
        self: &Arc<Self>,
        mut req: Request<Body>,
        connect: C,
    ) -> Result<Response<UpstreamBody>, SendError>
    where
        C: Fn() -> F,
        F: Future<Output = std::io::Result<Io>>,
    {
        loop {
            let (mut conn, fresh) = match poll_fn(|cx| Poll::Ready(self.checkout(cx))).await {
                Some(c) => (c, false),
                // Boxed: connecting is rare and its futures are large; inline they would be
                // part of (and moved with) every request's future.
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
                        // The connection hands its socket over to the upgrade when it ends.
                        tokio::spawn(conn.conn);
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

/// A response body from the upstream; it drives its connection and returns it to the pool
/// once the whole body has been read.
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<Conn>,
    pool: Option<Arc<Pool>>,
}

impl UpstreamBody {
    fn new(body: Incoming, conn: Option<Conn>, pool: Option<Arc<Pool>>) -> Self {
        Self { body, conn, pool }
    }

    fn release(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.as_ref()) {
            pool.checkin(conn);
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
            Poll::Ready(Some(Err(_))) => this.conn = None,
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
