//! The embedded session store: everything in this process. **Sessions are lost on restart**
//! (every user logs in again) and are not shared between instances; use Redis for either.
//!
//! Layout, tuned for memory (issue 3: at most 300 bytes of RSS per session at a million):
//! 64 shards, each a `std::sync::Mutex` over a map from a keyed 64-bit hash of the user id to
//! that user's blob of session records (`record.rs`), so one user's sessions are one
//! allocation and every operation on a user (kick-out included) is one short critical section.
//! Two user ids whose hashes collide share a blob; records carry the user id and every lookup
//! compares it. Locks are never held across an `.await` (nothing here awaits).
//!
//! Expired sessions and tombstones are dropped lazily (a login rewrites its user's blob
//! without them) and by a sweep every 30 seconds ([`MemoryStore::spawn_sweeper`], until the
//! shutdown signal), which also drops stale lock-out counters and captcha challenges.
//!
//! Captcha challenges are bounded: at most [`MAX_CAPTCHAS`] live at once (a few MB). Each new
//! one first drops the expired ones (oldest expiry first, so that is cheap) and, at the bound,
//! the one closest to expiry, live or not (counted in
//! `authgate_captchas_total{result="evicted"}`): a flood of challenge requests from many
//! addresses can then cost someone an unanswered challenge, never the gateway its memory.
//! The sweep is garbage collection only and runs on the wall clock, not on the gateway's
//! [`crate::clock::Clock`]: every answer is decided from the `now` its caller passes, a
//! gateway's clock is never behind the wall clock (it only moves forward), and expiry only
//! goes one way, so what the sweep finds over is over at the caller's time too. A clock moved
//! ahead only makes entries linger (and `active_count`, a counter the sweep brings down, lag).

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use super::ids::{
    format_sid, format_token, random, sid_of_user, token_hash, ParsedToken, RefreshToken, Secret,
    SidBytes, TokenHash,
};
use super::record::{self, set_time, set_u32, Entry};
use super::{
    is_ancestor, Created, EndReason, Lifetimes, Millis, NewSession, RefreshOutcome, Session,
    SessionCheck, StoreError, StoreSettings, MAX_SESSIONS_PER_USER, MAX_TOMBSTONES_PER_USER,
};
use crate::clock::ms_of;
use crate::shutdown::Signal;

const SHARDS: usize = 64;
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Live captcha challenges kept at most (about 150 bytes each).
pub const MAX_CAPTCHAS: usize = 100_000;

/// The map key is already a keyed SipHash of the user id: hash it no further.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Shard = HashMap<u64, Box<[u8]>, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone, Copy, Default)]
struct Lockout {
    failures: u32,
    window_end: Millis,
    locked_until: Millis,
}

/// Live captcha challenges: the answer and expiry by id, and the ids by expiry (so the
/// expired and the oldest go first without a scan).
#[derive(Default)]
struct Captchas {
    by_id: HashMap<Box<str>, (Box<str>, Millis)>,
    by_expiry: BTreeSet<(Millis, Box<str>)>,
}

impl Captchas {
    /// Drops every challenge expired at `now`.
    fn drop_expired(&mut self, now: Millis) {
        while self.by_expiry.first().is_some_and(|(e, _)| *e <= now) {
            if let Some((_, id)) = self.by_expiry.pop_first() {
                self.by_id.remove(&id);
            }
        }
    }

    /// Keeps one, making room first within `cap`: `true` if a live one had to go.
    fn insert(&mut self, id: &str, answer: &str, expires: Millis, cap: usize, now: Millis) -> bool {
        self.drop_expired(now);
        let mut evicted = false;
        while self.by_id.len() >= cap.max(1) {
            let Some((_, old)) = self.by_expiry.pop_first() else {
                break;
            };
            self.by_id.remove(&old);
            evicted = true;
        }
        if let Some((_, e)) = self.by_id.insert(id.into(), (answer.into(), expires)) {
            // An id drawn twice (2^-128): the old entry's index goes with it.
            self.by_expiry.remove(&(e, id.into()));
        }
        self.by_expiry.insert((expires, id.into()));
        evicted
    }

    /// Removes one, live or not.
    fn take(&mut self, id: &str) -> Option<(Box<str>, Millis)> {
        let (answer, expires) = self.by_id.remove(id)?;
        self.by_expiry.remove(&(expires, id.into()));
        Some((answer, expires))
    }
}

