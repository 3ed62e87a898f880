//! Listeners and connections: the proxy listener (HTTP/1.1 and h2c by prior knowledge, or TLS
//! with ALPN h2) with its cap on connections at once (`max_connections`), the admin listener,
//! per-connection limits (head size, slow heads, idle keep-alive, clients that stop reading)
//! and one shutdown story: on the signal every listener stops accepting, every connection is
//! asked to finish gracefully, and whatever is still running after `shutdown_grace` is
//! dropped.
//!
//! Every wait of a connection has a deadline: the TLS handshake and a request head
//! `header_timeout`, keep-alive `idle_timeout`, a write the client does not take
//! `send_timeout` (the connection is dropped, and with it the response body and so the
//! upstream connection it drives), and the graceful end after the shutdown signal
//! `shutdown_grace`. A response body waiting for its upstream (a quiet event stream) is the
//! upstream's to end, like a WebSocket tunnel.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::Server as ServerConfig;
use crate::proxy::ConnInfo;
use crate::shutdown::{Signal, Work};

mod router;

/// A running gateway: its bound addresses and the means to stop it.
pub struct Handle {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    grace: Duration,
}

impl Handle {
    /// Triggers the app's shutdown signal: listeners stop accepting, in-flight requests,
    /// tunnels and a reload under way get `shutdown_grace` to finish, then this returns.
    pub async fn shutdown(self) {
        self.app.shutdown.trigger();
        let _ = tokio::time::timeout(self.grace, self.app.shutdown.finished()).await;
    }

    /// Waits for SIGTERM or SIGINT (or the app's shutdown signal, triggered elsewhere), then
    /// shuts down.
    pub async fn run_until_signal(self) {
        tokio::select! {
            _ = wait_for_signal() => {}
            _ = self.app.shutdown.signalled() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds the listeners named in the app's config and starts serving.
///
/// A listener that cannot be bound fails with an error that names its key and address
/// (`server.listen 127.0.0.1:8080: address already in use`).
pub async fn start(app: Arc<App>) -> io::Result<Handle> {
    // Install the metrics recorder before the first request counts anything.
    crate::metrics::prometheus();
    let live = app.live();
    let server = &live.config.server;
    let listener = bind("server.listen", server.listen).await?;
    let addr = listener.local_addr()?;
    let admin_listener = match server.admin_listen {
        Some(a) => Some(bind("server.admin_listen", a).await?),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let tls = match &server.tls {
        Some(files) => Some(tls_acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let limits = Limits::from(server);
    // Only the proxy listener is capped: the admin listener (health checks, metrics, revoking
    // sessions) must stay reachable while a flood holds every client slot.
    let slots = Arc::new(Semaphore::new(
        server.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    tokio::spawn(accept_loop(
        listener,
        Arc::new(Protocols::new(&limits)),
        limits,
        tls,
        Some(slots),
        app.clone(),
        Kind::Proxy,
    ));
    if let Some(l) = admin_listener {
        tokio::spawn(accept_loop(
            l,
            Arc::new(Protocols::new(&limits)),
            limits,
            None,
            None,
            app.clone(),
            Kind::Admin,
        ));
    }
    match admin_addr {
        Some(admin) => tracing::info!(%addr, %admin, tls = server.tls.is_some(), "listening"),
        None => tracing::info!(%addr, admin = "off", tls = server.tls.is_some(), "listening"),
    }
    Ok(Handle {
        addr,
        admin_addr,
        grace: server.shutdown_grace,
        app,
    })
}

/// Binds `addr`, the value of config key `key`; the error names both, in words a user
/// searches for (the OS's own text, lower-cased, without its `(os error 98)`).
async fn bind(key: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let reason = match e.kind() {
            io::ErrorKind::AddrInUse => "address already in use".to_owned(),
            io::ErrorKind::AddrNotAvailable => "address not available on this host".to_owned(),
            io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), format!("{key} {addr}: {reason}"))
    })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Proxy,
    Admin,
}

/// Per-connection limits, fixed at start (listener settings need a restart).
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    shutdown_grace: Duration,
    max_header_bytes: usize,
}

impl From<&ServerConfig> for Limits {
    fn from(s: &ServerConfig) -> Self {
        Self {
            header_timeout: s.header_timeout,
            idle_timeout: s.idle_timeout,
            send_timeout: s.send_timeout,
            shutdown_grace: s.shutdown_grace,
            max_header_bytes: s.max_header_bytes,
        }
    }
}

/// The HTTP machinery of one listener, configured once.
///
/// A plaintext connection's protocol is told from its first bytes (peeked, not read), a TLS
/// connection's from ALPN, and the connection is then served by hyper's HTTP/1 or HTTP/2
/// server directly. hyper-util's auto builder, which reads the first bytes itself and replays
/// them, serves only what is left unsure (a partial preface, h2 over TLS without ALPN): the
/// replayed bytes make hyper grow its read buffer from 8 to 16 KiB on every connection.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: &Limits) -> Self {
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
            .max_concurrent_streams(256)
            .enable_connect_protocol();
        let mut http1 = http1::Builder::new();
        http1.max_buf_size(max_buf).keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(max_list)
            .max_concurrent_streams(256)
            .enable_connect_protocol();
        Self { http1, http2, auto }
    }
}

/// The HTTP/2 client preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a new connection speaks, as far as can be told before reading from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Http1,
    Http2,
    /// Served by the auto builder, which reads until it knows.
    Unsure,
    /// The peer closed (or the socket failed) before sending anything.
    Nothing,
}

/// A client transport the listener can serve.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
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

impl Transport for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn poll_speaks(&self, _: &mut Context<'_>) -> Poll<Speaks> {
        Poll::Ready(match self.get_ref().1.alpn_protocol() {
            Some(b"h2") => Speaks::Http2,
            Some(b"http/1.1") => Speaks::Http1,
            _ => Speaks::Unsure,
        })
    }
}

