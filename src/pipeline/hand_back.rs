//! Phase 10: the upstream's answer on its way back.
//!
//! What a session has open through the gateway ends with it: a WebSocket tunnel is
//! registered at once, a response body (with or without a Content-Length) if it is
//! unfinished after its first poll ([`crate::streams`]). Every tunnel also ends on the
//! shutdown signal.

use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::RequestCtx;
use crate::auth;
use crate::body::Body;
use crate::error::GatewayError;
use crate::proxy::{self, UpstreamBody, UpstreamClient};
use crate::streams::Revocable;

/// The answer to the client: the tunnel opened for a 101, hop-by-hop headers out otherwise,
/// the upstream's own refresh header replaced by ours when the token nears expiry.
pub(super) fn answer(
    mut cx: RequestCtx<'_, '_>,
    upstream: &UpstreamClient,
    mut resp: Response<UpstreamBody>,
) -> Result<Response<Body>, GatewayError> {
    let tunnelled = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if tunnelled {
        open_tunnel(&mut cx, upstream, &mut resp)?;
    } else {
        proxy::strip_hop_by_hop(resp.headers_mut(), false, |_| false);
    }
    let h = resp.headers_mut();
    h.remove(&cx.cfg().token.refresh_header);
    if let Some(c) = &cx.identity {
        auth::refresh::hand_back(cx.app, cx.live, c, h, cx.via_cookie);
    }
    // A tunnel registered itself; a body is cut if its session ends.
    Ok(
        match cx.identity.filter(|c| !tunnelled && c.sid.is_some()) {
            None => resp.map(|b| b.map_err(Into::into).boxed()),
            Some(c) => {
                let streams = cx.app.streams.clone();
                resp.map(|b| Revocable::new(b.map_err(Into::into), streams, c).boxed())
            }
        },
    )
}

/// A 101 that completes the WebSocket handshake the client began opens the tunnel (closed
/// when its session ends); any other 101 (or one the client never asked for) opens nothing,
/// and the upstream connection is dropped with it.
fn open_tunnel(
    cx: &mut RequestCtx<'_, '_>,
    upstream: &UpstreamClient,
    resp: &mut Response<UpstreamBody>,
) -> Result<(), GatewayError> {
    let Some(client) = cx.upgrade.take().filter(|u| u.accepted_by(resp.headers())) else {
        upstream.errors().count(proxy::Failure::BadUpgrade);
        crate::logs::scope::note(
            tracing::Level::WARN,
            format!(
                "upstream {} answered 101 without completing a WebSocket handshake",
                upstream.name
            ),
        );
        return Err(GatewayError::UpstreamUnavailable);
    };
    let upstream_upgrade = hyper::upgrade::on(resp);
    let entry = cx.identity.as_deref().and_then(|c| {
        c.sid
            .as_deref()
            .map(|sid| cx.app.streams.register(&c.sub, sid))
    });
    // Closed on the shutdown signal too, which waits for it.
    let shutdown = &cx.app.shutdown;
    tokio::spawn(proxy::tunnel(
        client,
        upstream_upgrade,
        entry,
        cx.cfg().server.send_timeout,
        shutdown.signal(),
        shutdown.work(),
    ));
    Ok(())
}
