//! Serving one connection: which protocol it speaks (`detect.rs`), hyper's HTTP/1 or HTTP/2
//! server over the metered socket, the front router as the service, and the watchdog polled
//! beside it; then what each [`Alarm`] leaves of the connection.
//!
//! Every way out but the connection's own end drops it: the socket closes, and a response
//! body still being sent is dropped with it, which closes the upstream connection that body
//! was reading from (never returned to the pool). Idle and the shutdown signal ask hyper to
//! finish gracefully instead, and the watchdog goes on watching the writes (and, draining,
//! the end of `shutdown_grace`).

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::detect::{Speaks, Transport};
use super::listen::{Kind, Limits};
use super::router;
use super::watchdog::{Alarm, ConnState, MeteredIo, Phase, Watchdog};
use crate::app::App;
use crate::body::Body;
use crate::proxy::ConnInfo;
use crate::shutdown::{Signal, Work};

// HTTP/2 limits, set explicitly rather than left to hyper's and h2's defaults (h2 0.4.20),
// each bounding what one connection can make the gateway hold or do. The floods they answer
// are tested in `tests/it/h2_floods.rs`.
//
// - A header block: at most `max_header_list_size` (= `max_header_bytes`), received in frames
//   of at most `H2_MAX_FRAME`; h2 counts a block's CONTINUATION frames against both
//   (`max_header_list_size / max_frame_size` plus a quarter, at least 5) and answers more with
//   GOAWAY ENHANCE_YOUR_CALM, so a CONTINUATION flood costs a few frames' worth of memory.
// - PING and SETTINGS: h2 writes the acknowledgement before it reads the next frame, so a
//   flood that does not read its acknowledgements stops itself against the socket, and the
//   watchdog drops the connection once a write has not been taken for `send_timeout`. One
//   that does read them gets one small frame back per frame sent, like any other traffic.
// - Streams: `H2_MAX_STREAMS` open at once; `H2_PENDING_RESETS` streams reset by the client
//   before the gateway took them (the Rapid Reset attack, CVE-2023-44487) and
//   `H2_ERROR_RESETS` streams the gateway itself had to reset for errors (MadeYouReset,
//   CVE-2025-8671) end the connection with GOAWAY.
// - Buffers: request bodies the client may send ahead are held to the flow-control windows
//   (`H2_STREAM_WINDOW` per stream, `H2_CONN_WINDOW` in all), response data queued per stream
//   to `H2_SEND_BUF`; the HPACK table stays at the protocol's initial 4 KiB (h2's default;
//   hyper-util's auto builder has no setter for it).

/// Streams open at once on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 256;
/// Largest frame the gateway accepts: the protocol's initial value (RFC 9113 §6.5.2).
const H2_MAX_FRAME: u32 = 16 * 1024;
/// Request body a client may send ahead on one stream, and on the whole connection.
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_CONN_WINDOW: u32 = 1024 * 1024;
/// Response data queued per stream before its body is asked for more.
const H2_SEND_BUF: usize = 400 * 1024;
/// Streams the client reset before they were taken (Rapid Reset); hyper's default.
const H2_PENDING_RESETS: usize = 20;
/// Streams the gateway reset for the client's errors before the connection ends.
const H2_ERROR_RESETS: usize = 256;

/// The HTTP machinery of one listener, configured once.
///
/// hyper-util's auto builder, which reads the first bytes itself and replays them, serves
/// only what detection left unsure (a partial preface, h2 over TLS without ALPN); the rest
/// go to hyper's HTTP/1 or HTTP/2 server directly.
pub(super) struct Protocols {
    /// HTTP/1.1, with upgrades (WebSocket).
    http1: http1::Builder,
    /// HTTP/2 (h2c by prior knowledge, or ALPN h2), with extended CONNECT.
    http2: http2::Builder<TokioExecutor>,
    /// Either, for a connection detection left unsure.
    auto: auto::Builder<TokioExecutor>,
}

