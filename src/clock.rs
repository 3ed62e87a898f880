//! Time: [`Millis`] (Unix milliseconds, what the session store keeps and compares) and the
//! [`Clock`] every request reads it from.
//!
//! Nothing below the state tier reads the wall clock to decide anything: tokens, the session
//! store and the lock-out policy take `now` as an argument, and the gateway passes its
//! [`Clock`]'s time. A test can therefore move the gateway's clock forward ([`Clock::advance`])
//! instead of waiting. What still runs on the wall clock only collects garbage, and a clock
//! ahead of it only makes garbage linger: the memory store's sweep (`session::memory`) and
//! Redis's key TTLs (`session::redis`: every expiry there is also decided from the stored
//! times and the `now` passed in). Audit lines and the command line use [`unix_now`]; server
//! timers (timeouts, shutdown grace, the login flood guard's one-second window) use Tokio's
//! or the OS's monotonic time.
//!
//! Every time the stores keep or compare (creation, last seen, rotation, expiry, tombstones,
//! lock-out windows and locks) is in milliseconds, so `refresh_reuse_grace = "500ms"` is
//! 500 ms rather than 0, and a window of N seconds ends N seconds after it started, to the
//! millisecond, wherever in a second it started (issue 15). A newtype rather than a bare `u64`
//! so that a caller cannot hand a store Unix seconds by mistake (a 1000× error).
//!
//! The external contract speaks whole seconds (JSON answers, token `exp`/`iat`, `Retry-After`).
//! The conversions at that edge round so that nothing is promised beyond what the store
//! honours: [`Millis::as_secs`] rounds *down* (an expiry shown as a Unix second is never later
//! than the real one), [`Millis::secs_until`] rounds *up* (a wait is never announced shorter
//! than it is, and never as 0).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A Unix time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

/// The longest duration a store key (`refresh_ttl`, `max_lifetime`, the grace, lock-out
/// window and duration) may be: what a 48-bit millisecond time (`record.rs`) still holds when
/// added to any date before the year 2500. `check` refuses longer ones with their key path
/// rather than letting them saturate.
pub(crate) const MAX_STORE_SPAN: Duration = Duration::from_secs(3_000_000 * 86_400);

/// A duration in whole milliseconds, saturating (the config parser only produces whole
/// milliseconds, so nothing is cut).
pub(crate) fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Millis {
    pub const ZERO: Self = Self(0);

    /// The wall clock now (0 before 1970, which no real clock reports).
    pub fn now() -> Self {
        Self(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, ms_of),
        )
    }

    /// The start of a Unix second.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Whole Unix seconds, rounded down: for `created_at`, `expires_at` and the other times
    /// in JSON answers and token claims.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// `self + d`, saturating.
    pub(crate) fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(ms_of(d)))
    }

    /// Milliseconds from `earlier` to `self` (0 if `earlier` is later).
    pub const fn since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Whole seconds from `now` until `self`, rounded up; `None` once `self` is not after
    /// `now`. For `Retry-After`: at least 1, and never before the time it names.
    pub(crate) fn secs_until(self, now: Self) -> Option<u64> {
        (self > now).then(|| self.since(now).div_ceil(1000))
    }
}

impl std::ops::Add<Duration> for Millis {
    type Output = Self;

    /// Saturating, like [`Millis::saturating_add`].
    fn add(self, d: Duration) -> Self {
        self.saturating_add(d)
    }
}

impl std::ops::Sub<Duration> for Millis {
    type Output = Self;

    /// Saturating at 0.
    fn sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(ms_of(d)))
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// The gateway's clock: the wall clock, moved forward by what [`Clock::advance`] added.
///
/// Cheap to clone and to read (a relaxed atomic load beside `SystemTime::now`); clones share
/// the offset, so a test holding one moves the time of the gateway that holds another.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the wall clock. Relaxed: it is one independent number, read
    /// with no other memory depending on it; a reader that misses a concurrent `advance` by
    /// a moment sees the time just before it.
    offset_ms: Arc<AtomicU64>,
}

impl Clock {
    /// The wall clock.
    pub(crate) fn system() -> Self {
        Self::default()
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> Millis {
        Millis::now() + Duration::from_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Unix seconds now (token claims), rounded down.
    pub fn now(&self) -> u64 {
        self.now_ms().as_secs()
    }

    /// Moves this clock, and every clone of it, forward by `d` (tests).
    pub fn advance(&self, d: Duration) {
        self.offset_ms.fetch_add(ms_of(d), Ordering::Relaxed);
    }
}

/// Unix seconds of the wall clock, for what no gateway clock reaches (audit lines, the
/// command line).
pub(crate) fn unix_now() -> u64 {
    Millis::now().as_secs()
}

/// Unix milliseconds as an RFC 3339 UTC time with milliseconds, `2024-05-01T12:34:56.789Z`
/// (for log lines; years past 9999 are written as 9999).
pub(crate) fn rfc3339(ms: u64) -> [u8; 24] {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + u64::from(month <= 2)).min(9999);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, ms % 1000);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_down_and_waits_round_up() {
        assert_eq!(Millis(1_999).as_secs(), 1);
        assert_eq!(Millis(2_000).as_secs(), 2);
        assert_eq!(Millis::from_secs(7), Millis(7_000));
        let now = Millis(10_000);
        for (until, want) in [
            (9_999, None),
            (10_000, None),
            (10_001, Some(1)),
            (11_000, Some(1)),
            (11_001, Some(2)),
            (610_000, Some(600)),
        ] {
            assert_eq!(Millis(until).secs_until(now), want, "{until}");
        }
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(5) + Duration::from_millis(500), Millis(505));
        assert_eq!(
            Millis(u64::MAX - 1) + Duration::from_secs(1),
            Millis(u64::MAX)
        );
        assert_eq!(Millis(5) - Duration::from_secs(1), Millis(0));
        assert_eq!(Millis(5).since(Millis(7)), 0);
        assert_eq!(Millis(1_500).to_string(), "1.500");
    }

    #[test]
    fn rfc3339_times() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (1_735_689_600_123, "2025-01-01T00:00:00.123Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ] {
            assert_eq!(std::str::from_utf8(&rfc3339(ms)).unwrap(), want, "{ms}");
        }
    }

    #[test]
    fn an_advanced_clock_moves_its_clones_too() {
        let clock = Clock::system();
        let other = clock.clone();
        let before = other.now_ms();
        clock.advance(Duration::from_secs(3600));
        let after = other.now_ms();
        assert!(after.since(before) >= 3_600_000, "{before} -> {after}");
        assert!(Clock::system().now_ms() < after);
        assert!(other.now() >= after.as_secs());
    }
}