/// The in-process store. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    settings: StoreSettings,
    lockouts: Mutex<HashMap<Box<str>, Lockout>>,
    captchas: Mutex<Captchas>,
    /// [`MAX_CAPTCHAS`], smaller in tests.
    captcha_cap: usize,
    revoked: broadcast::Sender<String>,
    active: AtomicI64,
    /// Told of the active sessions this store drops once their expiry has passed (the
    /// sweep, a login rewriting its user's blob): `[notify]`'s `expired` events.
    on_expired: OnceLock<ExpiryHook>,
}

/// What [`MemoryStore::on_expired`] calls, outside every lock, with the sessions found
/// expired (each once).
pub(crate) type ExpiryHook = Arc<dyn Fn(Vec<Session>) + Send + Sync>;

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("active", &self.inner.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A panic elsewhere never leaves a blob half-written (each is replaced or patched in place by
/// code that does not panic), so a poisoned lock's data is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a refresh found, decided under the lock.
enum Found {
    Done(RefreshOutcome),
    Ended(Session),
    /// Neither the current token nor the parent: maybe an older one (theft), maybe a forgery.
    Unmatched {
        generation: u32,
        current: [u8; 16],
        parent: [u8; 16],
    },
}

impl Found {
    /// Neither token matched: the record's hashes, copied out for the walk after the lock.
    fn unmatched(v: Entry) -> Self {
        let mut current = [0u8; 16];
        let mut parent = [0u8; 16];
        current.copy_from_slice(v.current());
        parent.copy_from_slice(v.parent());
        Found::Unmatched {
            generation: v.generation(),
            current,
            parent,
        }
    }
}

/// A refresh's token and what is derived from it, all hashed before any lock is taken.
struct RefreshAsk<'a> {
    token: &'a ParsedToken,
    presented: TokenHash,
    next: Secret,
    next_hash: TokenHash,
    grace: u64,
    lifetimes: Lifetimes,
    now: Millis,
}

impl<'a> RefreshAsk<'a> {
    /// The presented token's hash, its successor and the successor's hash, the grace.
    fn new(
        token: &'a ParsedToken,
        settings: &StoreSettings,
        lifetimes: Lifetimes,
        now: Millis,
    ) -> Self {
        let next = settings.refresh_key.successor(&token.secret);
        Self {
            token,
            presented: token_hash(&token.secret),
            next_hash: token_hash(&next),
            next,
            grace: ms_of(settings.reuse_grace),
            lifetimes,
            now,
        }
    }

    /// The successor, as the refresh token handed back.
    fn next_token(&self) -> RefreshToken {
        format_token(&self.token.user_id, &self.token.sid, &self.next)
    }
}

/// The current token presented: the record rotates to the successor, unless its lifetimes
/// are over; `e` is borrowed from the locked shard.
fn rotate(e: &mut [u8], ask: &RefreshAsk) -> Result<Found, StoreError> {
    let v = Entry(e);
    let generation = v.generation();
    let expires = ask.lifetimes.expiry(v.created(), ask.now);
    if expires <= ask.now {
        return Ok(Found::Done(RefreshOutcome::Invalid));
    }
    e.copy_within(record::CURRENT..record::CURRENT + 16, record::PARENT);
    e[record::CURRENT..record::CURRENT + 16].copy_from_slice(&ask.next_hash);
    set_time(e, record::ROTATED, ask.now);
    set_u32(e, record::GENERATION, generation.saturating_add(1));
    set_time(e, record::SEEN, ask.now);
    set_time(e, record::EXPIRES, expires);
    Ok(Found::Done(RefreshOutcome::Rotated {
        session: Entry(e).to_session()?,
        token: ask.next_token(),
    }))
}

/// Which of the user's live sessions a new login ends: the oldest beyond the platform's
/// limit, then the oldest beyond [`MAX_SESSIONS_PER_USER`].
fn victims(
    entries: &[Vec<u8>],
    new: &NewSession,
    max_per_platform: Option<u32>,
    now: Millis,
) -> Vec<usize> {
    let mine = |e: &Entry| e.user_id() == new.user_id.as_bytes() && e.is_live(now);
    let by_age = |idx: &mut Vec<usize>, entries: &[Vec<u8>]| {
        idx.sort_by_key(|&i| (Entry(&entries[i]).created(), i));
    };
    let mut same: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            let e = Entry(&entries[i]);
            mine(&e) && e.platform() == new.platform.as_bytes()
        })
        .collect();
    by_age(&mut same, entries);
    let mut victims = Vec::new();
    if let Some(max) = max_per_platform {
        let excess = (same.len() + 1).saturating_sub(max.max(1) as usize);
        victims.extend_from_slice(&same[..excess]);
    }
    let mut all: Vec<usize> = (0..entries.len())
        .filter(|&i| mine(&Entry(&entries[i])) && !victims.contains(&i))
        .collect();
    by_age(&mut all, entries);
    let excess = (all.len() + 1).saturating_sub(MAX_SESSIONS_PER_USER as usize);
    victims.extend_from_slice(&all[..excess]);
    victims
}

