//! Silent refresh: a fresh access token rides back when the presented one nears expiry.
//!
//! [`SilentRefresher::maybe_refresh`] decides (is the verified token within
//! `silent_refresh_window` of its `exp`?) and mints a token for the same identity (same `sub`,
//! `sid`, `plat`, `name`, `tenant`, `roles`; fresh `iat`/`exp`/`jti`) with the ring's current
//! signing key. Concurrent requests of one session get the same new token: a small per-instance
//! cache keyed by session id runs the mint once for all callers waiting on it (moka's
//! single-flight insert) and hands the result to any request of that session for a few
//! seconds, as long as it outlives the token presented and came from the same key ring. The old
//! token stays valid until it expires.
//!
//! Only own tokens of a session are refreshed: a ring without a signing key mints nothing, and
//! a token without `sid` is never re-minted. Every authgate login creates a session, so a
//! token without one was made by something else holding a key in the ring (an identity
//! provider's key put in `verify_keys`, say); re-minting it would turn that issuer's short-lived
//! token into one of ours, renewable for ever, beyond the issuer's expiry and logout.

use std::sync::Arc;
use std::time::Duration;

use crate::tokens::{Claims, KeyRing};

/// How long a minted token is handed to further requests of its session (at most).
const MAX_SHARE: Duration = Duration::from_secs(10);
/// How long a failed mint is remembered (so a burst of waiters shares the failure only).
const FAILURE_SHARE: Duration = Duration::from_secs(1);
/// Sessions tracked at once; beyond it the least useful entries go (at worst, a second mint).
const MAX_SESSIONS: u64 = 100_000;

/// A token minted for one session.
#[derive(Clone)]
struct Minted {
    token: Arc<str>,
    exp: u64,
    /// [`KeyRing::id`] of the ring that signed it: a reload never hands out an old-ring token.
    ring: u64,
    sub: Arc<str>,
    share_for: Duration,
}

/// `None`: the mint failed (logged once); the next caller tries again.
type Slot = Option<Minted>;

struct SlotExpiry;

impl moka::Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Slot,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.as_ref().map_or(FAILURE_SHARE, |m| m.share_for))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Slot,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.as_ref().map_or(FAILURE_SHARE, |m| m.share_for))
    }
}

/// Decides on and mints silent refreshes; one per process, shared by all requests.
pub(crate) struct SilentRefresher {
    minted: moka::sync::Cache<String, Slot>,
}

impl Default for SilentRefresher {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SilentRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SilentRefresher")
            .field("sessions", &self.minted.entry_count())
            .finish()
    }
}

impl SilentRefresher {
    pub(crate) fn new() -> Self {
        Self {
            minted: moka::sync::Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .expire_after(SlotExpiry)
                .build(),
        }
    }

    /// A new access token for the same identity when `claims` (already verified) has at most
    /// `window` left, else `None`. A zero `window` turns silent refresh off. A token past its
    /// `exp` but still within the ring's leeway counts as inside the window; one beyond it gets
    /// nothing. On a signing error: `None`, logged.
    pub(crate) fn maybe_refresh(
        &self,
        keys: &KeyRing,
        claims: &Claims,
        window: Duration,
        now: u64,
    ) -> Option<Arc<str>> {
        let sid = claims.sid.as_deref()?;
        if !keys.can_sign() || !due(keys, claims, window, now) {
            return None;
        }
        let usable = |slot: &Slot| {
            slot.as_ref()
                .is_some_and(|m| m.ring == keys.id() && m.exp > claims.exp && *m.sub == *claims.sub)
        };
        let share_for = window.min(MAX_SHARE);
        let slot = self
            .minted
            .entry(sid.to_owned())
            .or_insert_with_if(|| mint(keys, claims, now, share_for), |slot| !usable(slot))
            .into_value();
        // The slot may come from a concurrent caller's mint; it is still this session's token,
        // so it is good if it outlives the one presented.
        slot.filter(|m| m.exp > claims.exp && *m.sub == *claims.sub)
            .map(|m| m.token)
    }
}

/// Inside the window, and not yet expired beyond the leeway.
fn due(keys: &KeyRing, claims: &Claims, window: Duration, now: u64) -> bool {
    if window.is_zero() {
        return false;
    }
    let accepted_until = claims.exp.saturating_add(keys.rules().leeway.as_secs());
    now < accepted_until && claims.exp.saturating_sub(now) <= window.as_secs()
}

