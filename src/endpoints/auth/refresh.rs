//! `POST {prefix}/refresh`: rotation, the reuse grace, theft detection.

use std::net::IpAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::login::token_pair;
use super::{json, read_body};
use crate::app::{App, Live};
use crate::audit::{self, Event, Subject};
use crate::body::Body;
use crate::error::{self, GatewayError};
use crate::session::{EndReason, Millis, RefreshOutcome};

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// Rotates a refresh token: a new pair, or the theft answer for a reused one.
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
    t: Millis,
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
