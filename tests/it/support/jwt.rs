//! Tokens by hand: the test gateways' signing secret and claims, hand-built HS256 JWTs for the
//! token attacks, readers of a JWT's header and payload, and the test identities alice and bob
//! (for the gateway's own key ring, [`super::Gateway::mint`]).

use authgate::tokens::AccessIdentity;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::wait::now;

/// The HS256 secret every test gateway signs with (≥ 32 bytes), served as env `T_SECRET`.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// Issuer and audience of the default `[token]` section.
pub const ISSUER: &str = "authgate";
pub const AUDIENCE: &str = "legacy-app";

pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// `header.payload.HMAC-SHA256(key)`, header and claims as given.
pub fn jwt_hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64(tag.as_ref()))
}

/// The header the gateway's own tokens carry.
pub fn hs256_header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "kid": "k1"})
}

/// Valid claims for alice, issued now, one hour to live.
pub fn good_claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "1001",
        "name": "alice",
        "sid": "sess-hand",
        "plat": "web",
        "iat": now,
        "exp": now + 3600,
        "jti": "hand-built-1",
        "roles": ["admin"],
    })
}

/// The decoded claims of a compact JWT (no verification).
pub fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url payload"))
        .expect("JSON payload")
}

/// The decoded header of a compact JWT (no verification).
pub fn header_of(token: &str) -> Value {
    let part = token.split('.').next().expect("a JWT header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url header"))
        .expect("JSON header")
}

/// Alice: user 1001, session `sess-alice`, tenant acme, role admin.
pub fn alice() -> AccessIdentity {
    AccessIdentity {
        sub: "1001".into(),
        name: Some("alice".into()),
        sid: Some("sess-alice".into()),
        plat: Some("web".into()),
        tenant: Some("acme".into()),
        roles: Some(vec!["admin".into()]),
    }
}

/// Bob: user 2002, tenant globex, role user.
pub fn bob() -> AccessIdentity {
    AccessIdentity {
        sub: "2002".into(),
        name: Some("bob".into()),
        sid: Some("sess-bob".into()),
        plat: Some("app".into()),
        tenant: Some("globex".into()),
        roles: Some(vec!["user".into()]),
    }
}