/// One connection's HTTP server, whichever protocol it speaks.
enum Served<'a, I, S>
where
    S: hyper::service::HttpService<Incoming>,
{
    Http1(Pin<Box<http1::UpgradeableConnection<I, S>>>),
    Http2(Pin<Box<http2::Connection<I, S, TokioExecutor>>>),
    Auto(Pin<Box<auto::UpgradeableConnection<'a, I, S, TokioExecutor>>>),
}

type ConnError = Box<dyn std::error::Error + Send + Sync>;

impl<I, S, B> Served<'_, I, S>
where
    S: hyper::service::Service<Request<Incoming>, Response = hyper::Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<ConnError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<ConnError>,
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

impl<I, S, B> Future for Served<'_, I, S>
where
    S: hyper::service::Service<Request<Incoming>, Response = hyper::Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<ConnError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<ConnError>,
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

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> io::Result<TlsAcceptor> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no private key in tls_key_file")
        })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    protocols: Arc<Protocols>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    slots: Option<Arc<Semaphore>>,
    app: Arc<App>,
    kind: Kind,
) {
    let mut shutdown = app.shutdown.signal();
    // Held while accepting: shutdown waits for the listener to stop.
    let _work = app.shutdown.work();
    loop {
        // A slot first, then the connection (as tokio's mini-redis does): while every slot is
        // taken nothing is accepted, so new connections wait in the kernel's backlog instead of
        // costing a file descriptor and memory here. The permit lives as long as the connection.
        let slot = match &slots {
            None => None,
            Some(slots) => tokio::select! {
                _ = shutdown.signalled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    // The semaphore is never closed; should it be, stop accepting.
                    Err(_) => break,
                },
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.signalled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            protocols: protocols.clone(),
            limits,
            app: app.clone(),
            shutdown: shutdown.clone(),
            _work: app.shutdown.work(),
            _slot: slot,
            peer,
            kind,
        };
        match tls.clone() {
            None => {
                tokio::spawn(conn.serve(stream, false));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => conn.serve(s, true).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        }
    }
}

struct Conn {
    protocols: Arc<Protocols>,
    limits: Limits,
    app: Arc<App>,
    shutdown: Signal,
    /// Dropped when the connection ends; shutdown waits for all of these.
    _work: Work,
    /// The connection's `max_connections` slot (proxy listener only), freed when it ends.
    _slot: Option<OwnedSemaphorePermit>,
    peer: SocketAddr,
    kind: Kind,
}

impl Conn {
    async fn serve<T: Transport>(self, stream: T, tls: bool) {
        let state = Arc::new(ConnState::new(&self.limits));
        let mut dog = Box::pin(watchdog(
            state.clone(),
            self.shutdown.clone(),
            Phase::Serving,
        ));
        // The watchdog is polled only when its own timer, bell or shutdown signal woke it,
        // not on every wake of the connection (a `select!` would poll it several times per
        // request and re-arm its timer each time).
        let side_waker = Waker::from(state.clone());

        // Which protocol: waits (under the idle timeout) for the first bytes.
        let speaks = poll_fn(|cx| match stream.poll_speaks(cx) {
            Poll::Ready(s) => Poll::Ready(Ok(s)),
            Poll::Pending => state.poll_watchdog(&mut dog, &side_waker, cx).map(Err),
        })
        .await;
        let speaks = match speaks {
            Ok(Speaks::Nothing) | Err(_) => return,
            Ok(s) => s,
        };

        let io = TokioIo::new(Watched {
            inner: stream,
            state: state.clone(),
        });
        let info = ConnInfo::new(self.peer, tls);
        let app = self.app.clone();
        let kind = self.kind;
        let svc_state = state.clone();
        let svc = service_fn(move |mut req: Request<Incoming>| {
            // An HTTP/1.1 upgrade request (hyper gave it an upgrade handle) gets the
            // connection's read counter, for the tunnel to tell bytes read before the 101.
            // Other requests have no extensions at all: this costs them one check.
            if req.version() == http::Version::HTTP_11
                && req
                    .extensions()
                    .get::<hyper::upgrade::OnUpgrade>()
                    .is_some()
            {
                let reads: Arc<dyn crate::proxy::SocketReads> = svc_state.clone();
                req.extensions_mut()
                    .insert(crate::proxy::ClientReads(reads));
            }
            let app = app.clone();
            let info = info.clone();
            let in_flight = InFlight::start(svc_state.clone());
            // Boxed per request: hyper keeps a slot of the service future's size for the
            // life of the connection, and the pipeline's future is large (idle memory). No
            // async block around the call: it would keep a dead copy of the request.
            let fut: ServiceFuture = match kind {
                Kind::Proxy => Box::pin(router::main(app, req, info).map(move |resp| {
                    drop(in_flight);
                    Ok(resp)
                })),
                Kind::Admin => Box::pin(router::admin(app, req, info).map(move |resp| {
                    drop(in_flight);
                    Ok(resp)
                })),
            };
            fut
        });
        // Boxed once per connection: pinned in place, an async fn's state would keep room
        // for both the unpinned and the pinned copy of each (idle memory per connection).
        let protocols = &self.protocols;
        let mut conn = match speaks {
            Speaks::Http1 => Served::Http1(Box::pin(
                protocols.http1.serve_connection(io, svc).with_upgrades(),
            )),
            Speaks::Http2 => Served::Http2(Box::pin(protocols.http2.serve_connection(io, svc))),
            _ => Served::Auto(Box::pin(
                protocols.auto.serve_connection_with_upgrades(io, svc),
            )),
        };
        // Whether hyper was asked to finish gracefully (idle or shutdown).
        let mut graceful = false;
        let result = loop {
            let event = poll_fn(|cx| match Pin::new(&mut conn).poll(cx) {
                Poll::Ready(r) => Poll::Ready(Err(r)),
                Poll::Pending => state.poll_watchdog(&mut dog, &side_waker, cx).map(Ok),
            })
            .await;
            // Every way out but the connection's own end drops it: the socket closes, and
            // a response body still being sent is dropped with it, which closes the upstream
            // connection that body was reading from (never returned to the pool).
            let phase = match event {
                Err(r) => break r,
                Ok(Watch::SlowHead) => {
                    tracing::debug!(peer = %self.peer, "request head too slow; closing");
                    return;
                }
                Ok(Watch::SlowReader) => {
                    tracing::debug!(peer = %self.peer, "client stopped reading the response; closing");
                    return;
                }
                Ok(Watch::GraceOver) => {
                    tracing::debug!(peer = %self.peer, "not finished within shutdown_grace; closing");
                    return;
                }
                // Idle: hyper closes at once unless a response is still being sent, which
                // may go on (the client still reading it; a stalled one is a slow reader).
                Ok(Watch::Idle) => Phase::Closing,
                Ok(Watch::Drain) => Phase::Draining(Instant::now() + self.limits.shutdown_grace),
            };
            if !graceful {
                conn.graceful_shutdown();
                graceful = true;
            }
            state.closing.store(true, Ordering::Relaxed);
            // A fresh watchdog for the rest of the connection's life, polled at once.
            dog = Box::pin(watchdog(state.clone(), self.shutdown.clone(), phase));
            state.fired.store(true, Ordering::Release);
        };
        if let Err(e) = result {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<hyper::Response<crate::body::Body>, Infallible>> + Send>>;

/// One request being served on a connection, from its head until its answer's head (or
/// until it is dropped: a client that goes away, an h2 stream reset).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: Arc<ConnState>) -> Self {
        state.request_started();
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// What ends a connection's normal life.
enum Watch {
    /// Shutdown: finish in-flight requests, then close.
    Drain,
    /// Idle past `idle_timeout`: close (hyper closes an idle connection at once).
    Idle,
    /// A request head took longer than `header_timeout`: close now.
    SlowHead,
    /// A write the client did not take for `send_timeout`: close now.
    SlowReader,
    /// Draining took longer than `shutdown_grace`: close now.
    GraceOver,
}

/// Where a connection is in its life, for its watchdog.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Serving,
    /// Asked to finish after it went idle; the shutdown signal still counts.
    Closing,
    /// Asked to finish by the shutdown signal, by this instant.
    Draining(Instant),
}

/// Watches one connection for a slow head, an idle keep-alive, a client that stopped reading,
/// the shutdown signal and (draining) the end of the grace period. Its timer is armed for the
/// earliest deadline and re-armed only when it fires or when a new head or a blocked write
/// would be due before it.
async fn watchdog(state: Arc<ConnState>, mut shutdown: Signal, phase: Phase) -> Watch {
    let sleep = tokio::time::sleep_until(state.arm());
    tokio::pin!(sleep);
    let (draining, grace_end) = match phase {
        Phase::Draining(at) => (true, at),
        // Never polled (the branch is off), so any instant will do.
        Phase::Serving | Phase::Closing => (false, Instant::now()),
    };
    let grace = tokio::time::sleep_until(grace_end);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = shutdown.signalled(), if !draining => return Watch::Drain,
            _ = grace.as_mut(), if draining => return Watch::GraceOver,
            _ = state.head_bell.notified() => {
                let at = state.armed_at();
                sleep.as_mut().reset(at);
            }
            _ = sleep.as_mut() => match state.expired() {
                Some(Expiry::SlowReader) => return Watch::SlowReader,
                Some(Expiry::SlowHead) => return Watch::SlowHead,
                Some(Expiry::Idle) => return Watch::Idle,
                None => {
                    let at = state.arm();
                    sleep.as_mut().reset(at);
                }
            },
        }
    }
}

/// The watchdog's waker: records that it asked, and wakes the connection task.
impl std::task::Wake for ConnState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.parent.wake();
    }
}

