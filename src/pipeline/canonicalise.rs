//! Phase 2: the canonical path (see [`crate::routing::path`]); every later phase uses it.

use std::borrow::Cow;

use http::Uri;

use super::RequestCtx;
use crate::error::GatewayError;
use crate::logs::scope;
use crate::routing::canonicalize;

/// The request path, canonical, or a 400 for one that is malformed or ambiguous.
pub(super) fn path<'u>(
    cx: &RequestCtx<'_, '_>,
    uri: &'u Uri,
) -> Result<Cow<'u, str>, GatewayError> {
    let canonical = canonicalize(uri.path(), cx.cfg().server.path_rules)?;
    if let Cow::Owned(changed) = &canonical {
        // The access line writes the canonical path; only a changed one is copied for it.
        scope::set_canonical(changed);
    }
    Ok(canonical)
}
