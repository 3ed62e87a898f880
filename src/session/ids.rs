//! Session ids, refresh tokens and the hashing behind them.
//!
//! A session id is `base64url(user_id) "." base64url(16 random bytes)`: 128 random bits, and it
//! locates its user's record without any global index (the admin API can end a session knowing
//! only its id). A refresh token is `<session id> "." base64url(R)` with `R` 32 bytes: `R0` is
//! random at login and each rotation derives `R(n+1) = HMAC-SHA256(refresh_key, R(n))`, so the
//! immediate parent presented again within the grace recomputes *the same* successor while the
//! store keeps only hashes.
//!
//! Stored hashes are SHA-256 truncated to 128 bits. Finding a token that matches one needs a
//! (second) preimage of a 128-bit value, 2^128 work; collisions (2^64) are of no use to an
//! attacker because every stored hash belongs to a 256-bit random secret he does not know.
//! The truncation saves 32 bytes per session in both stores (the memory targets of issue 3).

use aws_lc_rs::{digest, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The random part of a session id.
pub(crate) type SidBytes = [u8; 16];
/// A stored token hash (SHA-256 truncated to 128 bits).
pub(crate) type TokenHash = [u8; 16];
/// A refresh secret `R`.
pub(crate) type Secret = [u8; 32];

/// Longest user id a session can carry, in bytes.
pub(crate) const MAX_USER_ID_LEN: usize = 255;

/// The server secret that derives each refresh token from its parent.
///
/// Every gateway instance sharing a Redis store must use the same key, and it must survive
/// restarts: a different key makes a just-rotated parent recompute a different successor, so
/// the grace case answers `Invalid` instead of the same pair.
#[derive(Clone)]
pub(crate) struct RefreshKey(hmac::Key);

impl RefreshKey {
    /// A key from 32 secret bytes.
    pub(crate) fn new(secret: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A fresh random key, for tests.
    #[cfg(test)]
    pub(crate) fn generate() -> Self {
        Self::new(&random::<32>())
    }

    /// `R(n+1) = HMAC-SHA256(key, R(n))`.
    pub(crate) fn successor(&self, r: &Secret) -> Secret {
        let tag = hmac::sign(&self.0, r);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl std::fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshKey([redacted])")
    }
}

/// An opaque refresh token as handed to the client. `Debug` shows only the session id part:
/// a whole token never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sid = self.0.rsplit_once('.').map_or("?", |(sid, _)| sid);
        write!(f, "RefreshToken({sid}.[redacted])")
    }
}

/// `N` bytes from the system CSPRNG.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The system RNG failing is not something a gateway can carry on after (no secure ids,
    // no tokens); aws-lc only fails here if the OS refuses entropy.
    aws_lc_rs::rand::fill(&mut out).expect("the system random number generator failed");
    out
}

