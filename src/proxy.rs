//! The upstream side: one pooled HTTP/1.1 client per upstream, round robin over its urls at
//! connect time (a url that refuses or times out is skipped), request preparation (hop-by-hop
//! headers, `X-Forwarded-*`, HTTP/1.1 towards the legacy app), timeouts, size limits on the
//! streamed request body, and WebSocket upgrade pass-through (`tunnel.rs`: only after a real
//! WebSocket handshake, closed with a Close frame when its session ends).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::body::{Body, BodyError};

mod errors;
pub(crate) mod identity;
mod pool;
mod tunnel;
use crate::config::{Upstream, UpstreamTarget};
pub(crate) use errors::{Failure, UpstreamErrors};
pub(crate) use pool::UpstreamBody;
pub(crate) use tunnel::{tunnel, ClientReads, ClientUpgrade, SocketReads};

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no upstream url accepted a connection: {0}")]
    Unavailable(String),
    #[error("the upstream did not answer within the request timeout")]
    Timeout,
    #[error("the request body exceeded max_body_bytes")]
    BodyTooLarge,
}

impl From<UpstreamError> for crate::error::GatewayError {
    fn from(e: UpstreamError) -> Self {
        use crate::error::GatewayError;
        match e {
            UpstreamError::Timeout => GatewayError::UpstreamTimeout,
            UpstreamError::BodyTooLarge => GatewayError::PayloadTooLarge,
            UpstreamError::Unavailable(_) => GatewayError::UpstreamUnavailable,
        }
    }
}

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as a header value, formatted once per connection.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    pub(crate) fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            tls,
            peer_ip: ip_value(peer.ip().to_canonical()),
        }
    }
}

/// Connects to the urls of one upstream in turn, starting one further each time, skipping
/// those that refuse or time out.
#[derive(Clone)]
pub(crate) struct RoundRobin {
    targets: Arc<[UpstreamTarget]>,
    next: Arc<AtomicUsize>,
    connect_timeout: Duration,
}

impl RoundRobin {
    /// A connection to the next url that accepts one.
    async fn connect(&self) -> io::Result<TokioIo<TcpStream>> {
        let targets = &self.targets;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream urls");
        for i in 0..targets.len() {
            let target = &targets[(start + i) % targets.len()];
            let connect = TcpStream::connect(target.authority.as_str());
            match tokio::time::timeout(self.connect_timeout, connect).await {
                Ok(Ok(stream)) => {
                    // Nagle only delays small proxied writes; never worth it here.
                    let _ = stream.set_nodelay(true);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(e)) => {
                    note(format!(
                        "upstream {}: connect failed: {e}",
                        target.authority
                    ));
                    last = e;
                }
                Err(_) => {
                    note(format!("upstream {}: connect timed out", target.authority));
                    last = io::Error::new(io::ErrorKind::TimedOut, "connect timeout");
                }
            }
        }
        Err(last)
    }
}

/// The client for one configured upstream.
pub(crate) struct UpstreamClient {
    pub name: String,
    connector: RoundRobin,
    pool: Arc<pool::Pool>,
    /// `host:port` of the first url: the `Host` of a request that came without one.
    authority: Authority,
    base_path: String,
}

impl UpstreamClient {
    pub(crate) fn new(upstream: &Upstream) -> Self {
        let connector = RoundRobin {
            targets: upstream.targets.clone().into(),
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout: upstream.connect_timeout,
        };
        let first = &upstream.targets[0];
        Self {
            name: upstream.name.clone(),
            connector,
            pool: pool::Pool::new(
                1024,
                Duration::from_secs(90),
                Duration::from_secs(5),
                UpstreamErrors::register(&upstream.name),
            ),
            authority: first.authority.clone(),
            base_path: first.base_path.clone(),
        }
    }

    /// This upstream's `authgate_upstream_errors_total` series.
    pub(crate) fn errors(&self) -> &UpstreamErrors {
        &self.pool.errors
    }

