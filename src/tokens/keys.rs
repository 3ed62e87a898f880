//! Loading configured keys: a secret or a PEM block checked against its pinned algorithm (the
//! right family, curve and size), turned into the decoding key, the encoding key when it can
//! sign, and the public JWK. Every message names the key's `kid` and algorithm, and says what
//! the PEM holds when it is not what the algorithm needs.

use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, Ed25519KeyPair, KeyPair,
    ParsedPublicKey, RsaKeyPair, RsaPublicKeyComponents, RsaSubjectPublicKey,
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING, ED25519,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::{KeyError, KeyMaterial, KeySpec, MIN_SECRET_BYTES};

impl KeySpec {
    /// Checks this key alone as a signing key (what [`KeyRing::new`](super::KeyRing::new) does
    /// with it), so config validation can report each key's problem under its own key path.
    #[cfg(test)]
    pub(crate) fn check_signing_key(&self) -> Result<(), KeyError> {
        if matches!(self.material, KeyMaterial::PublicPem(_)) {
            return Err(key_error(self, SIGNING_NOT_PUBLIC));
        }
        load_key(self).map(|_| ())
    }

    /// The key as a verification key (a `[[token.issuers]]` entry's `public_key_file`).
    pub(crate) fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, KeyError> {
        load_key(self).map(|k| k.decoding)
    }

    /// Checks this key alone as a verify-only key (`[[token.verify_keys]]`).
    #[cfg(test)]
    pub(crate) fn check_verify_key(&self) -> Result<(), KeyError> {
        load_key(self).map(|_| ())
    }
}

pub(super) const SIGNING_NOT_PUBLIC: &str =
    "the signing key must be a private key (private_key_file), not a public key";

/// RSA moduli accepted (aws-lc-rs verifies 2048..=8192).
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

pub(super) fn key_error(spec: &KeySpec, message: impl std::fmt::Display) -> KeyError {
    KeyError(format!(
        "key {:?} ({:?}): {message}",
        spec.kid, spec.algorithm
    ))
}

/// A configured key turned into what verification, signing and JWKS need.
pub(super) struct LoadedKey {
    pub(super) decoding: DecodingKey,
    /// For a secret or a private PEM.
    pub(super) encoding: Option<EncodingKey>,
    /// For asymmetric keys: the public JWK.
    pub(super) jwk: Option<serde_json::Value>,
}

#[derive(Clone, Copy)]
enum Family {
    Hmac,
    Rsa,
    Ec(
        &'static EcdsaSigningAlgorithm,
        &'static EcdsaVerificationAlgorithm,
        &'static str,
    ),
    Ed,
}

fn family(spec: &KeySpec) -> Result<Family, KeyError> {
    Ok(match spec.algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
        Algorithm::ES256 => Family::Ec(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &ECDSA_P256_SHA256_FIXED,
            "P-256",
        ),
        Algorithm::ES384 => Family::Ec(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            &ECDSA_P384_SHA384_FIXED,
            "P-384",
        ),
        Algorithm::EdDSA => Family::Ed,
        _ => return Err(key_error(spec, "unsupported algorithm")),
    })
}

pub(super) fn load_key(spec: &KeySpec) -> Result<LoadedKey, KeyError> {
    let family = family(spec)?;
    let alg_name = format!("{:?}", spec.algorithm);
    match (&spec.material, family) {
        (KeyMaterial::Secret(secret), Family::Hmac) => {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(key_error(
                    spec,
                    format_args!(
                        "the secret is {} bytes; at least {MIN_SECRET_BYTES} are required",
                        secret.len()
                    ),
                ));
            }
            if secret.starts_with(b"-----BEGIN") {
                return Err(key_error(
                    spec,
                    "the secret looks like a PEM key; HS* takes random bytes, and a public key \
                     used as an HMAC secret lets anyone forge tokens",
                ));
            }
            Ok(LoadedKey {
                decoding: DecodingKey::from_secret(secret),
                encoding: Some(EncodingKey::from_secret(secret)),
                jwk: None,
            })
        }
        (KeyMaterial::Secret(_), _) => Err(key_error(
            spec,
            "needs a PEM key (private_key_file or public_key_file), not a secret",
        )),
        (_, Family::Hmac) => Err(key_error(
            spec,
            "takes a shared secret (secret_env or secret_file), not a PEM key",
        )),
        (KeyMaterial::PrivatePem(bytes), family) => load_private(spec, &alg_name, bytes, family),
        (KeyMaterial::PublicPem(bytes), family) => load_public(spec, &alg_name, bytes, family),
    }
}

