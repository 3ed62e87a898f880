//! Tokens of identity providers the deployment already runs (`[[token.issuers]]`, issue 10),
//! against a real IdP stand-in ([`Idp`]): RS256, ES256 and EdDSA tokens by discovery, `jwks_url`
//! or a static key pass with their claims as identity headers, are never session-checked nor
//! refreshed, and every forgery is a 401 that never reaches the upstream. Key sets rotate, an
//! unknown `kid` re-fetches at most once per 30 s, an IdP that is down or misbehaves never
//! takes the gateway down nor the last good keys away. Route requirements on scopes and claims
//! (`require_scopes`, `require_claims`) and `[identity.claims]` headers hold for every issuer;
//! `check` validates issuers (`--probe` asks them), `explain` shows the new requirements.

use std::process::Command;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// The routes of these tests: scopes and claims required on some, one optional, everything
/// else required.
const ROUTES: &str = r#"
[[routes]]
path = "/public"
upstream = "up"
auth = "public"

[[routes]]
path = "/admin"
upstream = "up"
auth = "required"
require_roles = ["admin"]

[[routes]]
path = "/orders-rw"
upstream = "up"
auth = "required"
require_scopes = ["orders:read", "orders:write"]

[[routes]]
path = "/orders"
upstream = "up"
auth = "required"
require_scopes = ["orders:read"]

[[routes]]
path = "/verified"
upstream = "up"
auth = "required"
require_claims = { email_verified = true, "/org/id" = "acme" }

[[routes]]
path = "/optional"
upstream = "up"
auth = "optional"

[[routes]]
path = "/alice-only"
upstream = "up"
auth = "required"
require_claims = { sub = "1001" }

[[routes]]
path = "/"
upstream = "up"
auth = "required"
"#;

/// The stateless test gateway with these routes, `/auth/verify` open to the loopback client,
/// and the `[[token.issuers]]` (or other whole sections) given.
fn conf(sections: &[String]) -> Conf {
    sections
        .iter()
        .fold(Conf::new().server(TRUST_LOOPBACK).routes(ROUTES), |c, s| {
            c.section(s)
        })
}

/// Waits until the gateway holds the keys `token` needs: its first fetch may run in the
/// background, and until it is done `/auth/verify` answers 503 issuer_unavailable. Asks
/// `/auth/verify`, so the upstream never sees these requests.
async fn keys_loaded(gw: &Gateway, token: &str) {
    let r = poll_until(
        "the issuer's keys to be fetched",
        || gw.verify("/api/x", Some(token)),
        |r| r.status != 503,
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().expect("claims object").remove(key);
    v
}

/// `GET path` with `token`: 200, as the echo upstream saw it.
async fn passes(gw: &Gateway, path: &str, token: &str) -> Resp {
    let r = gw.get_auth(path, token).await;
    assert_eq!(r.status, 200, "{path}: {}", text(&r));
    r
}

/// `GET path` with `token`: 403 forbidden, not forwarded.
async fn forbidden(gw: &Gateway, path: &str, token: &str) {
    let before = gw.hits();
    let r = gw.get_auth(path, token).await;
    r.assert_error(403, "forbidden");
    assert_eq!(gw.hits(), before, "{path}: a 403 reached the upstream");
}

// ---------------------------------------------------------------------------------------------
// The IdP stand-in itself (passes without the feature)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_idp_serves_discovery_and_a_jwks_that_verifies_its_tokens() {
    let keys = vec![
        IdpKey::generate("rsa-1", Algorithm::RS256),
        IdpKey::generate("ec-1", Algorithm::ES256),
        IdpKey::generate("ed-1", Algorithm::EdDSA),
    ];
    let enc = IdpKey::generate("enc-1", Algorithm::RS256).for_encryption();
    let mut served = keys.clone();
    served.push(enc.clone());
    let idp = Idp::start_at("/realms/acme", served).await;
    assert_eq!(idp.issuer(), format!("{}/realms/acme", idp.base()));
    let client = Probe::new(idp.addr);

    // Discovery under the issuer's path names the issuer and the JWKS; not at the root.
    let r = client.get(&idp.discovery_path(), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["issuer"], idp.issuer());
    assert_eq!(r.json()["jwks_uri"], idp.jwks_url());
    let r = client.get("/.well-known/openid-configuration", &[]).await;
    assert_eq!(r.status, 404);

    let r = client.get(JWKS_PATH, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let jwks = r.json();
    let served: Vec<&Value> = jwks["keys"].as_array().expect("keys").iter().collect();
    assert_eq!(served.len(), 4);
    assert_eq!(served[3]["kid"], "enc-1");
    assert_eq!(served[3]["use"], "enc");
    // Each signing JWK verifies its key's tokens (the JWK is that key's public half).
    for (key, jwk) in keys.iter().zip(&served) {
        assert_eq!(jwk["kid"], key.kid.as_str());
        assert_eq!(jwk["use"], "sig");
        let token = key.sign(&idp.claims("u-1"));
        assert_eq!(header_of(&token)["kid"], key.kid.as_str());
        assert_eq!(header_of(&token)["typ"], "JWT");
        let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value((*jwk).clone()).expect("a JWK");
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&parsed).expect("a decoding key");
        let mut validation = jsonwebtoken::Validation::new(key.alg);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[idp.issuer()]);
        let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
            .unwrap_or_else(|e| panic!("{}: {e}", key.kid));
        assert_eq!(data.claims["sub"], "u-1");
        // And another key's JWK does not.
        let other = IdpKey::generate("x", key.alg);
        assert!(jsonwebtoken::decode::<Value>(
            &other.sign(&idp.claims("u-1")),
            &decoding,
            &validation
        )
        .is_err());
    }
    assert_eq!(idp.hits(&idp.discovery_path()), 1);
    assert_eq!(idp.fetches(), 1);
    idp.wait_for_fetches(1).await;
}

