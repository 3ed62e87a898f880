//! Token verification through the gateway: every attack from the issue is a 401 that never
//! reaches the upstream, and the token's place in the request (Bearer, cookie) is unambiguous.

use serde_json::{json, Value};

use crate::support::*;

/// Sends `token` to a required route: 401 with `code`, the right `WWW-Authenticate`, and the
/// upstream never sees the request.
async fn refused_with(gw: &Gateway, token: &str, code: &str) {
    for path in ["/api/orders", "/admin/panel"] {
        let r = gw.get_auth(path, token).await;
        r.assert_error(401, code);
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="authgate", error="invalid_token""#),
            "{path}"
        );
    }
    assert_eq!(
        gw.upstream.hits(),
        0,
        "a refused token reached the upstream"
    );
}

async fn refused(token: &str) {
    let gw = Gateway::start(Conf::new()).await;
    refused_with(&gw, token, "invalid_token").await;
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().expect("object").remove(key);
    v
}

fn signed(header: Value, claims: Value) -> String {
    jwt_hs256(&header, &claims, SECRET.as_bytes())
}

#[tokio::test]
async fn hand_built_token_is_accepted() {
    // The control for every attack below: the builder itself makes tokens the gateway takes.
    let gw = Gateway::start(Conf::new()).await;
    let r = gw
        .get_auth("/admin/x", &signed(hs256_header(), good_claims()))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    assert_eq!(r.seen("x-session-id"), ["sess-hand"]);
    // Without a kid the signing key is used.
    let r = gw
        .get_auth(
            "/api/x",
            &signed(json!({"alg": "HS256", "typ": "JWT"}), good_claims()),
        )
        .await;
    assert_eq!(r.status, 200);
}

async fn alg_none(alg: &str) {
    let header = json!({"alg": alg, "typ": "JWT", "kid": "k1"});
    let h = b64(header.to_string().as_bytes());
    let p = b64(good_claims().to_string().as_bytes());
    let gw = Gateway::start(Conf::new()).await;
    // Unsigned, as `none` tokens are meant to be, and with a (valid HS256) signature appended.
    refused_with(&gw, &format!("{h}.{p}."), "invalid_token").await;
    refused_with(&gw, &signed(header, good_claims()), "invalid_token").await;
}

#[tokio::test]
async fn alg_none_lowercase_is_refused() {
    alg_none("none").await;
}

#[tokio::test]
async fn alg_none_capitalised_is_refused() {
    alg_none("None").await;
}

#[tokio::test]
async fn alg_none_uppercase_is_refused() {
    alg_none("NONE").await;
}

#[tokio::test]
async fn hs256_signed_with_the_rs256_public_key_is_refused() {
    let pair = authgate::tokens::keygen::generate(jsonwebtoken::Algorithm::RS256).expect("keygen");
    let private_pem = pair.private_pem.clone();
    let conf = Conf::new()
        .token_base("algorithm = \"RS256\"\nprivate_key_file = \"private.pem\"")
        .prepare(move |dir| {
            std::fs::write(dir.join("private.pem"), private_pem).expect("write key");
        });
    let gw = Gateway::start(conf).await;

    // Control: the gateway's own RS256 tokens pass.
    let good = gw.mint(&alice());
    assert_eq!(payload_of(&good)["sub"], "1001");
    assert_eq!(gw.get_auth("/api/x", &good).await.status, 200);
    let hits = gw.upstream.hits();

    // The classic confusion: HS256 keyed with the (public) verification key.
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
    let public = pair.public_pem.as_bytes();
    for key in [public, pair.public_pem.trim_end().as_bytes()] {
        let forged = jwt_hs256(&header, &good_claims(), key);
        for path in ["/api/orders", "/admin/panel"] {
            gw.get_auth(path, &forged)
                .await
                .assert_error(401, "invalid_token");
        }
    }
    // Same without a kid (the signing key's alg must still be pinned).
    let forged = jwt_hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &good_claims(),
        public,
    );
    gw.get_auth("/api/orders", &forged)
        .await
        .assert_error(401, "invalid_token");
    assert_eq!(
        gw.upstream.hits(),
        hits,
        "a forged token reached the upstream"
    );
}

#[tokio::test]
async fn kid_path_traversal_is_refused() {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "../../dev/null"});
    let gw = Gateway::start(Conf::new()).await;
    // /dev/null read as a key would be empty; and a kid that names no key is refused even
    // when the signature happens to be right for the real key.
    refused_with(
        &gw,
        &jwt_hs256(&header, &good_claims(), b""),
        "invalid_token",
    )
    .await;
    refused_with(&gw, &signed(header, good_claims()), "invalid_token").await;
}

