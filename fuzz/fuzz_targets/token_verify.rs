//! Token parsing and verification (`src/tokens/ring.rs`, `src/auth/token.rs`): the key ring of
//! a real config (HS256, kid `k1`, and an older verify key `k0`) on raw strings, on minted
//! tokens with a few bytes changed, and on tokens whose header and claims the fuzzer writes
//! and which are then signed with a key of the ring (or not), so that the checks behind the
//! signature are reached too.
//!
//! Properties of every token the ring accepts at `now`:
//! - its signature is the HMAC-SHA256, under the key its `kid` names (the signing key's when
//!   it names none), of its first two parts, base64url without padding, computed here with
//!   aws-lc-rs, so no other spelling of a signature and no other key passes;
//! - its header says `alg` `HS256` and carries none of `jku`, `jwk`, `x5u`, `x5c`, `crit`;
//! - its claims have `iss` `authgate`, `aud` `legacy-app`, a `sub`, `exp + leeway > now`,
//!   `nbf <= now + leeway`, and identity values fit to be headers;
//! - verifying it again (a cache hit) gives the same claims, and once `exp + leeway` has
//!   passed it is refused (the cache checks the time too).
//!
//! A minted token of an identity fit to be headers verifies, with that identity. A token
//! taken from a request (`Authorization: Bearer`, or the cookie) is a non-empty ASCII part of
//! one of the values, without surrounding spaces; two `Authorization` headers are refused.

#![no_main]

use std::sync::OnceLock;

use authgate::config::Loaded;
use authgate::tokens::{AccessIdentity, KeyRing};
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_750_000_000;
const LEEWAY: u64 = 30;
const S1: &str = "fuzz-signing-secret-0123456789abcdef";
const S0: &str = "fuzz-older-secret-0123456789abcdef!!";

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any string as a token.
    Raw(String),
    /// A minted token, then bytes changed.
    Minted {
        sub: String,
        name: Option<String>,
        roles: Option<Vec<String>>,
        edits: Vec<(u16, u8)>,
    },
    /// Header and claims as written, signed with `key` (0: k1's, 1: k0's, else a wrong one).
    Forged {
        header: String,
        claims: String,
        key: u8,
        now_offset: i32,
    },
    /// Authorization and Cookie values of a request.
    Extract {
        authorization: Vec<String>,
        cookies: Vec<String>,
    },
}

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let text = r#"
[token]
algorithm = "HS256"
secret_env = "S1"
kid = "k1"
leeway = "30s"
[[token.verify_keys]]
kid = "k0"
algorithm = "HS256"
secret_env = "S0"
[session]
mode = "stateless"
[login]
backend = "none"
[[upstreams]]
name = "up"
urls = ["http://127.0.0.1:9"]
[[routes]]
path = "/"
upstream = "up"
auth = "required"
"#;
        let env = |name: &str| match name {
            "S1" => Some(S1.to_owned()),
            "S0" => Some(S0.to_owned()),
            _ => None,
        };
        authgate::config::load_str(text, std::path::Path::new("/nonexistent"), &env)
            .unwrap_or_else(|e| panic!("the fuzz config: {e}"))
    })
}

fn ring() -> &'static KeyRing {
    &loaded().config.token.keys
}

fn sign(key: &str, signing_input: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, signing_input.as_bytes()).as_ref())
}

fuzz_target!(|input: Input| match input {
    Input::Raw(token) => check(&token, NOW),
    Input::Minted {
        sub,
        name,
        roles,
        edits,
    } => {
        let id = AccessIdentity {
            sub,
            name,
            roles,
            ..AccessIdentity::default()
        };
        let Ok((token, _)) = ring().mint(&id, NOW) else {
            return;
        };
        // Callers (login, refresh) mint only identities whose values are fit to be headers.
        let fit = !id.sub.is_empty()
            && fit(&id.sub)
            && id.name.as_deref().is_none_or(fit)
            && id.roles.iter().flatten().all(|r| fit(r));
        if fit {
            match authgate::fuzzing::verify(ring(), &token, NOW) {
                Ok(c) => assert_eq!(c.identity(), id),
                Err(e) => panic!("a minted token was refused: {e}; {id:?}"),
            }
        }
        let mut bytes = token.into_bytes();
        for (at, b) in edits {
            if !bytes.is_empty() {
                let i = usize::from(at) % bytes.len();
                bytes[i] = b;
            }
        }
        check(&String::from_utf8_lossy(&bytes), NOW);
    }
    Input::Forged {
        header,
        claims,
        key,
        now_offset,
    } => {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = match key % 3 {
            0 => S1,
            1 => S0,
            _ => "not-a-key-of-the-ring-0123456789abcdef",
        };
        let token = format!("{input}.{}", sign(key, &input));
        check(&token, NOW.saturating_add_signed(i64::from(now_offset)));
    }
    Input::Extract {
        authorization,
        cookies,
    } => extract(&authorization, &cookies),
});

