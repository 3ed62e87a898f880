//! Login lock-out and the flood guard in front of Argon2.
//!
//! [`Lockout`] is the `[login.lockout]` policy: failed logins are counted per username
//! (`u:<username, trimmed and lowercased>`) and per client IP (`ip:<ip>`) in the session store, so every
//! gateway instance sees the same counts; a key whose failures within `window` reach
//! `max_failures` (username) or `max_failures_per_ip` (IP) is locked for `duration`. A locked
//! key answers `429 account_locked` with `Retry-After` *before* any password is looked at, so
//! the right password does not help. The decisions themselves are pure functions
//! ([`reaches_limit`], [`retry_after`]) so they can be table-tested without a store. An admin
//! clears one username's count and lock with [`Lockout::unlock`].
//!
//! [`FloodGuard`] is the cheap first line: a fixed-memory per-IP rate estimate (pingora-limits
//! [`Rate`], a count-min sketch over 1 s windows) that refuses an IP's attempts beyond
//! [`FLOOD_LIMIT_PER_SECOND`] before they reach the store or Argon2. Behind it,
//! [`verify_slot`] bounds concurrent Argon2 verifications to the number of CPUs, so a flood
//! from many IPs queues instead of eating every core, and gives up after [`VERIFY_QUEUE_WAIT`].

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use pingora_limits::rate::Rate;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::session::{Millis, SessionStore, StoreError};

/// Login attempts one client IP may make per second before [`FloodGuard::allow`] refuses it.
///
/// Far above what a person types (or a page retries) and far below what a password-guessing
/// script sends; each refused attempt costs a few atomic increments instead of an Argon2
/// verification (tens of milliseconds of a core) and two store round trips. Several users
/// behind one NAT share the budget, hence not lower.
pub(crate) const FLOOD_LIMIT_PER_SECOND: u32 = 20;

/// `Retry-After` for an attempt refused because as many others are still being checked as
/// the limit allows.
pub(crate) const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// How long a login waits for a free Argon2 slot before it gives up (`LoginOutcome::Busy`).
pub(crate) const VERIFY_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Usernames longer than this are cut (at a character boundary) in lock-out keys, so a
/// 64 KiB username cannot make a 64 KiB store key. Keys that only differ beyond it share a
/// counter, which can only lock sooner.
const MAX_KEY_USERNAME_BYTES: usize = 256;

/// The store key of a username's failure counter: `u:<username, trimmed and lowercased>`
/// (contract §5: ` Alice` and `alice` are one account to lock). The store adds its own prefix
/// (`authgate:lock:` on Redis).
pub(crate) fn user_key(username: &str) -> String {
    let lower = username.trim().to_lowercase();
    let mut end = lower.len().min(MAX_KEY_USERNAME_BYTES);
    while !lower.is_char_boundary(end) {
        end -= 1;
    }
    format!("u:{}", &lower[..end])
}

/// The store key of a client IP's failure counter: `ip:<ip>`. IPv4-mapped IPv6 addresses are
/// folded to IPv4 so one client has one key.
pub(crate) fn ip_key(ip: IpAddr) -> String {
    format!("ip:{}", ip.to_canonical())
}

/// Do `failures` within the window reach `limit`? (A limit of 0 never locks; config requires
/// at least 1.)
pub(crate) fn reaches_limit(failures: u32, limit: u32) -> bool {
    limit > 0 && failures >= limit
}

/// How long until the latest of the given locks ends, if any is still in force at `now`, in
/// whole seconds for `Retry-After`: rounded up, so a client that waits as told is never
/// refused again by the same lock, and at least one second, so it never says 0.
pub(crate) fn retry_after(
    locked_until: impl IntoIterator<Item = Option<Millis>>,
    now: Millis,
) -> Option<Duration> {
    locked_until
        .into_iter()
        .flatten()
        .filter_map(|until| until.secs_until(now))
        .max()
        .map(Duration::from_secs)
}

/// The `[login.lockout]` policy over the session store's counters.
///
/// The caller's order for one login: [`FloodGuard::allow`] → [`Lockout::check`] (locked: 429,
/// the password is not looked at) → [`Lockout::reserve`] (counts the attempt first, so parallel
/// guesses cannot all slip past the check; over the limit: 429) → authenticate →
/// [`Lockout::record_failure`] (invalid credentials, or a 401/403 relayed from the upstream
/// login), [`Lockout::record_success`], or [`Lockout::release`] (neither).
#[derive(Debug, Clone)]
pub(crate) struct Lockout {
    cfg: crate::config::Lockout,
}

