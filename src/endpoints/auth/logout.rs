//! `POST {prefix}/logout` and `{prefix}/logout-all`.

use std::net::IpAddr;

use http::{HeaderMap, Response};

use super::{caller, no_content};
use crate::app::{App, Live};
use crate::audit::{self, Event, Subject};
use crate::body::Body;
use crate::error::GatewayError;
use crate::session::EndReason;

/// `logout` (this session) or `logout-all` (every session of the caller): 204.
pub(super) async fn logout(
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
