//! Listeners and connections: the proxy listener (HTTP/1.1 and h2c by prior knowledge, or TLS
//! with ALPN h2) with its cap on connections at once (`max_connections`), the admin listener,
//! per-connection limits (head size, slow heads, idle keep-alive, clients that stop reading)
//! and one shutdown story: on the app's shutdown signal every listener stops accepting, every
//! connection is asked to finish gracefully, and whatever is still running after
//! `shutdown_grace` is dropped.
//!
//! Every wait of a connection has a deadline: the TLS handshake and a request head
//! `header_timeout`, keep-alive `idle_timeout`, a write the client does not take
//! `send_timeout` (the connection is dropped, and with it the response body and so the
//! upstream connection it drives), and the graceful end after the shutdown signal
//! `shutdown_grace`. A response body waiting for its upstream (a quiet event stream) is the
//! upstream's to end; a WebSocket tunnel ends on the shutdown signal itself (`proxy::tunnel`).
//!
//! One concern per file:
//! - `listen.rs`: binding, the accept loops, the `max_connections` cap, [`listen::Limits`];
//! - `tls.rs`: the TLS acceptor, the handshake, ALPN;
//! - `detect.rs`: which protocol a plaintext connection speaks, from its first bytes;
//! - `conn.rs`: serving one connection (hyper's server, the service, what an alarm leaves);
//! - `watchdog.rs`: one connection's deadlines (`ConnState`, the `Watchdog`, `Alarm`, the
//!   metered socket `MeteredIo`);
//! - `router.rs`: the front router (admin → admin, `login.prefix` and JWKS → endpoints, the
//!   rest → pipeline), each request in its log scope, its id on the answer;
//! - `access.rs`: the access log, one line per answer, written by a thread of its own.
//!
//! The shutdown signal is the app's ([`crate::shutdown::Shutdown`], `app.shutdown`):
//! [`Handle::shutdown`] and SIGTERM/SIGINT ([`StopSignals`], [`Handle::run_until`]) trigger
//! it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;

mod access;
mod conn;
mod detect;
mod listen;
mod router;
mod tls;
mod watchdog;

/// A running gateway: its bound addresses and the means to stop it.
pub struct Handle {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    /// `shutdown_grace` as it was at start.
    grace: Duration,
}

impl Handle {
    /// Triggers the app's shutdown signal: listeners stop accepting, in-flight requests,
    /// tunnels and a reload under way get `shutdown_grace` to finish, then this returns.
    pub async fn shutdown(self) {
        self.app.shutdown.trigger();
        let _ = tokio::time::timeout(self.grace, self.app.shutdown.finished()).await;
    }

    /// Waits for one of `signals` (or the app's shutdown signal, triggered elsewhere), then
    /// shuts down.
    pub async fn run_until(self, mut signals: StopSignals) {
        tokio::select! {
            _ = signals.recv() => {}
            _ = self.app.shutdown.signalled() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
        self.shutdown().await;
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered: from [`StopSignals::register`] on, they no longer
/// end the process by their default action but wait for [`Handle::run_until`]. The command
/// line registers them before the `listening` line, so that a signal sent as soon as it
/// appears shuts down cleanly (exit 0).
pub struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Registers both; inside a Tokio runtime. One that cannot be registered is logged and
    /// left to its default action (Ctrl-C is then still heard through `ctrl_c`).
    pub fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let register = |kind: SignalKind, name: &str| {
                signal(kind)
                    .map_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
                    .ok()
            };
            Self {
                term: register(SignalKind::terminate(), "SIGTERM"),
                int: register(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves at the first of the signals.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match &mut self.term {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match &mut self.int {
                    Some(s) => drop(s.recv().await),
                    None => drop(tokio::signal::ctrl_c().await),
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Waits (up to `limit`) until every access line queued so far is written: before the
/// process exits, and for whoever reads the lines back. False if that took longer.
pub fn flush_access_log(limit: Duration) -> bool {
    access::flush(limit)
}

/// Binds the listeners named in the app's config and starts serving.
///
/// A listener that cannot be bound fails with an error that names its key and address
/// (`server.listen 127.0.0.1:8080: address already in use`).
pub async fn start(app: Arc<App>) -> io::Result<Handle> {
    // Install the metrics recorder before the first request counts anything.
    crate::metrics::prometheus();
    access::init();
    let live = app.live();
    let server = &live.config.server;
    let bound = listen::Bound::bind(server).await?;
    let tls = match &server.tls {
        Some(files) => Some(tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let (addr, admin_addr) = (bound.addr, bound.admin_addr);
    bound.accept(&app, server, tls);
    // The recorder kept small until the shutdown signal.
    crate::metrics::spawn_upkeep(app.shutdown.signal());
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
