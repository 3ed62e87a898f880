//! The key ring: verification (header rules, key choice by `kid`, signature, claims, time),
//! minting, signing and the JWKS document.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer};

use super::cache::{new_verify_cache, recent, Cached, VerifyCache, MAX_CACHE_TTL};
use super::keys::{key_error, load_key, SIGNING_NOT_PUBLIC};
use super::{
    identity_value_problem, AccessIdentity, Audience, Claims, Derived, KeyError, KeyMaterial,
    KeySpec, TokenError, TokenRules,
};

/// Longest token `verify` looks at; request heads are capped well below this anyway.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Gives each ring a process-unique id, so caches outside it can tell rings apart.
static NEXT_RING_ID: AtomicU64 = AtomicU64::new(1);

/// The key new tokens are signed with.
struct Signer {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// `typ: "JWT"`, the signing alg and kid.
    header: Header,
}

/// One key tokens may be verified with.
struct VerifyKey {
    alg: Algorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// The signing key and every key still accepted, with the rules tokens must meet.
pub struct KeyRing {
    id: u64,
    rules: TokenRules,
    leeway: u64,
    /// `None`: a verify-only ring, which mints nothing.
    signer: Option<Signer>,
    /// The kid a token without one is looked up under: the signing key's, else the only key's.
    default_kid: Option<String>,
    /// Every key by kid, the signing key included.
    keys: HashMap<String, VerifyKey>,
    jwks: Option<serde_json::Value>,
    cache: VerifyCache,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<_> = self.keys.iter().map(|(k, v)| (k.as_str(), v.alg)).collect();
        kids.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid())
            .field("signing_alg", &self.signing_algorithm())
            .field("keys", &kids)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Builds the ring; fails when a key does not parse or does not fit its algorithm, when a
    /// `kid` repeats, or when the signing key is not a secret or private key. Without a
    /// signing key the ring only verifies (and needs at least one verify key to be of use).
    pub fn new(
        signing: Option<KeySpec>,
        verify: Vec<KeySpec>,
        rules: TokenRules,
    ) -> Result<Self, KeyError> {
        let leeway = rules.leeway.as_secs();
        let mut keys = HashMap::with_capacity(verify.len() + 1);
        let mut jwks = Vec::new();
        let mut signing_is_asymmetric = false;

        let signer = match signing {
            None => None,
            Some(signing) => {
                if matches!(signing.material, KeyMaterial::PublicPem(_)) {
                    return Err(key_error(&signing, SIGNING_NOT_PUBLIC));
                }
                let loaded = load_key(&signing)?;
                let encoding = loaded.encoding.ok_or_else(|| {
                    // load_key returns an encoding key for every secret or private PEM.
                    key_error(&signing, "no signing key could be built from this material")
                })?;
                signing_is_asymmetric = loaded.jwk.is_some();
                jwks.extend(loaded.jwk);
                keys.insert(
                    signing.kid.clone(),
                    VerifyKey {
                        alg: signing.algorithm,
                        decoding: loaded.decoding,
                        validation: validation(signing.algorithm, &rules),
                    },
                );
                let mut header = Header::new(signing.algorithm);
                header.typ = Some("JWT".into());
                header.kid = Some(signing.kid.clone());
                Some(Signer {
                    kid: signing.kid,
                    alg: signing.algorithm,
                    encoding,
                    header,
                })
            }
        };

        for spec in &verify {
            if keys.contains_key(&spec.kid) {
                return Err(KeyError(format!(
                    "key {:?}: duplicate kid; every key needs its own",
                    spec.kid
                )));
            }
            let loaded = load_key(spec)?;
            jwks.extend(loaded.jwk);
            keys.insert(
                spec.kid.clone(),
                VerifyKey {
                    alg: spec.algorithm,
                    decoding: loaded.decoding,
                    validation: validation(spec.algorithm, &rules),
                },
            );
        }
        let default_kid = match (&signer, verify.as_slice()) {
            (Some(s), _) => Some(s.kid.clone()),
            (None, [only]) => Some(only.kid.clone()),
            (None, _) => None,
        };

        let cache = new_verify_cache();

        Ok(KeyRing {
            id: NEXT_RING_ID.fetch_add(1, Ordering::Relaxed),
            leeway,
            signer,
            default_kid,
            keys,
            // The JWKS publishes the keys of our own tokens: only with an asymmetric signer.
            jwks: signing_is_asymmetric.then(|| serde_json::json!({ "keys": jwks })),
            cache,
            rules,
        })
    }

