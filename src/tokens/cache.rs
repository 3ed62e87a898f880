//! The verify cache: what spares a token seen before its signature check. Two layers, both
//! holding only tokens that verified: a small per-thread table in front ([`recent`]), and
//! behind it one moka cache per ring, bounded in approximate bytes, each entry dropped when its
//! token's `exp + leeway` passes (at most a day). A hit still gets the `exp`/`nbf` check
//! against `now` (in `ring.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::{Audience, Claims};

/// Budget of the verify cache, in approximate bytes (token + claims).
const VERIFY_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Longest a verified token stays cached, whatever its `exp` says.
pub(super) const MAX_CACHE_TTL: u64 = 24 * 3600;

/// A verified token's claims in the cache, with how long the entry may live.
#[derive(Clone)]
pub(super) struct Cached {
    pub(super) claims: Arc<Claims>,
    pub(super) ttl: Duration,
}

/// Drops each cache entry when its token's `exp + leeway` passes.
struct CachedExpiry;

impl moka::Expiry<Box<str>, Cached> for CachedExpiry {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &Box<str>,
        value: &Cached,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// One ring's cache of verified tokens, by the token's bytes.
pub(super) type VerifyCache = moka::sync::Cache<Box<str>, Cached>;

/// An empty cache, weighed by [`cache_weight`], entries expiring with their token.
pub(super) fn new_verify_cache() -> VerifyCache {
    moka::sync::Cache::<Box<str>, Cached>::builder()
        .max_capacity(VERIFY_CACHE_BYTES)
        .weigher(|token, value| cache_weight(token, &value.claims))
        .expire_after(CachedExpiry)
        .build()
}

/// Approximate bytes a cache entry holds.
fn cache_weight(token: &str, claims: &Claims) -> u32 {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let aud = match &claims.aud {
        Audience::One(a) => a.len(),
        Audience::Many(v) => v.iter().map(|a| a.len() + 24).sum(),
    };
    let roles = claims
        .roles
        .as_ref()
        .map_or(0, |r| r.iter().map(|s| s.len() + 24).sum());
    let identity = claims.sub.len()
        + opt(&claims.name)
        + opt(&claims.sid)
        + opt(&claims.plat)
        + opt(&claims.tenant)
        + roles;
    // The identity header values the pipeline derives on first use (`Derived`): six slots
    // and a copy of each value, each in its own shared buffer.
    let derived = 6 * 40 + 6 * 48 + identity;
    // A kept payload (foreign tokens, or claim rules): a `serde_json::Value` tree of the
    // payload's claims, several times the JSON text (about 3/4 of the token) in allocations;
    // its `[identity.claims]` values and an own token's JSON form are of the same order.
    let payload = if claims.payload.is_some() {
        4 * token.len()
    } else {
        0
    };
    let total = 2 * token.len()
        + 256
        + claims.iss.len()
        + aud
        + claims.jti.len()
        + identity
        + derived
        + payload;
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// A small per-thread front for the verify cache: the tokens this thread verified last, in
/// a direct-mapped table. moka's `get` also records the read for its eviction policy (about
/// 1,800 instructions per request in callgrind); a hit here is a short hash, a compare and a
/// reference count. Entries are only ever tokens that verified under ring `ring` (a reload
/// makes a new ring, so a removed key's tokens miss), and every hit still gets the `exp` /
/// `nbf` check. A colliding token only takes the slot over.
pub(super) mod recent {
    use std::cell::RefCell;
    use std::sync::Arc;

    use crate::tokens::Claims;

    const SLOTS: usize = 256;

    struct Entry {
        ring: u64,
        token: Box<str>,
        claims: Arc<Claims>,
    }

    thread_local! {
        static TABLE: RefCell<Vec<Option<Entry>>> = RefCell::new((0..SLOTS).map(|_| None).collect());
    }

    /// FNV-1a over the token's last 16 bytes (its signature's tail).
    fn slot(token: &str) -> usize {
        let bytes = token.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(16)..];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in tail {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h as usize) % SLOTS
    }

    pub(in crate::tokens) fn get(ring: u64, token: &str) -> Option<Arc<Claims>> {
        TABLE.with(|t| match &t.borrow()[slot(token)] {
            Some(e) if e.ring == ring && &*e.token == token => Some(e.claims.clone()),
            _ => None,
        })
    }

    pub(in crate::tokens) fn put(ring: u64, token: &str, claims: &Arc<Claims>) {
        TABLE.with(|t| {
            t.borrow_mut()[slot(token)] = Some(Entry {
                ring,
                token: token.into(),
                claims: claims.clone(),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use super::*;
    use crate::tokens::test_support::*;
    use crate::tokens::TokenError;

    #[test]
    fn a_cached_token_weighs_its_identity_twice_claims_and_derived_header_values() {
        let claims = |name: Option<&str>| -> Claims {
            serde_json::from_value(json!({
                "iss": "i", "aud": "a", "sub": "1001", "name": name,
                "iat": 1, "exp": 2, "jti": "j"
            }))
            .unwrap()
        };
        let without = cache_weight("t.t.t", &claims(None));
        let with = cache_weight("t.t.t", &claims(Some("alice-0123")));
        assert_eq!(with - without, 2 * 10);
        // The derived slots are counted even before the pipeline fills them.
        assert!(without >= 6 * 40 + 6 * 48);
        // A kept payload (a foreign token's claims) weighs with the token's size.
        let token = "h".repeat(1000);
        let mut kept = claims(None);
        kept.payload = Some(Arc::new(json!({"groups": ["a", "b"]})));
        let plain = cache_weight(&token, &claims(None));
        assert_eq!(cache_weight(&token, &kept) - plain, 4 * 1000);
    }
    #[test]
    fn verify_cache_shares_claims_and_still_checks_time() {
        let keys = ring(private("k1", Algorithm::ES256), vec![]);
        let (token, claims) = keys.mint(&identity(), NOW).unwrap();
        let first = keys.verify_shared(&token, NOW).unwrap();
        let second = keys.verify_shared(&token, NOW + 10).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "second verify is a cache hit");
        assert_eq!(*first, claims);
        assert_eq!(keys.verify(&token, claims.exp + 29).unwrap(), claims);
        assert_eq!(
            keys.verify(&token, claims.exp + 30),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify(&token, claims.exp + 3600),
            Err(TokenError::Expired)
        );
        // A ring built later (a reload) starts empty and checks everything again, on this
        // thread too (the per-thread front of the cache is per ring).
        let other = ring(private("k2", Algorithm::ES256), vec![]);
        assert_eq!(
            other.verify(&token, NOW),
            Err(TokenError::Invalid("unknown_kid"))
        );
        let same_kid_new_key = ring(private("k1", Algorithm::HS256), vec![]);
        assert!(same_kid_new_key.verify_shared(&token, NOW).is_err());
        assert!(keys.verify_shared(&token, NOW).is_ok());
    }
}
