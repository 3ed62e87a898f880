//! `GET {prefix}/sessions` and `DELETE {prefix}/sessions/{id}`: the caller's own sessions.

use std::net::IpAddr;

use http::{HeaderMap, Response, StatusCode};

use super::{caller, json, no_content};
use crate::app::{about, App, Live};
use crate::audit::{self, Event, Subject};
use crate::body::Body;
use crate::error::GatewayError;
use crate::notify::Reason;
use crate::session::{EndReason, Session};

/// The JSON of one session for listings.
pub(crate) fn session_json(s: &Session, current: Option<&str>) -> serde_json::Value {
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

/// The caller's active sessions.
pub(super) async fn list(
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

/// Ends one of the caller's own sessions: 204, or 404 for any other.
pub(super) async fn delete(
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
    let Some(ended) = app
        .store
        .end_session(&c.sub, id, EndReason::Revoked, app.clock.now_ms())
        .await?
    else {
        return Err(GatewayError::NotFound);
    };
    app.notify.session_ended(about(&ended), Reason::Revoked);
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