async fn key_locating_header(field: &str, value: Value) {
    // Signed with the real secret: the header's presence alone must refuse it.
    let header = with(hs256_header(), field, value);
    refused(&signed(header, good_claims())).await;
}

#[tokio::test]
async fn jku_header_is_refused() {
    key_locating_header("jku", json!("http://127.0.0.1:1/jwks.json")).await;
}

#[tokio::test]
async fn jwk_header_is_refused() {
    key_locating_header("jwk", json!({"kty": "oct", "k": b64(SECRET.as_bytes())})).await;
}

#[tokio::test]
async fn x5u_header_is_refused() {
    key_locating_header("x5u", json!("http://127.0.0.1:1/cert.pem")).await;
}

#[tokio::test]
async fn x5c_header_is_refused() {
    key_locating_header("x5c", json!(["MIIB"])).await;
}

#[tokio::test]
async fn expired_token_is_401_token_expired() {
    let gw = Gateway::start(Conf::new()).await;
    let now = now();
    let claims = with(
        with(good_claims(), "exp", json!(now - 3600)),
        "iat",
        json!(now - 7200),
    );
    refused_with(&gw, &signed(hs256_header(), claims), "token_expired").await;
    // And one the gateway minted itself, long expired.
    let old = gw.mint_at(&alice(), now - 3 * 3600);
    refused_with(&gw, &old, "token_expired").await;
}

#[tokio::test]
async fn expired_within_leeway_is_accepted() {
    let gw = Gateway::start(Conf::new()).await;
    let claims = with(good_claims(), "exp", json!(now() - 5));
    let r = gw.get_auth("/api/x", &signed(hs256_header(), claims)).await;
    assert_eq!(r.status, 200, "leeway is 30s by default");
}

#[tokio::test]
async fn future_nbf_is_refused() {
    refused(&signed(
        hs256_header(),
        with(good_claims(), "nbf", json!(now() + 3600)),
    ))
    .await;
}

#[tokio::test]
async fn missing_exp_is_refused() {
    refused(&signed(hs256_header(), without(good_claims(), "exp"))).await;
}

#[tokio::test]
async fn exp_as_string_is_refused() {
    let exp = (now() + 3600).to_string();
    refused(&signed(
        hs256_header(),
        with(good_claims(), "exp", json!(exp)),
    ))
    .await;
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    refused(&signed(
        hs256_header(),
        with(good_claims(), "iss", json!("evil")),
    ))
    .await;
}

#[tokio::test]
async fn missing_issuer_is_refused() {
    refused(&signed(hs256_header(), without(good_claims(), "iss"))).await;
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    refused(&signed(
        hs256_header(),
        with(good_claims(), "aud", json!("other-app")),
    ))
    .await;
}

#[tokio::test]
async fn missing_audience_is_refused() {
    refused(&signed(hs256_header(), without(good_claims(), "aud"))).await;
}

#[tokio::test]
async fn missing_subject_is_refused() {
    refused(&signed(hs256_header(), without(good_claims(), "sub"))).await;
}

#[tokio::test]
async fn wrong_secret_is_refused() {
    refused(&jwt_hs256(
        &hs256_header(),
        &good_claims(),
        b"another-secret-that-is-32-bytes-long",
    ))
    .await;
}