/// Which tombstones to forget: the oldest beyond [`MAX_TOMBSTONES_PER_USER`].
fn forgotten(entries: &[Vec<u8>]) -> Vec<usize> {
    let mut dead: Vec<usize> = (0..entries.len())
        .filter(|&i| Entry(&entries[i]).state() != record::STATE_ACTIVE)
        .collect();
    dead.sort_by_key(|&i| (Entry(&entries[i]).expires(), i));
    let excess = dead.len().saturating_sub(MAX_TOMBSTONES_PER_USER as usize);
    dead.truncate(excess);
    dead
}

/// The user's new blob: the records kept, in order, then the new one.
fn rebuild(entries: &[Vec<u8>], forget: &[usize], rec: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(entries.iter().map(Vec::len).sum::<usize>() + rec.len());
    for (i, e) in entries.iter().enumerate() {
        if !forget.contains(&i) {
            blob.extend_from_slice(e);
        }
    }
    blob.extend_from_slice(rec);
    blob
}

impl MemoryStore {
    /// A new, empty store. Nothing sweeps it until [`Self::spawn_sweeper`] (the app does
    /// that); or call [`Self::sweep`].
    pub(crate) fn new(settings: StoreSettings) -> Self {
        Self::with_captcha_cap(settings, MAX_CAPTCHAS)
    }

    /// A new store that keeps at most `cap` captcha challenges.
    pub(crate) fn with_captcha_cap(settings: StoreSettings, cap: usize) -> Self {
        let inner = Arc::new(Inner {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            settings,
            lockouts: Mutex::new(HashMap::new()),
            captchas: Mutex::new(Captchas::default()),
            captcha_cap: cap,
            revoked: broadcast::channel(1024).0,
            active: AtomicI64::new(0),
            on_expired: OnceLock::new(),
        });
        Self { inner }
    }

    /// Starts the periodic sweep in a task of the current runtime; it stops on `stop` (the
    /// shutdown signal) or once the store is dropped.
    pub(crate) fn spawn_sweeper(&self, stop: Signal) {
        tokio::spawn(sweeper(Arc::downgrade(&self.inner), stop));
    }

    /// Sets what is told of the sessions dropped after their expiry (once; later calls are
    /// ignored).
    pub(crate) fn on_expired(&self, hook: ExpiryHook) {
        let _ = self.inner.on_expired.set(hook);
    }

    fn locate(&self, user_id: &str) -> (&Mutex<Shard>, u64) {
        let h = self.inner.hasher.hash_one(user_id);
        // Bits 32.. pick the shard: the map itself uses the low bits (bucket) and the top
        // seven (tag), which must stay well spread within a shard.
        (&self.inner.shards[(h >> 32) as usize % SHARDS], h)
    }

    fn tombstone_until(&self, now: Millis) -> Millis {
        now + self.inner.settings.tombstone_ttl
    }

    fn publish(&self, sids: impl IntoIterator<Item = String>) {
        for sid in sids {
            // No receivers is fine.
            let _ = self.inner.revoked.send(sid);
        }
    }

    /// Ends the record if it is live; the session as ended.
    fn end_record(&self, e: &mut [u8], reason: EndReason, now: Millis) -> Option<Session> {
        if !Entry(e).is_live(now) {
            return None;
        }
        e[record::STATE] = record::reason_code(reason);
        set_time(e, record::EXPIRES, self.tombstone_until(now));
        self.inner.active.fetch_sub(1, Ordering::Relaxed);
        Entry(e).to_session().ok()
    }

