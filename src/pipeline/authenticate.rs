//! Phase 6: who the request is, as the route's `auth` mode asks ([`crate::auth::identify`]).

use std::future::Future;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, Response};

use super::RequestCtx;
use crate::auth::{self, browser};
use crate::body::Body;
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

/// A refusal of authentication, or (`[browser]` on with `redirect_html`) for an HTML
/// navigation without an `Authorization` header the 302 that renews the cookies
/// ([`browser::renew`]). Only 401s are turned into it: a 400, 403 or 503 stays as it is.
#[cold]
pub(super) fn renew_or(
    cx: &RequestCtx<'_, '_>,
    parts: &Parts,
    e: GatewayError,
) -> Result<Response<Body>, GatewayError> {
    let renews = cx.cfg().browser.as_ref().is_some_and(|b| b.redirect_html)
        && e.status() == http::StatusCode::UNAUTHORIZED
        && !parts.headers.contains_key(http::header::AUTHORIZATION)
        && browser::is_html_navigation(&parts.method, &parts.headers);
    if !renews {
        return Err(e);
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(browser::renew(cx.live, target))
}