#[tokio::test]
async fn the_idp_rotates_counts_and_misbehaves_on_demand() {
    let (k1, k2) = (
        IdpKey::generate("k1", Algorithm::RS256),
        IdpKey::generate("k2", Algorithm::ES256),
    );
    let idp = Idp::start(vec![k1]).await;
    let client = Probe::new(idp.addr);
    let kids = |r: &Resp| -> Vec<String> {
        r.json()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect()
    };
    assert_eq!(kids(&client.get(JWKS_PATH, &[]).await), ["k1"]);
    assert!(client
        .get(JWKS_PATH, &[])
        .await
        .header("cache-control")
        .is_none());

    // A waiter started before the fetch is woken by it.
    let waiter = {
        let c = client.clone();
        async move {
            c.get(JWKS_PATH, &[]).await;
        }
    };
    let (_, ()) = tokio::join!(waiter, idp.wait_for_fetches(3));
    assert_eq!(idp.fetches(), 3);

    idp.set_keys(vec![k2]);
    idp.set_max_age(Some(60));
    let r = client.get(JWKS_PATH, &[]).await;
    assert_eq!(kids(&r), ["k2"]);
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));

    idp.set_fault(Fault::Status500);
    assert_eq!(client.get(JWKS_PATH, &[]).await.status, 500);
    idp.set_fault(Fault::NotJson);
    let r = client.get(JWKS_PATH, &[]).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    idp.set_fault(Fault::Huge);
    let r = client.get(JWKS_PATH, &[]).await;
    assert!(r.body.len() >= HUGE_BYTES, "{}", r.body.len());
    assert_eq!(
        kids(&r),
        ["k2"],
        "the huge answer is a JWKS, only too large"
    );

    let get = format!("GET {JWKS_PATH} HTTP/1.1\r\nHost: idp\r\nConnection: close\r\n\r\n");
    idp.set_fault(Fault::Down);
    assert!(raw(idp.addr, get.clone().into_bytes()).await.is_err());
    idp.set_fault(Fault::Hang);
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        raw(idp.addr, get.clone().into_bytes()),
    )
    .await;
    assert!(hung.is_err(), "a hanging IdP answered: {hung:?}");
    // Every request was counted, answered or not.
    idp.wait_for_fetches(9).await;
    assert_eq!(idp.fetches(), 9);

    idp.set_fault(Fault::None);
    assert_eq!(client.get(JWKS_PATH, &[]).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Foreign tokens that pass
// ---------------------------------------------------------------------------------------------

/// RS256 from discovery, roles by a Keycloak pointer: the identity headers come from the
/// configured claims, a Keycloak `sid` is no session of ours, and a token about to expire is
/// never silently refreshed (only the IdP may renew it).
#[tokio::test]
async fn rs256_token_by_discovery_passes_with_its_identity_and_is_never_refreshed() {
    let key = IdpKey::generate("kc-rsa", Algorithm::RS256);
    let idp = Idp::start(vec![key.clone()]).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml(
        "algorithms = [\"RS256\"]\nroles_claim = \"/realm_access/roles\"",
    )]))
    .await;
    let now = now();
    let claims = json!({
        "iss": idp.issuer(),
        "aud": AUDIENCE,
        "sub": "kc-42",
        "preferred_username": "carol",
        "name": "Carol Example",
        "realm_access": {"roles": ["admin", "ops"]},
        "roles": ["root"],
        "tenant": "acme",
        "sid": "keycloak-session-1",
        "iat": now - 3500,
        "exp": now + 50,
    });
    let token = key.sign(&claims);
    keys_loaded(&gw, &token).await;

    let before = gw.hits();
    let r = passes(&gw, "/api/x", &token).await;
    assert_eq!(gw.hits(), before + 1);
    assert_eq!(r.seen("x-user-id"), ["kc-42"]);
    assert_eq!(r.seen("x-user-name"), ["carol"]);
    assert_eq!(
        r.seen("x-user-roles"),
        ["admin,ops"],
        "roles by the pointer"
    );
    assert_eq!(r.seen("x-tenant-id"), ["acme"]);
    assert!(
        r.seen("x-session-id").is_empty(),
        "{:?}",
        r.seen("x-session-id")
    );
    // 50 s left, far inside the 30 m window: nothing is minted for a foreign token.
    assert!(r.header("refresh-token").is_none(), "{:?}", r.headers);
    // Roles by the pointer count for require_roles too, and only they.
    passes(&gw, "/admin/x", &token).await;
    let top_level_only = without(
        with(claims.clone(), "roles", json!(["admin"])),
        "realm_access",
    );
    forbidden(&gw, "/admin/x", &key.sign(&top_level_only)).await;
    // Nor on the forward-auth path.
    let r = gw.verify("/api/x", Some(&token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-user-id"), Some("kc-42"));
    assert!(r.header("refresh-token").is_none());
    assert!(r.header("x-session-id").is_none());
}

/// ES256 by `jwks_url`, with the user-name and tenant claims renamed and two audiences.
#[tokio::test]
async fn es256_token_by_jwks_url_passes_with_renamed_claims() {
    let key = IdpKey::generate("ec-1", Algorithm::ES256);
    let idp = Idp::start(vec![key.clone()]).await;
    let block = format!(
        "[[token.issuers]]\nissuer = {:?}\njwks_url = {:?}\naudiences = [\"orders-api\", {AUDIENCE:?}]\n\
         algorithms = [\"ES256\"]\nuser_name_claim = \"email\"\ntenant_claim = \"org\"\n",
        idp.issuer(),
        idp.jwks_url()
    );
    let gw = Gateway::start(conf(&[block])).await;
    let claims = json!({
        "iss": idp.issuer(),
        "aud": "orders-api",
        "sub": "ec-user",
        "email": "dave@example.com",
        "preferred_username": "dave",
        "org": "globex",
        "tenant": "not-this-one",
        "roles": ["user"],
        "iat": now(),
        "exp": now() + 3600,
    });
    let token = key.sign(&claims);
    keys_loaded(&gw, &token).await;
    let r = passes(&gw, "/api/x", &token).await;
    assert_eq!(r.seen("x-user-id"), ["ec-user"]);
    assert_eq!(r.seen("x-user-name"), ["dave@example.com"]);
    assert_eq!(r.seen("x-tenant-id"), ["globex"]);
    assert_eq!(r.seen("x-user-roles"), ["user"]);
    assert!(r.seen("x-session-id").is_empty());
    // jwks_url alone: discovery was never asked.
    assert_eq!(idp.hits(&idp.discovery_path()), 0);
    assert!(idp.fetches() >= 1);
}

/// EdDSA by discovery of a path-suffixed issuer (`<base>/realms/acme`); `aud` as an array and
/// `typ: "at+jwt"` (RFC 9068) are accepted.
#[tokio::test]
async fn eddsa_token_of_a_realm_issuer_passes() {
    let key = IdpKey::generate("ed-1", Algorithm::EdDSA);
    let idp = Idp::start_at("/realms/acme", vec![key.clone()]).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"EdDSA\"]")])).await;
    let claims = with(
        with(idp.claims("ed-user"), "aud", json!(["account", AUDIENCE])),
        "preferred_username",
        json!("erin"),
    );
    let mut header = key.header();
    header.typ = Some("at+jwt".into());
    let token = key.sign_with(&header, &claims);
    keys_loaded(&gw, &token).await;
    let r = passes(&gw, "/api/x", &token).await;
    assert_eq!(r.seen("x-user-id"), ["ed-user"]);
    assert_eq!(r.seen("x-user-name"), ["erin"]);
    assert!(
        r.seen("x-user-roles").is_empty(),
        "no roles claim, no header"
    );
    assert!(
        idp.hits(&idp.discovery_path()) >= 1,
        "discovery under the realm path"
    );
    // The plain `typ: "JWT"` passes as well.
    passes(&gw, "/api/x", &key.sign(&claims)).await;
}

/// `public_key_file`: one static key, nothing fetched, so the first token passes at once.
#[tokio::test]
async fn a_static_public_key_file_issuer_needs_no_fetch() {
    let key = IdpKey::generate("static-1", Algorithm::RS256);
    let public = key.public_pem.clone();
    let issuer = "https://static-idp.test/realms/acme";
    let block = format!(
        "[[token.issuers]]\nissuer = {issuer:?}\npublic_key_file = \"idp.pem\"\n\
         audiences = [{AUDIENCE:?}]\nalgorithms = [\"RS256\"]\n"
    );
    let gw = Gateway::start(conf(&[block]).prepare(move |dir| {
        std::fs::write(dir.join("idp.pem"), public).expect("write the IdP key");
    }))
    .await;
    let claims = json!({
        "iss": issuer, "aud": AUDIENCE, "sub": "s-1", "preferred_username": "sam",
        "iat": now(), "exp": now() + 3600,
    });
    let r = passes(&gw, "/api/x", &key.sign(&claims)).await;
    assert_eq!(r.seen("x-user-id"), ["s-1"]);
    assert_eq!(r.seen("x-user-name"), ["sam"]);
    // Another key under the same kid is refused.
    let forger = IdpKey::generate("static-1", Algorithm::RS256);
    gw.assert_refused(&forger.sign(&claims), "invalid_token")
        .await;
}

/// Two issuers at once: each token is checked with its own issuer's keys only, and own and
/// foreign keys never stand in for each other.
#[tokio::test]
async fn two_issuers_each_token_needs_its_own_issuers_key() {
    let (ka, kb) = (
        IdpKey::generate("a-1", Algorithm::RS256),
        IdpKey::generate("b-1", Algorithm::RS256),
    );
    let (a, b) = (
        Idp::start(vec![ka.clone()]).await,
        Idp::start(vec![kb.clone()]).await,
    );
    let rs = "algorithms = [\"RS256\"]";
    let gw = Gateway::start(conf(&[a.issuer_toml(rs), b.issuer_toml(rs)])).await;
    let (ta, tb) = (ka.sign(&a.claims("user-a")), kb.sign(&b.claims("user-b")));
    keys_loaded(&gw, &ta).await;
    keys_loaded(&gw, &tb).await;
    assert_eq!(
        passes(&gw, "/api/x", &ta).await.seen("x-user-id"),
        ["user-a"]
    );
    assert_eq!(
        passes(&gw, "/api/x", &tb).await.seen("x-user-id"),
        ["user-b"]
    );

    // iss A signed by B's key, under B's kid and under A's.
    gw.assert_refused(&kb.sign(&a.claims("user-a")), "invalid_token")
        .await;
    let mut header = kb.header();
    header.kid = Some("a-1".into());
    gw.assert_refused(&kb.sign_with(&header, &a.claims("user-a")), "invalid_token")
        .await;
    // iss B signed by A's key.
    gw.assert_refused(&ka.sign(&b.claims("user-b")), "invalid_token")
        .await;

    // The gateway's own secret never signs for an issuer, an issuer's key never for us.
    let as_own = jwt_hs256(&hs256_header(), &a.claims("1001"), SECRET.as_bytes());
    gw.assert_refused(&as_own, "invalid_token").await;
    let own_claims = good_claims();
    gw.assert_refused(&ka.sign(&own_claims), "invalid_token")
        .await;
    // Own tokens still pass beside the issuers.
    assert_eq!(
        passes(&gw, "/api/x", &gw.mint(&alice()))
            .await
            .seen("x-session-id"),
        ["sess-alice"]
    );
}

