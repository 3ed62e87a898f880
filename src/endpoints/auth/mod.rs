//! The gateway's own endpoints under `login.prefix` (default `/auth`), and
//! `/.well-known/jwks.json`:
//! login, refresh (rotation, grace, theft), logout, logout-all, the caller's sessions,
//! forward-auth `verify`, the login captcha, and the public keys.
//!
//! Every answer that carries tokens has `Cache-Control: no-store`. A store error is a 503 and
//! never ends a session or hands out a token that was not saved.
//!
//! One file per endpoint: [`login`] (and issuing a session's tokens), [`refresh`], [`logout`],
//! [`sessions`] (list, delete one), [`verify`] (forward-auth), [`captcha`] (a challenge, and
//! the login's captcha step); [`handle`] dispatches, and the
//! JWKS document is answered here. Who the caller is always comes from [`crate::auth`].

mod captcha;
mod login;
mod logout;
mod page;
mod refresh;
mod sessions;
mod verify;

pub(crate) use sessions::session_json;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::{App, Live};
use crate::auth::{self, browser};
use crate::body::{empty, full, Body};
use crate::error::GatewayError;
use crate::login::MAX_BODY_BYTES;
use crate::proxy::{self, ConnInfo};
use crate::tokens::Claims;

/// The path of the JWKS document.
pub(crate) const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Answers one request to an endpoint of ours. A method the endpoint does not take is 405
/// with the `Allow` header HTTP requires on it (RFC 9110 §15.5.6), naming the methods it
/// takes in this configuration.
pub(crate) async fn handle(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<Body>, GatewayError> {
    let allow = allowed(live, req.uri().path());
    match dispatch(app, live, req, conn).await {
        Err(GatewayError::MethodNotAllowed) => match allow {
            Some(allow) => Ok(GatewayError::method_not_allowed(allow)),
            None => Err(GatewayError::MethodNotAllowed),
        },
        other => other,
    }
}

/// The methods an endpoint takes (its `Allow` header), or `None` for a path that is none of
/// ours. The login page and the cookie refresh are there only with `[browser]` on.
fn allowed(live: &Live, path: &str) -> Option<&'static str> {
    if path == JWKS_PATH {
        return Some("GET, HEAD");
    }
    let page = live
        .config
        .browser
        .as_ref()
        .is_some_and(|b| b.login_page == crate::config::LoginPage::Builtin)
        && live.login.is_enabled();
    let browser = live.config.browser.is_some();
    match &path[live.config.login.prefix.len()..] {
        "/login" if page => Some("GET, HEAD, POST"),
        "/login" | "/logout" | "/logout-all" => Some("POST"),
        "/refresh" if browser => Some("GET, POST"),
        "/refresh" => Some("POST"),
        "/sessions" | "/captcha" => Some("GET"),
        "/verify" => Some("GET, HEAD"),
        p if p.len() > "/sessions/".len() && p.starts_with("/sessions/") => Some("DELETE"),
        _ => None,
    }
}

/// Dispatches by method and path.
async fn dispatch(
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
    // The request's own origin, for the CSRF checks of `[browser]` forms and cookies.
    let own = live.config.browser.as_ref().and_then(|_| {
        let authority = req.uri().authority().map(|a| a.as_str());
        browser::own_origin(req.headers(), authority, conn.tls, addr.peer_trusted)
    });
    let own = own.as_deref();
    match (method, rest.as_str()) {
        (_, "/captcha") if !captcha::offered(live) => Err(GatewayError::NotFound),
        (Method::GET, "/captcha") => captcha::get(app, live, addr.client).await,
        (Method::POST, "/login") => login::login(app, live, req, addr.client, own).await,
        (Method::GET | Method::HEAD, "/login") => {
            login_page(app, live, req.uri().query(), addr.client).await
        }
        (Method::POST | Method::GET, "/refresh") => {
            refresh::refresh(app, live, req, addr.client).await
        }
        (Method::POST, "/logout") => logout::logout(app, live, req, addr.client, false, own).await,
        (Method::POST, "/logout-all") => {
            logout::logout(app, live, req, addr.client, true, own).await
        }
        (Method::GET, "/sessions") => sessions::list(app, live, req.headers()).await,
        (Method::DELETE, p) if p.starts_with("/sessions/") && p.len() > "/sessions/".len() => {
            if browser::via_cookie(live, req.headers()) {
                browser::csrf_check(live, req.headers(), own, None)?;
            }
            sessions::delete(
                app,
                live,
                req.headers(),
                &p["/sessions/".len()..],
                addr.client,
            )
            .await
        }
        (Method::GET | Method::HEAD, "/verify") => {
            verify::verify(app, live, req.headers(), conn).await
        }
        (
            _,
            "/login" | "/refresh" | "/logout" | "/logout-all" | "/sessions" | "/verify"
            | "/captcha",
        ) => Err(GatewayError::MethodNotAllowed),
        (_, p) if p.starts_with("/sessions/") && p.len() > "/sessions/".len() => {
            Err(GatewayError::MethodNotAllowed)
        }
        _ => Err(GatewayError::NotFound),
    }
}

