//! The test users: the users file every gateway's config folder holds (alice, bob and 张三, with
//! cheap Argon2id hashes), their passwords, and [`Pair`], what a login of one of them answers.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, SaltString};
use serde_json::Value;

use super::client::Resp;

/// Passwords of the users in every test users file.
pub const ALICE_PW: &str = "alice-correct-horse";
pub const BOB_PW: &str = "bob-battery-staple";
pub const ZHANG_PW: &str = "zhang-san-mima";

/// The id of the user whose id and name need percent-encoding in a URL (`张三`).
pub const ZHANG_ID: &str = "用户 1003";

/// The password of a test user (`alice`, `bob` or `张三`).
pub fn password_of(user: &str) -> &'static str {
    match user {
        "alice" => ALICE_PW,
        "bob" => BOB_PW,
        "张三" => ZHANG_PW,
        other => panic!("no test user {other}"),
    }
}

/// A low-cost Argon2id PHC string (m = 256 KiB, t = 1): valid for the users file, and about a
/// millisecond to verify, so a test can log in often. The gateway's dummy hash for unknown
/// users takes the users' parameters, so unknown users are as cheap.
pub fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(256, 1, 1, None).expect("valid Argon2 params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"session-tests-salt").expect("salt");
    argon
        .hash_password(password.as_bytes(), &salt)
        .expect("hash a test password")
        .to_string()
}

/// users.toml: alice (1001, tenant acme, roles admin and ops), bob (2002, tenant globex), and
/// 张三 (id [`ZHANG_ID`], no tenant, no roles).
pub fn users_toml() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            r#"
[[users]]
id = "1001"
username = "alice"
password_hash = "{alice}"
tenant = "acme"
roles = ["admin", "ops"]

[[users]]
id = "2002"
username = "bob"
password_hash = "{bob}"
tenant = "globex"
roles = ["user"]

[[users]]
id = "{zhang_id}"
username = "张三"
password_hash = "{zhang}"
"#,
            alice = cheap_hash(ALICE_PW),
            bob = cheap_hash(BOB_PW),
            zhang = cheap_hash(ZHANG_PW),
            zhang_id = ZHANG_ID,
        )
    })
}

/// A login's token pair.
#[derive(Debug, Clone)]
pub struct Pair {
    pub access: String,
    pub refresh: String,
    pub sid: String,
    pub json: Value,
}

impl Pair {
    pub fn from_resp(r: &Resp) -> Pair {
        assert_eq!(
            r.status,
            200,
            "expected a token pair: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        let text = |k: &str| {
            j[k].as_str()
                .unwrap_or_else(|| panic!("no {k} in {j}"))
                .to_owned()
        };
        Pair {
            access: text("access_token"),
            refresh: text("refresh_token"),
            sid: text("session_id"),
            json: j.clone(),
        }
    }
}
