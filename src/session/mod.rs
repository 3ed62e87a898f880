//! The session store: every token's server-side session, so logout, kick-out and theft
//! detection take effect at once.
//!
//! [`SessionStore`] is an enum over the two implementations (async methods, so enum dispatch
//! rather than a `dyn` trait): [`MemoryStore`] (the embedded default; **sessions are lost on
//! restart**) and [`RedisStore`] (single node through a reconnecting `ConnectionManager`, a
//! Redis Cluster, or the master Redis Sentinel names; shared by every gateway instance). Both keep the same semantics, and one
//! behaviour suite (`tests.rs`) runs against both.
//!
//! What a session is: [`Session`]. Its id is `base64url(user_id).base64url(128 random bits)`,
//! so the id alone locates it (admin revoke by id); the refresh token is
//! `<session id>.base64url(R)` and rotates as described in [`ids`] and `DESIGN-NOTES.md`:
//! successors are derived with HMAC so the immediate parent within the grace gets *the same*
//! successor, and only truncated SHA-256 hashes are stored.
//!
//! Time is always passed in (`now`, [`Millis`]: Unix milliseconds, see [`crate::clock`]) so tests
//! control it to the millisecond, and every window is bounded by its configured duration
//! exactly: the parent is honoured while `now - rotated_at <= refresh_reuse_grace`, a session
//! or lock is in force while `now < expiry`. `refresh_ttl` is an idle
//! limit extended by each refresh, `max_lifetime` caps the total age ([`Lifetimes`]). An ended
//! session stays as a small tombstone for `tombstone_ttl` so that its tokens answer
//! `session_replaced` (kicked) rather than `session_revoked`; an unknown or expired one answers
//! [`SessionCheck::Unknown`] / [`SessionCheck::Lapsed`], both `session_revoked` for the caller.
//! A lapsed session is marked `Expired` once ([`SessionStore::expire`], atomic across
//! instances), so that exactly one instance tells `[notify]`'s receivers of its expiry; one
//! the store drops unmarked (a sweep, a later write to the user's record) goes to the hook of
//! [`SessionStore::on_expired`], from the one caller that dropped it.
//!
//! A store error is always `Err(StoreError)`: it never ends a session and never hands out a
//! token that was not saved. Ending a session publishes its id on
//! [`SessionStore::subscribe_revocations`] on every instance.
//!
//! Lock-out counters ([`SessionStore::record_failure`] and friends) and captcha challenges
//! ([`SessionStore::put_captcha`], [`SessionStore::take_captcha`]) live here too, so several
//! instances share them.

mod breaker;
pub(crate) mod cache;
pub mod ids;
pub mod memory;
pub(crate) mod record;
pub mod redis;
mod sentinel;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::time::Duration;

use tokio::sync::broadcast;

pub use crate::clock::Millis;
pub(crate) use cache::LocalCache;
pub use ids::RefreshToken;
pub(crate) use ids::{session_of_refresh_token, user_id_of, RefreshKey};
pub use memory::MemoryStore;
pub use redis::{RedisStore, RedisTarget};

/// Sent on the revocation channel instead of a session id when revocations may have been
/// missed (the Redis subscription was re-established after a gap, or a receiver lagged): a
/// holder of long-lived connections should re-check all of their sessions.
pub(crate) const RECHECK_ALL: &str = "*";

/// Hard cap on one user's active sessions across all platforms (beyond it the oldest is ended
/// as `Replaced`): keeps a user's record, read on every request, bounded even on platforms
/// without a `max_sessions` limit.
pub(crate) const MAX_SESSIONS_PER_USER: u32 = 100;

/// At most this many ended sessions (tombstones) are remembered per user; a login beyond it
/// forgets the oldest (whose tokens then answer `session_revoked` rather than
/// `session_replaced`). Keeps a login loop from growing a user's record.
pub(crate) const MAX_TOMBSTONES_PER_USER: u32 = 32;