    pub(crate) async fn create(
        &self,
        new: NewSession,
        max_per_platform: Option<u32>,
        lifetimes: Lifetimes,
        now: Millis,
    ) -> Result<Created, StoreError> {
        let sid: SidBytes = random();
        let secret: Secret = random();
        let rec = record::encode(
            &new,
            &sid,
            &token_hash(&secret),
            now,
            lifetimes.expiry(now, now),
        )?;
        let session = Entry(&rec).to_session()?;
        let (shard, key) = self.locate(&new.user_id);
        let mut lapsed = Vec::new();
        let ended = {
            let mut map = lock(shard);
            self.admit(
                &mut map,
                key,
                &new,
                max_per_platform,
                &rec,
                now,
                &mut lapsed,
            )?
        };
        self.inner.tell_expired(lapsed);
        let (kicked, kicked_platforms): (Vec<String>, Vec<String>) =
            ended.into_iter().map(|s| (s.id, s.platform)).unzip();
        self.publish(kicked.iter().cloned());
        Ok(Created {
            refresh_token: format_token(&new.user_id, &sid, &secret),
            session,
            kicked,
            kicked_platforms,
        })
    }

    /// Rewrites the user's blob in the locked shard `map` with the new record `rec`: expired
    /// records dropped, sessions over the limits ended, old tombstones forgotten; the
    /// sessions ended. The active sessions dropped as expired go to `lapsed`.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        map: &mut Shard,
        key: u64,
        new: &NewSession,
        max_per_platform: Option<u32>,
        rec: &[u8],
        now: Millis,
        lapsed: &mut Vec<Session>,
    ) -> Result<Vec<Session>, StoreError> {
        let old = map.get(&key).map(|b| &b[..]).unwrap_or_default();
        let mut entries = self.unexpired(old, now, lapsed)?;
        let mut kicked = Vec::new();
        for i in victims(&entries, new, max_per_platform, now) {
            if let Some(s) = self.end_record(&mut entries[i], EndReason::Replaced, now) {
                kicked.push(s);
            }
        }
        let blob = rebuild(&entries, &forgotten(&entries), rec);
        map.insert(key, blob.into_boxed_slice());
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        Ok(kicked)
    }

    /// The records of `blob` not yet expired, copied out; an active one that expired leaves
    /// the active count and goes to `lapsed`.
    fn unexpired(
        &self,
        blob: &[u8],
        now: Millis,
        lapsed: &mut Vec<Session>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut entries: Vec<Vec<u8>> = Vec::new();
        for r in record::ranges(blob)? {
            let e = Entry(&blob[r.clone()]);
            if e.expires() > now {
                entries.push(blob[r].to_vec());
            } else if e.state() == record::STATE_ACTIVE {
                self.inner.active.fetch_sub(1, Ordering::Relaxed);
                lapsed.extend(e.to_session().ok());
            }
        }
        Ok(entries)
    }

    pub(crate) async fn check(
        &self,
        user_id: &str,
        session_id: &str,
        now: Millis,
    ) -> Result<SessionCheck, StoreError> {
        let Some(sid) = sid_of_user(user_id, session_id) else {
            return Ok(SessionCheck::Unknown);
        };
        let (shard, key) = self.locate(user_id);
        let mut map = lock(shard);
        let Some(doc) = map.get_mut(&key) else {
            return Ok(SessionCheck::Unknown);
        };
        let Some(r) = record::find(doc, user_id, &sid)? else {
            return Ok(SessionCheck::Unknown);
        };
        let e = &mut doc[r];
        let answer = Entry(e).check(now);
        if answer == SessionCheck::Active && Entry(e).seen() < now {
            set_time(e, record::SEEN, now);
        }
        Ok(answer)
    }

    pub(crate) async fn refresh(
        &self,
        token: &str,
        lifetimes: Lifetimes,
        now: Millis,
    ) -> Result<RefreshOutcome, StoreError> {
        let Some(p) = ParsedToken::parse(token) else {
            return Ok(RefreshOutcome::Invalid);
        };
        let ask = RefreshAsk::new(&p, &self.inner.settings, lifetimes, now);
        let found = self.refresh_under_lock(&ask)?;
        self.settle_refresh(&ask, found)
    }

    /// What the presented token's record says, decided in one critical section of its shard.
    fn refresh_under_lock(&self, ask: &RefreshAsk) -> Result<Found, StoreError> {
        let p = ask.token;
        let (shard, key) = self.locate(&p.user_id);
        let mut map = lock(shard);
        let Some(doc) = map.get_mut(&key) else {
            return Ok(Found::Done(RefreshOutcome::Invalid));
        };
        let Some(r) = record::find(doc, &p.user_id, &p.sid)? else {
            return Ok(Found::Done(RefreshOutcome::Invalid));
        };
        self.decide_refresh(&mut doc[r], ask)
    }

    /// Which token the record's session was presented (current, parent or neither), and what
    /// that does to it; `e` is borrowed from the locked shard.
    fn decide_refresh(&self, e: &mut [u8], ask: &RefreshAsk) -> Result<Found, StoreError> {
        let v = Entry(e);
        if !v.is_live(ask.now) {
            Ok(Found::Done(RefreshOutcome::Invalid))
        } else if v.current() == ask.presented {
            rotate(e, ask)
        } else if v.generation() > 0 && v.parent() == ask.presented {
            self.parent_presented(e, ask)
        } else {
            Ok(Found::unmatched(v))
        }
    }

    /// The parent presented again: a lost answer within the grace (the same successor again),
    /// theft after it; `e` is borrowed from the locked shard.
    fn parent_presented(&self, e: &mut [u8], ask: &RefreshAsk) -> Result<Found, StoreError> {
        let v = Entry(e);
        // The configured grace is the bound, to the millisecond: honoured at exactly
        // `grace` after the rotation, theft a millisecond later.
        Ok(if ask.now.since(v.rotated()) > ask.grace {
            match self.end_record(e, EndReason::Theft, ask.now) {
                Some(s) => Found::Ended(s),
                None => Found::Done(RefreshOutcome::Invalid),
            }
        } else if v.current() != ask.next_hash {
            // Only a different refresh key can get here (a restart with a new one).
            tracing::warn!(
                "refresh token parent reused within grace, but its successor does not \
                 match: was the refresh key changed?"
            );
            Found::Done(RefreshOutcome::Invalid)
        } else {
            Found::Done(RefreshOutcome::Grace {
                session: v.to_session()?,
                token: ask.next_token(),
            })
        })
    }

    /// The outcome of what was found, after the lock: revocations published, and an
    /// unmatched token walked back to tell theft from forgery.
    fn settle_refresh(&self, ask: &RefreshAsk, found: Found) -> Result<RefreshOutcome, StoreError> {
        match found {
            Found::Done(outcome) => Ok(outcome),
            Found::Ended(session) => {
                self.publish([session.id.clone()]);
                Ok(RefreshOutcome::Theft { session })
            }
            Found::Unmatched {
                generation,
                current,
                parent,
            } => self.older_token(ask, generation, &current, &parent),
        }
    }

    /// An older token of the session is theft (the session ends), anything else a forgery.
    fn older_token(
        &self,
        ask: &RefreshAsk,
        generation: u32,
        current: &[u8; 16],
        parent: &[u8; 16],
    ) -> Result<RefreshOutcome, StoreError> {
        let p = ask.token;
        // Walked outside the lock; the session may rotate meanwhile, but a token
        // that was older then is older still.
        let key_ = &self.inner.settings.refresh_key;
        if !is_ancestor(key_, &p.secret, generation, current, parent) {
            return Ok(RefreshOutcome::Invalid);
        }
        let sid = format_sid(&p.user_id, &p.sid);
        match self.end_one(&p.user_id, &p.sid, EndReason::Theft, ask.now)? {
            Some(session) => {
                self.publish([sid]);
                Ok(RefreshOutcome::Theft { session })
            }
            None => Ok(RefreshOutcome::Invalid),
        }
    }

    fn end_one(
        &self,
        user_id: &str,
        sid: &SidBytes,
        reason: EndReason,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        let (shard, key) = self.locate(user_id);
        let mut map = lock(shard);
        let Some(doc) = map.get_mut(&key) else {
            return Ok(None);
        };
        let Some(r) = record::find(doc, user_id, sid)? else {
            return Ok(None);
        };
        Ok(self.end_record(&mut doc[r], reason, now))
    }

    pub async fn end(
        &self,
        user_id: &str,
        session_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        let Some(sid) = sid_of_user(user_id, session_id) else {
            return Ok(None);
        };
        let ended = self.end_one(user_id, &sid, reason, now)?;
        self.publish(ended.iter().map(|s| s.id.clone()));
        Ok(ended)
    }

    pub(crate) async fn end_all(
        &self,
        user_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        let (shard, key) = self.locate(user_id);
        let mut ended = Vec::new();
        {
            let mut map = lock(shard);
            let Some(doc) = map.get_mut(&key) else {
                return Ok(ended);
            };
            for r in record::ranges(doc)? {
                let e = &mut doc[r];
                if Entry(e).user_id() == user_id.as_bytes() {
                    ended.extend(self.end_record(e, reason, now));
                }
            }
        }
        self.publish(ended.iter().map(|s| s.id.clone()));
        Ok(ended)
    }

    /// Marks every session of `user_id` still active but past its expiry as ended
    /// (`Expired`); the sessions this call marked.
    pub(crate) async fn expire(
        &self,
        user_id: &str,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        let (shard, key) = self.locate(user_id);
        let mut ended = Vec::new();
        {
            let mut map = lock(shard);
            let Some(doc) = map.get_mut(&key) else {
                return Ok(ended);
            };
            for r in record::ranges(doc)? {
                let e = &mut doc[r];
                let v = Entry(e);
                if v.user_id() != user_id.as_bytes()
                    || v.state() != record::STATE_ACTIVE
                    || v.expires() > now
                {
                    continue;
                }
                e[record::STATE] = record::reason_code(EndReason::Expired);
                set_time(e, record::EXPIRES, self.tombstone_until(now));
                self.inner.active.fetch_sub(1, Ordering::Relaxed);
                ended.extend(Entry(e).to_session().ok());
            }
        }
        self.publish(ended.iter().map(|s| s.id.clone()));
        Ok(ended)
    }

    pub async fn list(&self, user_id: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        let (shard, key) = self.locate(user_id);
        let map = lock(shard);
        let Some(doc) = map.get(&key) else {
            return Ok(Vec::new());
        };
        record::live_sessions(doc, user_id, now)
    }

    pub async fn get(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        let Some(sid) = sid_of_user(user_id, session_id) else {
            return Ok(None);
        };
        let (shard, key) = self.locate(user_id);
        let map = lock(shard);
        let Some(doc) = map.get(&key) else {
            return Ok(None);
        };
        record::session(doc, user_id, &sid)
    }

    pub(crate) async fn record_failure(
        &self,
        key: &str,
        window: Duration,
        now: Millis,
    ) -> Result<u32, StoreError> {
        let mut map = lock(&self.inner.lockouts);
        let l = map.entry(key.into()).or_default();
        if l.window_end <= now {
            l.failures = 1;
            l.window_end = now + window;
        } else {
            l.failures = l.failures.saturating_add(1);
        }
        Ok(l.failures)
    }

    pub async fn lock(
        &self,
        key: &str,
        duration: Duration,
        now: Millis,
    ) -> Result<Millis, StoreError> {
        let until = now + duration;
        lock(&self.inner.lockouts)
            .entry(key.into())
            .or_default()
            .locked_until = until;
        Ok(until)
    }

    pub(crate) async fn locked_until(
        &self,
        key: &str,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        Ok(lock(&self.inner.lockouts)
            .get(key)
            .map(|l| l.locked_until)
            .filter(|&until| until > now))
    }

    pub(crate) async fn failures(&self, key: &str, now: Millis) -> Result<u32, StoreError> {
        Ok(lock(&self.inner.lockouts)
            .get(key)
            .filter(|l| l.window_end > now)
            .map_or(0, |l| l.failures))
    }

    pub(crate) async fn put_captcha(
        &self,
        id: &str,
        answer: &str,
        ttl: Duration,
        now: Millis,
    ) -> Result<(), StoreError> {
        let evicted =
            lock(&self.inner.captchas).insert(id, answer, now + ttl, self.inner.captcha_cap, now);
        if evicted {
            metrics::counter!("authgate_captchas_total", "result" => "evicted").increment(1);
        }
        Ok(())
    }

    pub(crate) async fn take_captcha(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        let taken = lock(&self.inner.captchas).take(id);
        Ok(taken
            .filter(|(_, expires)| *expires > now)
            .map(|(answer, _)| answer.into()))
    }

    pub(crate) async fn captcha_answer(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.inner.captchas)
            .by_id
            .get(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(answer, _)| answer.to_string()))
    }

    /// Captcha challenges held, expired ones not yet dropped included.
    pub fn captcha_count(&self) -> usize {
        lock(&self.inner.captchas).by_id.len()
    }

    pub(crate) async fn forgive_one(&self, key: &str) -> Result<(), StoreError> {
        if let Some(l) = lock(&self.inner.lockouts).get_mut(key) {
            l.failures = l.failures.saturating_sub(1);
        }
        Ok(())
    }

    pub(crate) async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        if let Some(l) = lock(&self.inner.lockouts).get_mut(key) {
            l.failures = 0;
            l.window_end = Millis::ZERO;
        }
        Ok(())
    }

    pub(crate) async fn unlock(&self, key: &str) -> Result<(), StoreError> {
        lock(&self.inner.lockouts).remove(key);
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    pub(crate) fn subscribe_revocations(&self) -> broadcast::Receiver<String> {
        self.inner.revoked.subscribe()
    }

    pub(crate) async fn active_count(&self, _now: Millis) -> Result<u64, StoreError> {
        Ok(self.inner.active.load(Ordering::Relaxed).max(0) as u64)
    }

    /// Drops expired sessions, tombstones, lock-out counters and captcha challenges as of
    /// `now`. Runs every 30 seconds by itself inside a Tokio runtime.
    pub fn sweep(&self, now: Millis) {
        self.inner.sweep(now);
    }
}

