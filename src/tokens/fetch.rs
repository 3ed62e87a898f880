//! Getting an issuer's keys over HTTP(S): OIDC discovery (`<issuer>/.well-known/openid-configuration`
//! → `jwks_uri`) or a `jwks_url`, then the JWKS turned into verification keys.
//!
//! Every fetch is bounded: one time limit for the whole exchange (discovery included), at most
//! [`MAX_DOCUMENT_BYTES`] per document, no redirects followed, at most [`MAX_KEYS`] keys. A JWK is
//! used only when it is a signing key (`use` absent or `sig`) of a key type and curve that one of
//! the issuer's algorithms takes, and (when it names one) its `alg` is in that list; the rest
//! are skipped.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Largest discovery or JWKS document read.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWKS.
pub(crate) const MAX_KEYS: usize = 64;

/// Why a fetch failed; [`FetchError::label`] is its `result` in `authgate_jwks_fetches_total`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{0}: unreachable: {1}")]
    Unreachable(String, String),
    #[error("{0}: no answer within the fetch timeout")]
    Timeout(String),
    #[error("{0}: answered HTTP {1}")]
    Status(String, u16),
    #[error("{0}: larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge(String),
    #[error("{0}: {1}")]
    Malformed(String, String),
    #[error("{0}: no usable signing key ({1})")]
    NoUsableKeys(String, String),
}

impl FetchError {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Unreachable(..) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Status(..) => "http_status",
            Self::TooLarge(_) => "too_large",
            Self::Malformed(..) => "malformed",
            Self::NoUsableKeys(..) => "no_usable_keys",
        }
    }
}

/// One JWK made usable: the algorithms it may verify (those of the issuer's list its type
/// fits, or just its own `alg`), and a fingerprint of its public parameters to tell a changed
/// key from the same one served again.
pub(crate) struct FetchedKey {
    pub(crate) algs: Vec<Algorithm>,
    pub(crate) decoding: DecodingKey,
    pub(crate) fingerprint: String,
}

/// What one good fetch brought: keys by kid, and how long the answer may be cached
/// (`Cache-Control: max-age`), if it said.
pub(crate) struct Fetched {
    pub(crate) keys: BTreeMap<String, FetchedKey>,
    pub(crate) max_age: Option<Duration>,
    /// JWKs skipped, each with why (for the log).
    pub(crate) skipped: Vec<String>,
    /// The kids of usable keys dropped for being beyond [`MAX_KEYS`] (also in `skipped`).
    pub(crate) beyond_limit: Vec<String>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTP(S) client for one issuer: the platform's roots plus `ca_file`'s certificates.
pub(crate) struct Fetcher {
    client: HttpsClient,
}

impl Fetcher {
    /// `extra_ca`: PEM certificates trusted besides the platform's roots.
    pub(crate) fn new(extra_ca: Option<&[u8]>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_ca {
            let mut read = pem;
            for cert in rustls_pemfile::certs(&mut read) {
                let cert = cert.map_err(|e| format!("ca_file: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
            }
        }
        tracing::debug!(platform_roots = added, "issuer fetch client built");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { client })
    }

    /// One whole fetch: discovery first when `discovery` is given (its `issuer` must be
    /// `issuer`), then the JWKS, all within `timeout`.
    pub(crate) async fn fetch(
        &self,
        issuer: &str,
        source: &Source,
        algorithms: &[Algorithm],
        timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        let what = match source {
            Source::Discovery(url) | Source::Jwks(url) => url.clone(),
        };
        match tokio::time::timeout(timeout, self.fetch_inner(issuer, source, algorithms)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(what)),
        }
    }

