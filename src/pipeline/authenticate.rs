//! Phase 6: who the request is, as the route's `auth` mode asks ([`crate::auth::identify`]).

use std::future::Future;
use std::sync::Arc;

use http::HeaderMap;

use super::RequestCtx;
use crate::auth;
use crate::error::GatewayError;
use crate::routing::Route;
use crate::tokens::Claims;

/// Who the request is (for [`RequestCtx::identity`]), or the refusal. (A plain fn returning
/// [`auth::identify`]'s future itself: an async fn around it would move it once more.)
#[inline(always)]
pub(super) fn identity<'a>(
    cx: &'a RequestCtx<'_, '_>,
    route: &'a Route,
    headers: &'a HeaderMap,
) -> impl Future<Output = Result<Option<Arc<Claims>>, GatewayError>> + Send + 'a {
    auth::identify(cx.app, cx.live, route, headers)
}