/// SHA-256 of a refresh secret, truncated to 128 bits (see the module docs).
pub(crate) fn token_hash(r: &Secret) -> TokenHash {
    let d = digest::digest(&digest::SHA256, r);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `base64url(user_id) "."`, the part every id and token of one user starts with.
pub(crate) fn sid_prefix(user_id: &str) -> String {
    let mut s = b64(user_id.as_bytes());
    s.push('.');
    s
}

pub(crate) fn format_sid(user_id: &str, sid: &SidBytes) -> String {
    let mut s = sid_prefix(user_id);
    URL_SAFE_NO_PAD.encode_string(sid, &mut s);
    s
}

pub(crate) fn format_token(user_id: &str, sid: &SidBytes, r: &Secret) -> RefreshToken {
    let mut s = format_sid(user_id, sid);
    s.push('.');
    URL_SAFE_NO_PAD.encode_string(r, &mut s);
    RefreshToken(s)
}

fn decode_user(part: &str) -> Option<String> {
    if part.is_empty() || part.len() > 4 * MAX_USER_ID_LEN.div_ceil(3) {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    if bytes.is_empty() || bytes.len() > MAX_USER_ID_LEN {
        return None;
    }
    String::from_utf8(bytes).ok()
}

fn decode_fixed<const N: usize>(part: &str) -> Option<[u8; N]> {
    if part.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let mut out = [0u8; N];
    let n = URL_SAFE_NO_PAD.decode_slice(part, &mut out).ok()?;
    (n == N).then_some(out)
}

/// Splits a session id into its user id and random part; `None` for anything malformed.
pub(crate) fn parse_sid(sid: &str) -> Option<(String, SidBytes)> {
    let (user, rand) = sid.split_once('.')?;
    Some((decode_user(user)?, decode_fixed::<16>(rand)?))
}

/// The random part of `session_id`, if it is one of ours and belongs to `user_id`.
pub(crate) fn sid_of_user(user_id: &str, session_id: &str) -> Option<SidBytes> {
    let (uid, sid) = parse_sid(session_id)?;
    (uid == user_id).then_some(sid)
}

/// Whether `session_id` starts with `base64url(user_id) "."`, without allocating (the local
/// cache's hit path: the id was checked whole when it was cached).
pub(crate) fn names_user(session_id: &str, user_id: &str) -> bool {
    let mut buf = [0u8; 4 * MAX_USER_ID_LEN.div_ceil(3)];
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_LEN {
        return false;
    }
    let Ok(n) = URL_SAFE_NO_PAD.encode_slice(user_id, &mut buf) else {
        return false;
    };
    session_id.len() > n
        && session_id.as_bytes()[..n] == buf[..n]
        && session_id.as_bytes()[n] == b'.'
}

/// The user a session id belongs to (`None` if it is not one of ours): for
/// `DELETE /admin/sessions/{session_id}`, which knows nothing else.
pub(crate) fn user_id_of(session_id: &str) -> Option<String> {
    parse_sid(session_id).map(|(user, _)| user)
}

/// The user and session a refresh token names (`None` if it is not one of ours), without
/// checking it against the store: for decisions that hold whatever the token's secret part
/// (the refresh of a user who no longer exists is refused either way).
pub(crate) fn session_of_refresh_token(token: &str) -> Option<(String, String)> {
    let p = ParsedToken::parse(token)?;
    let sid = format_sid(&p.user_id, &p.sid);
    Some((p.user_id, sid))
}

/// A refresh token taken apart.
pub(crate) struct ParsedToken {
    pub user_id: String,
    pub sid: SidBytes,
    pub secret: Secret,
}

impl ParsedToken {
    /// `None` for anything that is not exactly `<user>.<sid>.<R>` in canonical base64url.
    pub(crate) fn parse(token: &str) -> Option<Self> {
        if token.len() > 512 {
            return None;
        }
        let mut parts = token.split('.');
        let (user, sid, r) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            user_id: decode_user(user)?,
            sid: decode_fixed::<16>(sid)?,
            secret: decode_fixed::<32>(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_and_token_round_trip() {
        let sid = random::<16>();
        let r = random::<32>();
        let text = format_sid("user 1.{x}", &sid);
        assert_eq!(parse_sid(&text), Some(("user 1.{x}".to_string(), sid)));
        assert_eq!(user_id_of(&text).as_deref(), Some("user 1.{x}"));
        let token = format_token("1001", &sid, &r);
        assert!(token.as_str().len() >= 43 + 22);
        let p = ParsedToken::parse(token.as_str()).expect("parses");
        assert_eq!((p.user_id.as_str(), p.sid, p.secret), ("1001", sid, r));
        assert_eq!(
            session_of_refresh_token(token.as_str()),
            Some(("1001".to_string(), format_sid("1001", &sid)))
        );
        assert_eq!(
            session_of_refresh_token(&text),
            None,
            "a session id is no token"
        );
        assert!(!format!("{token:?}").contains(&b64(&r)));
    }

    #[test]
    fn names_user_matches_parse() {
        let sid = format_sid("alice", &[7; 16]);
        assert!(names_user(&sid, "alice"));
        assert!(!names_user(&sid, "alic"));
        assert!(!names_user(&sid, "alicee"));
        assert!(!names_user(&sid, ""));
        assert!(!names_user("YWxpY2U", "alice"));
        let long = "x".repeat(MAX_USER_ID_LEN);
        assert!(names_user(&format_sid(&long, &[1; 16]), &long));
        assert!(!names_user(
            &format_sid(&long, &[1; 16]),
            &format!("{long}x")
        ));
    }

    #[test]
    fn malformed_is_rejected() {
        let good = format_token("1001", &[7; 16], &[9; 32]).into_string();
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            &good[1..],
            &good[..good.len() - 1],
            &format!("{good}x"),
            &format!("{good}.x"),
            &good.replace('.', ":"),
            &format!(".{}", good.split_once('.').unwrap().1),
        ] {
            assert!(ParsedToken::parse(bad).is_none(), "{bad:?}");
        }
        assert!(parse_sid("MTAwMQ").is_none());
        assert!(parse_sid("MTAwMQ.short").is_none());
    }

    #[test]
    fn successor_is_deterministic_per_key() {
        let k = RefreshKey::new(&[1; 32]);
        let r = [5; 32];
        assert_eq!(k.successor(&r), k.successor(&r));
        assert_ne!(k.successor(&r), RefreshKey::new(&[2; 32]).successor(&r));
        assert_ne!(token_hash(&r), token_hash(&k.successor(&r)));
    }
}