impl Protocols {
    pub(super) fn new(limits: &Limits) -> Self {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        // hyper answers 431 itself when a request head outgrows its read buffer; its minimum
        // buffer is 8 KiB, so smaller settings are raised to that.
        // No timer for HTTP/1: hyper would use it for its own 30 s head timeout, arming a
        // timer for every request; the connection watchdog enforces `header_timeout` instead.
        let max_buf = limits.max_header_bytes.max(8192);
        let max_list = limits.max_header_bytes.min(u32::MAX as usize) as u32;
        auto.http1().max_buf_size(max_buf).keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(max_list)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_frame_size(H2_MAX_FRAME)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONN_WINDOW)
            .max_send_buf_size(H2_SEND_BUF)
            .max_pending_accept_reset_streams(H2_PENDING_RESETS)
            .max_local_error_reset_streams(H2_ERROR_RESETS)
            .enable_connect_protocol();
        let mut http1 = http1::Builder::new();
        http1.max_buf_size(max_buf).keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(max_list)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_frame_size(H2_MAX_FRAME)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONN_WINDOW)
            .max_send_buf_size(H2_SEND_BUF)
            .max_pending_accept_reset_streams(H2_PENDING_RESETS)
            .max_local_error_reset_streams(H2_ERROR_RESETS)
            .enable_connect_protocol();
        Self { http1, http2, auto }
    }

    /// The server for a connection that speaks `speaks`. Boxed once per connection: pinned
    /// in place, an async fn's state would keep room for both the unpinned and the pinned
    /// copy of it (idle memory per connection).
    fn serve<T: Transport>(&self, speaks: Speaks, io: Io<T>, svc: Service) -> Served<'_, Io<T>> {
        match speaks {
            Speaks::Http1 => Served::Http1(Box::pin(
                self.http1.serve_connection(io, svc).with_upgrades(),
            )),
            Speaks::Http2 => Served::Http2(Box::pin(self.http2.serve_connection(io, svc))),
            Speaks::Unsure | Speaks::Nothing => {
                Served::Auto(Box::pin(self.auto.serve_connection_with_upgrades(io, svc)))
            }
        }
    }
}

/// The socket as hyper sees it: metered for the watchdog.
type Io<T> = TokioIo<MeteredIo<T>>;

type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// One connection's HTTP server, whichever protocol it speaks.
enum Served<'a, I> {
    Http1(Pin<Box<http1::UpgradeableConnection<I, Service>>>),
    Http2(Pin<Box<http2::Connection<I, Service, TokioExecutor>>>),
    Auto(Pin<Box<auto::UpgradeableConnection<'a, I, Service, TokioExecutor>>>),
}

impl<I> Served<'_, I>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful_shutdown(&mut self) {
        match self {
            Served::Http1(c) => c.as_mut().graceful_shutdown(),
            Served::Http2(c) => c.as_mut().graceful_shutdown(),
            Served::Auto(c) => c.as_mut().graceful_shutdown(),
        }
    }
}

impl<I> Future for Served<'_, I>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    type Output = Result<(), ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Served::Http1(c) => c.as_mut().poll(cx).map_err(Into::into),
            Served::Http2(c) => c.as_mut().poll(cx).map_err(Into::into),
            Served::Auto(c) => c.as_mut().poll(cx),
        }
    }
}

/// The service of one connection: each request to the router of its listener.
#[derive(Clone)]
struct Service {
    app: Arc<App>,
    /// The client's address and whether it came over TLS, for every request.
    info: ConnInfo,
    /// Which router answers.
    kind: Kind,
    /// Told when each request starts and finishes; the read counter of upgrades.
    state: Arc<ConnState>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<hyper::Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = hyper::Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // An HTTP/1.1 upgrade request (hyper gave it an upgrade handle) gets the
        // connection's read counter, for the tunnel to tell bytes read before the 101.
        // Other requests have no extensions at all: this costs them one check.
        if req.version() == http::Version::HTTP_11
            && req
                .extensions()
                .get::<hyper::upgrade::OnUpgrade>()
                .is_some()
        {
            let reads: Arc<dyn crate::proxy::SocketReads> = self.state.clone();
            req.extensions_mut()
                .insert(crate::proxy::ClientReads(reads));
        }
        let app = self.app.clone();
        let info = self.info.clone();
        let counted = matches!(self.kind, Kind::Proxy).then(|| app.clone());
        let in_flight = InFlight::start(self.state.clone(), counted);
        // Boxed per request: hyper keeps a slot of the service future's size for the life
        // of the connection, and the pipeline's future is large (idle memory). No async
        // block around the call: it would keep a dead copy of the request.
        match self.kind {
            Kind::Proxy => Box::pin(router::main(app, req, info).map(move |resp| {
                drop(in_flight);
                Ok(resp)
            })),
            Kind::Admin => Box::pin(router::admin(app, req, info).map(move |resp| {
                drop(in_flight);
                Ok(resp)
            })),
        }
    }
}