/// Rotations a presented old refresh token is walked forward to tell a genuine old token
/// (theft: the session is ended) from a forged one naming a known session id (invalid: nothing
/// happens). Older genuine tokens are treated as invalid. About 0.1 ms of HMAC at most.
pub(crate) const THEFT_WALK_LIMIT: u32 = 256;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The user logged out (or logged out everywhere).
    Logout,
    /// An admin or the user revoked it from the session list.
    Revoked,
    /// A newer login on the same platform went beyond `max_sessions`.
    Replaced,
    /// An old refresh token was presented again.
    Theft,
    /// Idle or lifetime expiry.
    Expired,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Revoked => "revoked",
            Self::Replaced => "replaced",
            Self::Theft => "theft",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Active,
    Ended(EndReason),
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `base64url(user_id).base64url(16 random bytes)`; survives refreshes.
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub platform: String,
    /// From `X-Device-Id`; cut to 255 bytes.
    pub device: Option<String>,
    /// Client IP at login; cut to 255 bytes.
    pub ip: String,
    /// Cut to 255 bytes.
    pub user_agent: Option<String>,
    pub created_at: Millis,
    /// Login, each refresh, and (Redis) a request at most once a minute; see
    /// [`SessionStore::check`].
    pub last_seen_at: Millis,
    /// 0 before the first rotation.
    pub rotated_at: Millis,
    /// Number of rotations so far.
    pub generation: u32,
    /// Active: when it idles out (or hits `max_lifetime`); the refresh token's expiry.
    /// Ended: when its tombstone goes. Shown to clients as [`Millis::as_secs`] (rounded down).
    pub expires_at: Millis,
    pub state: SessionState,
}

impl Session {
    /// Active and not past its expiry.
    pub(crate) fn is_active(&self, now: Millis) -> bool {
        self.state == SessionState::Active && self.expires_at > now
    }
}

/// What a login creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// 1 to 255 bytes.
    pub user_id: String,
    pub user_name: String,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub platform: String,
    pub device: Option<String>,
    pub ip: String,
    pub user_agent: Option<String>,
}

/// The reloadable token lifetimes that shape a session's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Idle limit: each refresh extends the session to `now + refresh_ttl`.
    pub refresh_ttl: Duration,
    /// Cap on the total age from login; `None`: no cap.
    pub max_lifetime: Option<Duration>,
}

impl Lifetimes {
    /// The expiry of a session created at `created_at`, refreshed (or created) at `now`.
    pub fn expiry(&self, created_at: Millis, now: Millis) -> Millis {
        let idle = now + self.refresh_ttl;
        match self.max_lifetime {
            Some(life) => idle.min(created_at + life),
            None => idle,
        }
    }
}

/// Settings both stores share. Not reloadable (the store needs a restart anyway).
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    /// Derives each refresh token from its parent; the same on every instance.
    pub refresh_key: RefreshKey,
    /// `refresh_reuse_grace`: how long the immediate parent still gets the same successor.
    pub reuse_grace: Duration,
    /// How long an ended session is remembered (so its access tokens answer
    /// `session_replaced`, not `session_revoked`). Set it to at least the longest `access_ttl`
    /// in use.
    pub tombstone_ttl: Duration,
    /// Redis: the local session cache (`cache.rs`); `None`: every check reads Redis. The
    /// memory store is local already and ignores it.
    pub local_cache: Option<CacheSettings>,
}

/// `session.local_cache_ttl` and `session.local_cache_max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheSettings {
    pub ttl: Duration,
    pub max_bytes: u64,
}

/// What a login got.
#[derive(Debug, Clone)]
pub struct Created {
    pub session: Session,
    pub refresh_token: RefreshToken,
    /// Ids of the sessions ended (`Replaced`) to make room, oldest first.
    pub kicked: Vec<String>,
    /// The platform of each of `kicked`, in the same order (the per-user cap may end a
    /// session of another platform).
    pub kicked_platforms: Vec<String>,
}