    /// The origin-form URI to send for a forwarded path and query. `original` is the
    /// request's own path and query, reused as is when the forwarded form is the same text.
    pub(crate) fn uri_for(
        &self,
        path: &str,
        query: Option<&str>,
        original: Option<&PathAndQuery>,
    ) -> Uri {
        let path_and_query = match original {
            Some(pq)
                if self.base_path.is_empty()
                    && pq.as_str().starts_with('/')
                    && pq.path() == path
                    && pq.query() == query =>
            {
                pq.clone()
            }
            _ => {
                let mut s = String::with_capacity(
                    self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
                );
                s.push_str(&self.base_path);
                s.push_str(path);
                if let Some(q) = query {
                    s.push('?');
                    s.push_str(q);
                }
                match PathAndQuery::try_from(s) {
                    Ok(pq) => pq,
                    Err(_) => PathAndQuery::from_static("/"),
                }
            }
        };
        Uri::from(path_and_query)
    }

    /// Sends one request; `timeout` bounds the wait for the response head (connecting
    /// included). A failure that is the upstream's is counted by its [`Failure`] kind.
    /// (A plain fn returning an async block: an async fn would keep a second,
    /// moved-from copy of the request in its future.)
    pub(crate) fn send<'a>(
        &'a self,
        mut req: Request<Body>,
        timeout: Duration,
        too_large: &'a AtomicBool,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a {
        if !req.headers().contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(self.authority.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        // A combinator, not an async block: awaiting a captured future moves it into a
        // second slot of the block's state.
        tokio::time::timeout(timeout, self.pool.send(req, || self.connector.connect())).map(
            move |r| match r {
                Err(_) => {
                    self.errors().count(Failure::Timeout);
                    Err(UpstreamError::Timeout)
                }
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(_)) if too_large.load(Ordering::Acquire) => Err(UpstreamError::BodyTooLarge),
                Ok(Err(e)) => {
                    let kind = e.failure();
                    if let Some(kind) = kind {
                        self.errors().count(kind);
                    }
                    note(format!(
                        "upstream {}: exchange failed ({}): {e}",
                        self.name,
                        kind.map_or("client_body", Failure::label)
                    ));
                    Err(UpstreamError::Unavailable(e.to_string()))
                }
            },
        )
    }
}

/// An upstream failure, told in the line of the request it failed (with its path, client and
/// id), or at once outside one.
fn note(text: String) {
    crate::logs::scope::note(tracing::Level::WARN, text);
}

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
];

/// Whether a request asks for a WebSocket upgrade.
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    upgrade && connection_lists(headers, "upgrade")
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: the fixed list, `Proxy-*`, and every header named in
/// `Connection` unless `protected` says the gateway sets it itself. `Upgrade` survives only
/// for a WebSocket upgrade, which keeps `Connection: upgrade` too.
pub(crate) fn strip_hop_by_hop(
    headers: &mut HeaderMap,
    websocket: bool,
    protected: impl Fn(&HeaderName) -> bool,
) {
    // One scan of the names first: most requests carry none of these, and most responses
    // only `Connection: keep-alive`; a scan is much cheaper than a hashed removal per name.
    let listed = |k: &HeaderName| {
        // Every listed name starts with one of these letters; most others are out at once.
        matches!(k.as_str().as_bytes()[0], b'c' | b'k' | b'p' | b't' | b'u')
            && (HOP_BY_HOP.contains(k)
                || *k == header::UPGRADE && !websocket
                || k.as_str().starts_with("proxy-")
                || k.as_str().starts_with("proxy_")
                // `Transfer_Encoding`, `Keep_Alive`: servers that fold `_` into `-` (gunicorn
                // before 22) would read them as the real thing (request smuggling).
                || k.as_str().contains('_')
                    && HOP_BY_HOP
                        .iter()
                        .any(|h| same_name(h.as_str().as_bytes(), k.as_str().as_bytes())))
    };
    if !headers.keys().any(listed) {
        return;
    }
    let mut doomed: Vec<HeaderName> = headers.keys().filter(|k| listed(k)).cloned().collect();
    for v in headers.get_all(header::CONNECTION).iter() {
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',').map(str::trim) {
            // The usual tokens name no header of their own (or one already listed).
            if t.eq_ignore_ascii_case("keep-alive") || t.eq_ignore_ascii_case("close") {
                continue;
            }
            let Ok(name) = HeaderName::from_bytes(t.as_bytes()) else {
                continue;
            };
            let kept = protected(&name) || websocket && name == header::UPGRADE;
            if !kept && headers.contains_key(&name) && !doomed.contains(&name) {
                doomed.push(name);
            }
        }
    }
    for n in doomed {
        headers.remove(n);
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Where a request came from, as far as the gateway may believe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The client: the peer, or for a trusted proxy the nearest untrusted hop it reports.
    pub client: IpAddr,
    pub peer_trusted: bool,
}