impl Lockout {
    pub(crate) fn new(cfg: &crate::config::Lockout) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// Is the username or the IP locked at `now`? `Some(retry after)` if so.
    pub(crate) async fn check(
        &self,
        store: &SessionStore,
        username: Option<&str>,
        ip: IpAddr,
        now: Millis,
    ) -> Result<Option<Duration>, StoreError> {
        let ip_key = ip_key(ip);
        let ip_lock = store.locked_until(&ip_key, now);
        let user_lock = async {
            match username {
                Some(u) => store.locked_until(&user_key(u), now).await,
                None => Ok(None),
            }
        };
        let (ip_lock, user_lock) = tokio::join!(ip_lock, user_lock);
        Ok(retry_after([ip_lock?, user_lock?], now))
    }

    /// Counts this attempt against the IP and the username (if known) *before* any password
    /// is looked at, so guesses sent in parallel cannot all pass [`Lockout::check`] together:
    /// an attempt beyond a limit while the others are in flight is refused unverified (429,
    /// retry after a second) and takes nothing; the failures among those checked lock the key
    /// as usual.
    pub(crate) async fn reserve(
        &self,
        store: &SessionStore,
        username: Option<&str>,
        ip: IpAddr,
        now: Millis,
    ) -> Result<Reservation, StoreError> {
        let window = self.cfg.window;
        let ip_count = store.record_failure(&ip_key(ip), window, now).await?;
        let user_count = match username {
            Some(u) => Some(store.record_failure(&user_key(u), window, now).await?),
            None => None,
        };
        let over_ip = ip_count > self.cfg.max_failures_per_ip;
        let over_user = user_count.is_some_and(|n| n > self.cfg.max_failures);
        if over_ip || over_user {
            // Failures that reached a limit locked the key (and `check` refused before we got
            // here), so being over it now means other attempts are still in flight: refuse
            // this one without locking (a burst of correct logins must not lock an account)
            // and give back what it took.
            self.release(store, username, ip).await?;
            return Ok(Reservation {
                refused: Some(IN_FLIGHT_RETRY),
                ip_count,
                user_count,
            });
        }
        // An attempt that passed `check` just before another one's failure locked the key
        // would otherwise count from zero again (locking clears the count): look once more.
        if let Some(wait) = self.check(store, username, ip, now).await? {
            self.release(store, username, ip).await?;
            return Ok(Reservation {
                refused: Some(wait),
                ip_count,
                user_count,
            });
        }
        Ok(Reservation {
            refused: None,
            ip_count,
            user_count,
        })
    }

    /// Locks `key` for `duration`; its count starts afresh once the lock is over.
    async fn lock(
        &self,
        store: &SessionStore,
        key: &str,
        now: Millis,
    ) -> Result<Millis, StoreError> {
        let until = store.lock(key, self.cfg.duration, now).await?;
        store.clear_failures(key).await?;
        Ok(until)
    }

    /// The reserved attempt failed (it is already counted): locks whichever key it brought to
    /// its limit. `Some(retry after)` if it locked something.
    pub(crate) async fn record_failure(
        &self,
        store: &SessionStore,
        username: Option<&str>,
        ip: IpAddr,
        reservation: &Reservation,
        now: Millis,
    ) -> Result<Option<Duration>, StoreError> {
        let mut until = Vec::with_capacity(2);
        if reaches_limit(reservation.ip_count, self.cfg.max_failures_per_ip) {
            until.push(Some(self.lock(store, &ip_key(ip), now).await?));
        }
        if let (Some(u), Some(n)) = (username, reservation.user_count) {
            if reaches_limit(n, self.cfg.max_failures) {
                until.push(Some(self.lock(store, &user_key(u), now).await?));
            }
        }
        Ok(retry_after(until, now))
    }

    /// The reserved attempt succeeded: the username's failures are forgotten, and the IP gets
    /// back the one count the attempt took (its earlier failures stay: one valid account must
    /// not reset the budget of a script guessing others from that IP).
    pub(crate) async fn record_success(
        &self,
        store: &SessionStore,
        username: Option<&str>,
        ip: IpAddr,
    ) -> Result<(), StoreError> {
        store.forgive_one(&ip_key(ip)).await?;
        match username {
            Some(u) => store.clear_failures(&user_key(u)).await,
            None => Ok(()),
        }
    }