/// What the watchdog knows about one connection.
struct ConnState {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last read or write.
    last_activity: AtomicU64,
    /// Milliseconds since `epoch` (+1) of the first byte of a request head not yet complete; 0: none.
    head_started: AtomicU64,
    inflight: AtomicUsize,
    /// The client spoke the HTTP/2 preface: no head timeout between streams.
    h2: AtomicBool,
    /// Whether any byte has been read yet (the preface check looks at the first read only).
    seen: AtomicBool,
    /// Bytes read from the socket so far (for [`crate::proxy::SocketReads`]).
    bytes_read: AtomicU64,
    /// Milliseconds since `epoch` (+1) of the first write the client did not take, since the
    /// last one it did; 0: none blocked.
    write_blocked: AtomicU64,
    /// Asked to finish (idle or shutdown): no more idle or head deadlines, only the writes.
    closing: AtomicBool,
    /// Rung when a request head starts, or a write blocks, before the watchdog's armed
    /// deadline would notice it.
    head_bell: tokio::sync::Notify,
    /// Milliseconds since `epoch` of the watchdog's armed deadline.
    armed: AtomicU64,
    header_timeout_ms: u64,
    idle_timeout_ms: u64,
    send_timeout_ms: u64,
    /// Set when the watchdog's timer, bell or shutdown signal woke the connection task.
    fired: AtomicBool,
    /// The connection task, woken for the watchdog.
    parent: futures_util::task::AtomicWaker,
}