/// Works out the client address from the peer and, only for trusted peers, `X-Forwarded-For`:
/// walking its hops from the right past trusted proxies. A hop is `ip`, `ip:port` or
/// `[ipv6]:port` (cloud load balancers write ports); one that cannot be parsed ends the walk,
/// so the client is never taken from the left of something the gateway could not read.
pub(crate) fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer_trusted = is_trusted(&peer_ip);
    let mut client = peer_ip;
    if peer_trusted {
        let values: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
        'walk: for v in values.iter().rev() {
            let Ok(v) = v.to_str() else { break };
            for hop in v.rsplit(',') {
                let Some(ip) = parse_hop(hop.trim()) else {
                    break 'walk;
                };
                client = ip;
                if !is_trusted(&ip) {
                    break 'walk;
                }
            }
        }
    }
    ClientAddr {
        peer: peer_ip,
        client,
        peer_trusted,
    }
}

/// One `X-Forwarded-For` hop: `ip`, `ip:port` or `[ipv6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that make an upstream serve another path or method than the one matched and
/// authorised here (IIS URL Rewrite and Symfony honour the path ones; many frameworks the
/// method ones, so `GET` with `X-HTTP-Method-Override: DELETE` would dodge `methods`):
/// removed from every request, trusted peers included, in any `_`/`-` spelling.
static OVERRIDES: [&str; 5] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Names the gateway sets itself; a client's `_` spelling of them never survives (the dash
/// spelling is replaced by the gateway's own value, or extended from a trusted peer).
static SET_HERE: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
];

/// Whether two header names are the same once case is ignored and `_` equals `-`: many
/// legacy stacks (CGI, PHP, some Java containers, gunicorn before 22) fold `X_User_Id` into
/// the same variable as `X-User-Id`, so every header the gateway removes or sets is matched
/// so.
pub(crate) fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let fold = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            fold(*x) == fold(*y)
        })
}

/// Whether a request header must go whoever sent it, or (`untrusted`) because nothing about
/// forwarding is believed from this peer. Most names are out at the first byte.
fn forwarding_doomed(k: &HeaderName, untrusted: bool) -> bool {
    let n = k.as_str();
    let b = n.as_bytes();
    if b[0] != b'x' && b[0] != b'f' {
        return false;
    }
    let folded = |want: &str| same_name(b, want.as_bytes());
    if OVERRIDES.iter().any(|o| folded(o)) {
        return true;
    }
    if n.contains('_') {
        // An underscore spelling of a forwarding header is nobody's, trusted peer or not.
        return folded("forwarded") || is_x_forwarded(b) || SET_HERE.iter().any(|s| folded(s));
    }
    untrusted && (*k == header::FORWARDED || n.starts_with("x-forwarded-"))
}

