//! A route's requirements of an authenticated identity.

use crate::claims;
use crate::error::GatewayError;
use crate::routing::Route;
use crate::tokens::Claims;

/// `require_roles` / `require_tenants`: 403 unless the token has one of them;
/// `require_scopes`: unless it grants every one; `require_claims`: unless each claim equals
/// its value (a string is not the boolean or number it spells).
pub(crate) fn check(route: &Route, c: &Claims) -> Result<(), GatewayError> {
    if !route.require_roles.is_empty() {
        let roles = c.roles.as_deref().unwrap_or(&[]);
        if !roles.iter().any(|r| route.require_roles.contains(r)) {
            return Err(GatewayError::Forbidden);
        }
    }
    if !route.require_tenants.is_empty() {
        let ok = c
            .tenant
            .as_ref()
            .is_some_and(|t| route.require_tenants.contains(t));
        if !ok {
            return Err(GatewayError::Forbidden);
        }
    }
    if !route.require_scopes.is_empty() && !claims::has_scopes(c.json(), &route.require_scopes) {
        return Err(GatewayError::Forbidden);
    }
    if !route.require_claims.is_empty() {
        let json = c.json();
        if !route
            .require_claims
            .iter()
            .all(|(path, want)| path.find(json) == Some(want))
        {
            return Err(GatewayError::Forbidden);
        }
    }
    Ok(())
}
