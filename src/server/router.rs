//! The front router: which part of the gateway answers a request.
//!
//! On the admin listener, the admin API. On the main listeners, the gateway's own endpoints
//! (`login.prefix` and the JWKS path) before anything else, and every other request through
//! the proxy [`pipeline`]; the two never call each other. Whichever answers, the answer gets
//! the CORS headers for an allowed origin and is counted here.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::{App, Live};
use crate::body::Body;
use crate::endpoints::{self, admin, JWKS_PATH};
use crate::error::GatewayError;
use crate::metrics::Counted;
use crate::pipeline;
use crate::proxy::ConnInfo;

/// Whether `path` (raw, as requested) is one of the gateway's own endpoints.
pub(crate) fn is_endpoint(live: &Live, path: &str) -> bool {
    let prefix = &live.config.login.prefix;
    path == JWKS_PATH
        || (path.starts_with(prefix.as_str())
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// Answers one request of a main listener.
///
/// (An `async` block rather than an `async fn`: an async fn keeps both the argument and its
/// moved copy in the future, and a request is 264 bytes.)
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub(crate) fn main(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> impl Future<Output = Response<Body>> + Send {
    async move {
        let live = app.live();
        // Only the debug line below needs the time.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let origin = live.config.cors.allow_origin(req.headers());
        let mut counted = Counted::UNROUTED;
        let result = if is_endpoint(&live, req.uri().path()) {
            counted = Counted::AUTH;
            // Boxed: the endpoints' futures are large and rare; inline they would make every
            // proxied request's future (moved by value into hyper) as large as a login.
            Box::pin(endpoints::auth::handle(&app, &live, req, conn)).await
        } else {
            pipeline::handle(&app, &live, req, conn, &mut counted).await
        };
        finish(&live, origin, counted, result, started)
    }
}

/// Answers one request of the admin listener.
pub(crate) fn admin(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> impl Future<Output = Response<Body>> + Send {
    admin::handle(app, req, conn)
}

/// The answer, or the error's: CORS headers for an allowed origin (the refresh header exposed
/// when there is one), counted in `authgate_requests_total` (and a 401 in
/// `authgate_auth_failures_total`).
fn finish(
    live: &Live,
    origin: Option<HeaderValue>,
    counted: Counted<'_>,
    result: Result<Response<Body>, GatewayError>,
    started: Option<Instant>,
) -> Response<Body> {
    let mut resp = result.unwrap_or_else(|e| {
        if e.status() == StatusCode::UNAUTHORIZED {
            metrics::counter!("authgate_auth_failures_total", "reason" => e.code()).increment(1);
        }
        e.into_response()
    });
    let expose = resp
        .headers()
        .contains_key(&live.config.token.refresh_header)
        .then_some(&live.expose_refresh);
    live.config
        .cors
        .decorate(origin, resp.headers_mut(), expose);
    live.count_request(counted, resp.status());
    tracing::debug!(
        status = resp.status().as_u16(),
        route = counted.label,
        elapsed_us = started.map_or(0, |t| t.elapsed().as_micros() as u64),
        "request"
    );
    resp
}
