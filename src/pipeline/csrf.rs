//! Phase 7a: with `[browser]` on, a request authenticated by the access cookie (no
//! `Authorization` header) notes that for the silent refresh, and an unsafe one passes the
//! CSRF check ([`browser::csrf_check`]). Bearer-authenticated requests are not subject to it:
//! no other site can make a browser send an `Authorization` header.

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
    if !cx.via_cookie || browser::is_safe(&parts.method) {
        return Ok(());
    }
    let cfg = cx.cfg();
    let addr = proxy::client_addr(cx.conn.peer, &parts.headers, &cfg.server.trusted_proxies);
    let authority = parts.uri.authority().map(|a| a.as_str());
    let own = browser::own_origin(&parts.headers, authority, cx.conn.tls, addr.peer_trusted);
    browser::csrf_check(cx.live, &parts.headers, own.as_deref(), None)
}
