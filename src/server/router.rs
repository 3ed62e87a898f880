//! The front router: which part of the gateway answers a request.
//!
//! On the admin listener, the admin API. On the main listeners, the gateway's own endpoints
//! (`login.prefix` and the JWKS path) before anything else, and every other request through
//! the proxy [`pipeline`]; the two never call each other. Whichever answers, the answer gets
//! the CORS headers for an allowed origin and is counted here.
//!
//! Every request, on either listener, runs in its log [`Scope`]: its `X-Request-Id` (kept
//! from a trusted proxy, or made: [`request_id::of`]), the client's address and the path as
//! sent. The id goes back on every answer; the scope's findings make the access line
//! ([`access`]), written off the request path.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::access;
use crate::app::{App, Live};
use crate::body::Body;
use crate::clock::Millis;
use crate::endpoints::{self, admin, JWKS_PATH};
use crate::error::GatewayError;
use crate::logs::request_id::{self, X_REQUEST_ID};
use crate::logs::scope::{self, Scope};
use crate::metrics::Counted;
use crate::pipeline;
use crate::proxy::{self, ConnInfo};

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
    let live = app.live();
    let start = Start::new(&live, &req, &conn);
    scope::run(start.scope, async move {
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
        let resp = finish(&live, origin, counted, result);
        answered(live, start.timed, start.method, resp)
    })
}

/// Answers one request of the admin listener.
pub(crate) fn admin(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> impl Future<Output = Response<Body>> + Send {
    let live = app.live();
    let start = Start::new(&live, &req, &conn);
    scope::run(start.scope, async move {
        let resp = admin::handle(app, req, conn).await;
        answered(live, start.timed, start.method, resp)
    })
}

/// What is taken of a request before it is handled.
struct Start {
    scope: Scope,
    method: Method,
    /// With the access log on: when the request came (monotonic, and Unix milliseconds).
    timed: Option<(Instant, Millis)>,
}

impl Start {
    fn new(live: &Live, req: &Request<Incoming>, conn: &ConnInfo) -> Self {
        let server = &live.config.server;
        let addr = proxy::client_addr(conn.peer, req.headers(), &server.trusted_proxies);
        let id = request_id::of(req.headers(), addr.peer_trusted);
        Self {
            scope: Scope::new(id, addr.client, req.uri().path_and_query().cloned()),
            method: req.method().clone(),
            timed: live
                .config
                .log
                .access
                .then(|| (Instant::now(), Millis::now())),
        }
    }
}

/// The answer, or the error's: CORS headers for an allowed origin (the refresh header exposed
/// when there is one), counted in `authgate_requests_total` (and a 401 in
/// `authgate_auth_failures_total`).
fn finish(
    live: &Live,
    origin: Option<HeaderValue>,
    counted: Counted<'_>,
    result: Result<Response<Body>, GatewayError>,
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
    resp
}

/// The end of every request, in its scope: the request id on the answer, the scope's notes
/// written, and (`timed`: the access log on) the access line queued.
fn answered(
    live: Arc<Live>,
    timed: Option<(Instant, Millis)>,
    method: Method,
    mut resp: Response<Body>,
) -> Response<Body> {
    let status = resp.status().as_u16();
    let seen = scope::finish(status);
    let Some((id, client_ip, raw)) =
        scope::with(|s| (s.id().clone(), s.client_ip(), s.raw().cloned()))
    else {
        return resp;
    };
    if let Some((started, at)) = timed {
        access::log(access::Entry {
            live,
            ts_ms: at.0,
            elapsed: started.elapsed(),
            request_id: id.clone(),
            method,
            raw,
            seen,
            status,
            client_ip,
        });
    }
    resp.headers_mut().insert(X_REQUEST_ID, id);
    resp
}
