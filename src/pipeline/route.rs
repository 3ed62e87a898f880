//! Phase 4: the route whose rules apply (see [`crate::routing::table`]).

use http::Method;

use super::RequestCtx;
use crate::error::GatewayError;
use crate::logs::scope;
use crate::routing::Route;

/// The first matching route, or 404 `no_route` / 405.
pub(super) fn find<'l>(
    cx: &RequestCtx<'_, 'l>,
    canonical: &str,
    method: &Method,
) -> Result<&'l Route, GatewayError> {
    let route = cx.cfg().routes.find(canonical, method).found()?;
    scope::set_route(route.index);
    Ok(route)
}