/// The hot-path answer for a token's `sid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    Active,
    /// Still marked active but past its idle or lifetime expiry: not yet seen as expired by
    /// anyone ([`SessionStore::expire`] marks it). `session_revoked` for the caller.
    Lapsed,
    /// Ended, and still remembered: `Replaced` answers `session_replaced`, everything else
    /// (including `Expired`: an idle or lifetime expiry marked by [`SessionStore::expire`])
    /// `session_revoked`.
    Ended(EndReason),
    /// No such session (never existed, swept after expiry, or tombstone gone):
    /// `session_revoked`.
    Unknown,
}

/// What `POST /auth/refresh` does with a refresh token.
#[derive(Debug, Clone)]
pub(crate) enum RefreshOutcome {
    /// The current token: rotated, saved, here is the successor.
    Rotated {
        session: Session,
        token: RefreshToken,
    },
    /// The immediate parent within the grace: the same successor as the rotation handed out.
    Grace {
        session: Session,
        token: RefreshToken,
    },
    /// An older token of this session, or the parent after the grace: the session (this one
    /// alone) has been ended with reason `Theft`.
    Theft { session: Session },
    /// Malformed, unknown, forged, expired, or of an ended session: nothing changed.
    Invalid,
}

/// A store failure. None of them changes a session.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (connection refused or lost, timeout, cluster down):
    /// `503 store_unavailable`.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The store answered, but not as expected (script error, corrupt record).
    #[error("session store error: {0}")]
    Backend(String),
    /// The caller passed something that cannot be stored (an over-long user id, ...).
    #[error("invalid session data: {0}")]
    InvalidInput(&'static str),
}

/// The configured store: memory or Redis.
#[derive(Debug, Clone)]
pub enum SessionStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            SessionStore::Memory($s) => $call,
            SessionStore::Redis($s) => $call,
        }
    };
}

impl SessionStore {
    /// Starts what keeps the store tidy in the background until `stop` (the shutdown
    /// signal): the memory store's sweep. Redis expires its keys itself; its revocation
    /// subscriber belongs to the store (ended when it is dropped), so that connections
    /// draining after the signal still hear revocations.
    pub(crate) fn spawn_sweeper(&self, stop: crate::shutdown::Signal) {
        match self {
            Self::Memory(m) => m.spawn_sweeper(stop),
            // Its per-instance lock-out fallback (used while Redis is unreachable).
            Self::Redis(r) => r.spawn_sweeper(stop),
        }
    }

    /// `"memory"` or `"redis"` (test output).
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Creates a session and, atomically with it, ends the oldest active sessions of the same
    /// user on the same platform beyond `max_per_platform` (reason `Replaced`; `None`: no
    /// limit, though never more than [`MAX_SESSIONS_PER_USER`] in all).
    pub async fn create(
        &self,
        new: NewSession,
        max_per_platform: Option<u32>,
        lifetimes: Lifetimes,
        now: Millis,
    ) -> Result<Created, StoreError> {
        dispatch!(self, s => s.create(new, max_per_platform, lifetimes, now).await)
    }

    /// The hot-path check of a token's session: one lookup (memory; on Redis one `GET`, or
    /// none when the local cache may answer: see `cache.rs`).
    ///
    /// `last_seen_at` is kept coarsely: the memory store updates it on every check; Redis
    /// updates it at most once a minute per session (and instance), in a background write
    /// that the request does not wait for (and whose failure is ignored), plus on every
    /// refresh.
    pub(crate) async fn check(
        &self,
        user_id: &str,
        session_id: &str,
        now: Millis,
    ) -> Result<SessionCheck, StoreError> {
        dispatch!(self, s => s.check(user_id, session_id, now).await)
    }

    /// Rotates a refresh token (see [`RefreshOutcome`]); atomic across instances.
    pub(crate) async fn refresh(
        &self,
        token: &str,
        lifetimes: Lifetimes,
        now: Millis,
    ) -> Result<RefreshOutcome, StoreError> {
        dispatch!(self, s => s.refresh(token, lifetimes, now).await)
    }

