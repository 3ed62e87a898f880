//! Phase 1: a request head within `server.max_header_bytes`.

use http::Request;

use super::RequestCtx;
use crate::error::GatewayError;

/// hyper's smallest read buffer: heads beyond it (or beyond a larger `max_header_bytes`) are
/// refused by hyper itself, so only smaller settings need counting here.
const HYPER_MIN_BUF: usize = 8192;

/// 431 when the head is larger than a `max_header_bytes` below hyper's own limit.
pub(super) fn head<B>(cx: &RequestCtx<'_, '_>, req: &Request<B>) -> Result<(), GatewayError> {
    let max = cx.cfg().server.max_header_bytes;
    if max < HYPER_MIN_BUF && head_size(req) > max {
        return Err(GatewayError::HeadersTooLarge);
    }
    Ok(())
}

/// The size of a request head as it came on the wire (close enough: request line, names,
/// values, separators).
fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}
