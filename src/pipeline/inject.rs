//! Phase 8: what the upstream is told: X-Forwarded-* and `Host`, the request's
//! `X-Request-Id`, the verified identity, and (unless `identity.forward_authorization`) no
//! token.

use http::header::{self, HeaderValue};
use http::HeaderMap;
use http::Uri;

use super::RequestCtx;
use crate::auth::{browser, token};
use crate::error::GatewayError;
use crate::logs::request_id::X_REQUEST_ID;
use crate::logs::scope;
use crate::proxy::{self, identity};

/// Sets the forwarding and identity headers of a request for `uri`; 413 when the declared body is larger
/// than `max_body_bytes` (a streamed one is cut in [`super::forward`]).
pub(super) fn headers(
    cx: &RequestCtx<'_, '_>,
    h: &mut HeaderMap,
    uri: &Uri,
) -> Result<(), GatewayError> {
    let cfg = cx.cfg();
    let addr = proxy::client_addr(cx.conn.peer, h, &cfg.server.trusted_proxies);
    let host = h.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    proxy::set_forwarded(h, &addr, cx.conn.tls, host.as_ref(), &cx.conn.peer_ip);
    if let Some(host) = host {
        h.insert(header::HOST, host);
    }
    // The client's own copy (kept or replaced in the router) gives way to the request's id.
    if let Some(id) = scope::with(|s| s.id().clone()) {
        h.insert(X_REQUEST_ID, id);
    }
    if let Some(c) = &cx.identity {
        identity::inject(h, &cfg.identity, c);
    }
    if !cfg.identity.forward_authorization {
        h.remove(header::AUTHORIZATION);
        if let Some(name) = &cfg.token.cookie {
            token::strip_cookie(h, name);
        }
    }
    if let Some(b) = &cfg.browser {
        browser::strip_cookies(h, b, cfg.identity.forward_authorization);
    }
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.server.max_body_bytes) {
        return Err(GatewayError::PayloadTooLarge);
    }
    Ok(())
}
