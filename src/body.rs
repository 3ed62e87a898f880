//! The one body type that flows through the gateway: a boxed, streaming `Bytes` body.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Errors inside a body stream (client gone, upstream reset, size limit).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every request and response body in the gateway.
pub type Body = BoxBody<Bytes, BodyError>;

/// A complete body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
