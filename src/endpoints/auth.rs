//! The gateway's own endpoints under `login.prefix` (default `/auth`), and
//! `/.well-known/jwks.json`:
//! login, refresh (rotation, grace, theft), logout, logout-all, the caller's sessions,
//! forward-auth `verify`, and the public keys.
//!
//! Every answer that carries tokens has `Cache-Control: no-store`. A store error is a 503 and
//! never ends a session or hands out a token that was not saved.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::app::{App, Live};
use crate::audit::{self, Event, Subject};
use crate::auth;
use crate::body::{empty, full, Body};
use crate::config::LoginBackend;
use crate::error;
use crate::error::GatewayError;
use crate::login::{self, LoginIdentity, LoginOutcome};
use crate::proxy::{self, identity, ConnInfo};
use crate::session::{EndReason, NewSession, RefreshOutcome, Session};
use crate::tokens::{AccessIdentity, Claims};

/// The path of the JWKS document.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Answers one request to an endpoint of ours.
pub async fn handle(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<Body>, GatewayError> {
    let path = req.uri().path();
    if path == JWKS_PATH {
        return match *req.method() {
            Method::GET | Method::HEAD => jwks(live),
            _ => Err(GatewayError::MethodNotAllowed),
        };
    }
    let rest = path[live.config.login.prefix.len()..].to_owned();
    let addr = proxy::client_addr(
        conn.peer,
        req.headers(),
        &live.config.server.trusted_proxies,
    );
    let method = req.method().clone();
    match (method, rest.as_str()) {
        (Method::POST, "/login") => login(app, live, req, addr.client).await,
        (Method::POST, "/refresh") => refresh(app, live, req, addr.client).await,
        (Method::POST, "/logout") => logout(app, live, req.headers(), addr.client, false).await,
        (Method::POST, "/logout-all") => logout(app, live, req.headers(), addr.client, true).await,
        (Method::GET, "/sessions") => sessions(app, live, req.headers()).await,
        (Method::DELETE, p) if p.starts_with("/sessions/") && p.len() > "/sessions/".len() => {
            delete_session(
                app,
                live,
                req.headers(),
                &p["/sessions/".len()..],
                addr.client,
            )
            .await
        }
        (Method::GET | Method::HEAD, "/verify") => verify(app, live, req.headers(), conn).await,
        (_, "/login" | "/refresh" | "/logout" | "/logout-all" | "/sessions" | "/verify") => {
            Err(GatewayError::MethodNotAllowed)
        }
        (_, p) if p.starts_with("/sessions/") => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    }
}

/// A JSON answer that must not be cached (it may carry tokens or session data).
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The whole (small) body of a login or refresh: 413 beyond [`login::MAX_BODY_BYTES`], 408
/// when it takes longer than `header_timeout`, 400 when the client breaks it off.
async fn read_body(live: &Live, req: Request<Incoming>) -> Result<Bytes, GatewayError> {
    // The body must arrive within `header_timeout`, like the head: these bodies are small,
    // and a client trickling one in would hold its connection (and a login slot) for ever.
    // The answer leaves the rest unread, so hyper closes the connection after it.
    let collect = Limited::new(req.into_body(), login::MAX_BODY_BYTES).collect();
    let Ok(read) = tokio::time::timeout(live.config.server.header_timeout, collect).await else {
        tracing::info!("endpoint request body too slow; refused");
        return Err(GatewayError::RequestTimeout);
    };
    match read {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::PayloadTooLarge),
        Err(_) => Err(GatewayError::BadRequest(
            "the request body could not be read",
        )),
    }
}

fn jwks(live: &Live) -> Result<Response<Body>, GatewayError> {
    let doc = live
        .config
        .token
        .keys
        .jwks()
        .ok_or(GatewayError::NotFound)?;
    let mut r = json(StatusCode::OK, &doc);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(r)
}

