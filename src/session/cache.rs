//! The Redis store's local cache of session states, so that a steady-state `check` makes no
//! Redis round trip.
//!
//! Each instance remembers what it last read of the sessions it has seen: the state (active,
//! ended and why, or unknown), the expiry and the last-seen time, and when it read them. A
//! hit answers from that, against the `now` passed in: an active entry past its expiry is
//! *not* answered (the session may have been rotated on another instance, which extends it),
//! the caller reads Redis; an entry whose last-seen time is a minute old is not answered either,
//! so the caller's read schedules the usual background touch.
//!
//! # When it may be trusted
//! Every script that changes a session publishes it on `<p>revoked` (`redis.rs`): ends
//! (logout, logout everywhere, admin or user revoke, kick-out, theft, a removed user) and
//! rotations. The store's subscriber task drops the entry of each id it hears ([`invalidate`]).
//! The cache answers only while that subscription is known to be live: when it is lost
//! ([`distrust`]) every check reads Redis; when it is back ([`trust_afresh`]) the cache is
//! first emptied, so each session is read again once, after the gap. The instance's own
//! changes drop their entries at once, before the call returns.
//!
//! A read that was at Redis while an invalidation happened must not put back what it read
//! before the change: every invalidation bumps an epoch, a read takes a [`Ticket`] (the
//! epoch) before it goes to Redis, and [`put`] inserts and then re-checks the epoch, taking its
//! own entry out again if it moved. (Insert-then-check, with a fence on both sides, so that of
//! a racing read and invalidation at least one sees the other.)
//!
//! # Safety net and size
//! An entry is trusted for at most `local_cache_ttl` (default 5 s) after it was read, by the
//! gateway's clock: a change the channel could not tell (a key edited by hand, a Cluster bus
//! partition that drops a message while our connection stays up, until the subscriber's
//! ping notices) is seen within it. Entries are weighed in bytes ([`ENTRY_BYTES`] plus the
//! id) and the cache holds at most `local_cache_max_bytes` (moka evicts the least useful).
//!
//! [`invalidate`]: LocalCache::invalidate
//! [`distrust`]: LocalCache::distrust
//! [`trust_afresh`]: LocalCache::trust_afresh
//! [`put`]: LocalCache::put

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::ids::names_user;
use super::record::{reason_of, Entry, STATE_ACTIVE};
use super::{EndReason, Millis, SessionCheck};
use crate::clock::ms_of;

/// Memory one entry takes besides its id's bytes: moka's entry, its key hash and deque nodes,
/// the map bucket, and [`Cached`]. Measured by the ignored test `local_cache_rss_per_entry`:
/// 426 bytes of RSS per entry with 37-byte ids (200,000 entries).
pub(crate) const ENTRY_BYTES: u32 = 390;

/// A cached answer that means "no such session".
const UNKNOWN: u8 = u8::MAX;

/// What is kept of one session.
#[derive(Debug, Clone, Copy)]
struct Cached {
    /// The record's state byte, or [`UNKNOWN`].
    state: u8,
    expires: Millis,
    seen: Millis,
    /// When it was read (the `now` of that check).
    read_at: Millis,
}

/// The epoch a read saw before going to Redis, for [`LocalCache::put`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// The per-instance session cache (one per Redis store). See the module docs.
pub(crate) struct LocalCache {
    entries: moka::sync::Cache<Box<str>, Cached>,
    ttl_ms: u64,
    /// Bumped by every invalidation; see [`Ticket`].
    epoch: AtomicU64,
    /// The subscription is live and the cache was emptied since it (re)started.
    trusted: AtomicBool,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("ttl_ms", &self.ttl_ms)
            .field("trusted", &self.trusted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LocalCache {
    /// An empty cache, not trusted until [`Self::trust_afresh`].
    #[allow(clippy::borrowed_box)]
    pub(crate) fn new(ttl: Duration, max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            // The key type is moka's, so the closure takes `&Box<str>`.
            .weigher(|id: &Box<str>, _: &Cached| -> u32 {
                ENTRY_BYTES.saturating_add(u32::try_from(id.len()).unwrap_or(u32::MAX))
            })
            // Only collects garbage: trust is decided by `read_at` and the caller's `now`.
            .time_to_live(ttl)
            .build();
        Self {
            entries,
            ttl_ms: ms_of(ttl).max(1),
            epoch: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
        }
    }

    /// The cached answer for `session_id` of `user_id` at `now`, if there is one that may be
    /// given without asking Redis. No allocation.
    pub(crate) fn answer(
        &self,
        user_id: &str,
        session_id: &str,
        now: Millis,
    ) -> Option<SessionCheck> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        let c = self.entries.get(session_id)?;
        if now < c.read_at || now.since(c.read_at) >= self.ttl_ms {
            return None;
        }
        if !names_user(session_id, user_id) {
            // Cached under another user: what the store would answer for this pair.
            return Some(SessionCheck::Unknown);
        }
        match c.state {
            UNKNOWN => Some(SessionCheck::Unknown),
            STATE_ACTIVE => {
                let touch_due = c.seen.0.saturating_add(super::redis::TOUCH_EVERY) <= now.0;
                (c.expires > now && !touch_due).then_some(SessionCheck::Active)
            }
            // A tombstone past its own expiry is as good as gone (as in `Entry::check`).
            _ if c.expires <= now => Some(SessionCheck::Unknown),
            code => Some(reason_of(code).map_or(SessionCheck::Unknown, SessionCheck::Ended)),
        }
    }

    /// Taken before a read of Redis whose answer may be cached; `None` while the cache is not
    /// trusted (nothing read then is kept).
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.trusted.load(Ordering::SeqCst).then_some(Ticket(epoch))
    }

