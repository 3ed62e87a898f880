//! Access tokens: the key ring (signing key plus older verify keys, chosen by `kid`), strict
//! verification with the algorithm pinned per key, minting, and the JWKS document.
//!
//! The signing key is optional: with `login.backend = "none"` a ring may only verify (keys of
//! another authgate that shares the store); it then mints nothing, so nothing is silently
//! refreshed either.
//!
//! Never follows `jku`, `jwk`, `x5u` or `x5c`: a token that carries any of them (or `crit`) is
//! refused before a key is even chosen. A `kid` is only ever a name looked up in the ring.
//! Time is always passed in (`now`, Unix seconds): `exp` and `nbf` are checked here against it,
//! with the configured leeway, never against jsonwebtoken's own clock.
//!
//! Verification is on every request's hot path, so the ring keeps a bounded cache of tokens it
//! has already verified (keyed by the token's bytes, weighed by size, each entry dropped once
//! the token's `exp + leeway` has passed). Only tokens that verified are cached, so a flood of
//! garbage cannot evict real entries; `exp`/`nbf` are re-checked against `now` on every hit.
//! A reload builds a new ring, so a dropped key also drops everything it vouched for.
//!
//! This file holds the types the rest of the gateway names (claims, keys as configured, rules,
//! errors, the identity value check); the work is done beside it: `ring.rs` ([`KeyRing`]:
//! verify, mint, sign, JWKS), `keys.rs` (secrets and PEM keys checked against their algorithm,
//! their JWKs), `cache.rs` (the verify cache and its per-thread front) and [`keygen`].

mod cache;
pub(crate) mod fetch;
pub(crate) mod issuer;
pub mod keygen;
mod keys;
mod ring;
pub mod silent;
#[cfg(test)]
mod test_support;

pub use ring::KeyRing;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

/// Key bytes as configured.
#[derive(Clone)]
pub enum KeyMaterial {
    /// HS*: the shared secret (at least [`MIN_SECRET_BYTES`]).
    Secret(Vec<u8>),
    /// RS*/ES*/EdDSA signing key, PEM.
    PrivatePem(Vec<u8>),
    /// RS*/ES*/EdDSA verification-only key, PEM.
    PublicPem(Vec<u8>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret([redacted])"),
            Self::PrivatePem(_) => f.write_str("PrivatePem([redacted])"),
            Self::PublicPem(b) => write!(f, "PublicPem({} bytes)", b.len()),
        }
    }
}

/// One key: its id, pinned algorithm and material.
#[derive(Clone, Debug)]
pub struct KeySpec {
    pub kid: String,
    pub algorithm: Algorithm,
    pub material: KeyMaterial,
}

/// What every token must say and how much clock skew is allowed.
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    pub access_ttl: Duration,
}

/// The claims of an access token (contract §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// A string on tokens we mint; a list is accepted from other issuers.
    pub(crate) aud: Audience,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plat: Option<String>,
    /// Always set on tokens we mint; tokens from other issuers may leave it out (0).
    #[serde(default)]
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// What the pipeline derives from these claims once per verified token (the verify
    /// cache hands the same `Arc<Claims>` to every request that presents it).
    #[serde(skip)]
    pub(crate) derived: Derived,
    /// Whose token it is.
    #[serde(skip)]
    pub(crate) origin: Origin,
    /// A foreign token's whole payload (claim rules and `[identity.claims]` read it); own
    /// tokens derive theirs on first use.
    #[serde(skip)]
    pub(crate) payload: Option<Arc<serde_json::Value>>,
}

/// Who issued a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Signed by the signing key or a `verify_keys` entry: minted, refreshed, session-checked.
    #[default]
    Own,
    /// A `[[token.issuers]]` entry's (by index), verified by a key of the given generation.
    Foreign { issuer: u16, generation: u64 },
}

/// Header values made from a token's claims on first use, then shared. Not part of the
/// token: ignored by comparisons and never serialised.
#[derive(Debug, Clone, Default)]
pub(crate) struct Derived {
    /// The identity header values, in the order of `Identity::names`.
    pub identity: std::sync::OnceLock<Box<[Option<http::HeaderValue>; 6]>>,
    /// The `[identity.claims]` header values, in config order, or why one may not be sent.
    pub extra: std::sync::OnceLock<Result<Box<[Option<http::HeaderValue>]>, &'static str>>,
    /// An own token's claims as JSON, for claim rules.
    pub json: std::sync::OnceLock<Arc<serde_json::Value>>,
}

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

