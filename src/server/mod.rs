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
//!   rest → pipeline).
//!
//! The shutdown signal is the app's ([`crate::shutdown::Shutdown`], `app.shutdown`):
//! [`Handle::shutdown`] and SIGTERM/SIGINT ([`Handle::run_until_signal`]) trigger it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;

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