// ---------------------------------------------------------------------------------------------
// Foreign tokens and sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stateful_foreign_tokens_need_no_session_own_tokens_still_do() {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let idp = Idp::start(vec![key.clone()]).await;
    let gw = Gateway::start(
        conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")]).store(StoreKind::Memory),
    )
    .await;
    // A Keycloak-style `sid` the store has never heard of: not looked up.
    let foreign = key.sign(&with(idp.claims("ext-7"), "sid", json!("kc-sess-9")));
    keys_loaded(&gw, &foreign).await;
    let r = passes(&gw, "/api/x", &foreign).await;
    assert_eq!(r.seen("x-user-id"), ["ext-7"]);
    assert!(r.seen("x-session-id").is_empty());

    let p = gw.login_ok("alice", "web").await;
    gw.assert_passes(&p).await;
    let r = gw.with_token("POST", "/auth/logout", &p.access).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    gw.assert_refused(&p.access, "session_revoked").await;
    // The foreign token does not care.
    passes(&gw, "/api/x", &foreign).await;
    // Nor does a logout-all of the user with the same id (the IdP owns that user's sessions).
    let q = gw.login_ok("alice", "web").await;
    let same_sub = key.sign(&idp.claims("1001"));
    passes(&gw, "/api/x", &same_sub).await;
    let r = gw.with_token("POST", "/auth/logout-all", &q.access).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    gw.assert_refused(&q.access, "session_revoked").await;
    passes(&gw, "/api/x", &same_sub).await;
}

#[tokio::test]
async fn a_foreign_token_is_not_a_refresh_token() {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let idp = Idp::start(vec![key.clone()]).await;
    let gw = Gateway::start(
        conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")]).store(StoreKind::Memory),
    )
    .await;
    let foreign = key.sign(&idp.claims("ext-1"));
    keys_loaded(&gw, &foreign).await;
    gw.refresh(&foreign)
        .await
        .assert_error(401, "invalid_refresh_token");
    // The token itself still passes (the refusals changed nothing).
    passes(&gw, "/api/x", &foreign).await;
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

/// An RS256-only issuer whose JWKS also holds an EC key, its RSA key, and the gateway.
async fn rs256_only() -> (Idp, IdpKey, IdpKey, Gateway) {
    let rsa = IdpKey::generate("rsa-1", Algorithm::RS256);
    let ec = IdpKey::generate("ec-1", Algorithm::ES256);
    let idp = Idp::start(vec![rsa.clone(), ec.clone()]).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")])).await;
    keys_loaded(&gw, &rsa.sign(&idp.claims("control"))).await;
    (idp, rsa, ec, gw)
}

#[tokio::test]
async fn an_unknown_issuer_is_refused() {
    let (idp, rsa, _, gw) = rs256_only().await;
    for iss in [
        "http://127.0.0.1:1".to_owned(),
        format!("{}/", idp.issuer()),
        idp.issuer().to_uppercase(),
        format!("{}/realms/acme", idp.issuer()),
    ] {
        let token = rsa.sign(&with(idp.claims("u"), "iss", json!(iss)));
        gw.assert_refused(&token, "invalid_token").await;
    }
    gw.assert_refused(&rsa.sign(&without(idp.claims("u"), "iss")), "invalid_token")
        .await;
    // Control.
    passes(&gw, "/api/x", &rsa.sign(&idp.claims("u"))).await;
}

#[tokio::test]
async fn an_algorithm_outside_the_issuers_list_is_refused() {
    let (idp, rsa, ec, gw) = rs256_only().await;
    let claims = idp.claims("u");
    // RS384 with the very RSA key the JWKS publishes.
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let mut h = rsa.header();
        h.alg = alg;
        gw.assert_refused(&rsa.sign_with(&h, &claims), "invalid_token")
            .await;
    }
    // A valid ES256 token whose key the JWKS serves, to an RS256-only issuer.
    gw.assert_refused(&ec.sign(&claims), "invalid_token").await;
}

#[tokio::test]
async fn hs256_keyed_with_the_issuers_public_key_is_refused() {
    let (idp, rsa, _, gw) = rs256_only().await;
    let claims = idp.claims("u");
    let pem = rsa.public_pem.as_bytes();
    for header in [
        json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
        json!({"alg": "HS256", "typ": "JWT"}),
        json!({"alg": "HS512", "typ": "JWT", "kid": "rsa-1"}),
    ] {
        for secret in [pem, rsa.public_pem.trim_end().as_bytes()] {
            gw.assert_refused(&jwt_hs256(&header, &claims, secret), "invalid_token")
                .await;
        }
    }
    // The JWK's modulus as the secret, too.
    let n = rsa.jwk["n"].as_str().expect("n").as_bytes();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"});
    gw.assert_refused(&jwt_hs256(&header, &claims, n), "invalid_token")
        .await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (idp, rsa, _, gw) = rs256_only().await;
    let payload = b64(idp.claims("u").to_string().as_bytes());
    let good = rsa.sign(&idp.claims("u"));
    let signature = good.rsplit('.').next().expect("signature");
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"})
            .to_string()
            .as_bytes());
        gw.assert_refused(&format!("{header}.{payload}."), "invalid_token")
            .await;
        // With a real RS256 signature pasted on.
        gw.assert_refused(&format!("{header}.{payload}.{signature}"), "invalid_token")
            .await;
    }
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let (idp, rsa, _, gw) = rs256_only().await;
    for aud in [
        json!("other-app"),
        json!(["other-app", "account"]),
        json!([]),
        json!("legacy-app2"),
        json!(7),
    ] {
        let token = rsa.sign(&with(idp.claims("u"), "aud", aud.clone()));
        gw.assert_refused(&token, "invalid_token").await;
    }
    gw.assert_refused(&rsa.sign(&without(idp.claims("u"), "aud")), "invalid_token")
        .await;
    // Control: the audience among others.
    let ok = with(idp.claims("u"), "aud", json!(["account", AUDIENCE]));
    passes(&gw, "/api/x", &rsa.sign(&ok)).await;
}

#[tokio::test]
async fn a_typ_other_than_jwt_or_at_jwt_is_refused() {
    let (idp, rsa, _, gw) = rs256_only().await;
    for typ in ["JWE", "logout+jwt", "dpop+jwt", "secevent+jwt"] {
        let mut h = rsa.header();
        h.typ = Some(typ.into());
        gw.assert_refused(&rsa.sign_with(&h, &idp.claims("u")), "invalid_token")
            .await;
    }
}

