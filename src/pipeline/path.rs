//! Path canonicalisation: the one path that route matching and forwarding both use.
//!
//! Works on bytes, once: split on `/`, decode percent-encoded unreserved characters, resolve `.`
//! and `..`, merge `//`, keep every other escape as it came. Anything ambiguous is refused.

use std::borrow::Cow;

/// Why a path was refused (always answered 400 bad_request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with /")]
    NotAbsolute,
    #[error("encoded / or \\ in the path")]
    EncodedSeparator,
    #[error("backslash in the path")]
    Backslash,
    #[error("NUL or control byte in the path")]
    ControlByte,
    #[error("invalid percent-encoding")]
    BadEscape,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("dot segment with parameters")]
    DotSegmentParams,
}

/// Canonicalises the path part of a request target (no query).
pub fn canonicalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let _ = path;
    todo!("path::canonicalize")
}
