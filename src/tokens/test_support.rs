//! What the token tests share: keys of every algorithm (the PEMs made once through
//! `keygen`), the rules they are checked against, a ring from them and an identity to mint.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::{keygen, AccessIdentity, KeyMaterial, KeyRing, KeySpec, TokenRules};

pub(super) const NOW: u64 = 1_750_000_000;
pub(super) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs";

pub(super) const ISS: &str = "authgate";
pub(super) const AUD: &str = "legacy-app";

pub(super) fn rules() -> TokenRules {
    TokenRules {
        issuer: ISS.into(),
        audience: AUD.into(),
        leeway: Duration::from_secs(30),
        access_ttl: Duration::from_secs(7200),
    }
}

/// (private PEM, public PEM)
pub(super) type PemPair = (Vec<u8>, Vec<u8>);

/// The PEM pair per keygen algorithm, generated once through `keygen`.
pub(super) fn pems(alg: &str) -> PemPair {
    static PEMS: OnceLock<HashMap<&'static str, PemPair>> = OnceLock::new();
    PEMS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        ["RS256", "ES256", "ES384", "EdDSA"]
            .into_iter()
            .map(|alg| {
                let out = dir.path().join(alg);
                keygen::keygen(alg, &out).unwrap();
                let private = std::fs::read(out.join("private.pem")).unwrap();
                let public = std::fs::read(out.join("public.pem")).unwrap();
                (alg, (private, public))
            })
            .collect()
    })[alg]
        .clone()
}

/// The keygen key for a JWT algorithm (RS384/RS512 share the RSA pair).
pub(super) fn keygen_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "RS256",
    }
}

pub(super) fn private(kid: &str, alg: Algorithm) -> KeySpec {
    let material = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            KeyMaterial::Secret(SECRET.to_vec())
        }
        _ => KeyMaterial::PrivatePem(pems(keygen_name(alg)).0),
    };
    KeySpec {
        kid: kid.into(),
        algorithm: alg,
        material,
    }
}

pub(super) fn public(kid: &str, alg: Algorithm) -> KeySpec {
    KeySpec {
        kid: kid.into(),
        algorithm: alg,
        material: KeyMaterial::PublicPem(pems(keygen_name(alg)).1),
    }
}

pub(super) fn ring(signing: KeySpec, verify: Vec<KeySpec>) -> KeyRing {
    KeyRing::new(Some(signing), verify, rules()).unwrap()
}

pub(super) fn identity() -> AccessIdentity {
    AccessIdentity {
        sub: "1001".into(),
        name: Some("alice".into()),
        sid: Some("sess-1".into()),
        plat: Some("web".into()),
        tenant: Some("acme".into()),
        roles: Some(vec!["admin".into(), "ops".into()]),
    }
}