impl Inner {
    /// Tells the expiry hook (if any) of `lapsed`; called with no lock held.
    fn tell_expired(&self, lapsed: Vec<Session>) {
        if lapsed.is_empty() {
            return;
        }
        if let Some(hook) = self.on_expired.get() {
            hook(lapsed);
        }
    }

    fn sweep(&self, now: Millis) {
        for shard in self.shards.iter() {
            let mut lapsed = Vec::new();
            let mut map = lock(shard);
            map.retain(|_, doc| {
                let Ok(ranges) = record::ranges(doc) else {
                    return true;
                };
                if ranges
                    .iter()
                    .all(|r| Entry(&doc[r.clone()]).expires() > now)
                {
                    return true;
                }
                let mut kept = Vec::with_capacity(doc.len());
                for r in ranges {
                    let e = Entry(&doc[r.clone()]);
                    if e.expires() > now {
                        kept.extend_from_slice(&doc[r]);
                    } else if e.state() == record::STATE_ACTIVE {
                        self.active.fetch_sub(1, Ordering::Relaxed);
                        lapsed.extend(e.to_session().ok());
                    }
                }
                *doc = kept.into_boxed_slice();
                !doc.is_empty()
            });
            drop(map);
            self.tell_expired(lapsed);
        }
        lock(&self.lockouts).retain(|_, l| l.window_end > now || l.locked_until > now);
        lock(&self.captchas).drop_expired(now);
    }
}

