//! Phase 6: who the request is, as the route's `auth` mode asks ([`crate::auth::identify`]).

use http::HeaderMap;

use super::RequestCtx;
use crate::auth;
use crate::error::GatewayError;
use crate::routing::Route;

/// Sets [`RequestCtx::identity`], or refuses the request.
pub(super) async fn identity(
    cx: &mut RequestCtx<'_, '_>,
    route: &Route,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    cx.identity = auth::identify(cx.app, cx.live, route, headers).await?;
    Ok(())
}