    async fn fetch_inner(
        &self,
        issuer: &str,
        source: &Source,
        algorithms: &[Algorithm],
    ) -> Result<Fetched, FetchError> {
        let jwks_url = match source {
            Source::Jwks(url) => url.clone(),
            Source::Discovery(url) => {
                let (body, _) = self.get(url).await?;
                let doc: Discovery = serde_json::from_slice(&body).map_err(|e| {
                    FetchError::Malformed(url.clone(), format!("not discovery JSON: {e}"))
                })?;
                if doc.issuer != issuer {
                    return Err(FetchError::Malformed(
                        url.clone(),
                        format!("names issuer {:?}, not {issuer:?}", doc.issuer),
                    ));
                }
                if !jwks_uri_allowed(url, &doc.jwks_uri) {
                    return Err(FetchError::Malformed(
                        url.clone(),
                        format!(
                            "jwks_uri {:?} is not an http(s) URL, or is http from an https discovery",
                            doc.jwks_uri
                        ),
                    ));
                }
                doc.jwks_uri
            }
        };
        let (body, max_age) = self.get(&jwks_url).await?;
        let mut fetched = parse_jwks(&body, algorithms).map_err(|e| match e {
            JwksError::Malformed(m) => FetchError::Malformed(jwks_url.clone(), m),
            JwksError::NoUsableKeys(m) => FetchError::NoUsableKeys(jwks_url.clone(), m),
        })?;
        fetched.max_age = max_age;
        Ok(fetched)
    }

    /// GET `url`: a 200's body (bounded) and its `max-age`.
    async fn get(&self, url: &str) -> Result<(Bytes, Option<Duration>), FetchError> {
        let uri = http::Uri::from_str(url)
            .map_err(|e| FetchError::Malformed(url.to_owned(), format!("bad URL: {e}")))?;
        let req = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "authgate")
            .body(Empty::new())
            .map_err(|e| FetchError::Malformed(url.to_owned(), e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| FetchError::Unreachable(url.to_owned(), error_chain(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(FetchError::Status(url.to_owned(), resp.status().as_u16()));
        }
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
            return Err(FetchError::TooLarge(url.to_owned()));
        }
        let max_age = max_age(resp.headers());
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge(url.to_owned())
                } else {
                    FetchError::Unreachable(url.to_owned(), e.to_string())
                }
            })?
            .to_bytes();
        Ok((body, max_age))
    }
}

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The discovery document's URL.
    Discovery(String),
    /// The JWKS itself.
    Jwks(String),
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Whether discovery at `discovery` may send us to `jwks_uri` for the keys: http(s) only, and
/// an https discovery never hands the keys over to plain http (anyone on the path could
/// serve their own).
fn jwks_uri_allowed(discovery: &str, jwks_uri: &str) -> bool {
    jwks_uri.starts_with("https://")
        || (jwks_uri.starts_with("http://") && discovery.starts_with("http://"))
}