    pub fn rules(&self) -> &TokenRules {
        &self.rules
    }

    /// A process-unique id of this ring: a reload builds a ring with a new one.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The `kid` new tokens are signed under; `None` for a verify-only ring.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.kid.as_str())
    }

    /// The algorithm new tokens are signed with; `None` for a verify-only ring.
    pub fn signing_algorithm(&self) -> Option<Algorithm> {
        self.signer.as_ref().map(|s| s.alg)
    }

    /// How many keys verify besides the signing key (`[[token.verify_keys]]`).
    pub fn verify_key_count(&self) -> usize {
        self.keys.len() - usize::from(self.signer.is_some())
    }

    /// Whether this ring can mint (it has a signing key). Without one nothing is minted, so
    /// nothing is silently refreshed.
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Verifies a compact JWT at time `now` (Unix seconds).
    ///
    /// A copy of [`KeyRing::verify_shared`]'s answer; on the hot path prefer that one, which
    /// hands out the cached claims without copying them.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        self.verify_shared(token, now).map(|c| Claims::clone(&c))
    }

    /// Verifies a compact JWT at time `now` (Unix seconds), returning the claims shared with
    /// the verify cache: a token seen before costs one hash lookup plus the `exp`/`nbf` check
    /// against `now`, and no allocation.
    pub fn verify_shared(&self, token: &str, now: u64) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid("too_long"));
        }
        if let Some(claims) = recent::get(self.id, token) {
            self.check_time(&claims, now)?;
            return Ok(claims);
        }
        if let Some(hit) = self.cache.get(token) {
            self.check_time(&hit.claims, now)?;
            recent::put(self.id, token, &hit.claims);
            return Ok(hit.claims);
        }
        let claims = self.verify_uncached(token)?;
        self.check_time(&claims, now)?;
        let claims = Arc::new(claims);
        self.remember(token, &claims, now);
        recent::put(self.id, token, &claims);
        Ok(claims)
    }

    /// Signs claims with the current signing key (its `kid` in the header).
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| KeyError("no signing key is configured".into()))?;
        jsonwebtoken::encode(&signer.header, claims, &signer.encoding)
            .map_err(|e| KeyError(format!("signing with key {:?} failed: {e}", signer.kid)))
    }

    /// Mints an access token for `id` at `now`: iss/aud from the rules, `iat = now`,
    /// `exp = now + access_ttl`, a fresh 128-bit `jti`. The new token is already in the verify
    /// cache, so its first use costs no signature check.
    pub fn mint(&self, id: &AccessIdentity, now: u64) -> Result<(String, Claims), KeyError> {
        if self.signer.is_none() {
            return Err(KeyError("no signing key is configured".into()));
        }
        let claims = Claims {
            iss: self.rules.issuer.clone(),
            aud: Audience::One(self.rules.audience.clone()),
            sub: id.sub.clone(),
            name: id.name.clone(),
            sid: id.sid.clone(),
            plat: id.plat.clone(),
            iat: now,
            exp: now.saturating_add(self.rules.access_ttl.as_secs()),
            nbf: None,
            jti: new_jti()?,
            tenant: id.tenant.clone(),
            roles: id.roles.clone(),
            derived: Derived::default(),
        };
        let token = self.sign(&claims)?;
        if !claims.sub.is_empty() {
            self.remember(&token, &Arc::new(claims.clone()), now);
        }
        Ok((token, claims))
    }

    /// The public keys as a JWKS document; `None` for HS* (contract: 404).
    pub fn jwks(&self) -> Option<serde_json::Value> {
        self.jwks.clone()
    }

    /// `exp` and `nbf` against `now`, both with the leeway.
    fn check_time(&self, claims: &Claims, now: u64) -> Result<(), TokenError> {
        if now >= claims.exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.nbf {
            if nbf > now.saturating_add(self.leeway) {
                return Err(TokenError::Invalid("not_yet_valid"));
            }
        }
        Ok(())
    }

    /// Caches a verified token until its `exp + leeway`.
    fn remember(&self, token: &str, claims: &Arc<Claims>, now: u64) {
        let ttl = claims
            .exp
            .saturating_add(self.leeway)
            .saturating_sub(now)
            .min(MAX_CACHE_TTL);
        if ttl > 0 {
            self.cache.insert(
                token.into(),
                Cached {
                    claims: Arc::clone(claims),
                    ttl: Duration::from_secs(ttl),
                },
            );
        }
    }

    /// Shape, header, key choice, signature and claims; everything but time.
    fn verify_uncached(&self, token: &str) -> Result<Claims, TokenError> {
        let header_b64 = check_shape(token)?;
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Invalid("malformed"))?;
        let header: RawHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Invalid("bad_header"))?;
        if header.jku || header.jwk || header.x5u || header.x5c {
            return Err(TokenError::Invalid("forbidden_header"));
        }
        if header.crit {
            return Err(TokenError::Invalid("unsupported_crit"));
        }
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::Invalid("alg_none"));
        }
        let alg =
            Algorithm::from_str(&header.alg).map_err(|_| TokenError::Invalid("unsupported_alg"))?;
        let key = header
            .kid
            .as_deref()
            .or(self.default_kid.as_deref())
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::Invalid("unknown_kid"))?;
        if alg != key.alg {
            return Err(TokenError::Invalid("alg_mismatch"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let c = &data.claims;
        if c.sub.is_empty() {
            return Err(TokenError::Invalid("missing_claim"));
        }
        let roles = c.roles.iter().flatten().map(String::as_str);
        let mut values = [&c.name, &c.sid, &c.plat, &c.tenant]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(roles)
            .chain([c.sub.as_str()]);
        if values.any(|v| identity_value_problem(v).is_some()) {
            return Err(TokenError::Invalid("bad_identity_claim"));
        }
        drop(values);
        Ok(data.claims)
    }
}

/// The header fields we look at. Presence alone of a key-locating field is enough to refuse.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// `true` whenever the field is there, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// Three non-empty base64url parts; returns the header part.
fn check_shape(token: &str) -> Result<&str, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid("malformed"));
    };
    for part in [header, payload, signature] {
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TokenError::Invalid("malformed"));
        }
    }
    Ok(header)
}

