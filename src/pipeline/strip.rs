//! Phase 5: what a client may not send on: identity headers on every route, public ones
//! included, then hop-by-hop headers. Connection tokens are applied before anything is
//! injected, so they can never remove what the gateway sets.

use http::header::{self, HeaderMap, HeaderValue};

use super::RequestCtx;
use crate::config::Identity;
use crate::proxy::{self, identity};

/// Strips `h` in place and notes whether the client asks for a WebSocket upgrade.
pub(super) fn headers(cx: &mut RequestCtx<'_, '_>, h: &mut HeaderMap) {
    cx.websocket = client_headers(h, &cx.cfg().identity);
}

/// The work of [`headers`] on its own (the fuzz targets call it too): cookie crumbs joined,
/// identity headers out, then hop-by-hop ones. Whether it is a WebSocket upgrade.
pub(crate) fn client_headers(h: &mut HeaderMap, identity: &Identity) -> bool {
    join_cookies(h);
    let websocket = proxy::is_websocket_upgrade(h);
    identity::strip(h, identity);
    proxy::strip_hop_by_hop(h, websocket, |_| false);
    websocket
}

/// HTTP/2 sends cookies as crumbs, one `cookie` field each (RFC 9113 §8.2.3); an HTTP/1.1
/// upstream expects one `Cookie` header, so they are joined with `; `. Only when there are
/// several (one allocation then).
fn join_cookies(h: &mut HeaderMap) {
    let mut all = h.get_all(header::COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in h.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Made of valid values and "; ", so valid itself.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}