/// The platform a login is for: the configured header, else the default; unknown is a 400.
fn platform(live: &Live, headers: &HeaderMap) -> Result<String, GatewayError> {
    let p = &live.config.platforms;
    let Some(v) = headers.get(&p.header) else {
        return Ok(p.default.clone());
    };
    let v = v
        .to_str()
        .map_err(|_| GatewayError::BadRequest("unknown platform"))?
        .trim();
    p.allowed
        .iter()
        .find(|a| a.as_str() == v)
        .cloned()
        .ok_or(GatewayError::BadRequest("unknown platform"))
}

fn header_text(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(255).collect())
}

async fn login(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Result<Response<Body>, GatewayError> {
    if matches!(live.config.login.backend, LoginBackend::None) {
        return Err(GatewayError::NotFound);
    }
    if !app.flood.allow(ip) {
        metrics::counter!("authgate_logins_total", "result" => "flood").increment(1);
        return Err(GatewayError::RateLimited);
    }
    let headers = req.headers().clone();
    let platform = platform(live, &headers)?;
    let body = read_body(live, req).await?;
    let username = login::username_of(&body, &live.config.login.username_pointer)
        .map_err(GatewayError::BadRequest)?;
    let t = app.clock.now_ms();
    let lockout = &live.lockout;
    // Who an attempt's audit lines are about before anyone is authenticated.
    let anon = Subject {
        ip: Some(ip),
        platform: Some(&platform),
        ..Default::default()
    };
    if let Some(wait) = lockout
        .check(&app.store, username.as_deref(), ip, t)
        .await?
    {
        return Err(locked(wait, anon));
    }
    let reservation = lockout
        .reserve(&app.store, username.as_deref(), ip, t)
        .await?;
    if let Some(wait) = reservation.refused {
        return Err(locked(wait, anon));
    }
    let user = username.as_deref();
    let failed = || async {
        metrics::counter!("authgate_logins_total", "result" => "failure").increment(1);
        audit::record(Event::LoginFailed, anon);
        let locked = lockout
            .record_failure(&app.store, user, ip, &reservation, t)
            .await?;
        if let Some(wait) = locked {
            audit::record(Event::AccountLocked, anon);
            tracing::info!(
                retry_after = wait.as_secs(),
                "login locked after repeated failures"
            );
        }
        Ok::<(), GatewayError>(())
    };
    let release = || async {
        lockout
            .release(&app.store, user, ip)
            .await
            .map_err(GatewayError::from)
    };
    match live.login.authenticate(body, &headers, ip).await {
        LoginOutcome::Success(mut identity) => {
            lockout.record_success(&app.store, user, ip).await?;
            let set_cookies = std::mem::take(&mut identity.set_cookies);
            let mut resp = issue(app, live, identity, &platform, &headers, ip).await?;
            relay_cookies(resp.headers_mut(), set_cookies);
            metrics::counter!("authgate_logins_total", "result" => "success").increment(1);
            Ok(resp)
        }
        LoginOutcome::InvalidCredentials => {
            failed().await?;
            Err(GatewayError::InvalidCredentials)
        }
        LoginOutcome::Rejected {
            upstream_body,
            set_cookies,
        } => {
            failed().await?;
            let mut r = GatewayError::InvalidCredentials.into_response();
            if let Some(legacy) = upstream_body {
                let e = GatewayError::InvalidCredentials;
                let body = serde_json::json!({
                    "error": e.code(),
                    "message": e.message(),
                    "upstream": legacy,
                });
                *r.body_mut() = full(body.to_string());
            }
            relay_cookies(r.headers_mut(), set_cookies);
            Ok(r)
        }
        LoginOutcome::Relay {
            response,
            counts_as_failure,
        } => {
            if counts_as_failure {
                failed().await?;
            } else {
                release().await?;
            }
            Ok(response)
        }
        LoginOutcome::BadRequest(m) => {
            release().await?;
            Err(GatewayError::BadRequest(m))
        }
        LoginOutcome::Unavailable => {
            release().await?;
            Err(GatewayError::UpstreamUnavailable)
        }
        LoginOutcome::BadIdentity { field } => {
            release().await?;
            Err(GatewayError::UpstreamIdentity(match field {
                "user_id" => "the legacy login answered a user id that cannot be sent as a header",
                "user_name" => {
                    "the legacy login answered a user name that cannot be sent as a header"
                }
                "tenant" => "the legacy login answered a tenant that cannot be sent as a header",
                _ => "the legacy login answered a role that cannot be sent as a header",
            }))
        }
        LoginOutcome::Busy => {
            release().await?;
            Err(GatewayError::LoginBusy)
        }
    }
}

/// The legacy login's `Set-Cookie` values, on the gateway's own answer to the login.
fn relay_cookies(h: &mut HeaderMap, set_cookies: Vec<HeaderValue>) {
    for v in set_cookies {
        h.append(header::SET_COOKIE, v);
    }
}

/// A login refused by the lock-out: counted, audited, 429 with `Retry-After`.
fn locked(wait: std::time::Duration, anon: Subject<'_>) -> GatewayError {
    metrics::counter!("authgate_logins_total", "result" => "locked").increment(1);
    audit::record(Event::AccountLocked, anon);
    GatewayError::AccountLocked { retry_after: wait }
}

/// Creates the session (ending the oldest beyond the platform limit) and answers the pair.
async fn issue(
    app: &App,
    live: &Live,
    identity: LoginIdentity,
    platform: &str,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<Response<Body>, GatewayError> {
    let cfg = &live.config;
    // The store keeps milliseconds; the tokens' iat/exp are whole seconds.
    let t_ms = app.clock.now_ms();
    let t = t_ms.as_secs();
    let new = NewSession {
        user_id: identity.user_id.clone(),
        user_name: identity.user_name.clone(),
        tenant: identity.tenant.clone(),
        roles: identity.roles.clone(),
        platform: platform.to_owned(),
        device: header_text(headers, "x-device-id"),
        ip: ip.to_string(),
        user_agent: header_text(headers, header::USER_AGENT),
    };
    let limit = cfg.platforms.max_sessions.get(platform).copied();
    let created = app.store.create(new, limit, live.lifetimes, t_ms).await?;
    for kicked in &created.kicked {
        audit::record(
            Event::SessionReplaced,
            Subject {
                user_id: Some(&identity.user_id),
                session_id: Some(kicked),
                platform: Some(platform),
                ip: Some(ip),
            },
        );
    }
    let s = &created.session;
    audit::record(
        Event::Login,
        Subject {
            user_id: Some(&s.user_id),
            session_id: Some(&s.id),
            platform: Some(platform),
            ip: Some(ip),
        },
    );
    let mut pair = token_pair(live, s, created.refresh_token.as_str(), t)?;
    if let Some(body) = identity.upstream_body {
        pair["upstream"] = body;
    }
    Ok(json(StatusCode::OK, &pair))
}

/// The access token for a session, minted now.
fn access_for(live: &Live, s: &Session, t: u64) -> Result<(String, Claims), GatewayError> {
    let id = AccessIdentity {
        sub: s.user_id.clone(),
        name: Some(s.user_name.clone()),
        sid: Some(s.id.clone()),
        plat: Some(s.platform.clone()),
        tenant: s.tenant.clone(),
        roles: (!s.roles.is_empty()).then(|| s.roles.clone()),
    };
    live.config.token.keys.mint(&id, t).map_err(|e| {
        tracing::error!(error = %e, "signing an access token failed");
        GatewayError::Internal
    })
}

fn token_pair(
    live: &Live,
    s: &Session,
    refresh_token: &str,
    t: u64,
) -> Result<serde_json::Value, GatewayError> {
    let (access, claims) = access_for(live, s, t)?;
    Ok(serde_json::json!({
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": claims.exp.saturating_sub(t),
        "access_token_expires_at": claims.exp,
        "refresh_token": refresh_token,
        // Rounded down: never a second the store would not honour.
        "refresh_token_expires_at": s.expires_at.as_secs(),
        "session_id": s.id,
        "platform": s.platform,
        "user": { "id": s.user_id, "name": s.user_name },
    }))
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Result<Response<Body>, GatewayError> {
    if !live.config.token.keys.can_sign() {
        // Nothing could be minted: refuse before a rotation spends the refresh token.
        return Err(GatewayError::NotFound);
    }
    let body = read_body(live, req).await?;
    let RefreshBody { refresh_token } = serde_json::from_slice(&body).map_err(|_| {
        GatewayError::BadRequest("expected a JSON body {\"refresh_token\": \"...\"}")
    })?;
    let t_ms = app.clock.now_ms();
    let t = t_ms.as_secs();
    // A user removed from the users file gets no tokens, even if no reload saw the removal
    // (the gateway was down): checked before the store, so nothing rotates for them.
    if let Some((user_id, sid)) = crate::session::session_of_refresh_token(&refresh_token) {
        if live.login.has_user_id(&user_id) == Some(false) {
            return Err(end_removed_user_session(app, &user_id, &sid, ip, t_ms).await);
        }
    }
    match app
        .store
        .refresh(&refresh_token, live.lifetimes, t_ms)
        .await?
    {
        RefreshOutcome::Rotated { session, token } | RefreshOutcome::Grace { session, token } => {
            audit::record(
                Event::Refresh,
                Subject {
                    user_id: Some(&session.user_id),
                    session_id: Some(&session.id),
                    platform: Some(&session.platform),
                    ip: Some(ip),
                },
            );
            Ok(json(
                StatusCode::OK,
                &token_pair(live, &session, token.as_str(), t)?,
            ))
        }
        RefreshOutcome::Theft { session } => {
            audit::record(
                Event::TokenTheftDetected,
                Subject {
                    user_id: Some(&session.user_id),
                    session_id: Some(&session.id),
                    platform: Some(&session.platform),
                    ip: Some(ip),
                },
            );
            tracing::warn!(session_id = %session.id, "refresh token reuse: session ended");
            Err(GatewayError::TokenTheftDetected)
        }
        RefreshOutcome::Invalid => Err(GatewayError::InvalidRefreshToken),
    }
}

/// The refresh of a session whose user is no longer in the users file: the session ends
/// (`revoked`, audited) and the answer is `invalid_refresh_token`, as for any refresh token
/// that cannot be used (the client logs in again). A store error is logged and does not
/// change the answer: whether the user exists does not depend on the store.
async fn end_removed_user_session(
    app: &App,
    user_id: &str,
    sid: &str,
    ip: IpAddr,
    t: crate::session::Millis,
) -> GatewayError {
    match app.store.get(user_id, sid).await {
        Ok(Some(s)) if s.is_active(t) => {
            match app.store.end(user_id, sid, EndReason::Revoked, t).await {
                Ok(true) => audit::record(
                    Event::SessionRevoked,
                    Subject {
                        user_id: Some(user_id),
                        session_id: Some(sid),
                        platform: Some(&s.platform),
                        ip: Some(ip),
                    },
                ),
                Ok(false) => {}
                Err(e) => error::store_failed(&e, "the session stays; the refresh is refused"),
            }
        }
        Ok(_) => {}
        Err(e) => error::store_failed(&e, "the refresh is refused"),
    }
    tracing::info!(%user_id, "refresh refused: the user is no longer in the users file");
    GatewayError::InvalidRefreshToken
}

/// The caller's verified claims with an active session (stateful) — as for a required route.
async fn caller(app: &App, live: &Live, headers: &HeaderMap) -> Result<Arc<Claims>, GatewayError> {
    let claims = auth::authenticate(app, live, headers).await?;
    if claims.sid.is_none() {
        // Tokens of another issuer have no session of ours to act on.
        return Err(GatewayError::InvalidToken);
    }
    Ok(claims)
}

async fn logout(
    app: &App,
    live: &Live,
    headers: &HeaderMap,
    ip: IpAddr,
    all: bool,
) -> Result<Response<Body>, GatewayError> {
    let c = caller(app, live, headers).await?;
    let sid = c.sid.as_deref().unwrap_or_default();
    let t = app.clock.now_ms();
    if all {
        let n = app.store.end_all(&c.sub, EndReason::Logout, t).await?;
        tracing::info!(user_id = %c.sub, ended = n, "logout-all");
        audit::record(
            Event::LogoutAll,
            Subject {
                user_id: Some(&c.sub),
                session_id: Some(sid),
                platform: c.plat.as_deref(),
                ip: Some(ip),
            },
        );
    } else {
        app.store.end(&c.sub, sid, EndReason::Logout, t).await?;
        audit::record(
            Event::Logout,
            Subject {
                user_id: Some(&c.sub),
                session_id: Some(sid),
                platform: c.plat.as_deref(),
                ip: Some(ip),
            },
        );
    }
    Ok(no_content())
}

/// The JSON of one session for listings.
pub fn session_json(s: &Session, current: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "session_id": s.id,
        "user_id": s.user_id,
        "platform": s.platform,
        "device": s.device,
        "ip": s.ip,
        "user_agent": s.user_agent,
        // Unix seconds, rounded down (the store keeps milliseconds).
        "created_at": s.created_at.as_secs(),
        "last_seen_at": s.last_seen_at.as_secs(),
        "expires_at": s.expires_at.as_secs(),
        "current": current == Some(s.id.as_str()),
    })
}

async fn sessions(
    app: &App,
    live: &Live,
    headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let c = caller(app, live, headers).await?;
    let list = app.store.list(&c.sub, app.clock.now_ms()).await?;
    let items: Vec<_> = list
        .iter()
        .map(|s| session_json(s, c.sid.as_deref()))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "sessions": items }),
    ))
}

