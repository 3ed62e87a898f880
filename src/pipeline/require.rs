//! Phase 7: the route's requirements of the identity found ([`crate::auth::require`]).

use super::RequestCtx;
use crate::auth;
use crate::error::GatewayError;
use crate::routing::Route;

/// 403 unless the identity has what the route requires; nothing to check without one (a
/// route with requirements is never optional or public: `check` refuses that).
pub(super) fn requirements(cx: &RequestCtx<'_, '_>, route: &Route) -> Result<(), GatewayError> {
    match &cx.identity {
        Some(claims) => auth::require::check(route, claims),
        None => Ok(()),
    }
}