fn map_jwt_error(kind: &ErrorKind) -> TokenError {
    TokenError::Invalid(match kind {
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => "malformed",
        ErrorKind::InvalidSignature => "bad_signature",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => "alg_mismatch",
        ErrorKind::MissingRequiredClaim(_) => "missing_claim",
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => "bad_claims",
        ErrorKind::InvalidIssuer => "wrong_issuer",
        ErrorKind::InvalidAudience => "wrong_audience",
        ErrorKind::InvalidSubject => "wrong_subject",
        ErrorKind::ImmatureSignature => "not_yet_valid",
        // validate_exp is off: exp is checked against `now` in `check_time`. Should the
        // library ever report it anyway, refusing is the safe answer.
        ErrorKind::ExpiredSignature => "expired",
        _ => "key_error",
    })
}

/// Per-key validation: exactly its algorithm, required iss/aud/sub/exp, our issuer and audience.
/// `exp`/`nbf` are checked by [`KeyRing::check_time`] against the caller's `now`.
fn validation(alg: Algorithm, rules: &TokenRules) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = rules.leeway.as_secs();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = true;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.set_issuer(&[&rules.issuer]);
    v.set_audience(&[&rules.audience]);
    v
}

/// 128 random bits, base64url.
fn new_jti() -> Result<String, KeyError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError("the system random generator failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use aws_lc_rs::hmac;
    use serde_json::json;

    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    use super::*;
    use crate::tokens::keygen;

    const NOW: u64 = 1_750_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs";

    const ISS: &str = "authgate";
    const AUD: &str = "legacy-app";

    fn rules() -> TokenRules {
        TokenRules {
            issuer: ISS.into(),
            audience: AUD.into(),
            leeway: Duration::from_secs(30),
            access_ttl: Duration::from_secs(7200),
        }
    }

    /// (private PEM, public PEM)
    type PemPair = (Vec<u8>, Vec<u8>);

    /// The PEM pair per keygen algorithm, generated once through `keygen`.
    fn pems(alg: &str) -> PemPair {
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
    fn keygen_name(alg: Algorithm) -> &'static str {
        match alg {
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            _ => "RS256",
        }
    }

    fn private(kid: &str, alg: Algorithm) -> KeySpec {
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

    fn public(kid: &str, alg: Algorithm) -> KeySpec {
        KeySpec {
            kid: kid.into(),
            algorithm: alg,
            material: KeyMaterial::PublicPem(pems(keygen_name(alg)).1),
        }
    }

    fn ring(signing: KeySpec, verify: Vec<KeySpec>) -> KeyRing {
        KeyRing::new(Some(signing), verify, rules()).unwrap()
    }

    fn identity() -> AccessIdentity {
        AccessIdentity {
            sub: "1001".into(),
            name: Some("alice".into()),
            sid: Some("sess-1".into()),
            plat: Some("web".into()),
            tenant: Some("acme".into()),
            roles: Some(vec!["admin".into(), "ops".into()]),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token built by hand: header and payload as given, HMAC-SHA256 with `secret`.
    fn hs256_by_hand(
        header: &serde_json::Value,
        payload: &serde_json::Value,
        secret: &[u8],
    ) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes())
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, message.as_bytes());
        format!("{message}.{}", b64(tag.as_ref()))
    }

    fn good_payload() -> serde_json::Value {
        json!({
            "iss": ISS, "aud": AUD, "sub": "1001", "sid": "sess-1",
            "iat": NOW - 60, "exp": NOW + 3600, "jti": "j1",
        })
    }

    fn with(
        mut payload: serde_json::Value,
        key: &str,
        value: serde_json::Value,
    ) -> serde_json::Value {
        if value.is_null() {
            payload.as_object_mut().unwrap().remove(key);
        } else {
            payload[key] = value;
        }
        payload
    }

    #[test]
    fn every_algorithm_round_trips_and_verifies_with_its_public_key() {
        let algs = [
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        for alg in algs {
            let keys = ring(private("k1", alg), vec![]);
            let (token, minted) = keys.mint(&identity(), NOW).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, alg);
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            assert_eq!(header.kid.as_deref(), Some("k1"));
            assert_eq!(minted.iss, ISS);
            assert_eq!(minted.aud, Audience::One(AUD.into()));
            assert_eq!((minted.iat, minted.exp), (NOW, NOW + 7200));
            assert_eq!(minted.identity(), identity());
            assert_eq!(minted.jti.len(), 22, "128 bits, base64url");

            // A fresh ring (empty cache) does the full check.
            let fresh = ring(private("k1", alg), vec![]);
            assert_eq!(
                *fresh.verify_shared(&token, NOW + 1).unwrap(),
                minted,
                "{alg:?}"
            );
            assert_eq!(fresh.verify(&token, NOW + 1).unwrap(), minted, "{alg:?}");

            // Another key of the same algorithm family never verifies it.
            // One signature character changed (never to itself, never a padding-only bit).
            let at = token.len() - 5;
            let swap = if &token[at..at + 1] == "A" { "B" } else { "A" };
            let tampered = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
            assert!(fresh.verify(&tampered, NOW).is_err(), "{alg:?}");

            match alg {
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                    assert_eq!(keys.jwks(), None);
                }
                _ => {
                    // Verify-only ring with the public PEM, the signing key elsewhere.
                    let verifier = ring(
                        KeySpec {
                            kid: "other".into(),
                            algorithm: Algorithm::HS256,
                            material: KeyMaterial::Secret(SECRET.to_vec()),
                        },
                        vec![public("k1", alg)],
                    );
                    assert_eq!(verifier.verify(&token, NOW).unwrap(), minted, "{alg:?}");

                    let jwks = keys.jwks().expect("asymmetric: JWKS");
                    let jwk = &jwks["keys"][0];
                    assert_eq!(jwk["kid"], "k1");
                    assert_eq!(jwk["use"], "sig");
                    assert_eq!(jwk["alg"], format!("{alg:?}"));
                    let expected_kty = match alg {
                        Algorithm::ES256 | Algorithm::ES384 => "EC",
                        Algorithm::EdDSA => "OKP",
                        _ => "RSA",
                    };
                    assert_eq!(jwk["kty"], expected_kty);
                    // The JWK itself verifies the token (what a relying party would do).
                    let parsed: jsonwebtoken::jwk::Jwk =
                        serde_json::from_value(jwk.clone()).unwrap();
                    let key = DecodingKey::from_jwk(&parsed).unwrap();
                    let data =
                        jsonwebtoken::decode::<Claims>(&token, &key, &validation(alg, &rules()));
                    assert!(data.is_ok(), "{alg:?}: {data:?}");
                    assert!(jwk.get("d").is_none(), "never a private part");
                }
            }
        }
    }

    #[test]
    fn attacks_and_malformed_tokens_are_refused() {
        let hs = ring(private("k1", Algorithm::HS256), vec![]);
        let rs = ring(private("k1", Algorithm::RS256), vec![]);
        let (rs_public_pem, rsa_private_pem) = (pems("RS256").1, pems("RS256").0);
        let hdr = json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
        let good = hs256_by_hand(&hdr, &good_payload(), SECRET);
        assert!(hs.verify(&good, NOW).is_ok(), "the baseline must verify");
        let aud_list = with(good_payload(), "aud", json!(["other-app", AUD]));
        let aud_list = hs256_by_hand(&hdr, &aud_list, SECRET);
        assert!(hs.verify(&aud_list, NOW).is_ok(), "an aud list naming us");

        let unsigned = |alg: &str, sig: &str| {
            format!(
                "{}.{}.{sig}",
                b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
                b64(good_payload().to_string().as_bytes())
            )
        };
        let rs_signed_with = |header: Header| {
            let key = EncodingKey::from_rsa_pem(&rsa_private_pem).unwrap();
            jsonwebtoken::encode(&header, &good_payload(), &key).unwrap()
        };
        let rs_header = |f: &dyn Fn(&mut Header)| {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some("k1".into());
            f(&mut h);
            h
        };
        let parts: Vec<&str> = good.split('.').collect();

        // (name, ring, token, expected error; None = any Invalid)
        let cases: Vec<(&str, &KeyRing, String, Option<TokenError>)> = vec![
            (
                "alg none",
                &hs,
                unsigned("none", "c2ln"),
                Some(TokenError::Invalid("alg_none")),
            ),
            (
                "alg None",
                &hs,
                unsigned("None", "c2ln"),
                Some(TokenError::Invalid("alg_none")),
            ),
            (
                "alg NONE",
                &hs,
                unsigned("NONE", "c2ln"),
                Some(TokenError::Invalid("alg_none")),
            ),
            ("alg none, empty signature", &hs, unsigned("none", ""), None),
            (
                "alg none on an RSA ring",
                &rs,
                unsigned("none", "c2ln"),
                None,
            ),
            (
                "HS256 signed with the RS256 public key",
                &rs,
                hs256_by_hand(&hdr, &good_payload(), &rs_public_pem),
                Some(TokenError::Invalid("alg_mismatch")),
            ),
            (
                "HS256 with the RS256 public key, no kid",
                &rs,
                hs256_by_hand(&json!({"alg": "HS256"}), &good_payload(), &rs_public_pem),
                Some(TokenError::Invalid("alg_mismatch")),
            ),
            (
                "RS384 header on an RS256 key",
                &rs,
                rs_signed_with(rs_header(&|h| h.alg = Algorithm::RS384)),
                Some(TokenError::Invalid("alg_mismatch")),
            ),
            (
                "kid is a path",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "../../dev/null"}),
                    &good_payload(),
                    b"",
                ),
                Some(TokenError::Invalid("unknown_kid")),
            ),
            (
                "kid is a path, signed with the real secret",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "../../dev/null"}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("unknown_kid")),
            ),
            (
                "unknown kid",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "k9"}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("unknown_kid")),
            ),
            (
                "jku header",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "k1", "jku": "https://evil.example/jwks.json"}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("forbidden_header")),
            ),
            (
                "jwk header",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "k1", "jwk": {"kty": "oct", "k": b64(SECRET)}}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("forbidden_header")),
            ),
            (
                "x5u header",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "k1", "x5u": "https://evil.example/cert.pem"}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("forbidden_header")),
            ),
            (
                "x5c header",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "k1", "x5c": ["MIIB"]}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("forbidden_header")),
            ),
            (
                "jku: null still counts",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "k1", "jku": null}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("forbidden_header")),
            ),
            (
                "crit header",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS256", "kid": "k1", "crit": ["exp"]}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("unsupported_crit")),
            ),
            (
                "jku on an RSA token signed with the right key",
                &rs,
                rs_signed_with(rs_header(&|h| {
                    h.jku = Some("https://evil.example/jwks".into())
                })),
                Some(TokenError::Invalid("forbidden_header")),
            ),
            (
                "x5u on an RSA token signed with the right key",
                &rs,
                rs_signed_with(rs_header(&|h| {
                    h.x5u = Some("https://evil.example/c".into())
                })),
                Some(TokenError::Invalid("forbidden_header")),
            ),
            (
                "expired beyond the leeway",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "exp", json!(NOW - 30)), SECRET),
                Some(TokenError::Expired),
            ),
            (
                "expired long ago",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "exp", json!(1)), SECRET),
                Some(TokenError::Expired),
            ),
            (
                "nbf beyond the leeway",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "nbf", json!(NOW + 31)), SECRET),
                Some(TokenError::Invalid("not_yet_valid")),
            ),
            (
                "nbf as a string",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "nbf", json!("0")), SECRET),
                None,
            ),
            (
                "missing exp",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "exp", json!(null)), SECRET),
                None,
            ),
            (
                "exp as a string",
                &hs,
                hs256_by_hand(
                    &hdr,
                    &with(good_payload(), "exp", json!((NOW + 3600).to_string())),
                    SECRET,
                ),
                None,
            ),
            (
                "wrong iss",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "iss", json!("evil")), SECRET),
                Some(TokenError::Invalid("wrong_issuer")),
            ),
            (
                "missing iss",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "iss", json!(null)), SECRET),
                None,
            ),
            (
                "wrong aud",
                &hs,
                hs256_by_hand(
                    &hdr,
                    &with(good_payload(), "aud", json!("other-app")),
                    SECRET,
                ),
                Some(TokenError::Invalid("wrong_audience")),
            ),
            (
                "aud list without ours",
                &hs,
                hs256_by_hand(
                    &hdr,
                    &with(good_payload(), "aud", json!(["a", "b"])),
                    SECRET,
                ),
                Some(TokenError::Invalid("wrong_audience")),
            ),
            (
                "missing aud",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "aud", json!(null)), SECRET),
                None,
            ),
            (
                "missing sub",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "sub", json!(null)), SECRET),
                None,
            ),
            (
                "empty sub",
                &hs,
                hs256_by_hand(&hdr, &with(good_payload(), "sub", json!("")), SECRET),
                Some(TokenError::Invalid("missing_claim")),
            ),
            (
                "wrong secret",
                &hs,
                hs256_by_hand(
                    &hdr,
                    &good_payload(),
                    b"another secret of at least 32 bytes!",
                ),
                Some(TokenError::Invalid("bad_signature")),
            ),
            (
                "payload swapped under a good signature",
                &hs,
                format!(
                    "{}.{}.{}",
                    parts[0],
                    b64(with(good_payload(), "sub", json!("1"))
                        .to_string()
                        .as_bytes()),
                    parts[2]
                ),
                Some(TokenError::Invalid("bad_signature")),
            ),
            ("truncated", &hs, good[..good.len() - 6].to_string(), None),
            (
                "truncated to two parts",
                &hs,
                format!("{}.{}", parts[0], parts[1]),
                Some(TokenError::Invalid("malformed")),
            ),
            (
                "two parts, trailing dot",
                &hs,
                format!("{}.{}.", parts[0], parts[1]),
                Some(TokenError::Invalid("malformed")),
            ),
            (
                "five parts",
                &hs,
                format!("{good}.{}.{}", parts[1], parts[2]),
                Some(TokenError::Invalid("malformed")),
            ),
            (
                "non-base64",
                &hs,
                format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
                Some(TokenError::Invalid("malformed")),
            ),
            (
                "padding",
                &hs,
                format!("{}.{}=.{}", parts[0], parts[1], parts[2]),
                Some(TokenError::Invalid("malformed")),
            ),
            (
                "standard base64 alphabet",
                &hs,
                format!("{}+.{}.{}", parts[0], parts[1], parts[2]),
                Some(TokenError::Invalid("malformed")),
            ),
            (
                "header not JSON",
                &hs,
                format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
                Some(TokenError::Invalid("bad_header")),
            ),
            (
                "empty",
                &hs,
                String::new(),
                Some(TokenError::Invalid("malformed")),
            ),
            (
                "dots only",
                &hs,
                "..".into(),
                Some(TokenError::Invalid("malformed")),
            ),
            (
                "huge",
                &hs,
                "a".repeat(MAX_TOKEN_LEN + 1),
                Some(TokenError::Invalid("too_long")),
            ),
            (
                "unknown alg",
                &hs,
                hs256_by_hand(
                    &json!({"alg": "HS999", "kid": "k1"}),
                    &good_payload(),
                    SECRET,
                ),
                Some(TokenError::Invalid("unsupported_alg")),
            ),
        ];
        for (name, keys, token, expected) in cases {
            let got = keys.verify(&token, NOW);
            match (expected, got) {
                (Some(want), Err(err)) => assert_eq!(err, want, "{name}"),
                (None, Err(TokenError::Invalid(_))) => {}
                (_, other) => panic!("{name}: unexpected {other:?}"),
            }
        }
        // Nothing refused was cached.
        hs.cache.run_pending_tasks();
        rs.cache.run_pending_tasks();
        assert_eq!(rs.cache.entry_count(), 0);
        assert_eq!(hs.cache.entry_count(), 2, "only the two good tokens");
    }

    #[test]
    fn leeway_is_honoured_both_ways() {
        let hs = ring(private("k1", Algorithm::HS256), vec![]);
        let hdr = json!({"alg": "HS256", "kid": "k1"});
        // (exp offset, nbf offset, now offset, ok?) around NOW, leeway 30 s
        let cases: &[(i64, Option<i64>, i64, bool)] = &[
            (0, None, -1, true),
            (0, None, 0, true),   // at exp: within leeway
            (0, None, 29, true),  // 29 s late: within leeway
            (0, None, 30, false), // 30 s late: expired
            (-29, None, 0, true),
            (3600, Some(30), 0, true),  // nbf 30 s ahead: within leeway
            (3600, Some(31), 0, false), // nbf 31 s ahead: not yet
            (3600, Some(31), 1, true),  // ...until a second later
            (3600, Some(-100), 0, true),
        ];
        for &(exp, nbf, now, ok) in cases {
            let mut payload = with(good_payload(), "exp", json!(NOW as i64 + exp));
            if let Some(nbf) = nbf {
                payload = with(payload, "nbf", json!(NOW as i64 + nbf));
            }
            let token = hs256_by_hand(&hdr, &payload, SECRET);
            let fresh = ring(private("k1", Algorithm::HS256), vec![]);
            let at = (NOW as i64 + now) as u64;
            assert_eq!(
                fresh.verify(&token, at).is_ok(),
                ok,
                "exp {exp} nbf {nbf:?} now {now}"
            );
            // Cached or not, the answer is the same.
            assert_eq!(
                hs.verify(&token, at).is_ok(),
                ok,
                "cached: exp {exp} nbf {nbf:?} now {now}"
            );
        }
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

    #[test]
    fn rotation_old_keys_verify_unknown_kids_fail() {
        let old_hs = ring(private("k0", Algorithm::HS256), vec![]);
        let old_rs = ring(private("r0", Algorithm::RS256), vec![]);
        let (hs_token, hs_claims) = old_hs.mint(&identity(), NOW).unwrap();
        let (rs_token, rs_claims) = old_rs.mint(&identity(), NOW).unwrap();

        let current = ring(
            private("k2", Algorithm::EdDSA),
            vec![
                private("k0", Algorithm::HS256),
                public("r0", Algorithm::RS256),
            ],
        );
        assert_eq!(current.verify(&hs_token, NOW + 5).unwrap(), hs_claims);
        assert_eq!(current.verify(&rs_token, NOW + 5).unwrap(), rs_claims);
        let (new_token, _) = current.mint(&identity(), NOW).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token)
                .unwrap()
                .kid
                .as_deref(),
            Some("k2")
        );
        // Old rings do not know the new kid.
        assert_eq!(
            old_hs.verify(&new_token, NOW),
            Err(TokenError::Invalid("unknown_kid"))
        );

        // JWKS: the asymmetric signing and verify keys, never the HS secret.
        let jwks = current.jwks().unwrap();
        let kids: Vec<_> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].clone())
            .collect();
        assert_eq!(kids, vec![json!("k2"), json!("r0")]);

        // After the old key is dropped, its tokens are refused.
        let dropped = ring(private("k2", Algorithm::EdDSA), vec![]);
        assert_eq!(
            dropped.verify(&hs_token, NOW),
            Err(TokenError::Invalid("unknown_kid"))
        );
    }

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

    #[test]
    fn sign_uses_the_signing_key_header() {
        let keys = ring(private("k7", Algorithm::HS384), vec![]);
        let (_, claims) = keys.mint(&identity(), NOW).unwrap();
        let token = keys.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.typ.as_deref(), header.kid.as_deref()),
            (Algorithm::HS384, Some("JWT"), Some("k7"))
        );
        assert_eq!(keys.verify(&token, NOW).unwrap(), claims);
        // jti is fresh per mint.
        let (_, again) = keys.mint(&identity(), NOW).unwrap();
        assert_ne!(again.jti, claims.jti);
        // No sid: still a valid token.
        let id = AccessIdentity {
            sid: None,
            ..identity()
        };
        let (token, claims) = keys.mint(&id, NOW).unwrap();
        assert_eq!(keys.verify(&token, NOW).unwrap().sid, None);
        assert_eq!(claims.identity(), id);
    }

    #[test]
    fn a_ring_without_a_signing_key_verifies_and_mints_nothing() {
        let issuer = ring(private("rs", Algorithm::RS256), vec![]);
        let (token, claims) = issuer.mint(&identity(), NOW).unwrap();
        let verifier = KeyRing::new(None, vec![public("rs", Algorithm::RS256)], rules()).unwrap();
        assert!(!verifier.can_sign());
        assert_eq!(verifier.signing_kid(), None);
        assert_eq!(verifier.verify(&token, NOW).unwrap(), claims);
        assert!(verifier.mint(&identity(), NOW).is_err());
        assert!(verifier.sign(&claims).is_err());
        // Nothing of ours to publish.
        assert!(verifier.jwks().is_none());
        assert!(issuer.can_sign());

        // A token without a kid goes to the only key; with several keys it names none.
        let no_kid = |alg: Algorithm, key: &[u8]| {
            let mut header = Header::new(alg);
            header.kid = None;
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key)).unwrap()
        };
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let hs = |kid: &str| KeySpec {
            kid: kid.into(),
            algorithm: Algorithm::HS256,
            material: KeyMaterial::Secret(secret.clone()),
        };
        let token = no_kid(Algorithm::HS256, &secret);
        let one = KeyRing::new(None, vec![hs("a")], rules()).unwrap();
        assert_eq!(one.verify(&token, NOW).unwrap().sub, claims.sub);
        let two = KeyRing::new(None, vec![hs("a"), hs("b")], rules()).unwrap();
        assert_eq!(
            two.verify(&token, NOW),
            Err(TokenError::Invalid("unknown_kid"))
        );
    }
}
