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
use super::issuer::Issuer;
use super::keys::{key_error, load_key, SIGNING_NOT_PUBLIC};
use super::{
    identity_value_problem, AccessIdentity, Audience, Claims, Derived, KeyError, KeyMaterial,
    KeySpec, Origin, TokenError, TokenRules,
};
use crate::claims;
use crate::clock::Clock;

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

impl VerifyKey {
    fn new(alg: Algorithm, decoding: DecodingKey, rules: &TokenRules) -> Self {
        VerifyKey {
            alg,
            decoding,
            validation: validation(alg, rules),
        }
    }
}

/// The signing key as a signer, as the key its own tokens verify with, and its public JWK
/// (asymmetric keys only). Refuses a public key: it cannot sign.
fn load_signer(
    signing: KeySpec,
    rules: &TokenRules,
) -> Result<(Signer, VerifyKey, Option<serde_json::Value>), KeyError> {
    if matches!(signing.material, KeyMaterial::PublicPem(_)) {
        return Err(key_error(&signing, SIGNING_NOT_PUBLIC));
    }
    let loaded = load_key(&signing)?;
    let encoding = loaded.encoding.ok_or_else(|| {
        // load_key returns an encoding key for every secret or private PEM.
        key_error(&signing, "no signing key could be built from this material")
    })?;
    let key = VerifyKey::new(signing.algorithm, loaded.decoding, rules);
    let mut header = Header::new(signing.algorithm);
    header.typ = Some("JWT".into());
    header.kid = Some(signing.kid.clone());
    let signer = Signer {
        kid: signing.kid,
        alg: signing.algorithm,
        encoding,
        header,
    };
    Ok((signer, key, loaded.jwk))
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
    /// `[[token.issuers]]`, chosen by a token's exact `iss`.
    issuers: Vec<Arc<Issuer>>,
    /// Keep an own token's whole payload too (claim rules or `[identity.claims]` read claims
    /// beyond the ones the gateway mints).
    keep_payload: bool,
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
                let (signer, key, jwk) = load_signer(signing, &rules)?;
                signing_is_asymmetric = jwk.is_some();
                jwks.extend(jwk);
                keys.insert(signer.kid.clone(), key);
                Some(signer)
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
                VerifyKey::new(spec.algorithm, loaded.decoding, &rules),
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
            issuers: Vec::new(),
            keep_payload: false,
        })
    }

    /// Whether own tokens keep their whole payload (see the field).
    pub(crate) fn keep_payload(&mut self, keep: bool) {
        self.keep_payload = keep;
    }

    /// This ring, also accepting the tokens of `issuers` (at most `u16::MAX`).
    pub(crate) fn with_issuers(mut self, issuers: Vec<Arc<Issuer>>) -> Self {
        self.issuers = issuers;
        self
    }

    /// Takes `old`'s issuer in place of each of this ring's that is configured exactly the
    /// same (a reload): its keys, schedule and refresher carry on. Whether each was taken.
    pub(crate) fn reuse_issuers(&mut self, old: &KeyRing) -> Vec<bool> {
        self.issuers
            .iter_mut()
            .map(
                |issuer| match old.issuers.iter().find(|o| o.spec == issuer.spec) {
                    Some(o) => {
                        *issuer = Arc::clone(o);
                        true
                    }
                    None => false,
                },
            )
            .collect()
    }

    /// The `[[token.issuers]]`, in config order.
    pub(crate) fn issuers(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    pub fn rules(&self) -> &TokenRules {
        &self.rules
    }

    /// A process-unique id of this ring: a reload builds a ring with a new one.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The `kid` new tokens are signed under; `None` for a verify-only ring.
    pub(crate) fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.kid.as_str())
    }

    /// The algorithm new tokens are signed with; `None` for a verify-only ring.
    fn signing_algorithm(&self) -> Option<Algorithm> {
        self.signer.as_ref().map(|s| s.alg)
    }

    /// The kids of the keys that verify besides the signing key, sorted.
    pub(crate) fn verify_kids(&self) -> Vec<&str> {
        let signing = self.signing_kid();
        let mut kids: Vec<&str> = self
            .keys
            .keys()
            .map(String::as_str)
            .filter(|k| Some(*k) != signing)
            .collect();
        kids.sort_unstable();
        kids
    }

    /// How many keys verify besides the signing key (`[[token.verify_keys]]`).
    pub(crate) fn verify_key_count(&self) -> usize {
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
    #[cfg(test)]
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        self.verify_shared(token, now).map(|c| Claims::clone(&c))
    }

    /// Verifies a compact JWT at time `now` (Unix seconds), returning the claims shared with
    /// the verify cache: a token seen before costs one hash lookup plus the `exp`/`nbf` check
    /// against `now`, and no allocation.
    pub(crate) fn verify_shared(&self, token: &str, now: u64) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid("too_long"));
        }
        if let Some(claims) = recent::get(self.id, token).filter(|c| self.still_keyed(c)) {
            self.check_time(&claims, now)?;
            return Ok(claims);
        }
        if let Some(hit) = self
            .cache
            .get(token)
            .filter(|h| self.still_keyed(&h.claims))
        {
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

    /// [`Self::verify_shared`], fetching a foreign token's issuer's keys when they lack its
    /// key (once per issuer for a burst, at most every 30 s; see `issuer.rs`) and looking again.
    /// A key still missing then is `invalid_token`; keys that never arrived, 503.
    pub(crate) async fn verify_fetching(
        &self,
        token: &str,
        clock: &Clock,
    ) -> Result<Arc<Claims>, TokenError> {
        match self.verify_shared(token, clock.now()) {
            Err(TokenError::KeysNeeded(i)) => {
                let Some(issuer) = self.issuers.get(usize::from(i)) else {
                    return Err(TokenError::Invalid("unknown_kid"));
                };
                Box::pin(issuer.refetch(clock)).await;
                match self.verify_shared(token, clock.now()) {
                    Err(TokenError::KeysNeeded(_)) if issuer.has_keys() => {
                        Err(TokenError::Invalid("unknown_kid"))
                    }
                    Err(TokenError::KeysNeeded(_)) => Err(TokenError::IssuerUnavailable),
                    r => r,
                }
            }
            r => r,
        }
    }

    /// Whether cached claims still stand: an own token's always (a reload builds a new ring);
    /// a foreign one's while its issuer's keys are the generation it was verified with.
    fn still_keyed(&self, claims: &Claims) -> bool {
        match claims.origin {
            Origin::Own => true,
            Origin::Foreign { issuer, generation } => self
                .issuers
                .get(usize::from(issuer))
                .is_some_and(|i| i.generation() == generation),
        }
    }

    /// Signs claims with the current signing key (its `kid` in the header).
    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
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
            origin: Origin::Own,
            payload: None,
        };
        let token = self.sign(&claims)?;
        // Only what verification itself would accept goes into its cache: callers mint fit
        // identities, and one that is not (a value with a control character) is then refused
        // here as on any other instance, instead of passing from the cache.
        if check_identity(&claims).is_ok() {
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
        if !self.issuers.is_empty() {
            let iss = peek_issuer(token)?;
            if iss != self.rules.issuer {
                let i = self
                    .issuers
                    .iter()
                    .position(|i| i.name() == iss)
                    .ok_or(TokenError::Invalid("unknown_issuer"))?;
                return self.verify_foreign(token, &header, alg, i);
            }
        }
        let key = header
            .kid
            .as_deref()
            .or(self.default_kid.as_deref())
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::Invalid("unknown_kid"))?;
        if alg != key.alg {
            return Err(TokenError::Invalid("alg_mismatch"));
        }
        let claims = if self.keep_payload {
            let data =
                jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &key.validation)
                    .map_err(|e| map_jwt_error(e.kind()))?;
            let mut claims =
                Claims::deserialize(&data.claims).map_err(|_| TokenError::Invalid("bad_claims"))?;
            claims.payload = Some(Arc::new(data.claims));
            claims
        } else {
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
                .map_err(|e| map_jwt_error(e.kind()))?
                .claims
        };
        check_identity(&claims)?;
        Ok(claims)
    }

    /// A token of `self.issuers[i]`: its `typ`, `alg` in the issuer's list, its key by `kid`,
    /// the signature and iss/aud, then the identity from the issuer's claims.
    fn verify_foreign(
        &self,
        token: &str,
        header: &RawHeader,
        alg: Algorithm,
        i: usize,
    ) -> Result<Claims, TokenError> {
        let issuer = &self.issuers[i];
        if let Some(typ) = &header.typ {
            let typ = typ.to_ascii_lowercase();
            if !matches!(typ.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
                return Err(TokenError::Invalid("bad_typ"));
            }
        }
        if !issuer.spec.algorithms.contains(&alg) {
            return Err(TokenError::Invalid("alg_not_allowed"));
        }
        let set = issuer.keys();
        // `i` < the number of issuers, which config validation holds to u16.
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        let key = issuer
            .key(&set, header.kid.as_deref())
            .ok_or(TokenError::KeysNeeded(index))?;
        if !key.validation.algorithms.contains(&alg) {
            return Err(TokenError::Invalid("alg_mismatch"));
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &key.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let payload = data.claims;
        let base =
            ForeignBase::deserialize(&payload).map_err(|_| TokenError::Invalid("bad_claims"))?;
        let spec = &issuer.spec;
        let text = |p: &claims::ClaimPath| {
            p.find(&payload)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let claims = Claims {
            iss: base.iss,
            aud: base.aud,
            sub: base.sub,
            name: text(&spec.user_name),
            sid: None,
            plat: None,
            iat: base.iat,
            exp: base.exp,
            nbf: base.nbf,
            jti: base.jti.unwrap_or_default(),
            tenant: text(&spec.tenant),
            roles: spec.roles.find(&payload).and_then(claims::string_list),
            derived: Derived::default(),
            origin: Origin::Foreign {
                issuer: index,
                generation: set.generation,
            },
            payload: Some(Arc::new(payload)),
        };
        check_identity(&claims)?;
        Ok(claims)
    }
}

/// The registered claims of a foreign token; the rest stay in its payload.
#[derive(Deserialize)]
struct ForeignBase {
    iss: String,
    aud: Audience,
    sub: String,
    #[serde(default)]
    iat: u64,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
}

/// A token's `iss`, read before its signature is checked, only to choose who checks it.
fn peek_issuer(token: &str) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct Iss {
        #[serde(default)]
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1).unwrap_or("");
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Invalid("malformed"))?;
    let iss: Iss = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid("bad_claims"))?;
    iss.iss.ok_or(TokenError::Invalid("missing_claim"))
}

/// A non-empty `sub`, and identity values fit to be headers (contract §4.4).
fn check_identity(c: &Claims) -> Result<(), TokenError> {
    {
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
    }
    Ok(())
}

/// The header fields we look at. Presence alone of a key-locating field is enough to refuse.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
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
mod tests;