async fn delete_session(
    app: &App,
    live: &Live,
    headers: &HeaderMap,
    id: &str,
    ip: IpAddr,
) -> Result<Response<Body>, GatewayError> {
    let c = caller(app, live, headers).await?;
    // Only one's own sessions; anyone else's is "not found", never "forbidden".
    if crate::session::user_id_of(id).as_deref() != Some(c.sub.as_str()) {
        return Err(GatewayError::NotFound);
    }
    if !app
        .store
        .end(&c.sub, id, EndReason::Revoked, app.clock.now_ms())
        .await?
    {
        return Err(GatewayError::NotFound);
    }
    audit::record(
        Event::SessionRevoked,
        Subject {
            user_id: Some(&c.sub),
            session_id: Some(id),
            platform: c.plat.as_deref(),
            ip: Some(ip),
        },
    );
    Ok(no_content())
}

/// Forward-auth for nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`.
///
/// Fails closed: the original request comes only from a trusted proxy's `X-Forwarded-Uri`
/// (required) and `X-Forwarded-Method` (default GET). Without them there is no route to judge
/// by, so the answer is 400, never "as for some required route" (that would skip the route's
/// own requirements). The route found then decides exactly as on the proxy path, through the
/// same [`auth::authorize`] and [`auth::refresh::hand_back`].
async fn verify(
    app: &App,
    live: &Live,
    headers: &HeaderMap,
    conn: ConnInfo,
) -> Result<Response<Body>, GatewayError> {
    let cfg = &live.config;
    let addr = proxy::client_addr(conn.peer, headers, &cfg.server.trusted_proxies);
    if !addr.peer_trusted {
        tracing::warn!(
            peer = %conn.peer.ip(),
            "verify: the caller is not in server.trusted_proxies, so its X-Forwarded-Uri and \
             X-Forwarded-Method cannot be believed; refused"
        );
        return Err(GatewayError::BadRequest(
            "verify answers only proxies listed in server.trusted_proxies",
        ));
    }
    let Some(uri) = forwarded(headers, "x-forwarded-uri") else {
        tracing::warn!("verify: no X-Forwarded-Uri from the proxy; refused");
        return Err(GatewayError::BadRequest(
            "verify needs one X-Forwarded-Uri (the original request's path)",
        ));
    };
    let method = match forwarded(headers, "x-forwarded-method") {
        None => Method::GET,
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| {
            tracing::warn!("verify: X-Forwarded-Method is not an HTTP method; refused");
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
    let claims = auth::authorize(app, live, route, headers).await?;
    let mut resp = Response::new(empty());
    if let Some(c) = &claims {
        identity::inject(resp.headers_mut(), &cfg.identity, c);
        auth::refresh::hand_back(app, live, c, resp.headers_mut());
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
