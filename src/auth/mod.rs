//! One authentication path for everyone: the proxy pipeline, `/auth/verify` and the gateway's
//! own endpoints all come here to learn who a request is.
//!
//! [`authorize`] is what a matched route asks for ([`identify`] by its `auth` mode, then
//! [`require::check`]);
//! [`authenticate`] is the token alone: [`token::extract`] finds it, the key ring verifies it,
//! and in stateful mode [`session::check`] makes sure its session is still active.
//! [`refresh::hand_back`] is the one silent refresh: decide, mint (once per session for all
//! concurrent requests), put the token in the answer, count it.

pub(crate) mod browser;
pub(crate) mod refresh;
pub(crate) mod require;
pub(crate) mod session;
pub(crate) mod token;

use std::sync::Arc;

use http::HeaderMap;
use tracing::Level;

use crate::app::{App, Live};
use crate::config::SessionMode;
use crate::error::GatewayError;
use crate::logs;
use crate::proxy::identity;
use crate::routing::{AuthMode, Route};
use crate::tokens::Claims;

/// What a matched route asks: [`identify`] as its `auth` mode says, then its requirements
/// ([`require::check`]). For `/auth/verify`; the proxy pipeline runs the two as phases.
pub(crate) async fn authorize(
    app: &App,
    live: &Live,
    route: &Route,
    headers: &HeaderMap,
) -> Result<Option<Arc<Claims>>, GatewayError> {
    let claims = identify(app, live, route, headers).await?;
    if let Some(c) = &claims {
        require::check(route, c)?;
    }
    Ok(claims)
}

/// Who the request is, as the route's `auth` mode asks. `public`: no identity. `required`: a
/// valid token with an active session, or the refusal. `optional`: the identity of a valid
/// token; a missing or bad token is ignored, but an ambiguous request (400) and a store
/// failure (503) are not, so an outage never silently turns users anonymous.
pub(crate) async fn identify(
    app: &App,
    live: &Live,
    route: &Route,
    headers: &HeaderMap,
) -> Result<Option<Arc<Claims>>, GatewayError> {
    match route.auth {
        AuthMode::Public => Ok(None),
        AuthMode::Required => authenticate(app, live, headers).await.map(Some),
        AuthMode::Optional => match authenticate(app, live, headers).await {
            Ok(c) => Ok(Some(c)),
            Err(
                e @ (GatewayError::BadRequest(_)
                | GatewayError::StoreUnavailable
                | GatewayError::IssuerUnavailable),
            ) => Err(e),
            Err(_) => Ok(None),
        },
    }
}

/// Token → verified claims → (stateful mode) an active session.
pub(crate) async fn authenticate(
    app: &App,
    live: &Live,
    headers: &HeaderMap,
) -> Result<Arc<Claims>, GatewayError> {
    let cfg = &live.config;
    let raw =
        token::extract(headers, cfg.token.cookie.as_deref())?.ok_or(GatewayError::MissingToken)?;
    let claims = cfg.token.keys.verify_fetching(raw, &app.clock).await?;
    // Whose request it is, for the access line, refused later or not.
    logs::scope::set_who(claims.clone());
    if !cfg.identity.claims.is_empty() {
        let extra = claims
            .derived
            .extra
            .get_or_init(|| identity::claim_values(&cfg.identity, &claims));
        if let Err(why) = extra {
            logs::scope::note(Level::INFO, format!("bad_identity_claim: {why}"));
            return Err(GatewayError::InvalidToken);
        }
    }
    if cfg.session.mode == SessionMode::Stateful && !claims.is_foreign() {
        // Boxed: a Redis round trip's future is large, and most requests never wait on it
        // (inline, it would make every request's future that large).
        Box::pin(session::check(app, live, &claims)).await?;
    }
    Ok(claims)
}