#[tokio::test]
async fn identity_claims_that_cannot_be_headers_make_a_foreign_token_invalid() {
    let (idp, rsa, _, gw) = rs256_only().await;
    for (claim, value) in [
        ("preferred_username", json!("a\r\nX-Evil: 1")),
        ("preferred_username", json!("a\nb")),
        ("sub", json!("u\r\n")),
        ("sub", json!(" u")),
        ("tenant", json!("acme\t")),
        ("roles", json!(["admin", "ops\r\nX-Evil: 1"])),
        ("preferred_username", json!("n".repeat(256))),
    ] {
        let token = rsa.sign(&with(idp.claims("u"), claim, value));
        gw.assert_refused(&token, "invalid_token").await;
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_foreign_tokens_are_refused() {
    let (idp, rsa, _, gw) = rs256_only().await;
    let now = now();
    let expired = with(
        with(idp.claims("u"), "exp", json!(now - 3600)),
        "iat",
        json!(now - 7200),
    );
    let before = gw.hits();
    let r = gw.get_auth("/api/x", &rsa.sign(&expired)).await;
    assert_eq!(r.status, 401, "{}", text(&r));
    // Expired: the client goes back to its IdP; either code tells it so.
    assert!(
        ["token_expired", "invalid_token"].contains(&r.code().as_str()),
        "{}",
        text(&r)
    );
    assert_eq!(gw.hits(), before);
    let early = with(idp.claims("u"), "nbf", json!(now + 3600));
    gw.assert_refused(&rsa.sign(&early), "invalid_token").await;
    gw.assert_refused(&rsa.sign(&without(idp.claims("u"), "exp")), "invalid_token")
        .await;
    // Within the leeway (30 s) an expired token still passes.
    let just = with(idp.claims("u"), "exp", json!(now - 5));
    passes(&gw, "/api/x", &rsa.sign(&just)).await;
}

/// A key-locating header is never followed: an attacker's JWKS serving the token's kid is
/// never asked, and the token is refused.
#[tokio::test]
async fn jku_and_x5u_headers_are_never_followed() {
    let (idp, _, _, gw) = rs256_only().await;
    let evil_key = IdpKey::generate("evil-1", Algorithm::RS256);
    let evil = Idp::start(vec![evil_key.clone()]).await;
    let mut h = evil_key.header();
    h.jku = Some(evil.jwks_url());
    gw.assert_refused(&evil_key.sign_with(&h, &idp.claims("u")), "invalid_token")
        .await;
    let mut h = evil_key.header();
    h.x5u = Some(evil.jwks_url());
    gw.assert_refused(&evil_key.sign_with(&h, &idp.claims("u")), "invalid_token")
        .await;
    assert_eq!(
        evil.fetches(),
        0,
        "the gateway followed a key URL of the token"
    );
    assert_eq!(evil.hits(&evil.discovery_path()), 0);
}

// ---------------------------------------------------------------------------------------------
// Unknown kids and rotation
// ---------------------------------------------------------------------------------------------

/// An unknown kid costs exactly one JWKS fetch, then 401; more unknown kids within 30 s (by the
/// gateway's clock) cost nothing more; after 30 s one more fetch is allowed.
#[tokio::test]
async fn an_unknown_kid_refetches_once_per_30s() {
    let (idp, rsa, _, gw) = rs256_only().await;
    // Past the start-up fetch, whichever way the 30 s are counted.
    gw.advance(Duration::from_secs(31));
    let token_with_kid = |kid: &str| {
        let mut h = rsa.header();
        h.kid = Some(kid.into());
        rsa.sign_with(&h, &idp.claims("u"))
    };
    let before = idp.fetches();
    gw.assert_refused(&token_with_kid("rsa-2"), "invalid_token")
        .await;
    idp.wait_for_fetches(before + 1).await;
    assert_eq!(idp.fetches(), before + 1, "exactly one re-fetch");
    gw.assert_refused(&token_with_kid("rsa-2"), "invalid_token")
        .await;
    gw.assert_refused(&token_with_kid("rsa-3"), "invalid_token")
        .await;
    assert_eq!(idp.fetches(), before + 1, "at most one re-fetch per 30 s");
    gw.advance(Duration::from_secs(31));
    gw.assert_refused(&token_with_kid("rsa-4"), "invalid_token")
        .await;
    idp.wait_for_fetches(before + 2).await;
    assert_eq!(idp.fetches(), before + 2);
    // The known kid never needed a fetch.
    passes(&gw, "/api/x", &rsa.sign(&idp.claims("u"))).await;
    assert_eq!(idp.fetches(), before + 2);
}

#[tokio::test]
async fn a_burst_of_unknown_kids_makes_one_fetch() {
    let (idp, rsa, _, gw) = rs256_only().await;
    gw.advance(Duration::from_secs(31));
    let tokens: Vec<String> = (0..100)
        .map(|i| {
            let mut h = rsa.header();
            h.kid = Some(format!("ghost-{i}"));
            rsa.sign_with(&h, &idp.claims(&format!("u{i}")))
        })
        .collect();
    let before = idp.fetches();
    let hits = gw.hits();
    let answers = futures_util::future::join_all(tokens.iter().map(|t| {
        let probe = gw.probe();
        let t = t.clone();
        async move { probe.get_auth("/api/x", &t).await }
    }))
    .await;
    for r in &answers {
        r.assert_error(401, "invalid_token");
    }
    idp.wait_for_fetches(before + 1).await;
    assert_eq!(idp.fetches(), before + 1, "100 unknown kids, one fetch");
    assert_eq!(gw.hits(), hits);
}

#[tokio::test]
async fn a_jwk_for_encryption_is_ignored() {
    let sig = IdpKey::generate("sig-1", Algorithm::RS256);
    let enc = IdpKey::generate("enc-1", Algorithm::RS256).for_encryption();
    let idp = Idp::start(vec![sig.clone(), enc.clone()]).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")])).await;
    keys_loaded(&gw, &sig.sign(&idp.claims("u"))).await;
    gw.assert_refused(&enc.sign(&idp.claims("u")), "invalid_token")
        .await;
    passes(&gw, "/api/x", &sig.sign(&idp.claims("u"))).await;
}

/// `use` and `alg` are optional in a JWK (RFC 7517): a key without them is a signing key of
/// the issuer's pinned algorithm.
#[tokio::test]
async fn a_jwk_without_use_or_alg_is_used() {
    let mut no_use = IdpKey::generate("no-use", Algorithm::RS256);
    no_use.jwk.as_object_mut().expect("jwk").remove("use");
    let mut no_alg = IdpKey::generate("no-alg", Algorithm::RS256);
    no_alg.jwk.as_object_mut().expect("jwk").remove("alg");
    let idp = Idp::start(vec![no_use.clone(), no_alg.clone()]).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")])).await;
    keys_loaded(&gw, &no_use.sign(&idp.claims("u"))).await;
    passes(&gw, "/api/x", &no_alg.sign(&idp.claims("u"))).await;
}

/// The IdP rotates: a token of the new kid makes the gateway fetch once and passes; a token of
/// the old kid, accepted (and cached) before, is refused once the rotated set is in.
#[tokio::test]
async fn rotation_new_kid_passes_after_one_fetch_old_kid_is_refused() {
    let (k1, k2) = (
        IdpKey::generate("2024-01", Algorithm::RS256),
        IdpKey::generate("2024-02", Algorithm::RS256),
    );
    let idp = Idp::start(vec![k1.clone()]).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")])).await;
    let old = k1.sign(&idp.claims("u-old"));
    keys_loaded(&gw, &old).await;
    passes(&gw, "/api/x", &old).await;
    passes(&gw, "/api/x", &old).await;

    idp.set_keys(vec![k2.clone()]);
    gw.advance(Duration::from_secs(31));
    let before = idp.fetches();
    let new = k2.sign(&idp.claims("u-new"));
    let r = passes(&gw, "/api/x", &new).await;
    assert_eq!(r.seen("x-user-id"), ["u-new"]);
    assert_eq!(idp.fetches(), before + 1, "one fetch for the new kid");
    passes(&gw, "/api/x", &new).await;
    assert_eq!(idp.fetches(), before + 1);

    gw.assert_refused(&old, "invalid_token").await;
    gw.assert_refused(&k1.sign(&idp.claims("u-old-2")), "invalid_token")
        .await;
}

// ---------------------------------------------------------------------------------------------
// An IdP that is down or misbehaves
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_idp_down_at_start_gives_503_until_it_is_back() {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let idp = Idp::start(vec![key.clone()]).await;
    idp.set_fault(Fault::Down);
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")])).await;
    assert_eq!(
        gw.get("/public/x", &[]).await.status,
        200,
        "the gateway started"
    );

    let token = key.sign(&idp.claims("u"));
    let r = gw.get_auth("/api/x", &token).await;
    r.assert_error(503, "issuer_unavailable");
    let retry = r.header("retry-after").expect("Retry-After");
    assert!(retry.parse::<u64>().is_ok_and(|s| s > 0), "{retry}");
    // An optional route does not quietly take the user for anonymous during the outage.
    gw.get_auth("/optional/x", &token)
        .await
        .assert_error(503, "issuer_unavailable");
    assert_eq!(gw.hits(), 1, "only the public request reached the upstream");
    // Own tokens are unaffected; readiness is not the IdP's.
    passes(&gw, "/api/x", &gw.mint(&alice())).await;
    let r = gw.admin_call("GET", "/readyz", None).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(
        text(&r).contains(&idp.issuer()),
        "readyz names the issuer: {}",
        text(&r)
    );

    // Back up; 31 s later (gateway clock) the gateway tries again and the token passes.
    idp.set_fault(Fault::None);
    gw.advance(Duration::from_secs(31));
    let r = gw.verify("/api/x", Some(&token)).await;
    assert!([200, 503].contains(&r.status), "{}", text(&r));
    idp.wait_for_fetches(1).await;
    keys_loaded(&gw, &token).await;
    let r = passes(&gw, "/api/x", &token).await;
    assert_eq!(r.seen("x-user-id"), ["u"]);
    let r = gw.admin_call("GET", "/readyz", None).await;
    assert_eq!(r.status, 200);
    assert!(!text(&r).contains(&idp.issuer()), "{}", text(&r));
}

/// `authgate_jwks_fetches_total{issuer, result}`.
async fn jwks_fetches(gw: &Gateway, issuer: &str, result: &str) -> f64 {
    let labels = [
        format!("issuer=\"{issuer}\""),
        format!("result=\"{result}\""),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    metric(&gw.admin, "authgate_jwks_fetches_total", &labels).await
}

/// After one good fetch, `break_it` spoils the IdP; the next periodic fetch (the gateway's
/// clock moved past `jwks_refresh`) fails with `result`, the last good keys stay, the gateway
/// stays up.
async fn a_failed_refresh_keeps_the_last_good_keys(break_it: fn(&Idp), result: &str) {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    // An issuer of this case's own, so its metric series are its own.
    let idp = Idp::start_at(&format!("/fault-{result}"), vec![key.clone()]).await;
    let block = format!(
        "[[token.issuers]]\nissuer = {:?}\njwks_url = {:?}\naudiences = [{AUDIENCE:?}]\n\
         algorithms = [\"RS256\"]\njwks_refresh = \"10m\"\nfetch_timeout = \"500ms\"\n",
        idp.issuer(),
        idp.jwks_url()
    );
    let gw = Gateway::start(conf(&[block])).await;
    let issuer = idp.issuer();
    keys_loaded(&gw, &key.sign(&idp.claims("u-0"))).await;
    poll_until(
        "the good fetch counted",
        || jwks_fetches(&gw, &issuer, "ok"),
        |n| *n >= 1.0,
    )
    .await;
    let failed_before = jwks_fetches(&gw, &issuer, result).await;

    break_it(&idp);
    let n = idp.fetches();
    gw.advance(Duration::from_secs(601));
    // A request in between, for a gateway that refreshes when asked (it passes either way).
    passes(&gw, "/api/x", &key.sign(&idp.claims("u-1"))).await;
    idp.wait_for_fetches(n + 1).await;
    poll_until(
        &format!("a {result} fetch counted"),
        || jwks_fetches(&gw, &issuer, result),
        |v| *v >= failed_before + 1.0,
    )
    .await;

    // A token never seen before (so not in any cache) still verifies with the kept key.
    let r = passes(&gw, "/api/x", &key.sign(&idp.claims("u-2"))).await;
    assert_eq!(r.seen("x-user-id"), ["u-2"]);
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);
    assert_eq!(gw.admin_call("GET", "/healthz", None).await.status, 200);
    assert!(jwks_fetches(&gw, &issuer, "ok").await >= 1.0);
}

#[tokio::test]
async fn a_refresh_against_a_down_idp_keeps_the_keys() {
    a_failed_refresh_keeps_the_last_good_keys(|idp| idp.set_fault(Fault::Down), "unreachable")
        .await;
}

#[tokio::test]
async fn a_refresh_answered_500_keeps_the_keys() {
    a_failed_refresh_keeps_the_last_good_keys(|idp| idp.set_fault(Fault::Status500), "http_status")
        .await;
}

#[tokio::test]
async fn a_refresh_answered_with_non_json_keeps_the_keys() {
    a_failed_refresh_keeps_the_last_good_keys(|idp| idp.set_fault(Fault::NotJson), "malformed")
        .await;
}

#[tokio::test]
async fn a_refresh_answered_with_10_mb_keeps_the_keys() {
    a_failed_refresh_keeps_the_last_good_keys(|idp| idp.set_fault(Fault::Huge), "too_large").await;
}

#[tokio::test]
async fn a_refresh_that_hangs_times_out_and_keeps_the_keys() {
    a_failed_refresh_keeps_the_last_good_keys(|idp| idp.set_fault(Fault::Hang), "timeout").await;
}

#[tokio::test]
async fn a_refresh_with_only_encryption_keys_keeps_the_keys() {
    a_failed_refresh_keeps_the_last_good_keys(
        |idp| {
            idp.set_keys(vec![
                IdpKey::generate("enc-9", Algorithm::RS256).for_encryption()
            ])
        },
        "no_usable_keys",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// HTTPS, reload, the refresh schedule, the key limit
// ---------------------------------------------------------------------------------------------

/// An issuer served over HTTPS under a CA of its own: with `ca_file` naming that CA its tokens
/// pass; without it the platform roots do not know the CA, so every fetch fails (the gateway
/// refuses the handshake: no request reaches the IdP), its tokens get 503 issuer_unavailable,
/// and the gateway serves on.
#[tokio::test]
async fn an_https_issuer_is_trusted_through_its_ca_file_only() {
    let key = IdpKey::generate("tls-1", Algorithm::RS256);
    let idp = Idp::start_tls(vec![key.clone()]).await;
    assert!(
        idp.issuer().starts_with("https://127.0.0.1:"),
        "{}",
        idp.issuer()
    );
    let with_ca = format!("algorithms = [\"RS256\"]\nca_file = {:?}", idp_ca_file());
    let gw = Gateway::start(conf(&[idp.issuer_toml(&with_ca)])).await;
    let token = key.sign(&idp.claims("tls-user"));
    keys_loaded(&gw, &token).await;
    let r = passes(&gw, "/api/x", &token).await;
    assert_eq!(r.seen("x-user-id"), ["tls-user"]);
    assert!(idp.hits(&idp.discovery_path()) >= 1, "discovery over https");
    assert!(idp.fetches() >= 1, "the JWKS over https");
    assert!(jwks_fetches(&gw, &idp.issuer(), "ok").await >= 1.0);

    // The same IdP set-up (its own issuer, so its own metric series), no ca_file.
    let idp = Idp::start_tls(vec![key.clone()]).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")])).await;
    let issuer = idp.issuer();
    poll_until(
        "a fetch refused for the unknown CA",
        || jwks_fetches(&gw, &issuer, "unreachable"),
        |n| *n >= 1.0,
    )
    .await;
    let token = key.sign(&idp.claims("tls-user"));
    let r = gw.get_auth("/api/x", &token).await;
    r.assert_error(503, "issuer_unavailable");
    assert_eq!(gw.hits(), 0, "a 503 reached the upstream");
    assert_eq!(jwks_fetches(&gw, &issuer, "ok").await, 0.0);
    assert_eq!(
        idp.hits(&idp.discovery_path()) + idp.fetches(),
        0,
        "a request got past the refused handshake"
    );
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);
    assert_eq!(gw.admin_call("GET", "/healthz", None).await.status, 200);
    passes(&gw, "/api/x", &gw.mint(&alice())).await;
}

/// `POST /admin/reload` of `gw` (from its file), which must succeed.
async fn admin_reload(gw: &Gateway) {
    let r = gw
        .admin_call("POST", "/admin/reload", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
}

/// Rewrites `gw`'s `gateway.toml` in place with `from` replaced by `to` (which must occur),
/// then reloads it through the admin API. The file watch may reload it too; that changes
/// nothing more.
async fn reload_replacing(gw: &Gateway, from: &str, to: &str) {
    let path = gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&path).expect("read gateway.toml");
    assert!(text.contains(from), "{from:?} not in\n{text}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write gateway.toml");
    admin_reload(gw).await;
}

/// A reload that leaves an issuer's block alone keeps its keys: no fetch, no 503, not even for
/// a token never seen before. A reload that changes the block (its audiences) makes a new
/// issuer: one fetch, and the tokens are judged by the new block.
#[tokio::test]
async fn a_reload_keeps_an_unchanged_issuers_keys_and_refetches_a_changed_one() {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let idp = Idp::start(vec![key.clone()]).await;
    let gw = Gateway::start(
        conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")])
            .admin_env("T_ADMIN")
            .run_from_file(),
    )
    .await;
    let token = key.sign(&idp.claims("u-1"));
    keys_loaded(&gw, &token).await;
    let fetches = idp.fetches();
    assert!(fetches >= 1);

    // An unrelated change: a public route before the others.
    assert_eq!(gw.get("/reloaded/x", &[]).await.status, 401, "control");
    reload_replacing(
        &gw,
        "[[routes]]\npath = \"/public\"",
        "[[routes]]\npath = \"/reloaded\"\nupstream = \"up\"\nauth = \"public\"\n\n\
         [[routes]]\npath = \"/public\"",
    )
    .await;
    assert_eq!(
        gw.get("/reloaded/x", &[]).await.status,
        200,
        "the reload took effect"
    );
    // A new ring (an empty verify cache): both tokens are verified with the adopted keys.
    passes(&gw, "/api/x", &token).await;
    let unseen = key.sign(&idp.claims("u-2"));
    let r = gw.verify("/api/x", Some(&unseen)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = passes(&gw, "/api/x", &unseen).await;
    assert_eq!(r.seen("x-user-id"), ["u-2"]);
    assert_eq!(idp.fetches(), fetches, "the unchanged issuer fetched again");

    // The issuer's audiences change: a new issuer, which fetches its keys once.
    let other_aud = key.sign(&with(idp.claims("u-3"), "aud", json!("orders-api")));
    gw.assert_refused(&other_aud, "invalid_token").await;
    reload_replacing(
        &gw,
        &format!("audiences = [{AUDIENCE:?}]"),
        "audiences = [\"orders-api\"]",
    )
    .await;
    idp.wait_for_fetches(fetches + 1).await;
    let r = passes(&gw, "/api/x", &other_aud).await;
    assert_eq!(r.seen("x-user-id"), ["u-3"]);
    gw.assert_refused(&token, "invalid_token").await;
    gw.assert_refused(&unseen, "invalid_token").await;
    gw.assert_refused(&key.sign(&idp.claims("u-4")), "invalid_token")
        .await;
    assert_eq!(
        idp.fetches(),
        fetches + 1,
        "one fetch for the changed issuer"
    );
}

/// A token verified (and cached) before a rotation is refused once the periodic refresh,
/// which no request asked for, has brought the rotated set: the cache does not outlive the
/// key that verified it.
#[tokio::test]
async fn a_periodic_refresh_after_a_rotation_ends_a_cached_token() {
    let (k1, k2) = (
        IdpKey::generate("2024-01", Algorithm::RS256),
        IdpKey::generate("2024-02", Algorithm::RS256),
    );
    let idp = Idp::start(vec![k1.clone()]).await;
    let gw = Gateway::start(conf(&[
        idp.issuer_toml("algorithms = [\"RS256\"]\njwks_refresh = \"10m\"")
    ]))
    .await;
    let old = k1.sign(&idp.claims("u-old"));
    keys_loaded(&gw, &old).await;
    passes(&gw, "/api/x", &old).await;
    passes(&gw, "/api/x", &old).await;

    let issuer = idp.issuer();
    let ok = counted_fetches(&gw, &issuer, "ok", 1.0).await;

    idp.set_keys(vec![k2.clone()]);
    let before = idp.fetches();
    gw.advance(Duration::from_secs(601));
    // No request: the background refresh alone fetches, and the rotated set takes effect.
    idp.wait_for_fetches(before + 1).await;
    counted_fetches(&gw, &issuer, "ok", ok + 1.0).await;
    gw.verify("/api/x", Some(&old))
        .await
        .assert_error(401, "invalid_token");
    gw.assert_refused(&old, "invalid_token").await;
    let r = passes(&gw, "/api/x", &k2.sign(&idp.claims("u-new"))).await;
    assert_eq!(r.seen("x-user-id"), ["u-new"]);
}

/// Waits (bounded) until `gw` has counted at least `n` fetches of `issuer` with `result`, and
/// returns the count: a fetch is counted once it took effect (its keys in, the next one
/// scheduled), while the IdP sees it before.
async fn counted_fetches(gw: &Gateway, issuer: &str, result: &str, n: f64) -> f64 {
    poll_until(
        &format!("{n} fetches of {issuer} counted as {result}"),
        || jwks_fetches(gw, issuer, result),
        |v| *v >= n,
    )
    .await
}

/// The `[[token.issuers]]` block of `idp` by `jwks_url` with `extra` lines.
fn jwks_url_block(idp: &Idp, extra: &str) -> String {
    format!(
        "[[token.issuers]]\nissuer = {:?}\njwks_url = {:?}\naudiences = [{AUDIENCE:?}]\n\
         algorithms = [\"RS256\"]\n{extra}\n",
        idp.issuer(),
        idp.jwks_url()
    )
}

/// `Cache-Control: max-age=120` under `jwks_refresh = "10m"`: the next refresh comes at
/// 120 s. Without max-age it does not, not even after two of the other issuer's refreshes
/// (the second of which its refresher awaited a tick for): only at 10 m.
#[tokio::test]
async fn a_max_age_shorter_than_jwks_refresh_brings_the_refresh_forward() {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let short = Idp::start_at("/max-age-120", vec![key.clone()]).await;
    short.set_max_age(Some(120));
    let plain = Idp::start_at("/no-max-age", vec![key.clone()]).await;
    let refresh = "jwks_refresh = \"10m\"";
    let gw = Gateway::start(conf(&[
        jwks_url_block(&short, refresh),
        jwks_url_block(&plain, refresh),
    ]))
    .await;
    let (s_iss, p_iss) = (short.issuer(), plain.issuer());
    // Each first fetch took effect (its next one scheduled) before the clock moves.
    let s_ok = counted_fetches(&gw, &s_iss, "ok", 1.0).await;
    let p_ok = counted_fetches(&gw, &p_iss, "ok", 1.0).await;
    let (s0, p0) = (short.fetches(), plain.fetches());

    gw.advance(Duration::from_secs(121));
    short.wait_for_fetches(s0 + 1).await;
    counted_fetches(&gw, &s_iss, "ok", s_ok + 1.0).await;
    gw.advance(Duration::from_secs(121));
    short.wait_for_fetches(s0 + 2).await;
    counted_fetches(&gw, &s_iss, "ok", s_ok + 2.0).await;
    assert_eq!(
        plain.fetches(),
        p0,
        "no max-age: refreshed before jwks_refresh"
    );

    gw.advance(Duration::from_secs(360));
    plain.wait_for_fetches(p0 + 1).await;
    counted_fetches(&gw, &p_iss, "ok", p_ok + 1.0).await;
    assert_eq!(plain.fetches(), p0 + 1);
}

/// `max-age=10` is below the one-minute floor: no refresh at 10 s, one at 60 s. The witness
/// that the refreshers ran meanwhile is another issuer whose IdP never answers: with
/// `fetch_timeout = "2s"`, its attempt at 33 s (30 s after its first failure) holds for two
/// seconds of real time before it is counted as a timeout.
#[tokio::test]
async fn a_max_age_below_a_minute_is_held_to_a_minute() {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let short = Idp::start_at("/max-age-10", vec![key.clone()]).await;
    short.set_max_age(Some(10));
    let witness = Idp::start_at("/hangs", vec![key.clone()]).await;
    witness.set_fault(Fault::Hang);
    let gw = Gateway::start(conf(&[
        jwks_url_block(&short, ""),
        jwks_url_block(&witness, "fetch_timeout = \"2s\""),
    ]))
    .await;
    let (s_iss, hung) = (short.issuer(), witness.issuer());
    let s_ok = counted_fetches(&gw, &s_iss, "ok", 1.0).await;
    let timeouts = counted_fetches(&gw, &hung, "timeout", 1.0).await;
    let s0 = short.fetches();

    gw.advance(Duration::from_secs(33));
    counted_fetches(&gw, &hung, "timeout", timeouts + 1.0).await;
    assert_eq!(short.fetches(), s0, "max-age=10 refreshed before a minute");

    gw.advance(Duration::from_secs(28));
    short.wait_for_fetches(s0 + 1).await;
    counted_fetches(&gw, &s_iss, "ok", s_ok + 1.0).await;
    assert_eq!(short.fetches(), s0 + 1);
}

/// A JWKS of 65 usable keys: the first 64 (in document order) are kept, the 65th is not (its
/// token is refused after one re-fetch), the gateway says so in its log and serves on.
#[tokio::test]
async fn only_the_first_64_keys_of_a_jwks_are_kept() {
    let keys: Vec<IdpKey> = (0..65)
        .map(|i| IdpKey::generate(&format!("k{i:02}"), Algorithm::ES256))
        .collect();
    let idp = Idp::start(keys.clone()).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"ES256\"]")])).await;
    keys_loaded(&gw, &keys[0].sign(&idp.claims("u-first"))).await;
    let r = passes(&gw, "/api/x", &keys[63].sign(&idp.claims("u-64th"))).await;
    assert_eq!(r.seen("x-user-id"), ["u-64th"]);
    let before = idp.fetches();
    gw.assert_refused(&keys[64].sign(&idp.claims("u-65th")), "invalid_token")
        .await;
    assert_eq!(
        idp.fetches(),
        before + 1,
        "one re-fetch for the missing kid"
    );
    assert_eq!(gw.get("/public/x", &[]).await.status, 200);
    assert_eq!(gw.admin_call("GET", "/healthz", None).await.status, 200);
    passes(&gw, "/api/x", &keys[1].sign(&idp.claims("u-second"))).await;

    // The log says so at the default level (`check --probe` fetches as the gateway does).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_file(&dir, &[idp.issuer_toml("algorithms = [\"ES256\"]")]);
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--probe", "-c"])
        .arg(&path)
        .env("T_SECRET", SECRET)
        .env("RUST_LOG", "info");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run authgate"))
        .await
        .expect("the child ran");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("64 key(s)"), "{all}");
    assert!(
        all.lines()
            .any(|l| l.contains("WARN") && l.contains("64") && l.contains("k64")),
        "no warning names the dropped key: {all}"
    );
}

