//! TLS on the proxy listener: the acceptor built from `server.tls`'s files (fixed at start),
//! the handshake under `header_timeout`, and ALPN, which tells a TLS connection's protocol
//! (`h2` or `http/1.1`) the way the preface does for a plaintext one (`detect.rs`).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::detect::{Speaks, Transport};

/// The acceptor for a certificate chain and key (PEM files), offering h2 then HTTP/1.1.
pub(super) fn acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
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

/// The TLS handshake of a new connection, given `timeout` (a client that never finishes it
/// holds no slot for longer than a slow request head would); `None` if it failed.
pub(super) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            None
        }
    }
}

/// ALPN: known once the handshake is done, so at once.
impl Transport for TlsStream<TcpStream> {
    fn poll_speaks(&self, _: &mut Context<'_>) -> Poll<Speaks> {
        Poll::Ready(match self.get_ref().1.alpn_protocol() {
            Some(b"h2") => Speaks::Http2,
            Some(b"http/1.1") => Speaks::Http1,
            _ => Speaks::Unsure,
        })
    }
}
