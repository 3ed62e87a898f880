//! The ring's tests: every algorithm round trip, the attack table, leeway, rotation, signing
//! and verify-only rings.

use aws_lc_rs::hmac;
use serde_json::json;

use super::*;
use crate::tokens::test_support::*;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token built by hand: header and payload as given, HMAC-SHA256 with `secret`.
fn hs256_by_hand(header: &serde_json::Value, payload: &serde_json::Value, secret: &[u8]) -> String {
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

fn with(mut payload: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
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
                let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
                let key = DecodingKey::from_jwk(&parsed).unwrap();
                let data = jsonwebtoken::decode::<Claims>(&token, &key, &validation(alg, &rules()));
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

/// Found by the `token_verify` fuzz target: `mint` put every token with a `sub` into the
/// verify cache, so one whose identity held a control character (`"\u{b}"`) passed from the
/// cache on the instance that minted it and was refused everywhere else.
#[test]
fn a_minted_token_with_an_unfit_identity_is_refused_by_its_own_ring_too() {
    let keys = ring(private("k1", Algorithm::HS256), vec![]);
    for unfit in ["\u{b}", "a\nb", " admin"] {
        let id = AccessIdentity {
            name: Some(unfit.into()),
            ..identity()
        };
        let (token, _) = keys.mint(&id, NOW).unwrap();
        assert_eq!(
            keys.verify(&token, NOW),
            Err(TokenError::Invalid("bad_identity_claim")),
            "{unfit:?}"
        );
    }
    let (token, _) = keys.mint(&identity(), NOW).unwrap();
    assert!(keys.verify(&token, NOW).is_ok());
}
