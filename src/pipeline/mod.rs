//! One request through the gateway's phases, in one direction:
//! canonicalise the path → match a route → strip identity and hop-by-hop headers →
//! authenticate (token, session, route requirements) → inject identity → forward →
//! hand a fresh token back if the old one nears expiry.
//!
//! Every phase returns a value or a [`GatewayError`]; only [`handle`] turns errors into
//! answers, so nothing refused is ever forwarded.

pub mod cors;
pub mod identity;
pub mod live_streams;
pub mod path;
pub mod refresh;
pub mod route;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::app::{now, now_ms, App, Counted, Live};
use crate::body::Body;
use crate::config::{OnStoreError, SessionMode};
use crate::error::GatewayError;
use crate::proxy::{self, LimitedBody, UpstreamError};
use crate::session::{EndReason, SessionCheck};
use crate::tokens::{Claims, TokenError};
use route::{AuthMode, Route, RouteMatch};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as a header value, formatted once per connection.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            tls,
            peer_ip: proxy::ip_value(peer.ip().to_canonical()),
        }
    }
}

/// Runs one request through the gateway and always produces an answer.
///
/// (Here and in [`run`], an `async` block rather than an `async fn`: an async fn keeps both
/// the argument and its moved copy in the future, and a request is 264 bytes; the future is
/// copied into its box and moved several times per request.)
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub fn handle(
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
        let mut resp = match run(&app, &live, req, conn, &mut counted).await {
            Ok(r) => r,
            Err(e) => {
                if e.status() == StatusCode::UNAUTHORIZED {
                    metrics::counter!("authgate_auth_failures_total", "reason" => e.code())
                        .increment(1);
                }
                e.into_response()
            }
        };
        let refresh_header = &live.config.token.refresh_header;
        let expose = resp
            .headers()
            .contains_key(refresh_header)
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
}