fn check(token: &str, now: u64) {
    let Ok(claims) = authgate::fuzzing::verify(ring(), token, now) else {
        return;
    };
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("accepted a token that is not three parts: {token:?}");
    };
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("header base64url"))
            .expect("header JSON");
    assert_eq!(header["alg"], "HS256", "{header}");
    for forbidden in ["jku", "jwk", "x5u", "x5c", "crit"] {
        assert!(
            header.get(forbidden).is_none(),
            "accepted a header with {forbidden}: {header}"
        );
    }
    let secret = match header.get("kid").map(|k| k.as_str()) {
        None | Some(Some("k1")) => S1,
        Some(Some("k0")) => S0,
        other => panic!("accepted kid {other:?}"),
    };
    assert_eq!(
        sig,
        sign(secret, &format!("{h}.{p}")),
        "accepted a token whose signature is not its key's HMAC"
    );
    assert_eq!(claims.iss, "authgate");
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("payload base64url"))
            .expect("payload JSON");
    let aud_ok = match &payload["aud"] {
        serde_json::Value::String(a) => a == "legacy-app",
        serde_json::Value::Array(list) => list.iter().any(|a| a == "legacy-app"),
        _ => false,
    };
    assert!(aud_ok, "accepted audience {}", payload["aud"]);
    assert!(!claims.sub.is_empty());
    assert!(
        claims.exp.saturating_add(LEEWAY) > now,
        "accepted an expired token"
    );
    assert!(
        claims.nbf.is_none_or(|nbf| nbf <= now + LEEWAY),
        "accepted before nbf"
    );
    let id = claims.identity();
    for v in [
        Some(&id.sub),
        id.name.as_ref(),
        id.sid.as_ref(),
        id.plat.as_ref(),
        id.tenant.as_ref(),
    ]
    .into_iter()
    .flatten()
    .chain(id.roles.iter().flatten())
    {
        assert!(fit(v), "accepted identity value {v:?}");
    }
    let again = authgate::fuzzing::verify(ring(), token, now).expect("verifies again");
    assert_eq!(*again, *claims);
    let later = claims.exp.saturating_add(LEEWAY);
    if later < u64::MAX {
        assert!(
            authgate::fuzzing::verify(ring(), token, later).is_err(),
            "still accepted at exp + leeway"
        );
    }
}

/// Fit to be an identity header value (contract §4.4).
fn fit(v: &str) -> bool {
    v.len() <= 255 && !v.chars().any(char::is_control) && v.trim() == v
}

fn extract(authorization: &[String], cookies: &[String]) {
    let mut h = HeaderMap::new();
    for a in authorization.iter().take(3) {
        if let Ok(v) = HeaderValue::from_str(a) {
            h.append(http::header::AUTHORIZATION, v);
        }
    }
    for c in cookies.iter().take(4) {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(http::header::COOKIE, v);
        }
    }
    let n = h.get_all(http::header::AUTHORIZATION).iter().count();
    match authgate::fuzzing::extract_token(&h, Some("at")) {
        Ok(Some(t)) => {
            assert!(n < 2, "two Authorization headers, one token taken");
            assert!(!t.is_empty() && t.is_ascii() && t.trim() == t, "{t:?}");
            let values = h
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .chain(h.get_all(http::header::COOKIE).iter());
            assert!(
                values
                    .into_iter()
                    .any(|v| v.as_bytes().windows(t.len()).any(|w| w == t.as_bytes())),
                "{t:?} is in no header"
            );
        }
        Ok(None) => assert!(n < 2),
        Err(_) => {}
    }
}