    /// Ends one active session of `user_id`; `false` if there was none to end.
    pub async fn end(
        &self,
        user_id: &str,
        session_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<bool, StoreError> {
        Ok(self
            .end_session(user_id, session_id, reason, now)
            .await?
            .is_some())
    }

    /// Ends one active session of `user_id`; the session as ended, `None` if there was none
    /// to end (so exactly one caller, across instances, gets it).
    pub(crate) async fn end_session(
        &self,
        user_id: &str,
        session_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        dispatch!(self, s => s.end(user_id, session_id, reason, now).await)
    }

    /// Marks every session of `user_id` that is still active but past its idle or lifetime
    /// expiry (what [`SessionCheck::Lapsed`] reports) as ended with reason `Expired`: the
    /// sessions this call marked, none if another caller (another instance) was first. All
    /// of the user's at once: on Redis any later write to the user's record would drop the
    /// others untold. Their tokens answer as before (`session_revoked`).
    pub(crate) async fn expire(
        &self,
        user_id: &str,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        dispatch!(self, s => s.expire(user_id, now).await)
    }

    /// Sets what is told of the active sessions the store itself drops after their expiry,
    /// never marked by [`Self::expire`]: the memory store's sweep and a login's rewrite of
    /// its user's record; on Redis every write to a user's record (a login, a refresh, a
    /// logout, a last-seen update) that drops a lapsed session of theirs. Each is told by the
    /// one caller whose write dropped it.
    pub(crate) fn on_expired(&self, hook: memory::ExpiryHook) {
        match self {
            Self::Memory(m) => m.on_expired(hook),
            Self::Redis(r) => r.on_expired(hook),
        }
    }

    /// Ends a session knowing only its id (admin API); the session, `None` if there was none
    /// to end.
    pub(crate) async fn end_by_id(
        &self,
        session_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        match user_id_of(session_id) {
            Some(user) => self.end_session(&user, session_id, reason, now).await,
            None => Ok(None),
        }
    }

    /// Ends every active session of `user_id`; how many (the gateway itself wants the
    /// sessions: [`Self::end_all_sessions`]).
    #[cfg(test)]
    pub(crate) async fn end_all(
        &self,
        user_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<u32, StoreError> {
        Ok(self.end_all_sessions(user_id, reason, now).await?.len() as u32)
    }

    /// Ends every active session of `user_id`; the sessions ended.
    pub(crate) async fn end_all_sessions(
        &self,
        user_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        dispatch!(self, s => s.end_all(user_id, reason, now).await)
    }

    /// The active sessions of `user_id`, oldest first.
    pub async fn list(&self, user_id: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        dispatch!(self, s => s.list(user_id, now).await)
    }

    /// One session as stored, ended ones (tombstones) included.
    pub async fn get(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        dispatch!(self, s => s.get(user_id, session_id).await)
    }

    /// Counts a failed login under `key` (e.g. `u:alice`, `ip:203.0.113.7`) and returns the
    /// failures within the current window. The window starts at the first failure and lasts
    /// `window`; a failure after it starts a new one at 1.
    ///
    /// Lock-out is the caller's: `if record_failure(..) >= max { lock(key, duration, now) }`,
    /// and `locked_until` before checking a password.
    pub(crate) async fn record_failure(
        &self,
        key: &str,
        window: Duration,
        now: Millis,
    ) -> Result<u32, StoreError> {
        dispatch!(self, s => s.record_failure(key, window, now).await)
    }

    /// Locks `key` until `now + duration`; returns that time.
    pub async fn lock(
        &self,
        key: &str,
        duration: Duration,
        now: Millis,
    ) -> Result<Millis, StoreError> {
        dispatch!(self, s => s.lock(key, duration, now).await)
    }

    /// When `key`'s lock ends, if it is locked at `now`.
    pub(crate) async fn locked_until(
        &self,
        key: &str,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        dispatch!(self, s => s.locked_until(key, now).await)
    }

    /// The failures counted under `key` in its window as of `now` (0 when it has none or it
    /// is over), without counting one: what decides `login.captcha.after_failures`.
    pub(crate) async fn failures(&self, key: &str, now: Millis) -> Result<u32, StoreError> {
        dispatch!(self, s => s.failures(key, now).await)
    }

    /// Keeps a captcha challenge: its (normalised) `answer` under `id`, live until
    /// `now + ttl`. The memory store keeps at most [`memory::MAX_CAPTCHAS`] (the one closest
    /// to expiry goes first); Redis expires the key after `ttl`.
    pub(crate) async fn put_captcha(
        &self,
        id: &str,
        answer: &str,
        ttl: Duration,
        now: Millis,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_captcha(id, answer, ttl, now).await)
    }

    /// Takes the challenge `id` out of the store, whatever comes of it (each one is answered
    /// once, across instances), and answers its answer if it was live at `now`.
    pub(crate) async fn take_captcha(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.take_captcha(id, now).await)
    }

