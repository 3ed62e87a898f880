//! `POST {prefix}/refresh`: rotation, the reuse grace, theft detection.

use std::net::IpAddr;
use std::sync::Arc;

use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use serde::Deserialize;
use tracing::Level;

use super::login::{access_for, cookie_max_age, token_pair};
use super::{json, no_content, read_body};
use crate::app::{about, App, Live};
use crate::audit::{self, Event, Subject};
use crate::auth::{self, browser};
use crate::body::Body;
use crate::config::Browser;
use crate::error::{self, GatewayError};
use crate::logs::scope::{self, Ids};
use crate::notify::Reason;
use crate::session::{EndReason, Millis, RefreshOutcome, RefreshToken, Session};

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// Rotates a refresh token: a new pair, or the theft answer for a reused one. With
/// `[browser]` on, a GET, or a POST without a body, rotates the refresh cookie instead
/// ([`with_cookie`]).
pub(super) async fn refresh(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Result<Response<Body>, GatewayError> {
    if !live.config.token.keys.can_sign() {
        // Nothing could be minted: refuse before a rotation spends the refresh token.
        return Err(GatewayError::NotFound);
    }
    if let Some(b) = &live.config.browser {
        if req.method() == Method::GET || has_no_body(&req) {
            return Ok(with_cookie(app, live, b, &req, ip).await);
        }
    } else if req.method() == Method::GET {
        return Err(GatewayError::MethodNotAllowed);
    }
    let body = read_body(live, req).await?;
    let RefreshBody { refresh_token } = serde_json::from_slice(&body).map_err(|_| {
        GatewayError::BadRequest("expected a JSON body {\"refresh_token\": \"...\"}")
    })?;
    let (session, token, t) = rotate(app, live, &refresh_token, ip).await?;
    Ok(json(
        StatusCode::OK,
        &token_pair(live, &session, token.as_str(), t)?,
    ))
}

/// The session's user and id, for the access line.
fn who(s: &Session) {
    scope::set_who(Arc::new(Ids {
        user_id: s.user_id.clone(),
        session_id: Some(s.id.clone()),
    }));
}

/// A POST that says it has no body: `Content-Length: 0`, or neither a length nor chunks.
fn has_no_body(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    match h.get(header::CONTENT_LENGTH) {
        Some(v) => v.as_bytes() == b"0",
        None => !h.contains_key(header::TRANSFER_ENCODING) && req.body().is_end_stream(),
    }
}

/// The browser's renewal: rotates the refresh cookie and sets the new cookies, then 303 to
/// `return_to` (GET) or 204 (POST). Without a usable refresh cookie the cookies are expired
/// and the answer is 303 to the login page with `return_to` (GET) or the 401 (POST). A store
/// error stays a 503: nothing is ended, nothing is set.
async fn with_cookie(
    app: &App,
    live: &Live,
    b: &Browser,
    req: &Request<Incoming>,
    ip: IpAddr,
) -> Response<Body> {
    let get = req.method() == Method::GET;
    let return_to = req
        .uri()
        .query()
        .and_then(|q| url_query_value(q, "return_to"))
        .map_or_else(
            || "/".to_owned(),
            |r| browser::safe_return_to(&r, &b.allowed_return_hosts),
        );
    let token = auth::token::cookie_value(req.headers(), &b.refresh_cookie)
        .ok()
        .flatten()
        .map(str::to_owned);
    let rotated = match token {
        Some(token) => rotate(app, live, &token, ip).await,
        None => Err(GatewayError::InvalidRefreshToken),
    };
    match rotated {
        Ok((session, token, t)) => {
            let access = match access_for(live, &session, t) {
                Ok((access, _)) => access,
                Err(e) => return e.into_response(),
            };
            let mut resp = if get {
                browser::redirect(StatusCode::SEE_OTHER, &return_to)
            } else {
                no_content()
            };
            let csrf = auth::token::cookie_value(req.headers(), &b.csrf_cookie)
                .ok()
                .flatten();
            browser::set_session_cookies(
                resp.headers_mut(),
                b,
                &access,
                token.as_str(),
                cookie_max_age(&session, t),
                csrf,
            );
            resp
        }
        Err(e @ (GatewayError::StoreUnavailable | GatewayError::Internal)) => e.into_response(),
        Err(e) => {
            let mut resp = if get {
                let error = (e == GatewayError::TokenTheftDetected).then_some(e.code());
                let url = browser::login_page_url(live, b, &return_to, error);
                browser::redirect(StatusCode::SEE_OTHER, &url)
            } else {
                e.into_response()
            };
            browser::expire_cookies(resp.headers_mut(), b);
            resp
        }
    }
}

/// One query parameter's value, decoded (`+` is a space); a parameter given twice counts as
/// none.
pub(super) fn url_query_value(query: &str, name: &str) -> Option<String> {
    crate::login::form_fields(query.as_bytes())
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The rotation itself: the session and its new refresh token, and the time in seconds.
async fn rotate(
    app: &App,
    live: &Live,
    refresh_token: &str,
    ip: IpAddr,
) -> Result<(Session, RefreshToken, u64), GatewayError> {
    let t_ms = app.clock.now_ms();
    let t = t_ms.as_secs();
    // A user removed from the users file gets no tokens, even if no reload saw the removal
    // (the gateway was down): checked before the store, so nothing rotates for them.
    if let Some((user_id, sid)) = crate::session::session_of_refresh_token(refresh_token) {
        if live.login.has_user_id(&user_id) == Some(false) {
            return Err(end_removed_user_session(app, &user_id, &sid, ip, t_ms).await);
        }
    }
    match app
        .store
        .refresh(refresh_token, live.lifetimes, t_ms)
        .await?
    {
        RefreshOutcome::Rotated { session, token } | RefreshOutcome::Grace { session, token } => {
            who(&session);
            audit::record(
                Event::Refresh,
                Subject {
                    user_id: Some(&session.user_id),
                    session_id: Some(&session.id),
                    platform: Some(&session.platform),
                    ip: Some(ip),
                },
            );
            Ok((session, token, t))
        }
        RefreshOutcome::Theft { session } => {
            who(&session);
            app.notify.session_ended(about(&session), Reason::Theft);
            audit::record(
                Event::TokenTheftDetected,
                Subject {
                    user_id: Some(&session.user_id),
                    session_id: Some(&session.id),
                    platform: Some(&session.platform),
                    ip: Some(ip),
                },
            );
            scope::note(
                Level::WARN,
                format!(
                    "refresh token reused: session {} of user {} ended",
                    session.id, session.user_id
                ),
            );
            Err(GatewayError::TokenTheftDetected)
        }
        RefreshOutcome::Invalid => {
            mark_if_lapsed(app, refresh_token, t_ms).await;
            Err(GatewayError::InvalidRefreshToken)
        }
    }
}

/// A refresh token refused because its session idled out (or reached `max_lifetime`) and
/// nobody had seen that yet: the session is marked expired, once across instances, and
/// `[notify]`'s receivers are told. Nothing else changes (the answer stays
/// `invalid_refresh_token`); a store error is logged and ignored.
async fn mark_if_lapsed(app: &App, refresh_token: &str, t: Millis) {
    let Some((user_id, _)) = crate::session::session_of_refresh_token(refresh_token) else {
        return;
    };
    match app.store.expire(&user_id, t).await {
        Ok(ended) => {
            for s in &ended {
                app.notify.session_ended(about(s), Reason::Expired);
            }
        }
        Err(e) => error::store_failed(&e, "an expired session stays unmarked for now"),
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
    t: Millis,
) -> GatewayError {
    match app.store.get(user_id, sid).await {
        Ok(Some(s)) if s.is_active(t) => {
            match app
                .store
                .end_session(user_id, sid, EndReason::Revoked, t)
                .await
            {
                Ok(Some(ended)) => {
                    app.notify.session_ended(about(&ended), Reason::UserRemoved);
                    audit::record(
                        Event::SessionRevoked,
                        Subject {
                            user_id: Some(user_id),
                            session_id: Some(sid),
                            platform: Some(&s.platform),
                            ip: Some(ip),
                        },
                    )
                }
                Ok(None) => {}
                Err(e) => error::store_failed(&e, "the session stays; the refresh is refused"),
            }
        }
        Ok(_) => {}
        Err(e) => error::store_failed(&e, "the refresh is refused"),
    }
    scope::note(
        Level::INFO,
        format!("refresh refused: user {user_id} is no longer in the users file"),
    );
    GatewayError::InvalidRefreshToken
}
