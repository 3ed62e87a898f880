//! `X-Request-Id` (contract §4.8): kept from a peer in `server.trusted_proxies` when it is
//! usable, otherwise made here; sent upstream, returned on every answer, written in the access
//! and audit lines and in the gateway's own error JSON.
//!
//! A made id is 16 lower-case hex digits of a random `u64` from fastrand's per-thread
//! generator: no lock, no system call, unique enough to find one request among billions (ids
//! only correlate lines; nothing is decided by them, so they need not be unguessable).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header that carries the id.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id kept from a proxy; a longer one is replaced (it would bloat every line).
pub(crate) const MAX_LEN: usize = 128;

/// The id of a request whose peer is (`peer_trusted`) or is not a trusted proxy: the one it
/// sent when that is one usable value, a new one otherwise.
pub(crate) fn of(headers: &HeaderMap, peer_trusted: bool) -> HeaderValue {
    if peer_trusted {
        let mut all = headers.get_all(X_REQUEST_ID).iter();
        if let (Some(v), None) = (all.next(), all.next()) {
            if usable(v.as_bytes()) {
                return v.clone();
            }
        }
    }
    generate()
}

/// 1 to [`MAX_LEN`] visible ASCII characters (no space, no control byte): safe in a header,
/// a JSON string and a text log line alike.
pub(crate) fn usable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A new id: 16 hex digits.
pub(crate) fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u64(..);
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0000000000000000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn made_ids_are_16_hex_digits_and_differ() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 16);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit), "{a:?}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_trusted_peer_s_usable_id_is_kept_and_anything_else_replaced() {
        let long = vec![b'a'; MAX_LEN + 1];
        let longest = vec![b'a'; MAX_LEN];
        let cases: &[(&[&[u8]], bool, bool)] = &[
            (&[b"abc-123"], true, true),
            (&[b"abc-123"], false, false),
            (&[&longest], true, true),
            (&[&long], true, false),
            (&[b"has space"], true, false),
            (&[b"tab\there"], true, false),
            (&[b"caf\xc3\xa9"], true, false),
            (&[b"one", b"two"], true, false),
            (&[b""], true, false),
            (&[], true, false),
        ];
        for (values, trusted, kept) in cases {
            let h = headers(values);
            let id = of(&h, *trusted);
            assert!(usable(id.as_bytes()), "{values:?}: {id:?}");
            let same = values.len() == 1 && id.as_bytes() == values[0];
            assert_eq!(same, *kept, "{values:?} trusted={trusted}: {id:?}");
        }
    }
}