/// The access line's user and session: `sub` and `sid`.
impl crate::logs::scope::Who for Claims {
    fn user_id(&self) -> &str {
        &self.sub
    }

    fn session_id(&self) -> Option<&str> {
        self.sid.as_deref()
    }
}

impl Claims {
    /// Whether the token is a `[[token.issuers]]` entry's.
    pub(crate) fn is_foreign(&self) -> bool {
        matches!(self.origin, Origin::Foreign { .. })
    }

    /// All claims as JSON: a foreign token's payload as it came, an own token's claims.
    pub(crate) fn json(&self) -> &serde_json::Value {
        match &self.payload {
            Some(p) => p,
            None => self.derived.json.get_or_init(|| {
                Arc::new(serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
            }),
        }
    }

    /// Who the token speaks for, without the per-token fields (iss/aud/iat/exp/nbf/jti).
    pub fn identity(&self) -> AccessIdentity {
        AccessIdentity {
            sub: self.sub.clone(),
            name: self.name.clone(),
            sid: self.sid.clone(),
            plat: self.plat.clone(),
            tenant: self.tenant.clone(),
            roles: self.roles.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The identity an access token carries; [`KeyRing::mint`] adds the per-token claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessIdentity {
    /// User id.
    pub sub: String,
    pub name: Option<String>,
    /// Session id.
    pub sid: Option<String>,
    /// Platform (`web`, `app`, ...).
    pub plat: Option<String>,
    pub tenant: Option<String>,
    pub roles: Option<Vec<String>>,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// `exp` (plus leeway) has passed: the client should refresh.
    #[error("token expired")]
    Expired,
    /// Anything else: bad shape, signature, algorithm, kid, issuer, audience, nbf, headers.
    /// The reason is a short snake_case word, fit for logs and metric labels.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// A foreign token whose issuer has no key for it (yet): fetch the issuer's keys, then
    /// look again ([`KeyRing::verify_fetching`]).
    #[error("the issuer's keys lack this token's key")]
    KeysNeeded(u16),
    /// A foreign token whose issuer's keys never arrived (503 issuer_unavailable).
    #[error("no keys yet for the token's issuer")]
    IssuerUnavailable,
}

/// Problems building a key ring from configured keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// Shortest HMAC secret accepted, in bytes (RFC 7518 §3.2 for HS256; contract §2). Config
/// validation and key loading both hold secrets to it.
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// Longest identity value (user id, name, tenant, role, session id, platform), in bytes.
pub(crate) const MAX_IDENTITY_BYTES: usize = 255;

/// Why an identity value may not become a header (contract §4.4), or `None` if it may:
/// at most [`MAX_IDENTITY_BYTES`], no control characters, no leading or trailing whitespace.
/// Legacy apps parse `" 1001"` as user 1001 and `"acme\t"` as tenant acme, so such a value is
/// refused rather than trimmed, and a CR/LF can never make a header go missing.
pub(crate) fn identity_value_problem(v: &str) -> Option<&'static str> {
    if v.len() > MAX_IDENTITY_BYTES {
        Some("longer than 255 bytes")
    } else if v.chars().any(char::is_control) {
        Some("holds a control character")
    } else if v.trim() != v {
        Some("has leading or trailing whitespace")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_values_table() {
        let long = "x".repeat(MAX_IDENTITY_BYTES + 1);
        let ok = "x".repeat(MAX_IDENTITY_BYTES);
        for (v, bad) in [
            ("1001", false),
            ("Acme Corp", false),
            ("张三", false),
            (ok.as_str(), false),
            (long.as_str(), true),
            (" 1001", true),
            ("1001 ", true),
            ("acme\t", true),
            ("a\r\nb", true),
            ("a\u{0}b", true),
            ("a\u{7f}", true),
            ("\u{3000}x", true),
        ] {
            assert_eq!(identity_value_problem(v).is_some(), bad, "{v:?}");
        }
    }
}
