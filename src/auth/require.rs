//! A route's requirements of an authenticated identity.

use crate::error::GatewayError;
use crate::routing::Route;
use crate::tokens::Claims;

/// `require_roles` / `require_tenants`: 403 unless the token has one of them.
pub(crate) fn check(route: &Route, claims: &Claims) -> Result<(), GatewayError> {
    if !route.require_roles.is_empty() {
        let roles = claims.roles.as_deref().unwrap_or(&[]);
        if !roles.iter().any(|r| route.require_roles.contains(r)) {
            return Err(GatewayError::Forbidden);
        }
    }
    if !route.require_tenants.is_empty() {
        let ok = claims
            .tenant
            .as_ref()
            .is_some_and(|t| route.require_tenants.contains(t));
        if !ok {
            return Err(GatewayError::Forbidden);
        }
    }
    Ok(())
}