/// One request being served on a connection, from its head until its answer's head (or
/// until it is dropped: a client that goes away, an h2 stream reset). The connection's
/// watchdog counts it, and on a main listener so does the gateway
/// (`authgate_requests_in_flight`): hyper calls the service once per request, so an HTTP/1
/// keep-alive connection counts one at a time and an HTTP/2 one each open stream.
struct InFlight {
    conn: Arc<ConnState>,
    app: Option<Arc<App>>,
}

impl InFlight {
    fn start(conn: Arc<ConnState>, app: Option<Arc<App>>) -> Self {
        conn.request_started();
        if let Some(app) = &app {
            app.in_flight.started();
        }
        Self { conn, app }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.request_finished();
        if let Some(app) = &self.app {
            app.in_flight.finished();
        }
    }
}

/// One accepted connection and what it needs to be served.
pub(super) struct Conn {
    /// The listener's HTTP machinery.
    pub(super) protocols: Arc<Protocols>,
    /// The listener's per-connection limits.
    pub(super) limits: Limits,
    /// The gateway's state, for the router.
    pub(super) app: Arc<App>,
    /// The app's shutdown signal, for the watchdog.
    pub(super) signal: Signal,
    /// Dropped when the connection ends; shutdown waits for all of these.
    pub(super) _work: Work,
    /// The connection's `max_connections` slot (proxy listener only), freed when it ends.
    pub(super) _slot: Option<OwnedSemaphorePermit>,
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// Which listener, and so which router.
    pub(super) kind: Kind,
}

impl Conn {
    /// Serves the connection to its end.
    pub(super) async fn serve<T: Transport>(self, stream: T, tls: bool) {
        let state = Arc::new(ConnState::accepted(&self.limits));
        let mut dog = Watchdog::new(state.clone(), self.signal.clone());
        let Some(speaks) = detect(&stream, &mut dog).await else {
            return;
        };
        let io = TokioIo::new(MeteredIo::new(stream, state.clone()));
        let svc = Service {
            app: self.app.clone(),
            info: ConnInfo::new(self.peer, tls),
            kind: self.kind,
            state,
        };
        let mut served = self.protocols.serve(speaks, io, svc);
        self.drive(&mut served, &mut dog).await;
    }

    /// Polls the server and, when it woke the task, the watchdog, until the connection ends
    /// or an alarm ends it.
    async fn drive<I>(&self, served: &mut Served<'_, I>, dog: &mut Watchdog)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        // Whether hyper was asked to finish gracefully (idle or shutdown).
        let mut graceful = false;
        let result = loop {
            let event = poll_fn(|cx| match Pin::new(&mut *served).poll(cx) {
                Poll::Ready(r) => Poll::Ready(Err(r)),
                Poll::Pending => dog.poll(cx).map(Ok),
            })
            .await;
            let alarm = match event {
                Err(r) => break r,
                Ok(alarm) => alarm,
            };
            let Some(phase) = self.after(alarm) else {
                return;
            };
            if !graceful {
                served.graceful_shutdown();
                graceful = true;
            }
            dog.restart(phase);
        };
        if let Err(e) = result {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }

    /// What `alarm` leaves of the connection: the phase it finishes in, or `None` to drop it
    /// now.
    fn after(&self, alarm: Alarm) -> Option<Phase> {
        let peer = self.peer;
        match alarm {
            Alarm::SlowHead => {
                tracing::debug!(%peer, "request head too slow; closing");
                None
            }
            Alarm::SlowReader => {
                tracing::debug!(%peer, "client stopped reading the response; closing");
                None
            }
            Alarm::GraceOver => {
                tracing::debug!(%peer, "not finished within shutdown_grace; closing");
                None
            }
            // Idle: hyper closes at once unless a response is still being sent, which may go
            // on (the client still reading it; a stalled one is a slow reader).
            Alarm::Idle => Some(Phase::Closing),
            Alarm::Drain => Some(Phase::Draining(Instant::now() + self.limits.shutdown_grace)),
        }
    }
}

/// Which protocol: waits (under the watchdog, so the idle timeout and the shutdown signal
/// apply) for the first bytes. `None`: the peer sent nothing, or the watchdog ended it.
async fn detect<T: Transport>(stream: &T, dog: &mut Watchdog) -> Option<Speaks> {
    let speaks = poll_fn(|cx| match stream.poll_speaks(cx) {
        Poll::Ready(s) => Poll::Ready(Ok(s)),
        Poll::Pending => dog.poll(cx).map(Err),
    })
    .await;
    match speaks {
        Ok(Speaks::Nothing) | Err(_) => None,
        Ok(s) => Some(s),
    }
}