#[tokio::test]
async fn alg_other_than_the_keys_is_refused() {
    // HS512 under kid k1 (pinned to HS256), signed with the right secret by HS256 rules.
    refused(&signed(
        json!({"alg": "HS512", "typ": "JWT", "kid": "k1"}),
        good_claims(),
    ))
    .await;
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let token = signed(hs256_header(), good_claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64(with(good_claims(), "sub", json!("0"))
        .to_string()
        .as_bytes());
    refused(&parts.join(".")).await;
}

#[tokio::test]
async fn truncated_token_is_refused() {
    let token = signed(hs256_header(), good_claims());
    let gw = Gateway::start(Conf::new()).await;
    refused_with(&gw, &token[..token.len() - 10], "invalid_token").await;
    refused_with(&gw, &token[..token.len() / 2], "invalid_token").await;
}

#[tokio::test]
async fn two_part_token_is_refused() {
    let token = signed(hs256_header(), good_claims());
    let two: Vec<&str> = token.split('.').take(2).collect();
    refused(&two.join(".")).await;
}

#[tokio::test]
async fn five_part_token_is_refused() {
    let token = signed(hs256_header(), good_claims());
    refused(&format!("{token}.{}.{}", b64(b"iv"), b64(b"tag"))).await;
}

#[tokio::test]
async fn non_base64_token_is_refused() {
    let gw = Gateway::start(Conf::new()).await;
    refused_with(&gw, "a!b.c$d.e%f", "invalid_token").await;
    let token = signed(hs256_header(), good_claims());
    // Standard base64 with padding is not base64url.
    let padded = token.replacen('.', "==.", 1);
    refused_with(&gw, &padded, "invalid_token").await;
}

#[tokio::test]
async fn token_with_bytes_beyond_ascii_is_invalid() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    // Sent as raw bytes: a signature character swapped for UTF-8 text, and a good token
    // padded with Unicode spaces (which the upstream would read as part of the token).
    let values = [
        format!("Bearer {}\u{e9}", &token[..token.len() - 1]),
        format!("Bearer {token}\u{a0}"),
        format!("Bearer \u{2003}{token}\u{3000}"),
        format!("Bearer\u{a0}{token}"),
    ];
    for value in values {
        let r = gw
            .raw_get("/api/orders", &format!("Authorization: {value}\r\n"))
            .await;
        r.assert_error(401, "invalid_token");
    }
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let auth = format!("Bearer {token}");
    // Raw, so both headers go out exactly as written; the same token twice is still refused.
    let r = gw
        .raw_get(
            "/api/orders",
            &format!("Authorization: {auth}\r\nAuthorization: {auth}\r\n"),
        )
        .await;
    r.assert_error(400, "bad_request");
    let r = gw
        .raw_get(
            "/optional/x",
            &format!("Authorization: {auth}\r\nAuthorization: Bearer other\r\n"),
        )
        .await;
    r.assert_error(400, "bad_request");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn cookie_token_is_read_when_configured() {
    let gw = Gateway::start(Conf::new().token("cookie = \"at\"")).await;
    let token = gw.mint(&alice());
    let r = gw
        .get("/api/x", &[("cookie", &format!("theme=dark; at={token}"))])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    // Header and cookie carrying the same token are fine.
    let r = gw
        .get(
            "/api/x",
            &[
                ("cookie", &format!("at={token}")),
                ("authorization", &format!("Bearer {token}")),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn cookie_token_is_ignored_when_not_configured() {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    gw.get("/api/x", &[("cookie", &format!("at={token}"))])
        .await
        .assert_error(401, "missing_token");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn header_and_cookie_with_different_tokens_are_400() {
    let gw = Gateway::start(Conf::new().token("cookie = \"at\"")).await;
    let a = gw.mint(&alice());
    let b = gw.mint(&bob());
    let r = gw
        .get(
            "/api/x",
            &[
                ("cookie", &format!("at={b}")),
                ("authorization", &format!("Bearer {a}")),
            ],
        )
        .await;
    r.assert_error(400, "bad_request");
    // Two different token cookies as well.
    let r = gw
        .raw_get("/api/x", &format!("Cookie: at={a}\r\nCookie: at={b}\r\n"))
        .await;
    r.assert_error(400, "bad_request");
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn huge_authorization_header_is_431_or_401_never_500() {
    let gw = Gateway::start(Conf::new()).await;
    let huge = "A".repeat(100 * 1024);
    let r = gw
        .raw_get("/api/orders", &format!("Authorization: Bearer {huge}\r\n"))
        .await;
    assert!(
        r.status == 431 || r.status == 401,
        "got {} {:?}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    // A 14 KB garbage token that fits under the head limit is a plain 401.
    let big = format!(
        "{}.{}.{}",
        "a".repeat(6000),
        "b".repeat(6000),
        "c".repeat(2000)
    );
    let r = gw.get_auth("/api/orders", &big).await;
    r.assert_error(401, "invalid_token");
    assert_eq!(gw.upstream.hits(), 0);
    // The gateway is still serving.
    assert_eq!(gw.get("/public/ok", &[]).await.status, 200);
}

/// An identity provider's RS256 public key in `verify_keys`, `login.backend = "none"`,
/// stateless, and the gateway's own secret left out: the IdP's tokens pass, and nothing is ever
/// minted from them (no `refresh-token`), so the IdP's expiry still applies.
#[tokio::test]
async fn a_gateway_without_a_signing_key_never_re_mints_tokens() {
    let idp = authgate::tokens::keygen::generate(jsonwebtoken::Algorithm::RS256).expect("keygen");
    let (public_pem, private_pem) = (idp.public_pem.clone(), idp.private_pem.clone());
    let conf = Conf::new()
        .token_base(
            "algorithm = \"RS256\"\n\
             [[token.verify_keys]]\nkid = \"idp\"\nalgorithm = \"RS256\"\npublic_key_file = \"idp.pem\"",
        )
        .prepare(move |dir| {
            std::fs::write(dir.join("idp.pem"), public_pem).expect("write key");
            std::fs::write(dir.join("idp-private.pem"), private_pem).expect("write key");
        });
    let gw = Gateway::start(conf).await;
    let keys = &gw.app.live().config.token.keys;
    assert!(!keys.can_sign());

    // A token of the IdP, near its expiry, with and without a session id.
    let idp_ring = authgate::tokens::KeyRing::new(
        Some(authgate::tokens::KeySpec {
            kid: "idp".into(),
            algorithm: jsonwebtoken::Algorithm::RS256,
            material: authgate::tokens::KeyMaterial::PrivatePem(idp.private_pem.clone().into()),
        }),
        vec![],
        keys.rules().clone(),
    )
    .expect("idp ring");
    for sid in [None, Some("sess-idp".to_owned())] {
        let id = authgate::tokens::AccessIdentity { sid, ..alice() };
        let ttl = idp_ring.rules().access_ttl.as_secs();
        let token = idp_ring.mint(&id, now() + 60 - ttl).expect("idp token").0;
        let r = gw.get_auth("/api/x", &token).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.seen("x-user-id"), ["1001"]);
        assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
    }
    // The JWKS has nothing of ours to publish, and there is no login to use.
    gw.get("/.well-known/jwks.json", &[])
        .await
        .assert_error(404, "not_found");
    for path in ["/auth/login", "/auth/refresh"] {
        gw.request("POST", path, &[], r#"{"refresh_token":"x"}"#.into())
            .await
            .assert_error(404, "not_found");
    }
}

/// With a signing key, a token carrying no session id was not made by an authgate login: it is
/// accepted while valid but never re-minted.
#[tokio::test]
async fn a_verify_key_token_without_a_session_is_not_silently_refreshed() {
    let gw = Gateway::start(Conf::new()).await;
    let id = authgate::tokens::AccessIdentity {
        sid: None,
        ..alice()
    };
    let r = gw.get_auth("/api/x", &gw.mint_expiring_in(&id, 60)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("refresh-token").is_none());
    // A token of a session in the same window is refreshed (control).
    let r = gw
        .get_auth("/api/x", &gw.mint_expiring_in(&alice(), 60))
        .await;
    assert!(r.header("refresh-token").is_some());
}

/// Identity claims that would become headers the app misreads are refused, never trimmed or
/// dropped (contract §4.4): a leading space, a tab, CR/LF, more than 255 bytes.
#[tokio::test]
async fn identity_claims_that_cannot_be_headers_make_the_token_invalid() {
    let gw = Gateway::start(Conf::new()).await;
    let long = "n".repeat(256);
    for (claim, value) in [
        ("sub", json!(" 1001")),
        ("sub", json!("1001 ")),
        ("name", json!("alice\r\nX-User-Id: 1")),
        ("tenant", json!("acme\t")),
        ("sid", json!("s\u{7f}")),
        ("name", json!(long)),
        ("roles", json!(["admin", " ops"])),
        ("plat", json!("web\n")),
    ] {
        let token = signed(hs256_header(), with(good_claims(), claim, value.clone()));
        refused_with(&gw, &token, "invalid_token").await;
    }
    // 255 bytes and inner spaces are fine; non-ASCII goes percent-encoded.
    let ok = with(
        with(good_claims(), "name", json!("n".repeat(255))),
        "tenant",
        json!("Acme Corp"),
    );
    let r = gw.get_auth("/api/x", &signed(hs256_header(), ok)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.seen("x-tenant-id"), ["Acme Corp"]);
    let r = gw
        .get_auth(
            "/api/x",
            &signed(
                hs256_header(),
                with(good_claims(), "name", json!("张三 100%")),
            ),
        )
        .await;
    assert_eq!(r.seen("x-user-name"), ["%E5%BC%A0%E4%B8%89 100%25"]);
}