enum Expiry {
    SlowHead,
    Idle,
    SlowReader,
}

impl ConnState {
    fn new(limits: &Limits) -> Self {
        Self {
            armed: AtomicU64::new(u64::MAX),
            header_timeout_ms: limits.header_timeout.as_millis() as u64,
            idle_timeout_ms: limits.idle_timeout.as_millis() as u64,
            send_timeout_ms: limits.send_timeout.as_millis() as u64,
            write_blocked: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            // The watchdog's first poll arms its timer.
            fired: AtomicBool::new(true),
            parent: futures_util::task::AtomicWaker::new(),
            epoch: Instant::now(),
            last_activity: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
            seen: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            head_bell: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn on_read(&self, first: &[u8]) {
        // Load and store, not an atomic add: one task at a time reads a connection.
        let read = self.bytes_read.load(Ordering::Relaxed);
        self.bytes_read
            .store(read + first.len() as u64, Ordering::Relaxed);
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if !self.seen.swap(true, Ordering::Relaxed) && first.starts_with(b"PRI * HTTP/2.0") {
            self.h2.store(true, Ordering::Relaxed);
        }
        if self.inflight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
            // Only a head due before the armed deadline needs the watchdog to move it up; it
            // is then armed for this head (not re-derived when the watchdog runs, by which
            // time the head may be complete), so the following heads of a busy keep-alive
            // connection ring no bell until the timer has fired once.
            let due = now + self.header_timeout_ms;
            if !self.h2.load(Ordering::Relaxed) && due < self.armed.load(Ordering::Relaxed) {
                self.armed.store(due, Ordering::Relaxed);
                self.head_bell.notify_one();
            }
        }
    }

    fn on_write(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    /// Reports one write's outcome: bytes taken, or the socket full.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => self.on_write(),
            Poll::Pending => self.on_write_blocked(),
            Poll::Ready(_) => {}
        }
    }

