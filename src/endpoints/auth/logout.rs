//! `POST {prefix}/logout` and `{prefix}/logout-all`.

use std::net::IpAddr;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::login::is_form;
use super::{caller, no_content, read_body};
use crate::app::{about, App, Live};
use crate::audit::{self, Event, Subject};
use crate::auth::browser;
use crate::body::Body;
use crate::config::CsrfMode;
use crate::error::GatewayError;
use crate::notify::Reason;
use crate::session::EndReason;

/// `logout` (this session) or `logout-all` (every session of the caller): 204. With
/// `[browser]` on, a caller known by the access cookie is CSRF-checked, and the answer
/// expires the three cookies: 303 to the login page for a form (or an HTML navigation),
/// 204 otherwise. An access cookie that no longer authenticates (expired, ended) still has
/// its cookies expired: the browser is logged out either way.
pub(super) async fn logout(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    ip: IpAddr,
    all: bool,
    own_origin: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    let headers = req.headers().clone();
    let Some(b) = live
        .config
        .browser
        .as_ref()
        .filter(|_| browser::via_cookie(live, &headers))
    else {
        end(app, live, &headers, ip, all).await?;
        return Ok(no_content());
    };
    let form = is_form(&headers);
    let form_token = if form && b.csrf == CsrfMode::DoubleSubmit {
        let body = read_body(live, req).await?;
        crate::login::form_fields(&body)
            .ok()
            .and_then(|f| f.into_iter().find(|(k, _)| k == "csrf_token"))
            .map(|(_, v)| v)
    } else {
        None
    };
    browser::csrf_check(live, &headers, own_origin, form_token.as_deref())?;
    match end(app, live, &headers, ip, all).await {
        Ok(()) => {}
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            tracing::info!(
                reason = e.code(),
                "logout with an access cookie that no longer authenticates: cookies expired"
            );
        }
        Err(e) => return Err(e),
    }
    let mut resp = if form || browser::is_html_navigation(&Method::GET, &headers) {
        let url = browser::login_page_url(live, b, "/", None);
        browser::redirect(StatusCode::SEE_OTHER, &url)
    } else {
        no_content()
    };
    browser::expire_cookies(resp.headers_mut(), b);
    Ok(resp)
}

/// Ends the caller's session (or all of them), audited and told to `[notify]`'s receivers
/// (each session this call ended, once).
async fn end(
    app: &App,
    live: &Live,
    headers: &HeaderMap,
    ip: IpAddr,
    all: bool,
) -> Result<(), GatewayError> {
    let c = caller(app, live, headers).await?;
    let sid = c.sid.as_deref().unwrap_or_default();
    let t = app.clock.now_ms();
    if all {
        let ended = app
            .store
            .end_all_sessions(&c.sub, EndReason::Logout, t)
            .await?;
        for s in &ended {
            app.notify.session_ended(about(s), Reason::LogoutAll);
        }
        tracing::info!(user_id = %c.sub, ended = ended.len(), "logout-all");
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
        if let Some(s) = app
            .store
            .end_session(&c.sub, sid, EndReason::Logout, t)
            .await?
        {
            app.notify.session_ended(about(&s), Reason::Logout);
        }
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
    Ok(())
}
