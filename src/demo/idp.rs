//! The demo's stand-in identity provider, served by the demo token service: an ES256 key pair
//! drawn at start-up, OpenID discovery naming its JWKS, and foreign access tokens for one
//! user, minted when asked. The demo's config lists it under `[[token.issuers]]`, so the
//! gateway fetches its keys by discovery like any identity provider's.

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{failed, DemoError};
use crate::tokens::{keygen, KeyMaterial, KeyRing, KeySpec, TokenRules};

/// Where the stand-in serves its discovery document (under the issuer, which is its base url).
pub(crate) const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where it serves its JWKS (discovery's `jwks_uri`).
pub(crate) const JWKS_PATH: &str = "/jwks";
/// Where it hands out a fresh token.
pub(crate) const TOKEN_PATH: &str = "/idp-token";
/// The `aud` of its tokens, and the `audiences` of its `[[token.issuers]]` entry.
pub(crate) const AUDIENCE: &str = "legacy-app";

/// The `kid` of its one key.
const KID: &str = "demo-idp-1";
/// How long its tokens live.
const TTL_SECS: u64 = 3600;

/// The stand-in identity provider: its issuer url, its signing key and its public JWKS.
pub(crate) struct DemoIdp {
    issuer: String,
    key: EncodingKey,
    jwks: Value,
}

impl DemoIdp {
    /// A fresh ES256 key pair for an identity provider served at `addr` (its issuer is
    /// `http://<addr>`).
    pub(crate) fn new(addr: SocketAddr) -> Result<Self, DemoError> {
        let pair = keygen::generate(Algorithm::ES256).map_err(failed("demo IdP key"))?;
        let key = EncodingKey::from_ec_pem(pair.private_pem.as_bytes())
            .map_err(failed("demo IdP signing key"))?;
        let issuer = format!("http://{addr}");
        let jwks = public_jwks(&pair.private_pem, &issuer).map_err(failed("demo IdP JWKS"))?;
        Ok(Self { issuer, key, jwks })
    }

    /// `http://<addr>`: the `iss` of its tokens.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The OpenID discovery document: the issuer and where its keys are.
    pub(crate) fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}{JWKS_PATH}", self.issuer),
        })
    }

    /// The JWKS: the public half of its one key.
    pub(crate) fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// A new access token for the demo's identity-provider user, issued at `now` (seconds),
    /// valid for an hour.
    pub(crate) fn token(&self, now: u64) -> Result<String, DemoError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.into());
        let claims = json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "idp-user-7",
            "preferred_username": "carol",
            "roles": ["viewer"],
            "tenant": "acme",
            "scope": "openid orders:read",
            "iat": now,
            "exp": now + TTL_SECS,
        });
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(failed("signing the demo IdP token"))
    }
}

/// The JWKS of the key in `private_pem`, rendered by the gateway's own key code.
fn public_jwks(private_pem: &str, issuer: &str) -> Result<Value, String> {
    let ring = KeyRing::new(
        Some(KeySpec {
            kid: KID.into(),
            algorithm: Algorithm::ES256,
            material: KeyMaterial::PrivatePem(private_pem.as_bytes().to_vec()),
        }),
        vec![],
        TokenRules {
            issuer: issuer.into(),
            audience: AUDIENCE.into(),
            leeway: Duration::ZERO,
            access_ttl: Duration::from_secs(TTL_SECS),
        },
    )
    .map_err(|e| e.to_string())?;
    ring.jwks()
        .ok_or_else(|| "no JWKS for an ES256 key".to_owned())
}