    /// Keeps what a read (`ticket` taken before it) found for `session_id` at `now`: the
    /// record `e` (its last-seen time taken as `seen`, the time of a touch the caller has
    /// just scheduled), or nothing (unknown).
    pub(crate) fn put(
        &self,
        ticket: Ticket,
        session_id: &str,
        e: Option<(Entry<'_>, Millis)>,
        now: Millis,
    ) {
        let cached = match e {
            Some((e, seen)) if e.state() == STATE_ACTIVE && e.expires() <= now => Cached {
                // Expired for good: a refresh of an expired session is refused, so it never
                // comes back. Answered as such until the entry is read again.
                state: super::record::reason_code(EndReason::Expired),
                expires: Millis(u64::MAX),
                seen,
                read_at: now,
            },
            Some((e, seen)) => Cached {
                state: e.state(),
                expires: e.expires(),
                seen,
                read_at: now,
            },
            None => Cached {
                state: UNKNOWN,
                expires: Millis::ZERO,
                seen: Millis::ZERO,
                read_at: now,
            },
        };
        self.entries.insert(session_id.into(), cached);
        fence(Ordering::SeqCst);
        if self.epoch.load(Ordering::SeqCst) != ticket.0 || !self.trusted.load(Ordering::SeqCst) {
            // Something changed while the read was at Redis: it may be older than the change.
            self.entries.invalidate(session_id);
        }
    }

    /// `session_id` changed (ended, rotated): forget it.
    pub(crate) fn invalidate(&self, session_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.entries.invalidate(session_id);
    }

    /// The subscription is lost: answer nothing until [`Self::trust_afresh`].
    pub(crate) fn distrust(&self) {
        self.trusted.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The subscription is (back) up: everything read before may have missed a change, so
    /// the cache starts empty.
    pub(crate) fn trust_afresh(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
        fence(Ordering::SeqCst);
        self.trusted.store(true, Ordering::SeqCst);
    }

    /// Entries held (after moka's pending evictions).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ids::format_sid;

    fn cache() -> LocalCache {
        let c = LocalCache::new(Duration::from_secs(5), 1 << 20);
        c.trust_afresh();
        c
    }

    /// A record as the store keeps it: state, expiry, last seen.
    fn record(state: u8, expires: Millis, seen: Millis) -> Vec<u8> {
        let mut r = vec![0u8; super::super::record::HEADER];
        r[super::super::record::STATE] = state;
        let put = |r: &mut Vec<u8>, at: usize, t: Millis| {
            r[at..at + 6].copy_from_slice(&t.0.to_le_bytes()[..6]);
        };
        put(&mut r, super::super::record::EXPIRES, expires);
        put(&mut r, super::super::record::SEEN, seen);
        r
    }

    #[test]
    fn answers_honour_expiry_touch_and_ttl() {
        let c = cache();
        let id = format_sid("u", &[1; 16]);
        let t = Millis(1_000_000);
        let rec = record(STATE_ACTIVE, t + Duration::from_secs(3), t);
        let ticket = c.ticket().unwrap();
        c.put(ticket, &id, Some((Entry(&rec), t)), t);
        assert_eq!(c.answer("u", &id, t), Some(SessionCheck::Active));
        // Another user's token naming this id: what the store answers for it.
        assert_eq!(c.answer("v", &id, t), Some(SessionCheck::Unknown));
        // Past its expiry: Redis decides (a rotation elsewhere may have extended it).
        assert_eq!(c.answer("u", &id, t + Duration::from_secs(3)), None);
        // Past the TTL: read again.
        assert_eq!(c.answer("u", &id, t + Duration::from_secs(5)), None);
        // A clock that went back: read again.
        assert_eq!(c.answer("u", &id, Millis(t.0 - 1)), None);

        let id2 = format_sid("u", &[2; 16]);
        let rec = record(STATE_ACTIVE, t + Duration::from_secs(3600), t);
        c.put(c.ticket().unwrap(), &id2, Some((Entry(&rec), t)), t);
        let near = t + Duration::from_millis(super::super::redis::TOUCH_EVERY - 1);
        let c2 = LocalCache::new(Duration::from_secs(120), 1 << 20);
        c2.trust_afresh();
        c2.put(c2.ticket().unwrap(), &id2, Some((Entry(&rec), t)), t);
        assert_eq!(c2.answer("u", &id2, near), Some(SessionCheck::Active));
        // A minute since it was last seen: the caller's read schedules the touch.
        assert_eq!(c2.answer("u", &id2, near + Duration::from_millis(1)), None);
    }

    #[test]
    fn ended_unknown_and_expired_answers() {
        let c = cache();
        let t = Millis(1_000_000);
        let kicked = format_sid("u", &[3; 16]);
        let rec = record(3, t + Duration::from_secs(1), t);
        c.put(c.ticket().unwrap(), &kicked, Some((Entry(&rec), t)), t);
        assert_eq!(
            c.answer("u", &kicked, t),
            Some(SessionCheck::Ended(EndReason::Replaced))
        );
        assert_eq!(
            c.answer("u", &kicked, t + Duration::from_secs(1)),
            Some(SessionCheck::Unknown)
        );
        let gone = format_sid("u", &[4; 16]);
        c.put(c.ticket().unwrap(), &gone, None, t);
        assert_eq!(c.answer("u", &gone, t), Some(SessionCheck::Unknown));
        let idle = format_sid("u", &[5; 16]);
        let rec = record(STATE_ACTIVE, t, t);
        c.put(c.ticket().unwrap(), &idle, Some((Entry(&rec), t)), t);
        assert_eq!(
            c.answer("u", &idle, t),
            Some(SessionCheck::Ended(EndReason::Expired))
        );
    }

    #[test]
    fn a_read_overtaken_by_a_change_is_not_kept() {
        let c = cache();
        let t = Millis(1_000_000);
        let id = format_sid("u", &[1; 16]);
        let rec = record(STATE_ACTIVE, t + Duration::from_secs(60), t);
        let ticket = c.ticket().unwrap();
        // The session ends (on any instance) while the read is at Redis.
        c.invalidate(&id);
        c.put(ticket, &id, Some((Entry(&rec), t)), t);
        assert_eq!(c.answer("u", &id, t), None);
    }

    #[test]
    fn nothing_is_answered_or_kept_while_distrusted() {
        let c = cache();
        let t = Millis(1_000_000);
        let id = format_sid("u", &[1; 16]);
        let rec = record(STATE_ACTIVE, t + Duration::from_secs(60), t);
        c.put(c.ticket().unwrap(), &id, Some((Entry(&rec), t)), t);
        let ticket = c.ticket().unwrap();
        c.distrust();
        assert_eq!(c.answer("u", &id, t), None);
        assert!(c.ticket().is_none());
        c.put(ticket, &id, Some((Entry(&rec), t)), t);
        c.trust_afresh();
        // Emptied on the way back, and the read from before the gap was not kept.
        assert_eq!(c.answer("u", &id, t), None);
    }

    #[test]
    fn the_size_cap_bounds_entries() {
        let c = LocalCache::new(Duration::from_secs(5), 64 * 1024);
        c.trust_afresh();
        let t = Millis(1_000_000);
        let rec = record(STATE_ACTIVE, t + Duration::from_secs(60), t);
        let id_len = format_sid("user-0", &[0; 16]).len() as u64;
        for i in 0..10_000u32 {
            let mut raw = [0u8; 16];
            raw[..4].copy_from_slice(&i.to_le_bytes());
            let id = format_sid("user-0", &raw);
            c.put(c.ticket().unwrap(), &id, Some((Entry(&rec), t)), t);
        }
        let most = 64 * 1024 / (u64::from(ENTRY_BYTES) + id_len);
        let held = c.len();
        assert!(held <= most, "{held} entries held, at most {most} fit");
        assert!(held > most / 2, "{held} entries held of {most}");
    }
}