/// `x-forwarded-*` in any case and `_`/`-` spelling.
fn is_x_forwarded(b: &[u8]) -> bool {
    b.len() > 12 && same_name(&b[..12], b"x-forwarded-")
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` (and `X-Real-IP`): extended from a trusted
/// peer, replaced from anyone else. `Forwarded` from an untrusted peer is dropped.
/// `peer_value` is `addr.peer` as a header value (formatted once per connection).
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    addr: &ClientAddr,
    tls: bool,
    host: Option<&HeaderValue>,
    peer_value: &HeaderValue,
) {
    // Untrusted peers: nothing they say about forwarding is believed, so every X-Forwarded-*
    // (including -User and -Email, which apps once behind oauth2-proxy trust) and
    // `Forwarded` go, in any `_`/`-` spelling. Path- and method-override headers go from
    // everyone ([`OVERRIDES`]). One scan of the names decides whether any removal is needed.
    let doomed = |k: &HeaderName| forwarding_doomed(k, !addr.peer_trusted);
    if headers.keys().any(doomed) {
        let names: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
    if addr.peer_trusted {
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            headers.insert(X_FORWARDED_FOR, peer_value.clone());
        } else {
            let joined = format!("{}, {}", prior.join(", "), addr.peer);
            if let Ok(v) = HeaderValue::from_str(&joined) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
    } else {
        headers.insert(X_FORWARDED_FOR, peer_value.clone());
    }
    if !addr.peer_trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
    }
    if !addr.peer_trusted || !headers.contains_key(&X_FORWARDED_HOST) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
    let real_ip = if addr.client == addr.peer {
        peer_value.clone()
    } else {
        ip_value(addr.client)
    };
    headers.insert(X_REAL_IP, real_ip);
}

/// An address as a header value, formatted on the stack (no allocation beyond the value's).
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    // 64 bytes hold any IPv4 or IPv6 text form (at most 45 bytes).
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    HeaderValue::from_bytes(&buf[..n]).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Marks requests to the upstream as HTTP/1.1 whatever the client spoke (h2 → h1 upstreams).
pub(crate) fn set_upstream_version(req: &mut Request<Body>) {
    *req.version_mut() = Version::HTTP_11;
}

pin_project_lite::pin_project! {
    /// A request body that fails once more than `limit` bytes have passed, setting `flag` so
    /// the gateway can answer 413 instead of 502.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        flag: Arc<AtomicBool>,
    }
}

impl<B> LimitedBody<B> {
    pub(crate) fn new(inner: B, limit: u64, flag: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            remaining: limit,
            flag,
        }
    }
}

/// The body exceeded `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body too large")]
pub(crate) struct TooLarge;

impl<B> http_body::Body for LimitedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        this.flag.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    *this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// The one-scan shortcut must still catch each kind of hop-by-hop header on its own.
    #[test]
    fn each_hop_by_hop_header_alone_is_stripped() {
        for (name, value) in [
            ("upgrade", "h2c"),
            ("proxy-foo", "bar"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x-t"),
        ] {
            let mut h = hm(&[(name, value), ("accept", "*/*")]);
            strip_hop_by_hop(&mut h, false, |_| false);
            assert!(!h.contains_key(name), "{name} should be stripped");
            assert_eq!(h["accept"], "*/*");
        }
        let mut h = hm(&[("accept", "*/*"), ("x-custom", "1")]);
        strip_hop_by_hop(&mut h, false, |_| false);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn path_override_headers_go_even_from_trusted_peers() {
        let peer: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = hm(&[
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-forwarded-host", "app.example"),
        ]);
        let a = client_addr(peer, &h, &trusted);
        set_forwarded(&mut h, &a, true, None, &ip_value(a.peer));
        assert!(!h.contains_key("x-original-url"));
        assert!(!h.contains_key("x-rewrite-url"));
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "10.0.0.5");
        assert_eq!(h["x-real-ip"], "10.0.0.5");
    }

    #[test]
    fn connection_named_headers_go_but_protected_ones_stay() {
        let mut h = hm(&[
            ("connection", "close, X-Custom, X-User-Id"),
            ("x-custom", "1"),
            ("x-user-id", "gateway-set"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "bar"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false, |n| n == "x-user-id");
        assert!(!h.contains_key("x-custom"));
        assert_eq!(h["x-user-id"], "gateway-set");
        for gone in [
            "connection",
            "keep-alive",
            "te",
            "proxy-authorization",
            "proxy-foo",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be stripped");
        }
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn websocket_keeps_upgrade() {
        let mut h = hm(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true, |_| false);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_replaced_from_untrusted_extended_from_trusted() {
        let peer: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = hm(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let a = client_addr(peer, &h, &trusted);
        assert_eq!(a.client, "1.2.3.4".parse::<IpAddr>().unwrap());
        set_forwarded(&mut h, &a, false, None, &ip_value(a.peer));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.5");
        assert_eq!(h["x-forwarded-proto"], "https");

        let peer: SocketAddr = "192.0.2.9:1234".parse().unwrap();
        let mut h = hm(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let a = client_addr(peer, &h, &trusted);
        assert_eq!(a.client, "192.0.2.9".parse::<IpAddr>().unwrap());
        set_forwarded(
            &mut h,
            &a,
            false,
            Some(&HeaderValue::from_static("app.example")),
            &ip_value(a.peer),
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["x-real-ip"], "192.0.2.9");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn underscore_spellings_and_overrides_go_from_everyone() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        for peer in ["10.0.0.5:1234", "192.0.2.9:1234"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut h = hm(&[
                ("x_forwarded_for", "6.6.6.6"),
                ("X_Real_IP", "6.6.6.6"),
                ("x_original_url", "/admin"),
                ("X_Rewrite_URL", "/admin"),
                ("x_forwarded_host", "evil.example"),
                ("x_forwarded_proto", "https"),
                ("x_forwarded_user", "admin"),
                ("forwarded_", "x"),
                ("x-http-method-override", "DELETE"),
                ("X_HTTP_Method_Override", "DELETE"),
                ("x-http-method", "DELETE"),
                ("x-method-override", "DELETE"),
                ("x_method_override", "DELETE"),
                ("accept", "*/*"),
                ("x_custom", "kept"),
            ]);
            let a = client_addr(peer, &h, &trusted);
            set_forwarded(&mut h, &a, false, None, &ip_value(a.peer));
            for gone in [
                "x_forwarded_for",
                "x_real_ip",
                "x_original_url",
                "x_rewrite_url",
                "x_forwarded_host",
                "x_forwarded_proto",
                "x_forwarded_user",
                "x-http-method-override",
                "x_http_method_override",
                "x-http-method",
                "x-method-override",
                "x_method_override",
            ] {
                assert!(!h.contains_key(gone), "{gone} from {peer}");
            }
            assert_eq!(h["x-forwarded-for"], peer.ip().to_string().as_str());
            assert_eq!(h["x-real-ip"], peer.ip().to_string().as_str());
            assert_eq!(h["accept"], "*/*");
            assert_eq!(h["x_custom"], "kept");
        }
    }

    #[test]
    fn underscore_spellings_of_hop_by_hop_headers_go() {
        let mut h = hm(&[
            ("transfer_encoding", "chunked"),
            ("Keep_Alive", "timeout=5"),
            ("proxy_authorization", "Basic x"),
            ("proxy_connection", "close"),
            ("x_custom", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false, |_| false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x_custom"], "kept");
    }

    #[test]
    fn forwarded_for_hops_with_ports_and_unparsable_ones() {
        let peer: SocketAddr = "10.0.0.5:1".parse().unwrap();
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "198.51.100.7/32".parse().unwrap(),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&[&str], &str)] = &[
            // ip:port, as some cloud load balancers write it: a trusted hop, skipped.
            (&["6.6.6.6, 198.51.100.7:1234"], "6.6.6.6"),
            (&["6.6.6.6:80, 198.51.100.7:1234"], "6.6.6.6"),
            (&["[2001:db8::1]:443, 198.51.100.7"], "2001:db8::1"),
            (&["2001:db8::1, 10.1.1.1"], "2001:db8::1"),
            // An unparsable hop ends the walk: nothing to its left is believed.
            (&["6.6.6.6, garbage, 198.51.100.7"], "198.51.100.7"),
            (&["6.6.6.6, 1.2.3.4:x"], "10.0.0.5"),
            (&["6.6.6.6, unknown"], "10.0.0.5"),
            (&["6.6.6.6, "], "10.0.0.5"),
            // Several headers are one list, the last one nearest.
            (&["6.6.6.6", "1.2.3.4, 10.1.1.1"], "1.2.3.4"),
            (&["6.6.6.6", "10.1.1.1"], "6.6.6.6"),
        ];
        for (values, want) in cases {
            let mut h = HeaderMap::new();
            for v in *values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(
                client_addr(peer, &h, &trusted).client,
                ip(want),
                "{values:?}"
            );
        }
    }

    #[test]
    fn client_addr_skips_trusted_hops() {
        let peer: SocketAddr = "10.0.0.5:1".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = hm(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(
            client_addr(peer, &h, &trusted).client,
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }
}