    /// The answer of the challenge `id` if it is live at `now`, *without* spending it. Nothing
    /// in the gateway calls it: the integration tests solve challenges with it (reading the
    /// store is what an attacker could not do).
    #[doc(hidden)]
    pub async fn captcha_answer(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.captcha_answer(id, now).await)
    }

    /// Takes one count back from `key`'s failures in the current window (an attempt counted
    /// in advance that turned out not to be a failure). Never below zero.
    pub(crate) async fn forgive_one(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.forgive_one(key).await)
    }

    /// Forgets `key`'s failures (after a successful login). A lock stays.
    pub(crate) async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.clear_failures(key).await)
    }

    /// Forgets `key`'s failures *and* its lock (`DELETE /admin/lockouts/{username}`): the
    /// next attempt counts from zero and is not refused.
    pub(crate) async fn unlock(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.unlock(key).await)
    }

    /// Whether this instance hears the other instances' revocations at this moment (memory:
    /// always, it is the only one): while it does not, the Redis store's local cache is
    /// bypassed. Nothing in the gateway calls it: integration tests wait on it after stopping
    /// Redis, since the subscriber notices a moment after.
    #[doc(hidden)]
    pub fn hears_revocations(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(s) => s.hears_revocations(),
        }
    }

    /// Whether the lock-out and captcha counters run on this instance's fallback now (Redis
    /// was unreachable for them at their last use).
    pub(crate) fn lockout_degraded(&self) -> bool {
        match self {
            Self::Memory(_) => false,
            Self::Redis(s) => s.lockout_degraded(),
        }
    }

    /// Is the store reachable (`/readyz`)?
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Ids of sessions as they end, on every instance (Redis pub/sub), and
    /// [`RECHECK_ALL`] when some may have been missed. The local instance's own ends may
    /// arrive twice (directly and through Redis); treat the stream as idempotent. On
    /// `RecvError::Lagged`, re-check everything too.
    pub(crate) fn subscribe_revocations(&self) -> broadcast::Receiver<String> {
        dispatch!(self, s => s.subscribe_revocations())
    }

    /// Active sessions, for the `authgate_sessions_active` gauge. Memory: exact except for
    /// expired sessions not yet swept (at most a minute). Redis: an approximation kept in
    /// counters per expiry hour, updated after each change without waiting (see
    /// [`RedisStore`]).
    pub(crate) async fn active_count(&self, now: Millis) -> Result<u64, StoreError> {
        dispatch!(self, s => s.active_count(now).await)
    }
}

impl From<MemoryStore> for SessionStore {
    fn from(s: MemoryStore) -> Self {
        Self::Memory(s)
    }
}

impl From<RedisStore> for SessionStore {
    fn from(s: RedisStore) -> Self {
        Self::Redis(s)
    }
}

/// Walks an old refresh secret forward up to `steps` rotations; true if it reaches one of the
/// stored hashes, i.e. it is a genuine older token of this session (not a forgery).
pub(crate) fn is_ancestor(
    key: &RefreshKey,
    secret: &ids::Secret,
    steps: u32,
    current: &[u8],
    parent: &[u8],
) -> bool {
    let mut r = *secret;
    for _ in 0..steps.min(THEFT_WALK_LIMIT) {
        r = key.successor(&r);
        let h = ids::token_hash(&r);
        if h == current || h == parent {
            return true;
        }
    }
    false
}
