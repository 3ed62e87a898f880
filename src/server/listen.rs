//! Binding the listeners and accepting on them: the proxy listener, capped at
//! `max_connections` at once, and the admin listener, never capped (health checks, metrics
//! and revoking sessions must stay reachable while a flood holds every client slot). Each
//! accept loop stops on the app's shutdown signal, and the per-connection limits it hands on
//! ([`Limits`]) are fixed at start: listener settings need a restart.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::conn::{Conn, Protocols};
use super::tls;
use crate::app::App;
use crate::config::Server as ServerConfig;
use crate::shutdown::{Signal, Work};

/// Which listener a connection came in on, and so which router answers it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Proxy,
    Admin,
}

/// Per-connection limits, fixed at start (listener settings need a restart).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The TLS handshake and each request head must be done within this.
    pub(super) header_timeout: Duration,
    /// A keep-alive connection with nothing in flight is closed after this.
    pub(super) idle_timeout: Duration,
    /// A write the client does not take for this long drops the connection.
    pub(super) send_timeout: Duration,
    /// After the shutdown signal, a connection has this long to finish.
    pub(super) shutdown_grace: Duration,
    /// The largest request head (hyper answers 431 beyond it).
    pub(super) max_header_bytes: usize,
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

/// The listeners of a config, bound but not yet accepting.
pub(super) struct Bound {
    /// `server.listen`.
    proxy: TcpListener,
    /// `server.admin_listen`, if set.
    admin: Option<TcpListener>,
    /// The proxy listener's address (a port 0 resolved).
    pub(super) addr: SocketAddr,
    /// The admin listener's address, if there is one.
    pub(super) admin_addr: Option<SocketAddr>,
}

impl Bound {
    /// Binds `server.listen` and `server.admin_listen`; an error names the key and address.
    pub(super) async fn bind(server: &ServerConfig) -> io::Result<Self> {
        let proxy = bind("server.listen", server.listen).await?;
        let admin = match server.admin_listen {
            Some(a) => Some(bind("server.admin_listen", a).await?),
            None => None,
        };
        Ok(Self {
            addr: proxy.local_addr()?,
            admin_addr: admin.as_ref().map(|l| l.local_addr()).transpose()?,
            proxy,
            admin,
        })
    }

    /// Starts the accept loops (TLS, if given, on the proxy listener only).
    pub(super) fn accept(self, app: &Arc<App>, server: &ServerConfig, tls: Option<TlsAcceptor>) {
        let limits = Limits::from(server);
        let slots = Arc::new(Semaphore::new(
            server.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        let proxy = Acceptor::new(self.proxy, Kind::Proxy, app, limits);
        tokio::spawn(
            Acceptor {
                tls,
                slots: Some(slots),
                ..proxy
            }
            .run(),
        );
        if let Some(l) = self.admin {
            tokio::spawn(Acceptor::new(l, Kind::Admin, app, limits).run());
        }
    }
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

/// One listener's accept loop and what it gives each connection.
struct Acceptor {
    /// The bound socket.
    listener: TcpListener,
    /// Which listener this is.
    kind: Kind,
    /// The HTTP machinery, configured once for every connection of this listener.
    protocols: Arc<Protocols>,
    /// Handed to every connection.
    limits: Limits,
    /// TLS for every connection (proxy listener with `server.tls`).
    tls: Option<TlsAcceptor>,
    /// The `max_connections` slots (proxy listener only).
    slots: Option<Arc<Semaphore>>,
    /// The gateway's state, handed to every connection.
    app: Arc<App>,
    /// Stops the loop.
    signal: Signal,
    /// Held while accepting: shutdown waits for the listener to stop.
    _work: Work,
}

impl Acceptor {
    fn new(listener: TcpListener, kind: Kind, app: &Arc<App>, limits: Limits) -> Self {
        Self {
            listener,
            kind,
            protocols: Arc::new(Protocols::new(&limits)),
            limits,
            tls: None,
            slots: None,
            app: app.clone(),
            signal: app.shutdown.signal(),
            _work: app.shutdown.work(),
        }
    }

    /// Accepts until the shutdown signal; dropping the listener then closes the port.
    async fn run(mut self) {
        loop {
            let ControlFlow::Continue(slot) = self.slot().await else {
                break;
            };
            let ControlFlow::Continue((stream, peer)) = self.next().await else {
                break;
            };
            self.spawn(stream, peer, slot);
        }
    }

    /// A slot first, then the connection (as tokio's mini-redis does): while every slot is
    /// taken nothing is accepted, so new connections wait in the kernel's backlog instead of
    /// costing a file descriptor and memory here. The permit lives as long as the connection.
    async fn slot(&mut self) -> ControlFlow<(), Option<OwnedSemaphorePermit>> {
        let Some(slots) = &self.slots else {
            return ControlFlow::Continue(None);
        };
        tokio::select! {
            _ = self.signal.signalled() => ControlFlow::Break(()),
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => ControlFlow::Continue(Some(permit)),
                // The semaphore is never closed; should it be, stop accepting.
                Err(_) => ControlFlow::Break(()),
            },
        }
    }

    /// The next connection, or the shutdown signal.
    async fn next(&mut self) -> ControlFlow<(), (TcpStream, SocketAddr)> {
        loop {
            tokio::select! {
                _ = self.signal.signalled() => return ControlFlow::Break(()),
                r = self.listener.accept() => match r {
                    Ok(x) => return ControlFlow::Continue(x),
                    Err(e) => {
                        // EMFILE and friends: back off a little instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
    }

    /// Serves one connection in a task of its own (after the TLS handshake, if any).
    fn spawn(&self, stream: TcpStream, peer: SocketAddr, slot: Option<OwnedSemaphorePermit>) {
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            protocols: self.protocols.clone(),
            limits: self.limits,
            app: self.app.clone(),
            signal: self.signal.clone(),
            _work: self.app.shutdown.work(),
            _slot: slot,
            peer,
            kind: self.kind,
        };
        let Some(acceptor) = self.tls.clone() else {
            tokio::spawn(conn.serve(stream, false));
            return;
        };
        let timeout = self.limits.header_timeout;
        tokio::spawn(async move {
            if let Some(s) = tls::handshake(&acceptor, stream, timeout, peer).await {
                conn.serve(s, true).await;
            }
        });
    }
}
