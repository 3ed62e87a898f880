//! Phase 9: the request to the route's upstream.

use std::future::Future;
use std::time::Instant;

use http::request::Parts;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::RequestCtx;
use crate::body::Body;
use crate::error::GatewayError;
use crate::logs::scope;
use crate::proxy::{self, LimitedBody, UpstreamBody, UpstreamClient, UpstreamError};
use crate::routing::Route;

/// The upstream of `route` and the URI of the request there (the route's prefix stripped
/// from the canonical path, the query as sent).
pub(super) fn target<'l>(
    cx: &RequestCtx<'_, 'l>,
    route: &Route,
    canonical: &str,
    uri: &Uri,
) -> (&'l UpstreamClient, Uri) {
    let upstream = &cx.live.upstreams[route.upstream];
    scope::set_upstream(route.upstream);
    let uri = upstream.uri_for(
        route.forward_path(canonical),
        uri.query(),
        uri.path_and_query(),
    );
    (upstream, uri)
}

/// The outgoing request: the body limited to `max_body_bytes`, HTTP/1.1 towards an HTTP/1
/// upstream, the client's half of a WebSocket upgrade kept for [`super::hand_back`].
pub(super) fn prepare(
    cx: &mut RequestCtx<'_, '_>,
    mut parts: Parts,
    body: Incoming,
) -> Request<Body> {
    if cx.websocket {
        cx.upgrade = proxy::ClientUpgrade::take(&mut parts.extensions, &parts.headers);
    }
    let max = cx.cfg().server.max_body_bytes;
    let body = LimitedBody::new(body, max, cx.too_large.clone()).boxed();
    let mut out = Request::from_parts(parts, body);
    proxy::set_upstream_version(&mut out);
    out
}

/// Sends `out`: the exchange with the upstream, bounded by `request_timeout`. (A plain fn
/// returning the client's future itself: a wrapper would move that large future once more.)
#[inline(always)]
pub(super) fn send<'a>(
    cx: &'a RequestCtx<'_, '_>,
    upstream: &'a UpstreamClient,
    out: Request<Body>,
) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a {
    upstream.send(out, cx.cfg().server.request_timeout, &cx.too_large)
}

/// The exchange's end, `started` when it was sent: timed
/// (`authgate_upstream_duration_seconds`); 502, 504 or 413 when the upstream failed, took
/// longer than `request_timeout`, or the body grew too large.
pub(super) fn done(
    cx: &RequestCtx<'_, '_>,
    started: Instant,
    result: Result<Response<UpstreamBody>, UpstreamError>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    cx.live
        .upstream_duration
        .record(started.elapsed().as_secs_f64());
    Ok(result?)
}
