//! `GET {prefix}/verify`: forward-auth.

use http::{HeaderMap, Method, Response};
use tracing::Level;

use crate::app::{App, Live};
use crate::auth;
use crate::body::{empty, Body};
use crate::error::GatewayError;
use crate::logs::scope;
use crate::proxy::{self, identity, ConnInfo};

/// Forward-auth for nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`.
///
/// Fails closed: the original request comes only from a trusted proxy's `X-Forwarded-Uri`
/// (required) and `X-Forwarded-Method` (default GET). Without them there is no route to judge
/// by, so the answer is 400, never "as for some required route" (that would skip the route's
/// own requirements). The route found then decides exactly as on the proxy path, through the
/// same [`auth::authorize`] and [`auth::refresh::hand_back`].
pub(super) async fn verify(
    app: &App,
    live: &Live,
    headers: &HeaderMap,
    conn: ConnInfo,
) -> Result<Response<Body>, GatewayError> {
    let cfg = &live.config;
    let addr = proxy::client_addr(conn.peer, headers, &cfg.server.trusted_proxies);
    if !addr.peer_trusted {
        scope::note(
            Level::WARN,
            format!(
                "verify: the caller {} is not in server.trusted_proxies, so its \
                 X-Forwarded-Uri and X-Forwarded-Method cannot be believed",
                conn.peer.ip()
            ),
        );
        return Err(GatewayError::BadRequest(
            "verify answers only proxies listed in server.trusted_proxies",
        ));
    }
    let Some(uri) = forwarded(headers, "x-forwarded-uri") else {
        scope::note(Level::WARN, "verify: no X-Forwarded-Uri from the proxy");
        return Err(GatewayError::BadRequest(
            "verify needs one X-Forwarded-Uri (the original request's path)",
        ));
    };
    let method = match forwarded(headers, "x-forwarded-method") {
        None => Method::GET,
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| {
            scope::note(
                Level::WARN,
                "verify: X-Forwarded-Method is not an HTTP method",
            );
            GatewayError::BadRequest("X-Forwarded-Method is not an HTTP method")
        })?,
    };
    // The path of a request target: origin form, or absolute form (some proxies send the URL).
    let target = uri.split(['?', '#']).next().unwrap_or(uri);
    let raw = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    let canonical = crate::routing::canonicalize(raw, cfg.server.path_rules)?;
    let route = cfg.routes.find(&canonical, &method).found()?;
    scope::set_route(route.index);
    let claims = auth::authorize(app, live, route, headers).await?;
    // As on the proxy path: a cookie-authenticated unsafe request passes the CSRF check,
    // judged by the headers the proxy passed on (its X-Forwarded-Host/-Proto are trusted).
    let via_cookie = claims.is_some() && auth::browser::via_cookie(live, headers);
    if via_cookie && !auth::browser::is_safe(&method) {
        let own = auth::browser::own_origin(headers, None, conn.tls, true);
        auth::browser::csrf_check(live, headers, own.as_deref(), None)?;
    }
    let mut resp = Response::new(empty());
    if let Some(c) = &claims {
        identity::inject(resp.headers_mut(), &cfg.identity, c);
        auth::refresh::hand_back(app, live, c, resp.headers_mut(), via_cookie);
    }
    Ok(resp)
}

/// A forwarded header's value: one, non-empty, text; anything else counts as absent.
fn forwarded<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v.to_str().ok().map(str::trim).filter(|v| !v.is_empty()),
        _ => None,
    }
}
