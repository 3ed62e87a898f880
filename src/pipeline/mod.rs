//! One proxied request through the gateway's phases, in one direction. [`handle`] reads as
//! their list; each is a function in the file named after it, returning a value or a
//! [`GatewayError`] (or a [`Flow`] where a phase may answer by itself):
//!
//! 1. [`admit`]: a head within `max_header_bytes`.
//! 2. [`canonicalise`]: the canonical path; everything below uses it.
//! 3. [`cors::preflight`]: with `[cors]` on, a preflight is answered here, never forwarded.
//! 4. [`route`]: the first matching route.
//! 5. [`strip`]: identity headers on every route, then hop-by-hop.
//! 6. [`authenticate`]: what the route's `auth` mode asks (token, session).
//! 7. [`require`]: the route's `require_roles` / `require_tenants`; then [`csrf`]: with
//!    `[browser]` on, the CSRF check of an unsafe request the access cookie authenticated.
//! 8. [`inject`]: X-Forwarded-*, `Host`, the verified identity; the token removed.
//! 9. [`forward`]: the request to the route's upstream, its body within `max_body_bytes`.
//! 10. [`hand_back`]: the answer: a WebSocket tunnel or the response, hop-by-hop out, a fresh
//!     token in when the old one nears expiry, the body cut if its session ends.
//!
//! Only the caller ([`crate::server`]'s front router) turns an error into an answer, so
//! nothing refused is ever forwarded. The gateway's own endpoints never come here.

mod admit;
mod authenticate;
mod canonicalise;
pub(crate) mod cors;
mod csrf;
mod ctx;
mod forward;
mod hand_back;
mod inject;
mod require;
mod route;
mod strip;

use std::future::Future;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::{App, Live};
use crate::body::Body;
use crate::error::GatewayError;
use crate::metrics::Counted;
use crate::proxy::ConnInfo;

pub(crate) use ctx::{Flow, RequestCtx};
pub(crate) use strip::client_headers as strip_client_headers;

/// Runs one request through the phases; any error is the answer. `counted` learns the route
/// as soon as one is found, for the request counter.
///
/// (An `async` block rather than an `async fn`: an async fn keeps both the argument and its
/// moved copy in the future, and a request is 264 bytes; the future is copied into its box
/// and moved several times per request.)
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub(crate) fn handle<'a, 'l>(
    app: &'a App,
    live: &'l Live,
    req: Request<Incoming>,
    conn: ConnInfo,
    counted: &'a mut Counted<'l>,
) -> impl Future<Output = Result<Response<Body>, GatewayError>> + Send + use<'a, 'l> {
    async move {
        let mut cx = RequestCtx::new(app, live, conn);
        // Phases 1 to 9a in a scope of their own, which ends before the upstream is awaited:
        // the request's parts and the canonical path are then not kept in the future.
        let (out, upstream) = {
            admit::head(&cx, &req)?;
            let (mut parts, body) = req.into_parts();
            let canonical = canonicalise::path(&cx, &parts.uri)?;
            if let Flow::Answer(preflight) = cors::preflight(&cx, &parts) {
                return Ok(preflight);
            }
            let route = route::find(&cx, &canonical, &parts.method)?;
            *counted = Counted::route(route);
            strip::headers(&mut cx, &mut parts.headers);
            cx.identity = match authenticate::identity(&cx, route, &parts.headers).await {
                Ok(identity) => identity,
                Err(e) => return authenticate::renew_or(&cx, &parts, e),
            };
            require::requirements(&cx, route)?;
            csrf::check(&mut cx, &parts)?;
            inject::headers(&cx, &mut parts.headers, &parts.uri)?;
            let (upstream, uri) = forward::target(&cx, route, &canonical, &parts.uri);
            parts.uri = uri;
            (forward::prepare(&mut cx, parts, body), upstream)
        };
        let started = Instant::now();
        let result = forward::send(&cx, upstream, out).await;
        let resp = forward::done(&cx, started, result)?;
        hand_back::answer(cx, upstream, resp)
    }
}