/// `Cache-Control: max-age=N` of an answer.
fn max_age(h: &http::HeaderMap) -> Option<Duration> {
    h.get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

pub(crate) enum JwksError {
    Malformed(String),
    NoUsableKeys(String),
}

/// The JWK fields we read.
#[derive(Deserialize)]
struct RawJwk {
    #[serde(default)]
    kty: String,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// A JWKS document's usable signing keys for an issuer that accepts `algorithms`.
pub(crate) fn parse_jwks(body: &[u8], algorithms: &[Algorithm]) -> Result<Fetched, JwksError> {
    let doc: RawJwks = serde_json::from_slice(body)
        .map_err(|e| JwksError::Malformed(format!("not a JWKS document: {e}")))?;
    let mut keys = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut beyond_limit = Vec::new();
    // Kids that name two keys: neither can be chosen safely, so both are left out (the rest
    // of the document still counts).
    let mut ambiguous = std::collections::BTreeSet::new();
    for (i, value) in doc.keys.into_iter().enumerate() {
        let Ok(jwk) = RawJwk::deserialize(&value) else {
            skipped.push(format!("keys[{i}]: not a JWK"));
            continue;
        };
        let kid = jwk.kid.clone().unwrap_or_default();
        match usable(&jwk, algorithms) {
            Ok(key) if keys.len() >= MAX_KEYS => {
                drop(key);
                skipped.push(format!("kid {kid:?}: beyond {MAX_KEYS} keys"));
                beyond_limit.push(kid);
            }
            Ok(_) if ambiguous.contains(&kid) => {}
            Ok(key) => {
                if keys.insert(kid.clone(), key).is_some() {
                    keys.remove(&kid);
                    skipped.push(format!("kid {kid:?}: names two keys; both left out"));
                    ambiguous.insert(kid);
                }
            }
            Err(why) => skipped.push(format!("kid {kid:?}: {why}")),
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            "the document has no keys".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(JwksError::NoUsableKeys(why));
    }
    Ok(Fetched {
        keys,
        max_age: None,
        skipped,
        beyond_limit,
    })
}

/// One JWK as a verification key, or why it is skipped.
fn usable(jwk: &RawJwk, algorithms: &[Algorithm]) -> Result<FetchedKey, String> {
    if let Some(u) = &jwk.use_ {
        if u != "sig" {
            return Err(format!("use {u:?} is not \"sig\""));
        }
    }
    let fits: Vec<Algorithm> = algorithms
        .iter()
        .copied()
        .filter(|a| fits(jwk, *a))
        .collect();
    let algs = match &jwk.alg {
        None => fits,
        Some(name) => {
            let alg = Algorithm::from_str(name).map_err(|_| format!("unknown alg {name:?}"))?;
            if !algorithms.contains(&alg) {
                return Err(format!("alg {name} is not in the issuer's algorithms"));
            }
            if !fits.contains(&alg) {
                return Err(format!("alg {name} does not fit a {} key", jwk.kty));
            }
            vec![alg]
        }
    };
    if algs.is_empty() {
        return Err(format!(
            "a {} key fits none of the issuer's algorithms",
            jwk.kty
        ));
    }
    fn part<'a>(p: &'a Option<String>, name: &str) -> Result<&'a str, String> {
        p.as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("no {name}"))
    }
    let (decoding, fingerprint) = match jwk.kty.as_str() {
        "RSA" => {
            let (n, e) = (part(&jwk.n, "n")?, part(&jwk.e, "e")?);
            let bits = rsa_bits(n).ok_or("n is not base64url")?;
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "an RSA key of {bits} bits (2048 to 8192 are taken)"
                ));
            }
            let key = DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?;
            (key, format!("RSA {n} {e}"))
        }
        "EC" => {
            let (x, y) = (part(&jwk.x, "x")?, part(&jwk.y, "y")?);
            let key = DecodingKey::from_ec_components(x, y).map_err(|e| e.to_string())?;
            (key, format!("EC {:?} {x} {y}", jwk.crv))
        }
        "OKP" => {
            let x = part(&jwk.x, "x")?;
            let key = DecodingKey::from_ed_components(x).map_err(|e| e.to_string())?;
            (key, format!("OKP {:?} {x}", jwk.crv))
        }
        other => return Err(format!("key type {other:?} is not taken")),
    };
    Ok(FetchedKey {
        fingerprint: format!("{algs:?} {fingerprint}"),
        algs,
        decoding,
    })
}