    /// Clears `username`'s failures and lock at once (`DELETE /admin/lockouts/{username}`),
    /// keyed exactly as counting keys it ([`user_key`]). The per-IP counters are left alone: they guard against a script, not one account.
    pub(crate) async fn unlock(
        &self,
        store: &SessionStore,
        username: &str,
    ) -> Result<(), StoreError> {
        store.unlock(&user_key(username)).await
    }

    /// An attempt that was neither a success nor a failure (bad request, upstream down):
    /// gives back the counts it took.
    pub(crate) async fn release(
        &self,
        store: &SessionStore,
        username: Option<&str>,
        ip: IpAddr,
    ) -> Result<(), StoreError> {
        store.forgive_one(&ip_key(ip)).await?;
        match username {
            Some(u) => store.forgive_one(&user_key(u)).await,
            None => Ok(()),
        }
    }
}

/// What [`Lockout::reserve`] counted for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// Over a limit: refused without looking at the password, retry after this long.
    pub refused: Option<Duration>,
    /// Attempts of this IP within the window, this one included.
    pub ip_count: u32,
    /// The same for the username, when the body named one.
    pub user_count: Option<u32>,
}

/// Fixed-memory per-IP login rate limit (about 64 KiB whatever the number of IPs).
///
/// A count-min sketch can only over-count: under a flood from very many IPs an innocent IP
/// may share a cell with a noisy one and be refused for the rest of that second. Keep one
/// guard for the process (it need not follow config reloads).
pub(crate) struct FloodGuard {
    rate: Rate,
    limit: u32,
}

impl Default for FloodGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl FloodGuard {
    /// [`FLOOD_LIMIT_PER_SECOND`] attempts per IP per second.
    pub(crate) fn new() -> Self {
        Self::with_limit(FLOOD_LIMIT_PER_SECOND)
    }

    /// `limit` attempts per IP per second.
    pub(crate) fn with_limit(limit: u32) -> Self {
        Self {
            rate: Rate::new(Duration::from_secs(1)),
            limit,
        }
    }

    /// Counts one login attempt from `ip`; false once it is beyond the limit for the current
    /// one-second window (the caller answers 429 with `Retry-After: 1`).
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        let seen = self.rate.observe(&ip.to_canonical(), 1);
        seen <= self.limit as isize
    }
}

/// Process-wide: Argon2 verifications that may run at once.
static VERIFY_SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new(cpus))
});

/// The process-wide Argon2 semaphore (one permit per CPU).
pub(crate) fn verify_slots() -> Arc<Semaphore> {
    VERIFY_SLOTS.clone()
}