fn mint(keys: &KeyRing, claims: &Claims, now: u64, share_for: Duration) -> Slot {
    match keys.mint(&claims.identity(), now) {
        Ok((token, fresh)) => Some(Minted {
            token: token.into(),
            exp: fresh.exp,
            ring: keys.id(),
            sub: fresh.sub.into(),
            share_for,
        }),
        Err(e) => {
            tracing::warn!(error = %e, kid = keys.signing_kid(), "silent refresh: minting failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Barrier;

    use jsonwebtoken::Algorithm;

    use super::*;
    use crate::tokens::{AccessIdentity, KeyMaterial, KeySpec, TokenRules};

    const NOW: u64 = 1_750_000_000;
    const TTL: u64 = 7200;
    const WINDOW: Duration = Duration::from_secs(1800);

    fn ring() -> KeyRing {
        KeyRing::new(
            Some(KeySpec {
                kid: "k1".into(),
                algorithm: Algorithm::HS256,
                material: KeyMaterial::Secret(vec![7u8; 32]),
            }),
            vec![],
            TokenRules {
                issuer: "authgate".into(),
                audience: "legacy-app".into(),
                leeway: Duration::from_secs(30),
                access_ttl: Duration::from_secs(TTL),
            },
        )
        .unwrap()
    }

    fn identity(sid: Option<&str>) -> AccessIdentity {
        AccessIdentity {
            sub: "1001".into(),
            name: Some("alice".into()),
            sid: sid.map(Into::into),
            plat: Some("web".into()),
            tenant: Some("acme".into()),
            roles: Some(vec!["admin".into()]),
        }
    }

    /// Claims of a token minted at `issued`, so it expires at `issued + TTL`.
    fn claims_at(keys: &KeyRing, sid: Option<&str>, issued: u64) -> Claims {
        keys.mint(&identity(sid), issued).unwrap().1
    }

    #[test]
    fn refreshes_only_inside_the_window() {
        let keys = ring();
        let refresher = SilentRefresher::new();
        let claims = claims_at(&keys, Some("s1"), NOW);
        let exp = claims.exp;
        // (now, window, refreshed?)
        let cases: &[(u64, Duration, bool)] = &[
            (NOW, WINDOW, false),                       // fresh token: 2h left
            (exp - 1801, WINDOW, false),                // just outside
            (exp - 1800, WINDOW, true),                 // exactly at the window
            (exp - 60, WINDOW, true),                   // well inside
            (exp + 10, WINDOW, true),                   // past exp, within the 30 s leeway
            (exp + 30, WINDOW, false),                  // beyond the leeway: expired
            (exp - 60, Duration::ZERO, false),          // window 0: off
            (exp - 60, Duration::from_secs(30), false), // small window
        ];
        for &(now, window, want) in cases {
            let got = refresher.maybe_refresh(&keys, &claims, window, now);
            assert_eq!(
                got.is_some(),
                want,
                "now = exp{:+}",
                now as i64 - exp as i64
            );
        }
    }

    #[test]
    fn new_token_keeps_the_identity_and_lives_longer() {
        let keys = ring();
        let refresher = SilentRefresher::new();
        for sid in [Some("s1"), Some("s2")] {
            let claims = claims_at(&keys, sid, NOW);
            let now = claims.exp - 60;
            let token = refresher
                .maybe_refresh(&keys, &claims, WINDOW, now)
                .expect("inside the window");
            let fresh = keys.verify(&token, now).unwrap();
            assert_eq!(fresh.identity(), claims.identity());
            assert_eq!(fresh.sid.as_deref(), sid);
            assert!(fresh.exp > claims.exp);
            assert_eq!(fresh.exp, now + TTL);
            assert_eq!(fresh.iat, now);
            assert_ne!(fresh.jti, claims.jti);
            // The same session asking again soon gets the same token.
            assert_eq!(
                refresher.maybe_refresh(&keys, &claims, WINDOW, now + 1),
                Some(token)
            );
        }
    }

    #[test]
    fn concurrent_requests_of_one_session_get_one_token() {
        let keys = ring();
        let refresher = SilentRefresher::new();
        for sid in [Some("s-concurrent"), Some("s-concurrent-2")] {
            let claims = claims_at(&keys, sid, NOW);
            let now = claims.exp - 100;
            let barrier = Barrier::new(16);
            let tokens: HashSet<Arc<str>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..16)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            refresher.maybe_refresh(&keys, &claims, WINDOW, now)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().expect("inside the window"))
                    .collect()
            });
            assert_eq!(tokens.len(), 1, "sid {sid:?}");
        }
    }

    #[test]
    fn sessions_do_not_share_and_stale_tokens_are_not_reused() {
        let keys = ring();
        let refresher = SilentRefresher::new();
        let a = claims_at(&keys, Some("a"), NOW);
        let b = claims_at(&keys, Some("b"), NOW);
        let now = a.exp - 60;
        let ta = refresher.maybe_refresh(&keys, &a, WINDOW, now).unwrap();
        let tb = refresher.maybe_refresh(&keys, &b, WINDOW, now).unwrap();
        assert_ne!(ta, tb);

        // The client now presents the refreshed token; near its own expiry it must get a newer
        // one, not the cached token (whose exp is not later).
        let a2 = keys.verify(&ta, now).unwrap();
        let later = a2.exp - 60;
        let ta2 = refresher.maybe_refresh(&keys, &a2, WINDOW, later).unwrap();
        assert_ne!(ta2, ta);
        assert!(keys.verify(&ta2, later).unwrap().exp > a2.exp);

        // A reload (new ring) never gets a token signed by the old one.
        let reloaded = ring();
        let tr = refresher
            .maybe_refresh(&reloaded, &a2, WINDOW, later)
            .unwrap();
        assert_ne!(tr, ta2);
    }

    #[test]
    fn only_own_tokens_of_a_session_are_refreshed() {
        let keys = ring();
        let refresher = SilentRefresher::new();
        // No sid: not made by an authgate login, never re-minted.
        let sessionless = claims_at(&keys, None, NOW);
        let now = sessionless.exp - 60;
        assert_eq!(
            refresher.maybe_refresh(&keys, &sessionless, WINDOW, now),
            None
        );
        // A ring without a signing key verifies the token but mints nothing.
        let with_sid = claims_at(&keys, Some("s1"), NOW);
        let verify_only = KeyRing::new(
            None,
            vec![KeySpec {
                kid: "k1".into(),
                algorithm: Algorithm::HS256,
                material: KeyMaterial::Secret(vec![7u8; 32]),
            }],
            keys.rules().clone(),
        )
        .unwrap();
        assert_eq!(
            refresher.maybe_refresh(&verify_only, &with_sid, WINDOW, now),
            None
        );
        assert!(refresher
            .maybe_refresh(&keys, &with_sid, WINDOW, now)
            .is_some());
    }
}