/// `GET {prefix}/login`: the built-in page, with `[browser]` on and `login_page = "builtin"`;
/// otherwise only POST is served there (405).
async fn login_page(
    app: &App,
    live: &Live,
    query: Option<&str>,
    ip: std::net::IpAddr,
) -> Result<Response<Body>, GatewayError> {
    let b = live
        .config
        .browser
        .as_ref()
        .filter(|b| b.login_page == crate::config::LoginPage::Builtin && live.login.is_enabled())
        .ok_or(GatewayError::MethodNotAllowed)?;
    let (return_to, error) = page::query(b, query);
    let challenge = page_captcha(app, live, error.as_deref(), ip).await?;
    Ok(page::answer(page::render(
        live,
        &return_to,
        error.as_deref(),
        challenge.as_ref(),
    )))
}

/// The picture challenge the login page shows: when `[login.captcha]` asks one of this IP,
/// or the last attempt was refused for want of one (a username's failures, which the page
/// cannot know). Drawn under the same per-IP rate as `GET {prefix}/captcha`; beyond it the
/// page comes without one (and the login answers `captcha_required`).
async fn page_captcha(
    app: &App,
    live: &Live,
    error: Option<&str>,
    ip: std::net::IpAddr,
) -> Result<Option<page::CaptchaField>, GatewayError> {
    let t = app.clock.now_ms();
    let cfg = &live.config.login;
    let asked = matches!(error, Some("captcha_required" | "invalid_captcha"))
        && cfg.captcha.mode != crate::config::CaptchaMode::Off;
    if !asked && !crate::login::captcha::required(&app.store, cfg, None, ip, t).await? {
        return Ok(None);
    }
    if !app.captcha_flood.allow(ip) {
        metrics::counter!("authgate_captchas_total", "result" => "flood").increment(1);
        return Ok(None);
    }
    let c = crate::login::captcha::issue(&app.store, &cfg.captcha, t).await?;
    metrics::counter!("authgate_captchas_total", "result" => "issued").increment(1);
    Ok(Some(page::CaptchaField {
        id: c.id,
        image: format!("data:image/png;base64,{}", c.png_base64),
    }))
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

/// The whole (small) body of a login or refresh: 413 beyond [`MAX_BODY_BYTES`], 408
/// when it takes longer than `header_timeout`, 400 when the client breaks it off.
async fn read_body(live: &Live, req: Request<Incoming>) -> Result<Bytes, GatewayError> {
    // The body must arrive within `header_timeout`, like the head: these bodies are small,
    // and a client trickling one in would hold its connection (and a login slot) for ever.
    // The answer leaves the rest unread, so hyper closes the connection after it.
    let collect = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
    let Ok(read) = tokio::time::timeout(live.config.server.header_timeout, collect).await else {
        crate::logs::scope::note(tracing::Level::INFO, "the request body came too slowly");
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

/// The caller's verified claims with an active session (stateful) — as for a required route.
async fn caller(app: &App, live: &Live, headers: &HeaderMap) -> Result<Arc<Claims>, GatewayError> {
    let claims = auth::authenticate(app, live, headers).await?;
    if claims.sid.is_none() {
        // Tokens of another issuer have no session of ours to act on.
        return Err(GatewayError::InvalidToken);
    }
    Ok(claims)
}
