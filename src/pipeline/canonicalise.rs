//! Phase 2: the canonical path (see [`crate::routing::path`]); every later phase uses it.

use std::borrow::Cow;

use http::Uri;

use super::RequestCtx;
use crate::error::GatewayError;
use crate::routing::canonicalize;

/// The request path, canonical, or a 400 for one that is malformed or ambiguous.
pub(super) fn path<'u>(
    cx: &RequestCtx<'_, '_>,
    uri: &'u Uri,
) -> Result<Cow<'u, str>, GatewayError> {
    Ok(canonicalize(uri.path(), cx.cfg().server.path_rules)?)
}