    /// A write found the socket full: the client is not reading. Only the first blocked
    /// write since the last one that went through starts the clock.
    fn on_write_blocked(&self) {
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            return;
        }
        let now = self.now_ms();
        self.write_blocked.store(now + 1, Ordering::Relaxed);
        let due = now + self.send_timeout_ms;
        if due < self.armed.load(Ordering::Relaxed) {
            self.armed.store(due, Ordering::Relaxed);
            self.head_bell.notify_one();
        }
    }

    /// Polls the watchdog if its own timer, bell or signal woke the connection task.
    fn poll_watchdog(
        self: &Arc<Self>,
        dog: &mut Pin<Box<impl Future<Output = Watch>>>,
        side_waker: &Waker,
        cx: &mut Context<'_>,
    ) -> Poll<Watch> {
        self.parent.register(cx.waker());
        if self.fired.swap(false, Ordering::AcqRel) {
            return dog.as_mut().poll(&mut Context::from_waker(side_waker));
        }
        Poll::Pending
    }

    fn request_started(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When the watchdog should look again; remembered as the armed deadline.
    fn arm(&self) -> Instant {
        let idle = self.last_activity.load(Ordering::Relaxed) + self.idle_timeout_ms;
        let head = match self.head_started.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => t - 1 + self.header_timeout_ms,
        };
        let send = match self.write_blocked.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => t - 1 + self.send_timeout_ms,
        };
        let at =
            if self.inflight.load(Ordering::Relaxed) > 0 || self.closing.load(Ordering::Relaxed) {
                // Neither the idle nor the head limit applies while a request is served or once
                // the connection is finishing: look again an idle timeout from now (a deadline
                // already past would fire at once, again and again).
                send.min(self.now_ms() + self.idle_timeout_ms)
            } else if self.h2.load(Ordering::Relaxed) {
                idle.min(send)
            } else {
                idle.min(head).min(send)
            };
        self.armed.store(at, Ordering::Relaxed);
        self.epoch + Duration::from_millis(at)
    }

    /// The deadline `on_read` armed for a new head.
    fn armed_at(&self) -> Instant {
        self.epoch + Duration::from_millis(self.armed.load(Ordering::Relaxed))
    }

    fn expired(&self) -> Option<Expiry> {
        let now = self.now_ms();
        // A client that stopped reading is cut whatever else is going on.
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != 0 && now + 1 >= blocked + self.send_timeout_ms {
            return Some(Expiry::SlowReader);
        }
        if self.inflight.load(Ordering::Relaxed) > 0 || self.closing.load(Ordering::Relaxed) {
            return None;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 && !self.h2.load(Ordering::Relaxed) && now + 1 >= head + self.header_timeout_ms
        {
            return Some(Expiry::SlowHead);
        }
        if now >= self.last_activity.load(Ordering::Relaxed) + self.idle_timeout_ms {
            return Some(Expiry::Idle);
        }
        None
    }
}

impl crate::proxy::SocketReads for ConnState {
    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

/// The socket, reporting reads and writes to the connection's watchdog.
struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.state.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.state.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream writes its buffered records here: blocked, the client is not reading.
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if r.is_pending() {
            self.state.on_write_blocked();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

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
}
