//! The JWKS parser (`src/tokens/fetch.rs`): any document, for an issuer that accepts a set of
//! algorithms the fuzzer picks.
//!
//! Properties: never a panic; an accepted document is a JSON object whose `keys` is an array;
//! at most 64 keys are kept, each under its own kid, and each only for algorithms the issuer
//! accepts and its key type (and curve) fits: RSA for RS*/PS*, EC P-256 for ES256, EC P-384
//! for ES384, OKP Ed25519 for EdDSA; never a symmetric (`oct`) key, never a key whose `use`
//! is not `sig`, never one whose `alg` names another algorithm; the same document gives the
//! same keys again.

#![no_main]

use libfuzzer_sys::fuzz_target;

const ALGS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

fuzz_target!(|data: &[u8]| {
    let Some((mask, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mask = u16::from_le_bytes(*mask);
    let allowed: Vec<&str> = ALGS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, a)| *a)
        .collect();
    let Ok(keys) = authgate::fuzzing::parse_jwks(body, &allowed) else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_slice(body).expect("accepted JSON");
    let entries = doc["keys"].as_array().expect("keys is an array");
    assert!(!keys.is_empty());
    assert!(keys.len() <= authgate::fuzzing::MAX_JWKS_KEYS);
    for key in &keys {
        assert_eq!(keys.iter().filter(|k| k.kid == key.kid).count(), 1);
        assert!(!key.algorithms.is_empty());
        // The entries under this kid (a JWK without a kid is kid "").
        let named: Vec<&serde_json::Value> = entries
            .iter()
            .filter(|e| e.get("kid").and_then(|k| k.as_str()).unwrap_or("") == key.kid)
            .collect();
        assert!(!named.is_empty(), "kid {:?} is in no entry", key.kid);
        let fits_one = named.iter().any(|e| {
            let kty = e.get("kty").and_then(|v| v.as_str()).unwrap_or("");
            let crv = e.get("crv").and_then(|v| v.as_str());
            let use_ok = e.get("use").is_none_or(|u| u == "sig");
            let alg = e.get("alg").and_then(|v| v.as_str());
            use_ok
                && kty != "oct"
                && key.algorithms.iter().all(|a| {
                    allowed.contains(&a.as_str())
                        && alg.is_none_or(|named| named == a.as_str())
                        && match (kty, crv, a.as_str()) {
                            ("RSA", _, a) => a.starts_with("RS") || a.starts_with("PS"),
                            ("EC", Some("P-256"), "ES256") => true,
                            ("EC", Some("P-384"), "ES384") => true,
                            ("OKP", Some("Ed25519"), "EdDSA") => true,
                            _ => false,
                        }
                })
        });
        assert!(
            fits_one,
            "kid {:?} kept for {:?} from {named:?}",
            key.kid, key.algorithms
        );
    }
    // The same document, the same keys.
    assert_eq!(
        authgate::fuzzing::parse_jwks(body, &allowed).ok(),
        Some(keys)
    );
});