async fn sweeper(store: Weak<Inner>, mut stop: Signal) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.signalled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        inner.sweep(Millis::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::RefreshKey;

    fn session(user: &str) -> NewSession {
        NewSession {
            user_id: user.into(),
            user_name: "user".into(),
            tenant: None,
            roles: vec![],
            platform: "web".into(),
            device: None,
            ip: "203.0.113.7".into(),
            user_agent: None,
        }
    }

    /// What the callers at `now` see: the sessions of `old` and `new`, the lock, `new`'s list.
    async fn seen(
        store: &MemoryStore,
        ids: [&str; 2],
        now: Millis,
    ) -> (SessionCheck, SessionCheck, Option<Millis>, usize) {
        (
            store.check("old", ids[0], now).await.unwrap(),
            store.check("new", ids[1], now).await.unwrap(),
            store.locked_until("u:alice", now).await.unwrap(),
            store.list("new", now).await.unwrap().len(),
        )
    }

    fn settings() -> StoreSettings {
        StoreSettings {
            refresh_key: RefreshKey::new(&[7; 32]),
            reuse_grace: Duration::from_secs(10),
            tombstone_ttl: Duration::from_secs(300),
            local_cache: None,
        }
    }

    /// A flood of challenges never holds more than the bound: the expired go first, then the
    /// one closest to expiry; the sweep drops the expired ones too.
    #[tokio::test]
    async fn captcha_challenges_are_bounded() {
        let store = MemoryStore::with_captcha_cap(settings(), 3);
        let t = Millis::now();
        let ttl = Duration::from_secs(60);
        let put = |id: &'static str, at: Millis| {
            let store = store.clone();
            async move { store.put_captcha(id, id, ttl, at).await.unwrap() }
        };
        for (i, id) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            put(id, t + Duration::from_secs(i as u64)).await;
            assert!(store.captcha_count() <= 3);
        }
        assert_eq!(store.captcha_count(), 3);
        // The two oldest went; the rest answer.
        let now = t + Duration::from_secs(5);
        assert_eq!(store.take_captcha("a", now).await.unwrap(), None);
        assert_eq!(store.take_captcha("b", now).await.unwrap(), None);
        assert_eq!(
            store.take_captcha("c", now).await.unwrap().as_deref(),
            Some("c")
        );
        assert_eq!(store.captcha_count(), 2, "taken means gone");
        // Once d and e are over, a new one drops them without evicting anything live.
        let later = t + Duration::from_secs(4) + ttl;
        put("f", later).await;
        assert_eq!(store.captcha_count(), 1);
        assert_eq!(
            store.captcha_answer("f", later).await.unwrap().as_deref(),
            Some("f")
        );
        // The sweep drops what is over by its time.
        store.sweep(later + ttl);
        assert_eq!(store.captcha_count(), 0);
    }

    /// The sweeper's wall clock behind a gateway's clock moved 2 h ahead (a test's
    /// `Clock::advance`): the sweep changes none of the answers at the gateway's time.
    #[tokio::test]
    async fn a_sweep_on_the_wall_clock_changes_nothing_a_clock_ahead_of_it_sees() {
        let store = MemoryStore::new(StoreSettings {
            refresh_key: RefreshKey::new(&[7; 32]),
            reuse_grace: Duration::from_secs(10),
            tombstone_ttl: Duration::from_secs(300),
            local_cache: None,
        });
        let hour = Duration::from_secs(3600);
        let life = Lifetimes {
            refresh_ttl: hour,
            max_lifetime: None,
        };
        let wall = Millis::now();
        let ahead = wall + 2 * hour;
        // Logged in before the clock moved: over at `ahead`, not yet by the wall clock (another
        // user, so that the next login does not drop it on its own).
        let old = store
            .create(session("old"), None, life, wall)
            .await
            .unwrap();
        // Logged in, locked and failed after it: live at `ahead`, and so by the wall clock too.
        let new = store
            .create(session("new"), None, life, ahead)
            .await
            .unwrap();
        let minute = Duration::from_secs(60);
        store.lock("u:alice", 10 * minute, ahead).await.unwrap();
        assert_eq!(
            store.record_failure("ip:x", minute, ahead).await.unwrap(),
            1
        );
        let ids = [old.session.id.as_str(), new.session.id.as_str()];

        let before = seen(&store, ids, ahead).await;
        assert_eq!(
            before,
            (
                SessionCheck::Lapsed,
                SessionCheck::Active,
                Some(ahead + 10 * minute),
                1
            )
        );
        store.sweep(Millis::now());
        assert_eq!(seen(&store, ids, ahead).await, before);
        let later = ahead + Duration::from_millis(1);
        assert_eq!(
            store.record_failure("ip:x", minute, later).await.unwrap(),
            2,
            "the failure window outlived the sweep"
        );
        assert_eq!(store.active_count(ahead).await.unwrap(), 2, "lags, as said");

        // A sweep at the gateway's own time drops the ended session, and nothing live.
        store.sweep(ahead);
        let (gone, live, lock, listed) = seen(&store, ids, ahead).await;
        assert_eq!(gone, SessionCheck::Unknown);
        assert_eq!((live, lock, listed), (before.1, before.2, before.3));
        assert_eq!(store.active_count(ahead).await.unwrap(), 1);
    }
}
