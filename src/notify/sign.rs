//! A session event's body and its signature header: `X-Authgate-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (the scheme of Stripe's webhooks),
//! keyed by `notify`'s secret, with aws-lc-rs (no home-made crypto). The body never holds a
//! token: only ids.

use aws_lc_rs::hmac;
use serde::Serialize;

/// Why a session ended, as the event's `reason` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Logout,
    LogoutAll,
    Revoked,
    Replaced,
    Theft,
    Expired,
    UserRemoved,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Logout => "logout",
            Reason::LogoutAll => "logout_all",
            Reason::Revoked => "revoked",
            Reason::Replaced => "replaced",
            Reason::Theft => "theft",
            Reason::Expired => "expired",
            Reason::UserRemoved => "user_removed",
        }
    }
}

/// The JSON body, field by field in the contract's order.
#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    session_id: &'a str,
    user_id: &'a str,
    platform: &'a str,
    reason: Option<&'static str>,
    ts: u64,
    request_id: Option<&'a str>,
}

/// What an event is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct About<'a> {
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub platform: &'a str,
}

/// The body of one event: `session_ended` with its reason, or `login` (reason `null`).
pub(crate) fn body(
    about: About<'_>,
    reason: Option<Reason>,
    ts: u64,
    request_id: Option<&str>,
) -> Vec<u8> {
    let b = Body {
        event: if reason.is_some() {
            "session_ended"
        } else {
            "login"
        },
        session_id: about.session_id,
        user_id: about.user_id,
        platform: about.platform,
        reason: reason.map(Reason::as_str),
        ts,
        request_id,
    };
    // Strings and numbers only: serialising cannot fail.
    serde_json::to_vec(&b).unwrap_or_default()
}

/// The `X-Authgate-Signature` value for `body` sent at `t` (Unix seconds).
pub(crate) fn signature(key: &hmac::Key, t: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(20 + 4 + 64);
    out.push_str("t=");
    out.push_str(&t.to_string());
    out.push_str(",v1=");
    for b in tag.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The HMAC key for `secret`.
pub(crate) fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABOUT: About<'static> = About {
        session_id: "s1",
        user_id: "1001",
        platform: "web",
    };

    #[test]
    fn bodies_have_the_contract_fields_in_order() {
        let b = body(ABOUT, Some(Reason::LogoutAll), 1700000000, Some("rid-1"));
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"event":"session_ended","session_id":"s1","user_id":"1001","platform":"web","reason":"logout_all","ts":1700000000,"request_id":"rid-1"}"#
        );
        let b = body(ABOUT, None, 5, None);
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"event":"login","session_id":"s1","user_id":"1001","platform":"web","reason":null,"ts":5,"request_id":null}"#
        );
    }

    #[test]
    fn every_reason_has_its_name() {
        let all = [
            (Reason::Logout, "logout"),
            (Reason::LogoutAll, "logout_all"),
            (Reason::Revoked, "revoked"),
            (Reason::Replaced, "replaced"),
            (Reason::Theft, "theft"),
            (Reason::Expired, "expired"),
            (Reason::UserRemoved, "user_removed"),
        ];
        for (r, name) in all {
            assert_eq!(r.as_str(), name);
        }
    }

    /// The primitive is HMAC-SHA256 (RFC 4231 test case 2, key "Jefe"), and the header is
    /// exactly it over the timestamp, a dot and the body, in lower-case hex.
    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        let k = key(b"Jefe");
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(b"what do ya want for nothing?");
        let rfc = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = ctx
            .sign()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, rfc, "the HMAC itself");
        // The header for t=1, body "x": HMAC("1.x"), computed independently.
        let h = signature(&k, 1, b"x");
        let want: String = hmac::sign(&k, b"1.x")
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(h, format!("t=1,v1={want}"));
        assert_ne!(signature(&key(b"other"), 1, b"x"), h);
        assert_ne!(signature(&k, 2, b"x"), h);
    }
}
