//! Access tokens: the key ring (signing key plus older verify keys, chosen by `kid`), strict
//! verification with the algorithm pinned per key, minting, and the JWKS document.
//!
//! Never follows `jku`, `jwk` or `x5u`: a token that carries them is refused outright.

pub mod keygen;

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

/// Key bytes as configured.
#[derive(Clone)]
pub enum KeyMaterial {
    /// HS*: the shared secret (at least 32 bytes).
    Secret(Vec<u8>),
    /// RS*/ES*/EdDSA signing key, PEM.
    PrivatePem(Vec<u8>),
    /// RS*/ES*/EdDSA verification-only key, PEM.
    PublicPem(Vec<u8>),
}

/// One key: its id, pinned algorithm and material.
#[derive(Clone)]
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
    pub aud: Audience,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plat: Option<String>,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` (plus leeway) has passed: the client should refresh.
    #[error("token expired")]
    Expired,
    /// Anything else: bad shape, signature, algorithm, kid, issuer, audience, nbf, headers.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

/// Problems building a key ring from configured keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The signing key and every key still accepted, with the rules tokens must meet.
pub struct KeyRing {
    _private: (),
}

impl KeyRing {
    /// Builds the ring; fails when a key does not parse or does not fit its algorithm.
    pub fn new(signing: KeySpec, verify: Vec<KeySpec>, rules: TokenRules) -> Result<Self, KeyError> {
        let _ = (signing, verify, rules);
        todo!("KeyRing::new")
    }

    pub fn rules(&self) -> &TokenRules {
        todo!()
    }

    /// Verifies a compact JWT at time `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let _ = (token, now);
        todo!("KeyRing::verify")
    }

    /// Signs claims with the current signing key (its `kid` in the header).
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let _ = claims;
        todo!("KeyRing::sign")
    }

    /// The public keys as a JWKS document; `None` for HS* (contract: 404).
    pub fn jwks(&self) -> Option<serde_json::Value> {
        todo!("KeyRing::jwks")
    }
}