/// Whether a JWK's type (and curve) can verify `alg`.
fn fits(jwk: &RawJwk, alg: Algorithm) -> bool {
    use Algorithm::*;
    matches!(
        (jwk.kty.as_str(), jwk.crv.as_deref(), alg),
        ("RSA", _, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
            | ("EC", Some("P-256"), ES256)
            | ("EC", Some("P-384"), ES384)
            | ("OKP", Some("Ed25519"), EdDSA)
    )
}

/// The size in bits of a base64url RSA modulus, leading zero bytes not counted.
fn rsa_bits(n: &str) -> Option<usize> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .ok()?;
    let bytes = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => return Some(0),
    };
    Some(bytes.len() * 8 - bytes[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn es256_jwk(kid: &str) -> serde_json::Value {
        // A P-256 public key (any valid point will do for parsing).
        json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        })
    }

    #[test]
    fn signing_keys_are_kept_and_the_rest_skipped_with_a_reason() {
        let mut enc = es256_jwk("enc");
        enc["use"] = json!("enc");
        let mut other_alg = es256_jwk("rs");
        other_alg["alg"] = json!("RS256");
        let mut no_alg = es256_jwk("plain");
        no_alg.as_object_mut().unwrap().remove("alg");
        let mut p384 = es256_jwk("p384");
        p384["crv"] = json!("P-384");
        p384.as_object_mut().unwrap().remove("alg");
        let doc = json!({"keys": [es256_jwk("a"), enc, other_alg, no_alg, p384, {"kty": "oct", "k": "c2VjcmV0"}, 7]});
        let got = parse_jwks(doc.to_string().as_bytes(), &[Algorithm::ES256])
            .ok()
            .unwrap();
        assert_eq!(got.keys.keys().collect::<Vec<_>>(), ["a", "plain"]);
        assert_eq!(got.keys["plain"].algs, [Algorithm::ES256]);
        let why = got.skipped.join("\n");
        for part in [
            "\"enc\": use",
            "\"rs\": alg RS256 is not in",
            "\"p384\": a EC key fits none",
            "oct",
            "keys[6]: not a JWK",
        ] {
            assert!(why.contains(part), "{part} in {why}");
        }
    }

    #[test]
    fn documents_that_are_not_usable() {
        let bad = |body: &str| parse_jwks(body.as_bytes(), &[Algorithm::ES256]).err();
        assert!(matches!(bad("<html>"), Some(JwksError::Malformed(_))));
        assert!(matches!(
            bad("{\"keys\": 1}"),
            Some(JwksError::Malformed(_))
        ));
        assert!(matches!(
            bad("{\"keys\": []}"),
            Some(JwksError::NoUsableKeys(_))
        ));
        let twice = json!({"keys": [es256_jwk("a"), es256_jwk("a")]}).to_string();
        assert!(
            matches!(bad(&twice), Some(JwksError::NoUsableKeys(w)) if w.contains("names two keys"))
        );
        // One ambiguous kid leaves the others usable.
        let doc = json!({"keys": [es256_jwk("a"), es256_jwk("b"), es256_jwk("a"), es256_jwk("a")]});
        let got = parse_jwks(doc.to_string().as_bytes(), &[Algorithm::ES256])
            .ok()
            .unwrap();
        assert_eq!(got.keys.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn small_rsa_keys_are_skipped() {
        use base64::Engine;
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        let doc = json!({"keys": [{"kty": "RSA", "kid": "small", "n": n, "e": "AQAB"}]});
        match parse_jwks(doc.to_string().as_bytes(), &[Algorithm::RS256]) {
            Err(JwksError::NoUsableKeys(why)) => assert!(why.contains("1024 bits"), "{why}"),
            _ => panic!("a 1024-bit key must not be usable"),
        }
    }

    #[test]
    fn an_https_discovery_never_points_to_http_keys() {
        let https = "https://idp/.well-known/openid-configuration";
        let http = "http://idp/.well-known/openid-configuration";
        assert!(jwks_uri_allowed(https, "https://idp/certs"));
        assert!(!jwks_uri_allowed(https, "http://idp/certs"));
        assert!(jwks_uri_allowed(http, "http://idp/certs"));
        assert!(jwks_uri_allowed(http, "https://idp/certs"));
        assert!(!jwks_uri_allowed(http, "file:///etc/passwd"));
        assert!(!jwks_uri_allowed(https, "//idp/certs"));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            "public, max-age=120, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(120)));
        assert_eq!(max_age(&http::HeaderMap::new()), None);
    }
}