// ---------------------------------------------------------------------------------------------
// [identity.claims]
// ---------------------------------------------------------------------------------------------

const CLAIM_HEADERS: &str = r#"[identity.claims]
"X-User-Email" = "email"
"X-Org" = "/org/id"
"X-Groups" = "groups"
"X-Profile" = "profile"
"#;

#[tokio::test]
async fn identity_claims_become_headers_and_client_copies_are_removed() {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let idp = Idp::start(vec![key.clone()]).await;
    let gw = Gateway::start(conf(&[
        idp.issuer_toml("algorithms = [\"RS256\"]"),
        CLAIM_HEADERS.to_owned(),
    ]))
    .await;
    let claims = json!({
        "iss": idp.issuer(), "aud": AUDIENCE, "sub": "u-9", "iat": now(), "exp": now() + 3600,
        "email": "carol@example.com",
        "org": {"id": "acme", "name": "Acme"},
        "groups": ["a", "b"],
        "profile": {"theme": "dark"},
    });
    let token = key.sign(&claims);
    keys_loaded(&gw, &token).await;
    let auth = format!("Bearer {token}");
    let r = gw
        .get(
            "/api/x",
            &[
                ("authorization", &auth),
                ("x-user-email", "mallory@evil.test"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.seen("x-user-email"), ["carol@example.com"]);
    assert_eq!(r.seen("x-org"), ["acme"], "by the pointer");
    assert_eq!(r.seen("x-groups"), ["a,b"], "arrays comma-joined");
    assert!(r.seen("x-profile").is_empty(), "objects are skipped");

    // A token without the claims: no header, and the client's copy is gone too.
    let bare = key.sign(&idp.claims("u-10"));
    let auth = format!("Bearer {bare}");
    let r = gw
        .raw_get(
            "/api/x",
            &format!("Authorization: {auth}\r\nX-User-Email: m@evil.test\r\nX_User_Email: m2@evil.test\r\nX-Org: evil\r\n"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    for name in ["x-user-email", "x_user_email", "x-org", "x-groups"] {
        assert!(r.seen(name).is_empty(), "{name}: {:?}", r.seen(name));
    }
    // On a public route as well.
    let r = gw
        .raw_get(
            "/public/x",
            "X-User-Email: m@evil.test\r\nX_User_Email: m2@evil.test\r\nX-Groups: admins\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    for name in ["x-user-email", "x_user_email", "x-groups"] {
        assert!(r.seen(name).is_empty(), "{name}: {:?}", r.seen(name));
    }

    // A claim-header value that could not be a header refuses the token.
    let crlf = with(
        claims.clone(),
        "email",
        json!("c@example.com\r\nX-User-Id: 1"),
    );
    gw.assert_refused(&key.sign(&crlf), "invalid_token").await;

    // Own tokens' claims count too ("any issuer").
    let own = with(good_claims(), "email", json!("alice@example.com"));
    let r = passes(
        &gw,
        "/api/x",
        &jwt_hs256(&hs256_header(), &own, SECRET.as_bytes()),
    )
    .await;
    assert_eq!(r.seen("x-user-email"), ["alice@example.com"]);
    assert_eq!(r.seen("x-user-id"), ["1001"]);
}

// ---------------------------------------------------------------------------------------------
// require_scopes, require_claims
// ---------------------------------------------------------------------------------------------

/// An RS256 issuer, its key, and the gateway (forward-auth trusted), its keys fetched.
async fn scoped() -> (Idp, IdpKey, Gateway) {
    let key = IdpKey::generate("rsa-1", Algorithm::RS256);
    let idp = Idp::start(vec![key.clone()]).await;
    let gw = Gateway::start(conf(&[idp.issuer_toml("algorithms = [\"RS256\"]")])).await;
    keys_loaded(&gw, &key.sign(&idp.claims("control"))).await;
    (idp, key, gw)
}

#[tokio::test]
async fn require_scopes_reads_scope_and_scp() {
    let (idp, key, gw) = scoped().await;
    let token = |claim: &str, value: Value| key.sign(&with(idp.claims("u"), claim, value));
    passes(
        &gw,
        "/orders/1",
        &token("scope", json!("openid orders:read")),
    )
    .await;
    passes(&gw, "/orders/1", &token("scope", json!("orders:read"))).await;
    passes(
        &gw,
        "/orders/1",
        &token("scp", json!(["profile", "orders:read"])),
    )
    .await;
    for (claim, value) in [
        ("scope", json!("openid profile")),
        ("scope", json!("orders:reader")),
        ("scope", json!("xorders:read")),
        ("scope", json!("openid,orders:read")),
        ("scope", json!(42)),
        ("scope", json!(["orders:read"])),
        ("scp", json!([])),
    ] {
        forbidden(&gw, "/orders/1", &token(claim, value)).await;
    }
    forbidden(&gw, "/orders/1", &key.sign(&idp.claims("u"))).await;
    // Every one of several.
    forbidden(
        &gw,
        "/orders-rw/1",
        &token("scope", json!("openid orders:read")),
    )
    .await;
    forbidden(&gw, "/orders-rw/1", &token("scp", json!(["orders:write"]))).await;
    passes(
        &gw,
        "/orders-rw/1",
        &token("scope", json!("orders:write openid orders:read")),
    )
    .await;
    passes(
        &gw,
        "/orders-rw/1",
        &token("scp", json!(["orders:read", "orders:write"])),
    )
    .await;
    // Own tokens carry no scope.
    forbidden(&gw, "/orders/1", &gw.mint(&alice())).await;
    // Without a token it is still 401, not 403.
    gw.get("/orders/1", &[])
        .await
        .assert_error(401, "missing_token");
}

#[tokio::test]
async fn require_scopes_through_forward_auth() {
    let (idp, key, gw) = scoped().await;
    let without_scope = key.sign(&idp.claims("u"));
    let r = gw.verify("/orders/1", Some(&without_scope)).await;
    r.assert_error(403, "forbidden");
    assert_eq!(r.header("x-auth-error"), Some("forbidden"));
    let with_scope = key.sign(&with(idp.claims("u"), "scope", json!("openid orders:read")));
    let r = gw.verify("/orders/1", Some(&with_scope)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("x-user-id"), Some("u"));
    assert_eq!(gw.hits(), 0, "verify never forwards");
}

#[tokio::test]
async fn require_claims_compares_values_exactly() {
    let (idp, key, gw) = scoped().await;
    let base = || {
        with(
            with(idp.claims("u"), "email_verified", json!(true)),
            "org",
            json!({"id": "acme"}),
        )
    };
    let r = passes(&gw, "/verified/x", &key.sign(&base())).await;
    assert_eq!(r.seen("x-user-id"), ["u"]);
    for claims in [
        with(base(), "email_verified", json!("true")),
        with(base(), "email_verified", json!(false)),
        with(base(), "email_verified", json!(1)),
        without(base(), "email_verified"),
        with(base(), "org", json!({"id": "globex"})),
        with(base(), "org", json!({"id": "ACME"})),
        with(base(), "org", json!({"name": "acme"})),
        with(base(), "org", json!("acme")),
        without(base(), "org"),
    ] {
        forbidden(&gw, "/verified/x", &key.sign(&claims)).await;
    }
    // Through forward-auth too.
    let r = gw
        .verify("/verified/x", Some(&key.sign(&without(base(), "org"))))
        .await;
    r.assert_error(403, "forbidden");
    assert_eq!(r.header("x-auth-error"), Some("forbidden"));
    assert_eq!(
        gw.verify("/verified/x", Some(&key.sign(&base())))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn require_claims_applies_to_own_tokens() {
    let (_idp, _key, gw) = scoped().await;
    let r = passes(&gw, "/alice-only/x", &gw.mint(&alice())).await;
    assert_eq!(r.seen("x-user-id"), ["1001"]);
    forbidden(&gw, "/alice-only/x", &gw.mint(&bob())).await;
    // A hand-built own token with the claims /verified asks for.
    let own = with(
        with(good_claims(), "email_verified", json!(true)),
        "org",
        json!({"id": "acme"}),
    );
    passes(
        &gw,
        "/verified/x",
        &jwt_hs256(&hs256_header(), &own, SECRET.as_bytes()),
    )
    .await;
    forbidden(&gw, "/verified/x", &gw.mint(&alice())).await;
}

// ---------------------------------------------------------------------------------------------
// check, check --probe, explain
// ---------------------------------------------------------------------------------------------

/// A config file holding `sections` (issuer blocks) and these tests' routes.
fn config_file(dir: &tempfile::TempDir, sections: &[String]) -> std::path::PathBuf {
    let path = dir.path().join("gateway.toml");
    let text = sections
        .iter()
        .fold(Conf::new().routes(ROUTES), |c, s| c.section(s))
        .render("127.0.0.1:9".parse().expect("addr"));
    std::fs::write(&path, text).expect("write gateway.toml");
    path
}

/// Runs the binary with `args` and `-c path` (with `T_SECRET`): exit code and stdout+stderr.
async fn run_authgate(args: &[&str], path: &std::path::Path) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("-c").arg(path).env("T_SECRET", SECRET);
    // The IdP runs on this test's runtime: wait for the child off it.
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run authgate"))
        .await
        .expect("the child ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

const GOOD_ISSUER: &str = r#"[[token.issuers]]
issuer = "https://idp.example.com/realms/acme"
audiences = ["legacy-app"]
algorithms = ["RS256"]
"#;

#[tokio::test]
async fn check_refuses_bad_issuers_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Control: the good issuer is valid.
    let (code, out) = run_authgate(&["check"], &config_file(&dir, &[GOOD_ISSUER.into()])).await;
    assert_eq!(code, Some(0), "{out}");

    for (from, to, key) in [
        (
            "algorithms = [\"RS256\"]",
            "algorithms = [\"HS256\"]",
            "token.issuers[0].algorithms",
        ),
        (
            "algorithms = [\"RS256\"]",
            "algorithms = [\"RS256\", \"HS512\"]",
            "token.issuers[0].algorithms",
        ),
        (
            "algorithms = [\"RS256\"]",
            "algorithms = [\"none\"]",
            "token.issuers[0].algorithms",
        ),
        (
            "audiences = [\"legacy-app\"]",
            "audiences = []",
            "token.issuers[0].audiences",
        ),
        (
            "issuer = \"https://idp.example.com/realms/acme\"",
            "issuer = \"not a url\"",
            "token.issuers[0].issuer",
        ),
        (
            "algorithms = [\"RS256\"]",
            "algorithms = [\"RS256\"]\nroles_claim = \"/a/~2\"",
            "token.issuers[0].roles_claim",
        ),
        (
            "algorithms = [\"RS256\"]",
            "algorithms = [\"RS256\"]\ntenant_claim = \"/a/~\"",
            "token.issuers[0].tenant_claim",
        ),
    ] {
        let bad = GOOD_ISSUER.replace(from, to);
        assert_ne!(bad, GOOD_ISSUER);
        let (code, out) =
            run_authgate(&["check"], &config_file(&dir, std::slice::from_ref(&bad))).await;
        assert_eq!(code, Some(1), "{bad}\n{out}");
        assert!(out.contains(key), "{key} not named for\n{bad}\n{out}");
    }
    // The second of two issuers is named by its index.
    let second = GOOD_ISSUER.replace("audiences = [\"legacy-app\"]", "audiences = []");
    let second = second.replace("realms/acme", "realms/other");
    let (code, out) = run_authgate(
        &["check"],
        &config_file(&dir, &[GOOD_ISSUER.into(), second]),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("token.issuers[1].audiences"), "{out}");
    // A bad pointer in [identity.claims] and require_* on an optional route.
    let claims = "[identity.claims]\n\"X-Org\" = \"/org/~9\"\n".to_owned();
    let (code, out) = run_authgate(
        &["check"],
        &config_file(&dir, &[GOOD_ISSUER.into(), claims]),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("identity.claims"), "{out}");
}

#[tokio::test]
async fn check_refuses_require_scopes_and_claims_on_an_optional_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    for (line, key) in [
        (
            "require_scopes = [\"orders:read\"]",
            "routes[0].require_scopes",
        ),
        (
            "require_claims = { email_verified = true }",
            "routes[0].require_claims",
        ),
    ] {
        let file = |auth: &str| {
            let routes = format!(
                "[[routes]]\npath = \"/o\"\nupstream = \"up\"\nauth = {auth:?}\n{line}\n\n\
                 [[routes]]\npath = \"/\"\nupstream = \"up\"\nauth = \"required\"\n"
            );
            let text = Conf::new()
                .routes(&routes)
                .render("127.0.0.1:9".parse().expect("addr"));
            std::fs::write(&path, text).expect("write");
            path.clone()
        };
        // Control: the key is known, and fine on a required route.
        let (code, out) = run_authgate(&["check"], &file("required")).await;
        assert_eq!(code, Some(0), "{line} on a required route: {out}");
        let (code, out) = run_authgate(&["check"], &file("optional")).await;
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(key), "{key}: {out}");
        assert!(!out.contains("unknown key"), "{out}");
    }
}

#[tokio::test]
async fn check_probe_asks_each_issuer_for_its_keys() {
    let keys = vec![
        IdpKey::generate("rsa-1", Algorithm::RS256),
        IdpKey::generate("rsa-2", Algorithm::RS256),
    ];
    let idp = Idp::start(keys).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_file(&dir, &[idp.issuer_toml("algorithms = [\"RS256\"]")]);
    // Plain check does not go to the network.
    let (code, out) = run_authgate(&["check"], &path).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(idp.fetches(), 0, "check without --probe fetched: {out}");

    let (code, out) = run_authgate(&["check", "--probe"], &path).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(idp.fetches() >= 1);
    let line = out
        .lines()
        .find(|l| l.contains(&idp.issuer()))
        .unwrap_or_else(|| panic!("no line names the issuer: {out}"));
    assert!(line.contains("2 key"), "the number of keys found: {out}");

    idp.set_fault(Fault::Down);
    let (code, out) = run_authgate(&["check", "--probe"], &path).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&idp.issuer()),
        "the failing issuer is named: {out}"
    );
}

#[tokio::test]
async fn explain_shows_required_scopes_and_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_file(&dir, &[GOOD_ISSUER.into()]);
    let (code, out) = run_authgate(&["explain", "GET", "/orders/1"], &path).await;
    assert!(code.is_some(), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("orders:read") && l.to_lowercase().contains("scope")),
        "{out}"
    );
    let (_, out) = run_authgate(&["explain", "GET", "/verified/x"], &path).await;
    assert!(out.contains("email_verified"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("/org/id") && l.contains("acme")),
        "{out}"
    );
    // A required route names the issuers whose tokens it also takes.
    assert!(
        out.lines()
            .any(|l| l.contains("idp.example.com") && l.contains("never session-checked")),
        "{out}"
    );
    // Another route's requirements are not shown.
    let (_, out) = run_authgate(&["explain", "GET", "/public/x"], &path).await;
    assert!(
        !out.contains("orders:read") && !out.contains("email_verified"),
        "{out}"
    );
}