/// The phases; any error is the answer.
#[allow(clippy::manual_async_fn)] // deliberate: see `handle`
fn run<'a, 'l>(
    app: &'a App,
    live: &'l Live,
    req: Request<Incoming>,
    conn: ConnInfo,
    counted: &'a mut Counted<'l>,
) -> impl Future<Output = Result<Response<Body>, GatewayError>> + Send + use<'a, 'l> {
    async move {
        let cfg = &live.config;
        if crate::endpoints::auth::is_ours(live, req.uri().path()) {
            *counted = Counted::AUTH;
            // Boxed: the endpoints' futures are large and rare; inline they would make every
            // proxied request's future (moved by value into hyper) as large as a login.
            return Box::pin(crate::endpoints::auth::handle(app, live, req, conn)).await;
        }
        // Phases 1 to 5 in a scope of their own, which ends before the upstream is awaited:
        // the request's parts and the outgoing request are then not kept in the future.
        let (out, upstream, claims, refreshed, client_upgrade, too_large) = {
            if cfg.server.max_header_bytes < HYPER_MIN_BUF
                && head_size(&req) > cfg.server.max_header_bytes
            {
                return Err(GatewayError::HeadersTooLarge);
            }
            let (mut parts, body) = req.into_parts();
            // 1. canonical path; everything below uses it.
            let canonical =
                path::canonicalize(parts.uri.path(), cfg.server.path_rules).map_err(|e| {
                    tracing::info!(reason = %e, "refused path");
                    GatewayError::BadRequest("the request path is malformed or ambiguous")
                })?;

            // 2. route. With [cors] on, the gateway answers a preflight itself and never
            //    forwards it; with it off, OPTIONS is an ordinary method and the route's `auth`
            //    applies (a preflight-shaped request is never a way past authentication).
            if cfg.cors.enabled() && cors::is_preflight(&parts.method, &parts.headers) {
                return Ok(cfg.cors.preflight(&parts.headers));
            }
            let route: &Route = match cfg.routes.find(&canonical, &parts.method) {
                RouteMatch::Found(r) => r,
                RouteMatch::MethodNotAllowed(_) => return Err(GatewayError::MethodNotAllowed),
                RouteMatch::NotFound => return Err(GatewayError::NoRoute),
            };
            *counted = Counted::route(route);

            // 3. strip: identity headers on every route, then hop-by-hop (Connection tokens
            //    are applied before anything is injected, so they can never remove what we
            //    set).
            let h = &mut parts.headers;
            join_cookies(h);
            let websocket = proxy::is_websocket_upgrade(h);
            identity::strip(h, &cfg.identity);
            proxy::strip_hop_by_hop(h, websocket, |_| false);

            // 4. authenticate.
            let claims = authorize(app, live, route, h).await?;
            let refreshed = claims.as_deref().and_then(|c| silent_refresh(app, live, c));

            // 5. prepare.
            let addr = proxy::client_addr(conn.peer, h, &cfg.server.trusted_proxies);
            let host = h.get(header::HOST).cloned().or_else(|| {
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
            proxy::set_forwarded(h, &addr, conn.tls, host.as_ref(), &conn.peer_ip);
            if let Some(host) = host {
                h.insert(header::HOST, host);
            }
            if let Some(c) = &claims {
                identity::inject(h, &cfg.identity, c);
            }
            if !cfg.identity.forward_authorization {
                h.remove(header::AUTHORIZATION);
                if let Some(name) = &cfg.token.cookie {
                    token::strip_cookie(h, name);
                }
            }
            let max = cfg.server.max_body_bytes;
            let declared = h
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Err(GatewayError::PayloadTooLarge);
            }

            let client_upgrade = if websocket {
                proxy::ClientUpgrade::take(&mut parts.extensions, &parts.headers)
            } else {
                None
            };
            let upstream = &live.upstreams[route.upstream];
            parts.uri = upstream.uri_for(
                route.forward_path(&canonical),
                parts.uri.query(),
                parts.uri.path_and_query(),
            );
            let too_large = Arc::new(AtomicBool::new(false));
            let body = LimitedBody::new(body, max, too_large.clone()).boxed();
            let mut out = Request::from_parts(parts, body);
            proxy::set_upstream_version(&mut out);
            (out, upstream, claims, refreshed, client_upgrade, too_large)
        };

        // forward.
        let started = Instant::now();
        let result = upstream
            .send(out, cfg.server.request_timeout, &too_large)
            .await;
        live.upstream_duration
            .record(started.elapsed().as_secs_f64());
        let mut resp = result.map_err(|e| match e {
            UpstreamError::Timeout => GatewayError::UpstreamTimeout,
            UpstreamError::BodyTooLarge => GatewayError::PayloadTooLarge,
            UpstreamError::Unavailable(_) => GatewayError::UpstreamUnavailable,
        })?;

        // 6. the answer: WebSocket tunnel, hop-by-hop out, our refresh header in.
        // What a session has open through the gateway ends with it: a tunnel is registered
        // at once, a response body (with or without a Content-Length) if it is unfinished
        // after its first poll.
        let mut of_session = None;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // A 101 that is not the WebSocket handshake the client began (or one the client
            // never asked for) opens nothing: the upstream connection is dropped with it.
            let Some(client_upgrade) = client_upgrade.filter(|u| u.accepted_by(resp.headers()))
            else {
                tracing::warn!(
                    upstream = %upstream.name,
                    "upstream answered 101 without completing a WebSocket handshake"
                );
                return Err(GatewayError::UpstreamUnavailable);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let entry = claims.as_deref().and_then(|c| {
                c.sid
                    .as_deref()
                    .map(|sid| app.streams.register(&c.sub, sid))
            });
            tokio::spawn(proxy::tunnel(
                client_upgrade,
                upstream_upgrade,
                entry,
                cfg.server.send_timeout,
            ));
        } else {
            of_session = claims.filter(|c| c.sid.is_some());
            proxy::strip_hop_by_hop(resp.headers_mut(), false, |_| false);
        }
        let h = resp.headers_mut();
        h.remove(&cfg.token.refresh_header);
        if let Some(t) = refreshed {
            hand_back(live, h, &t);
        }
        Ok(match of_session {
            None => resp.map(|b| b.map_err(Into::into).boxed()),
            Some(c) => resp.map(|b| {
                let streams = app.streams.clone();
                live_streams::Revocable::new(b.map_err(Into::into), streams, c).boxed()
            }),
        })
    }
}

/// HTTP/2 sends cookies as crumbs, one `cookie` field each (RFC 9113 §8.2.3); an HTTP/1.1
/// upstream expects one `Cookie` header, so they are joined with `; `. Only when there are
/// several (one allocation then).
fn join_cookies(h: &mut http::HeaderMap) {
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

/// hyper's smallest read buffer: heads beyond it (or beyond a larger `max_header_bytes`) are
/// refused by hyper itself, so only smaller settings need counting here.
const HYPER_MIN_BUF: usize = 8192;

/// The size of a request head as it came on the wire (close enough: request line, names,
/// values, separators). hyper refuses heads beyond its buffer itself; this enforces a smaller
/// `max_header_bytes` with the gateway's JSON answer.
fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Phase 4 for a matched route, shared by the proxy path and `/auth/verify`: what its `auth`
/// mode asks, then its requirements. `public`: no identity. `required`: a valid token with an
/// active session, or the refusal. `optional`: the identity of a valid token; a missing or bad
/// token is ignored, but an ambiguous request (400) and a store failure (503) are not, so an
/// outage never silently turns users anonymous.
pub(crate) async fn authorize(
    app: &App,
    live: &Live,
    route: &Route,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<Claims>>, GatewayError> {
    let claims = match route.auth {
        AuthMode::Public => return Ok(None),
        AuthMode::Required => authenticate(app, live, headers).await?,
        AuthMode::Optional => match authenticate(app, live, headers).await {
            Ok(c) => c,
            Err(e @ (GatewayError::BadRequest(_) | GatewayError::StoreUnavailable)) => {
                return Err(e)
            }
            Err(_) => return Ok(None),
        },
    };
    check_requirements(route, &claims)?;
    Ok(Some(claims))
}

/// Phase 6's decision, shared by the proxy path and `/auth/verify`: a new access token for the
/// session when the verified one is an own token near its expiry and its user still exists.
pub(crate) fn silent_refresh(app: &App, live: &Live, claims: &Claims) -> Option<Arc<str>> {
    let t = &live.config.token;
    let fresh = app
        .refresher
        .maybe_refresh(&t.keys, claims, t.silent_refresh_window, now())?;
    // A user no longer in the users file gets no new token (in stateful mode the reload ended
    // the session anyway; in stateless mode this is what ends its access). Looked up only
    // inside the window, not on every authenticated request.
    (live.login.has_user_id(&claims.sub) != Some(false)).then_some(fresh)
}

/// Puts a silently refreshed token in `refresh_header` (never cached, readable by a browser
/// app) and counts it: one place for every answer that hands one back.
pub(crate) fn hand_back(live: &Live, h: &mut http::HeaderMap, token: &str) {
    let Ok(v) = HeaderValue::from_str(token) else {
        return;
    };
    h.insert(live.config.token.refresh_header.clone(), v);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        live.expose_refresh.clone(),
    );
    metrics::counter!("authgate_silent_refreshes_total").increment(1);
}

/// Token → verified claims → (stateful mode) an active session.
pub(crate) async fn authenticate(
    app: &App,
    live: &Live,
    headers: &http::HeaderMap,
) -> Result<Arc<Claims>, GatewayError> {
    let cfg = &live.config;
    let raw =
        token::extract(headers, cfg.token.cookie.as_deref())?.ok_or(GatewayError::MissingToken)?;
    let claims = cfg
        .token
        .keys
        .verify_shared(raw, now())
        .map_err(|e| match e {
            TokenError::Expired => GatewayError::TokenExpired,
            TokenError::Invalid(why) => {
                tracing::info!(reason = why, "invalid token");
                GatewayError::InvalidToken
            }
        })?;
    if cfg.session.mode == SessionMode::Stateful {
        // Boxed for the same reason: a Redis round trip's future is large.
        Box::pin(check_session(app, live, &claims)).await?;
    }
    Ok(claims)
}

/// The stateful check: the token's session must be active. A store error never ends a
/// session: it is a 503 (`deny`) or the token alone decides (`allow_stateless`).
async fn check_session(app: &App, live: &Live, claims: &Claims) -> Result<(), GatewayError> {
    let Some(sid) = claims.sid.as_deref() else {
        // A token without a session id has no session to be active.
        return Err(GatewayError::SessionRevoked);
    };
    match app.store.check(&claims.sub, sid, now_ms()).await {
        Ok(SessionCheck::Active) => Ok(()),
        Ok(SessionCheck::Ended(EndReason::Replaced)) => Err(GatewayError::SessionReplaced),
        Ok(SessionCheck::Ended(_) | SessionCheck::Unknown) => Err(GatewayError::SessionRevoked),
        Err(e) => {
            metrics::counter!("authgate_store_errors_total").increment(1);
            match live.config.session.on_store_error {
                OnStoreError::Deny => {
                    tracing::warn!(error = %e, "session store unavailable; refusing with 503");
                    Err(GatewayError::StoreUnavailable)
                }
                OnStoreError::AllowStateless => {
                    tracing::warn!(error = %e, "session store unavailable; token accepted on its own");
                    Ok(())
                }
            }
        }
    }
}

/// `require_roles` / `require_tenants`: 403 unless the token has one of them.
pub(crate) fn check_requirements(route: &Route, claims: &Claims) -> Result<(), GatewayError> {
    if !route.require_roles.is_empty() {
        let roles = claims.roles.as_deref().unwrap_or(&[]);
        if !roles.iter().any(|r| route.require_roles.contains(r)) {
            return Err(GatewayError::Forbidden);
        }
    }
    if !route.require_tenants.is_empty() {
        let ok = claims
            .tenant
            .as_ref()
            .is_some_and(|t| route.require_tenants.contains(t));
        if !ok {
            return Err(GatewayError::Forbidden);
        }
    }
    Ok(())
}
