//! Phase 7a: with `[browser]` on, a request authenticated by the access cookie (no
//! `Authorization` header) notes that for the silent refresh, and an unsafe one passes the
//! CSRF check ([`browser::csrf_check`]). A WebSocket handshake is a GET, but what follows it
//! is anything but safe, and any page may open one with the user's cookies (cross-site
//! WebSocket hijacking; `SameSite=Lax` does not stop a sibling subdomain): it passes the
//! origin half of the check ([`browser::origin_check`]; a browser always sends `Origin` on
//! one, and no page can add `X-CSRF-Token` to it). Bearer-authenticated requests are not
//! subject to either: no other site can make a browser send an `Authorization` header.

use http::request::Parts;

use super::RequestCtx;
use crate::auth::browser;
use crate::error::GatewayError;
use crate::proxy;

/// Sets [`RequestCtx::via_cookie`]; 403 `csrf_failed` for a cross-site unsafe request.
#[inline]
pub(super) fn check(cx: &mut RequestCtx<'_, '_>, parts: &Parts) -> Result<(), GatewayError> {
    if cx.cfg().browser.is_none() || cx.identity.is_none() {
        return Ok(());
    }
    cx.via_cookie = browser::via_cookie(cx.live, &parts.headers);
    let safe = browser::is_safe(&parts.method) && !cx.websocket;
    if !cx.via_cookie || safe {
        return Ok(());
    }
    let cfg = cx.cfg();
    let addr = proxy::client_addr(cx.conn.peer, &parts.headers, &cfg.server.trusted_proxies);
    let authority = parts.uri.authority().map(|a| a.as_str());
    let own = browser::own_origin(&parts.headers, authority, cx.conn.tls, addr.peer_trusted);
    if cx.websocket {
        browser::origin_check(cx.live, &parts.headers, own.as_deref())
    } else {
        browser::csrf_check(cx.live, &parts.headers, own.as_deref(), None)
    }
}