fn parse_pem(spec: &KeySpec, bytes: &[u8]) -> Result<pem::Pem, KeyError> {
    pem::parse(bytes).map_err(|e| key_error(spec, format_args!("not a PEM file: {e}")))
}

fn mismatch(spec: &KeySpec, wanted: &str, block: &pem::Pem) -> KeyError {
    key_error(
        spec,
        format_args!("needs {wanted}, but the PEM holds {}", describe_pem(block)),
    )
}

fn load_private(
    spec: &KeySpec,
    alg_name: &str,
    bytes: &[u8],
    family: Family,
) -> Result<LoadedKey, KeyError> {
    let block = parse_pem(spec, bytes)?;
    let der = block.contents();
    match family {
        Family::Rsa => rsa_private(spec, alg_name, bytes, &block),
        Family::Ec(signing, _, curve) => {
            let wanted = format!("a {curve} EC private key (PKCS#8 or SEC1 PEM)");
            if !matches!(block.tag(), "PRIVATE KEY" | "EC PRIVATE KEY") {
                return Err(mismatch(spec, &wanted, &block));
            }
            let pair = EcdsaKeyPair::from_private_key_der(signing, der)
                .map_err(|_| mismatch(spec, &wanted, &block))?;
            let pkcs8 = pair
                .to_pkcs8v1()
                .map_err(|_| key_error(spec, "cannot re-encode the EC private key"))?;
            let point = pair.public_key().as_ref();
            let (decoding, jwk) = ec_public(spec, alg_name, curve, point)?;
            Ok(LoadedKey {
                decoding,
                encoding: Some(EncodingKey::from_ec_der(pkcs8.as_ref())),
                jwk: Some(jwk),
            })
        }
        Family::Ed => {
            let wanted = "an Ed25519 private key (PKCS#8 PEM)";
            if block.tag() != "PRIVATE KEY" {
                return Err(mismatch(spec, wanted, &block));
            }
            let pair =
                Ed25519KeyPair::from_pkcs8(der).map_err(|_| mismatch(spec, wanted, &block))?;
            let (decoding, jwk) = ed_public(spec, alg_name, pair.public_key().as_ref())?;
            Ok(LoadedKey {
                decoding,
                encoding: Some(EncodingKey::from_ed_der(der)),
                jwk: Some(jwk),
            })
        }
        // load_key sends HMAC keys elsewhere before this point.
        Family::Hmac => Err(key_error(spec, "takes a shared secret, not a PEM key")),
    }
}

/// An RSA private key, PKCS#8 or PKCS#1, checked as aws-lc-rs and jsonwebtoken will use it.
fn rsa_private(
    spec: &KeySpec,
    alg_name: &str,
    bytes: &[u8],
    block: &pem::Pem,
) -> Result<LoadedKey, KeyError> {
    let der = block.contents();
    let wanted = "an RSA private key (PKCS#8 or PKCS#1 PEM)";
    let pair = match block.tag() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(der),
        _ => return Err(mismatch(spec, wanted, block)),
    }
    .map_err(|_| mismatch(spec, wanted, block))?;
    // jsonwebtoken signs with the inner PKCS#1 structure it extracts itself; make sure
    // that is the very key just checked.
    let encoding = EncodingKey::from_rsa_pem(bytes)
        .map_err(|e| key_error(spec, format_args!("unusable RSA private key: {e}")))?;
    RsaKeyPair::from_der(encoding.as_bytes())
        .map_err(|e| key_error(spec, format_args!("unusable RSA private key: {e}")))?;
    let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    let (decoding, jwk) = rsa_public(spec, alg_name, &components.n, &components.e)?;
    Ok(LoadedKey {
        decoding,
        encoding: Some(encoding),
        jwk: Some(jwk),
    })
}

