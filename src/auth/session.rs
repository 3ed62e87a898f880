//! The stateful check: the token's session must be active.

use crate::app::{App, Live};
use crate::config::OnStoreError;
use crate::error::{self, GatewayError};
use crate::session::{EndReason, SessionCheck};
use crate::tokens::Claims;

/// The first request to find a session past its expiry marks it (and any other of the
/// user's) expired, once across instances, and tells `[notify]`'s receivers; a store error
/// is logged and ignored (the answer is `session_revoked` either way, and the next request
/// tries again).
async fn mark_expired(app: &App, user_id: &str) {
    match app.store.expire(user_id, app.clock.now_ms()).await {
        Ok(ended) => {
            for s in &ended {
                app.notify
                    .session_ended(crate::app::about(s), crate::notify::Reason::Expired);
            }
        }
        Err(e) => error::store_failed(&e, "an expired session stays unmarked for now"),
    }
}

/// `Ok` when the session of `claims` is active. A store error never ends a session: it is a
/// 503 (`deny`) or the token alone decides (`allow_stateless`).
pub(crate) async fn check(app: &App, live: &Live, claims: &Claims) -> Result<(), GatewayError> {
    let Some(sid) = claims.sid.as_deref() else {
        // A token without a session id has no session to be active.
        return Err(GatewayError::SessionRevoked);
    };
    match app.store.check(&claims.sub, sid, app.clock.now_ms()).await {
        Ok(SessionCheck::Active) => Ok(()),
        Ok(SessionCheck::Ended(EndReason::Replaced)) => Err(GatewayError::SessionReplaced),
        Ok(SessionCheck::Lapsed) => {
            mark_expired(app, &claims.sub).await;
            Err(GatewayError::SessionRevoked)
        }
        Ok(SessionCheck::Ended(_) | SessionCheck::Unknown) => Err(GatewayError::SessionRevoked),
        Err(e) => match live.config.session.on_store_error {
            OnStoreError::Deny => Err(GatewayError::from(e)),
            OnStoreError::AllowStateless => {
                error::store_failed(&e, "session check; token accepted on its own");
                Ok(())
            }
        },
    }
}