/// Waits up to `wait` for a permit of `slots`; `None` if none came free (or the semaphore
/// was closed). Hold the permit for the whole verification, inside the blocking task.
pub(crate) async fn verify_slot(
    slots: &Arc<Semaphore>,
    wait: Duration,
) -> Option<OwnedSemaphorePermit> {
    match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Some(permit),
        Ok(Err(_closed)) => None,
        Err(_elapsed) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One failed attempt, as the login endpoint makes it: reserve, then record the failure.
    async fn fail(
        l: &Lockout,
        store: &SessionStore,
        user: Option<&str>,
        ip: IpAddr,
        now: Millis,
    ) -> Option<Duration> {
        let r = l.reserve(store, user, ip, now).await.unwrap();
        if r.refused.is_some() {
            return r.refused;
        }
        l.record_failure(store, user, ip, &r, now).await.unwrap()
    }
    use crate::session::{MemoryStore, RefreshKey, StoreSettings};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cfg(max_failures: u32, max_failures_per_ip: u32) -> crate::config::Lockout {
        crate::config::Lockout {
            max_failures,
            max_failures_per_ip,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
        }
    }

    fn store() -> SessionStore {
        MemoryStore::new(StoreSettings {
            refresh_key: RefreshKey::generate(),
            reuse_grace: Duration::from_secs(10),
            tombstone_ttl: Duration::from_secs(7200),
            local_cache: None,
        })
        .into()
    }

    /// An instant in whole Unix seconds.
    fn at(secs: u64) -> Millis {
        Millis::from_secs(secs)
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 8));

    #[test]
    fn reaches_limit_table() {
        for (failures, limit, want) in [
            (0, 5, false),
            (4, 5, false),
            (5, 5, true),
            (6, 5, true),
            (1, 1, true),
            (100, 0, false),
        ] {
            assert_eq!(
                reaches_limit(failures, limit),
                want,
                "{failures} of {limit}"
            );
        }
    }

    #[test]
    fn retry_after_table() {
        // Milliseconds in, whole seconds out: rounded up, never 0.
        let now = Millis(1_000_000);
        for (locks, want) in [
            (vec![None, None], None),
            (vec![Some(999_999), None], None),
            (vec![Some(1_000_000)], None),
            (vec![Some(1_000_001)], Some(1)),
            (vec![Some(1_001_000)], Some(1)),
            (vec![Some(1_001_001)], Some(2)),
            (vec![Some(1_600_000), Some(1_060_000)], Some(600)),
            (vec![None, Some(1_059_999)], Some(60)),
        ] {
            let locks: Vec<Option<Millis>> = locks.into_iter().map(|l| l.map(Millis)).collect();
            assert_eq!(
                retry_after(locks.clone(), now),
                want.map(Duration::from_secs),
                "{locks:?}"
            );
        }
    }

    #[test]
    fn keys() {
        assert_eq!(user_key("Alice"), "u:alice");
        assert_eq!(user_key(" Alice\t"), "u:alice");
        assert_eq!(ip_key(IP), "ip:203.0.113.7");
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped());
        assert_eq!(ip_key(mapped), "ip:203.0.113.7");
        assert_eq!(ip_key(IpAddr::V6(Ipv6Addr::LOCALHOST)), "ip:::1");
        let long = "é".repeat(300);
        let key = user_key(&long);
        assert!(key.len() <= 2 + MAX_KEY_USERNAME_BYTES);
        assert!(key.starts_with("u:éé"));
    }

    #[tokio::test]
    async fn username_locks_at_max_failures_even_for_later_checks() {
        let store = store();
        let l = Lockout::new(&cfg(3, 50));
        let now = 10_000;
        assert_eq!(
            l.check(&store, Some("alice"), IP, at(now)).await.unwrap(),
            None
        );
        assert_eq!(fail(&l, &store, Some("alice"), IP, at(now)).await, None);
        assert_eq!(fail(&l, &store, Some("ALICE"), IP, at(now + 1)).await, None);
        let locked = fail(&l, &store, Some("alice"), IP, at(now + 2)).await;
        assert_eq!(locked, Some(Duration::from_secs(600)));
        // Locked for everyone asking for alice, from any IP; case does not matter.
        assert_eq!(
            l.check(&store, Some("Alice"), OTHER_IP, at(now + 100))
                .await
                .unwrap(),
            Some(Duration::from_secs(502))
        );
        // Others are not.
        assert_eq!(
            l.check(&store, Some("bob"), IP, at(now + 100))
                .await
                .unwrap(),
            None
        );
        // Until the duration is over.
        assert_eq!(
            l.check(&store, Some("alice"), IP, at(now + 602))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn attempts_in_flight_beyond_the_limit_are_refused_without_locking() {
        let store = store();
        let l = Lockout::new(&cfg(2, 50));
        // Two attempts are being checked; a third at the same time is refused unverified...
        let a = l.reserve(&store, Some("alice"), IP, at(0)).await.unwrap();
        let b = l.reserve(&store, Some("alice"), IP, at(0)).await.unwrap();
        assert_eq!((a.refused, b.refused), (None, None));
        let c = l.reserve(&store, Some("alice"), IP, at(0)).await.unwrap();
        assert_eq!(c.refused, Some(IN_FLIGHT_RETRY));
        // ...but nothing is locked: both in-flight attempts were right.
        l.record_success(&store, Some("alice"), IP).await.unwrap();
        l.record_success(&store, Some("alice"), IP).await.unwrap();
        assert_eq!(
            l.check(&store, Some("alice"), IP, at(1)).await.unwrap(),
            None
        );
        let d = l.reserve(&store, Some("alice"), IP, at(1)).await.unwrap();
        assert_eq!(d.refused, None, "the refused attempt took nothing");
    }

    #[tokio::test]
    async fn unlock_clears_the_username_whatever_its_case_but_not_the_ip() {
        let store = store();
        let l = Lockout::new(&cfg(2, 3));
        assert_eq!(fail(&l, &store, Some("Alice"), IP, at(0)).await, None);
        assert!(fail(&l, &store, Some("alice"), IP, at(0)).await.is_some());
        assert!(l
            .check(&store, Some("alice"), OTHER_IP, at(1))
            .await
            .unwrap()
            .is_some());
        l.unlock(&store, " ALICE ").await.unwrap();
        assert_eq!(
            l.check(&store, Some("alice"), OTHER_IP, at(1))
                .await
                .unwrap(),
            None
        );
        // The count starts afresh: one failure does not lock again.
        assert_eq!(fail(&l, &store, Some("alice"), OTHER_IP, at(1)).await, None);
        // The IP's count was not touched: its third failure locks it.
        assert!(fail(&l, &store, Some("bob"), IP, at(2)).await.is_some());
    }

    #[tokio::test]
    async fn failures_outside_the_window_do_not_add_up() {
        let store = store();
        let l = Lockout::new(&cfg(2, 50));
        assert_eq!(fail(&l, &store, Some("a"), IP, at(0)).await, None);
        assert_eq!(fail(&l, &store, Some("a"), IP, at(61)).await, None);
        assert!(fail(&l, &store, Some("a"), IP, at(62)).await.is_some());
    }

    #[tokio::test]
    async fn success_clears_the_username_but_not_the_ip() {
        let store = store();
        let l = Lockout::new(&cfg(2, 3));
        assert_eq!(fail(&l, &store, Some("a"), IP, at(0)).await, None);
        // A successful attempt is reserved like any other, then handed back to the IP.
        let r = l.reserve(&store, Some("a"), IP, at(1)).await.unwrap();
        assert_eq!(r.refused, None);
        l.record_success(&store, Some("a"), IP).await.unwrap();
        assert_eq!(fail(&l, &store, Some("a"), IP, at(1)).await, None);
        // Third failure from the IP (different usernames count too): the IP is locked.
        let locked = fail(&l, &store, Some("b"), IP, at(2)).await;
        assert_eq!(locked, Some(Duration::from_secs(600)));
        assert!(l
            .check(&store, Some("c"), IP, at(3))
            .await
            .unwrap()
            .is_some());
        assert!(l.check(&store, None, IP, at(3)).await.unwrap().is_some());
        assert_eq!(
            l.check(&store, Some("c"), OTHER_IP, at(3)).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn sub_second_windows_and_locks_are_kept_to_the_millisecond() {
        let store = store();
        let mut c = cfg(2, 50);
        c.window = Duration::from_millis(1500);
        c.duration = Duration::from_millis(2500);
        let l = Lockout::new(&c);
        let t = Millis(1_700_000_000_999);
        let ms = Duration::from_millis;
        // Two failures 1.5 s apart less a millisecond: one window, locked.
        assert_eq!(fail(&l, &store, Some("a"), IP, t).await, None);
        let locked = fail(&l, &store, Some("a"), IP, t + ms(1499)).await;
        // Locked for 2.5 s from the second failure: Retry-After rounds up to 3.
        assert_eq!(locked, Some(Duration::from_secs(3)));
        let end = t + ms(1499) + ms(2500);
        let wait = l.check(&store, Some("a"), IP, end - ms(1)).await.unwrap();
        assert_eq!(wait, Some(Duration::from_secs(1)), "never 0 while locked");
        assert_eq!(l.check(&store, Some("a"), IP, end).await.unwrap(), None);
        // 1.5 s and a millisecond apart: two windows, no lock.
        assert_eq!(fail(&l, &store, Some("b"), IP, t).await, None);
        assert_eq!(fail(&l, &store, Some("b"), IP, t + ms(1501)).await, None);
    }

    #[tokio::test]
    async fn without_a_username_only_the_ip_counts() {
        let store = store();
        let l = Lockout::new(&cfg(1, 2));
        assert_eq!(fail(&l, &store, None, IP, at(0)).await, None);
        assert!(fail(&l, &store, None, IP, at(0)).await.is_some());
        assert!(l.check(&store, None, IP, at(1)).await.unwrap().is_some());
    }

    #[test]
    fn flood_guard_refuses_the_21st_attempt_of_one_ip_only() {
        let guard = FloodGuard::new();
        for i in 0..FLOOD_LIMIT_PER_SECOND {
            assert!(guard.allow(IP), "attempt {}", i + 1);
        }
        assert!(!guard.allow(IP), "attempt 21");
        assert!(guard.allow(OTHER_IP));
    }

    #[tokio::test]
    async fn verify_slot_gives_up_when_none_comes_free() {
        let slots = Arc::new(Semaphore::new(1));
        let held = verify_slot(&slots, Duration::from_millis(10)).await;
        assert!(held.is_some());
        assert!(verify_slot(&slots, Duration::from_millis(20))
            .await
            .is_none());
        drop(held);
        assert!(verify_slot(&slots, Duration::from_millis(20))
            .await
            .is_some());
    }
}