fn load_public(
    spec: &KeySpec,
    alg_name: &str,
    bytes: &[u8],
    family: Family,
) -> Result<LoadedKey, KeyError> {
    let block = parse_pem(spec, bytes)?;
    let der = block.contents();
    let (decoding, jwk) = match family {
        Family::Rsa => {
            let wanted = "an RSA public key (SPKI or PKCS#1 PEM)";
            if !matches!(block.tag(), "PUBLIC KEY" | "RSA PUBLIC KEY") {
                return Err(mismatch(spec, wanted, &block));
            }
            let public =
                RsaSubjectPublicKey::from_der(der).map_err(|_| mismatch(spec, wanted, &block))?;
            let components = RsaPublicKeyComponents::<Vec<u8>>::from(&public);
            rsa_public(spec, alg_name, &components.n, &components.e)?
        }
        Family::Ec(_, verification, curve) => {
            let wanted = format!("a {curve} EC public key (SPKI PEM)");
            if block.tag() != "PUBLIC KEY" {
                return Err(mismatch(spec, &wanted, &block));
            }
            ParsedPublicKey::new(verification, der).map_err(|_| mismatch(spec, &wanted, &block))?;
            let point =
                DecodingKey::from_ec_pem(bytes).map_err(|_| mismatch(spec, &wanted, &block))?;
            let point = point
                .try_get_as_bytes()
                .map_err(|_| mismatch(spec, &wanted, &block))?
                .to_vec();
            ec_public(spec, alg_name, curve, &point)?
        }
        Family::Ed => {
            let wanted = "an Ed25519 public key (SPKI PEM)";
            if block.tag() != "PUBLIC KEY" {
                return Err(mismatch(spec, wanted, &block));
            }
            ParsedPublicKey::new(&ED25519, der).map_err(|_| mismatch(spec, wanted, &block))?;
            let raw =
                DecodingKey::from_ed_pem(bytes).map_err(|_| mismatch(spec, wanted, &block))?;
            let raw = raw
                .try_get_as_bytes()
                .map_err(|_| mismatch(spec, wanted, &block))?
                .to_vec();
            ed_public(spec, alg_name, &raw)?
        }
        // load_key sends HMAC keys elsewhere before this point.
        Family::Hmac => return Err(key_error(spec, "takes a shared secret, not a PEM key")),
    };
    Ok(LoadedKey {
        decoding,
        encoding: None,
        jwk: Some(jwk),
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn rsa_public(
    spec: &KeySpec,
    alg_name: &str,
    n: &[u8],
    e: &[u8],
) -> Result<(DecodingKey, serde_json::Value), KeyError> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = match n.first() {
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(key_error(
            spec,
            format_args!(
                "the RSA key has {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are supported"
            ),
        ));
    }
    let jwk = serde_json::json!({
        "kty": "RSA",
        "kid": spec.kid,
        "alg": alg_name,
        "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(n),
        "e": URL_SAFE_NO_PAD.encode(e),
    });
    Ok((DecodingKey::from_rsa_raw_components(n, e), jwk))
}

fn ec_public(
    spec: &KeySpec,
    alg_name: &str,
    curve: &str,
    point: &[u8],
) -> Result<(DecodingKey, serde_json::Value), KeyError> {
    let coord = if curve == "P-256" { 32 } else { 48 };
    if point.len() != 1 + 2 * coord || point[0] != 4 {
        return Err(key_error(
            spec,
            format_args!("the EC public key is not an uncompressed {curve} point"),
        ));
    }
    let (x, y) = point[1..].split_at(coord);
    let jwk = serde_json::json!({
        "kty": "EC",
        "kid": spec.kid,
        "alg": alg_name,
        "use": "sig",
        "crv": curve,
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    });
    Ok((DecodingKey::from_ec_der(point), jwk))
}

fn ed_public(
    spec: &KeySpec,
    alg_name: &str,
    raw: &[u8],
) -> Result<(DecodingKey, serde_json::Value), KeyError> {
    if raw.len() != 32 {
        return Err(key_error(spec, "the Ed25519 public key is not 32 bytes"));
    }
    let jwk = serde_json::json!({
        "kty": "OKP",
        "kid": spec.kid,
        "alg": alg_name,
        "use": "sig",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(raw),
    });
    Ok((DecodingKey::from_ed_der(raw), jwk))
}

/// Names what a PEM block holds, for error messages.
fn describe_pem(block: &pem::Pem) -> &'static str {
    let der = block.contents();
    let ec_private = |der: &[u8]| {
        if EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der).is_ok() {
            Some("a P-256 EC private key")
        } else if EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, der).is_ok()
        {
            Some("a P-384 EC private key")
        } else {
            None
        }
    };
    match block.tag() {
        "RSA PRIVATE KEY" => {
            if RsaKeyPair::from_der(der).is_ok() {
                "an RSA private key (PKCS#1)"
            } else {
                "an RSA private key (PKCS#1) of an unsupported size, or damaged"
            }
        }
        "RSA PUBLIC KEY" => "an RSA public key",
        "EC PRIVATE KEY" => ec_private(der).unwrap_or("an EC private key on an unsupported curve"),
        "PRIVATE KEY" => {
            if RsaKeyPair::from_pkcs8(der).is_ok() {
                "an RSA private key"
            } else if let Some(what) = ec_private(der) {
                what
            } else if Ed25519KeyPair::from_pkcs8(der).is_ok() {
                "an Ed25519 private key"
            } else {
                "a private key of an unsupported type or size"
            }
        }
        "PUBLIC KEY" => {
            if RsaSubjectPublicKey::from_der(der).is_ok() {
                "an RSA public key"
            } else if ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, der).is_ok() {
                "a P-256 EC public key"
            } else if ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, der).is_ok() {
                "a P-384 EC public key"
            } else if ParsedPublicKey::new(&ED25519, der).is_ok() {
                "an Ed25519 public key"
            } else {
                "a public key of an unsupported type"
            }
        }
        "CERTIFICATE" => {
            "a certificate (extract its public key: openssl x509 -pubkey -noout -in cert.pem)"
        }
        "ENCRYPTED PRIVATE KEY" => {
            "an encrypted private key (decrypt it: openssl pkcs8 -topk8 -nocrypt -in key.pem)"
        }
        _ => "an unsupported PEM block",
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;

    use super::*;
    use crate::tokens::test_support::*;
    use crate::tokens::KeyRing;

    #[test]
    fn bad_key_configurations_are_refused_with_a_clear_message() {
        let spec = |alg: Algorithm, material: KeyMaterial| KeySpec {
            kid: "k1".into(),
            algorithm: alg,
            material,
        };
        let priv_pem = |alg: &str| KeyMaterial::PrivatePem(pems(alg).0);
        let pub_pem = |alg: &str| KeyMaterial::PublicPem(pems(alg).1);
        let signing_cases: Vec<(&str, KeySpec, &str)> = vec![
            (
                "short secret",
                spec(Algorithm::HS256, KeyMaterial::Secret(vec![1; 31])),
                "at least 32",
            ),
            (
                "PEM as HS secret",
                spec(Algorithm::HS256, KeyMaterial::Secret(pems("RS256").1)),
                "PEM",
            ),
            (
                "PEM for HS",
                spec(Algorithm::HS512, priv_pem("RS256")),
                "shared secret",
            ),
            (
                "secret for RS256",
                spec(Algorithm::RS256, KeyMaterial::Secret(SECRET.to_vec())),
                "PEM key",
            ),
            (
                "EC key for RS256",
                spec(Algorithm::RS256, priv_pem("ES256")),
                "P-256 EC private key",
            ),
            (
                "RSA key for ES256",
                spec(Algorithm::ES256, priv_pem("RS256")),
                "RSA private key",
            ),
            (
                "P-384 key for ES256",
                spec(Algorithm::ES256, priv_pem("ES384")),
                "P-384",
            ),
            (
                "P-256 key for ES384",
                spec(Algorithm::ES384, priv_pem("ES256")),
                "P-256",
            ),
            (
                "Ed25519 key for ES256",
                spec(Algorithm::ES256, priv_pem("EdDSA")),
                "Ed25519",
            ),
            (
                "RSA key for EdDSA",
                spec(Algorithm::EdDSA, priv_pem("RS256")),
                "RSA private key",
            ),
            (
                "public key to sign",
                spec(Algorithm::RS256, pub_pem("RS256")),
                "private key",
            ),
            (
                "not PEM",
                spec(Algorithm::ES256, KeyMaterial::PrivatePem(b"hello".to_vec())),
                "not a PEM",
            ),
            (
                "unsupported alg",
                spec(Algorithm::PS256, KeyMaterial::Secret(SECRET.to_vec())),
                "PEM key",
            ),
        ];
        for (name, signing, needle) in signing_cases {
            let alone = signing.check_signing_key().unwrap_err();
            let err = KeyRing::new(Some(signing), vec![], rules())
                .map(|_| ())
                .unwrap_err();
            assert!(err.0.contains(needle), "{name}: {err}");
            assert!(err.0.contains("\"k1\""), "{name}: names the kid: {err}");
            assert_eq!(alone, err, "{name}: the same check alone");
        }

        let verify_cases: Vec<(&str, KeySpec, &str)> = vec![
            (
                "EC public key for RS256",
                spec(Algorithm::RS256, pub_pem("ES256")),
                "P-256 EC public key",
            ),
            (
                "RSA public key for EdDSA",
                spec(Algorithm::EdDSA, pub_pem("RS256")),
                "RSA public key",
            ),
            (
                "P-256 public key for ES384",
                spec(Algorithm::ES384, pub_pem("ES256")),
                "P-256",
            ),
            (
                "private key as public is fine",
                spec(Algorithm::ES256, priv_pem("ES256")),
                "",
            ),
        ];
        for (name, verify, needle) in verify_cases {
            assert_eq!(
                verify.check_verify_key().is_ok(),
                needle.is_empty(),
                "{name}"
            );
            let result = KeyRing::new(
                Some(private("sign", Algorithm::HS256)),
                vec![verify],
                rules(),
            );
            match (needle, result) {
                ("", Ok(_)) => {}
                (needle, Err(err)) if !needle.is_empty() => {
                    assert!(err.0.contains(needle), "{name}: {err}")
                }
                (_, other) => panic!("{name}: {:?}", other.map(|_| ())),
            }
        }

        let dup = KeyRing::new(
            Some(private("k1", Algorithm::HS256)),
            vec![
                public("k0", Algorithm::ES256),
                private("k1", Algorithm::HS384),
            ],
            rules(),
        )
        .map(|_| ())
        .unwrap_err();
        assert!(dup.0.contains("duplicate kid"), "{dup}");
    }

    #[test]
    fn other_pem_encodings_of_private_keys_are_accepted() {
        // SEC1 `EC PRIVATE KEY` (openssl ecparam -genkey) and PKCS#1 `RSA PRIVATE KEY`.
        let ec = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pem::parse(pems("ES256").0).unwrap().contents(),
        )
        .unwrap();
        let sec1 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::EcPrivateKeyRfc5915Der>::as_der(
                &ec.private_key(),
            )
            .unwrap();
        let sec1_pem = pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.as_ref().to_vec()));
        let pkcs1 = EncodingKey::from_rsa_pem(&pems("RS256").0).unwrap();
        let pkcs1_pem = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", pkcs1.as_bytes().to_vec()));
        for (alg, material, public_alg) in [
            (Algorithm::ES256, sec1_pem, "ES256"),
            (Algorithm::RS256, pkcs1_pem, "RS256"),
        ] {
            let keys = ring(
                KeySpec {
                    kid: "k1".into(),
                    algorithm: alg,
                    material: KeyMaterial::PrivatePem(material.into_bytes()),
                },
                vec![],
            );
            let (token, claims) = keys.mint(&identity(), NOW).unwrap();
            let verifier = ring(private("x", Algorithm::HS256), vec![public("k1", alg)]);
            assert_eq!(
                verifier.verify(&token, NOW).unwrap(),
                claims,
                "{public_alg}"
            );
        }
    }
}
