//! The circuit breaker in front of Redis: after [`FAILURES`] calls in a row that found Redis
//! unreachable (refused, lost, timed out), it opens, and calls fail at once with
//! [`StoreError::Unavailable`](super::StoreError::Unavailable) without touching the network,
//! so a dead Redis costs each request a few atomic loads instead of a connect attempt or a
//! 1 s timeout. After [`COOL_DOWN`] one call is let through as a probe (half-open): its success
//! closes the breaker, its failure opens it for another cool-down. A probe that is cancelled
//! before it settles lets the next call probe.
//!
//! Lock-free: three atomics, relaxed loads on the closed path (the common one). Time is passed
//! in (`now`), so the unit tests below move it by hand.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use std::time::Instant;

/// Consecutive failures that open the breaker. Five: a single lost connection (one failure
/// per in-flight call, then a reconnect) does not open it, a Redis that is gone does within
/// the first few requests.
pub(crate) const FAILURES: u32 = 5;

/// How long the breaker stays open before it lets one probe through.
pub(crate) const COOL_DOWN: Duration = Duration::from_secs(1);

/// What a call may do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: go ahead.
    Pass,
    /// Half-open: this call is the one probe; report how it went with [`Breaker::settle`].
    Probe,
    /// Open: fail at once.
    Reject,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    start: Instant,
    failures: AtomicU32,
    /// Milliseconds since `start` until which the breaker is open; 0: closed.
    open_until: AtomicU64,
    /// A probe is in flight.
    probing: AtomicBool,
    threshold: u32,
    cool_down: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cool_down: Duration, start: Instant) -> Self {
        Self {
            start,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            threshold: threshold.max(1),
            cool_down,
        }
    }

    /// `now` in ms since `start`, plus 1 (0 means closed).
    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_millis() as u64 + 1
    }

    /// Whether it is open (or half-open) now.
    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn admit(&self, now: Instant) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Pass;
        }
        if self.ms(now) < until {
            return Admit::Reject;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Reject,
        }
    }

    /// How a call that was let through went: `reached` is whether Redis answered at all
    /// (an error reply is an answer). `true` when this call opened the breaker.
    pub(crate) fn settle(&self, admitted: &Admit, reached: bool, now: Instant) -> bool {
        let probe = *admitted == Admit::Probe;
        if reached {
            // Loads first: on the common path nothing is written, so the cache line stays
            // shared between the cores instead of bouncing on every call.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            if self.open_until.load(Ordering::Relaxed) != 0 {
                self.open_until.store(0, Ordering::Release);
            }
            if probe {
                self.probing.store(false, Ordering::Release);
            }
            return false;
        }
        if probe {
            self.open_until.store(
                self.ms(now) + self.cool_down.as_millis() as u64,
                Ordering::Release,
            );
            self.probing.store(false, Ordering::Release);
            return false;
        }
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        n >= self.threshold
            && self
                .open_until
                .compare_exchange(
                    0,
                    self.ms(now) + self.cool_down.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// A probe that was let through but dropped before it settled: the next call may probe.
    pub(crate) fn abandon(&self, admitted: &Admit) {
        if *admitted == Admit::Probe {
            self.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_probes_after_the_cool_down() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let b = Breaker::new(3, Duration::from_secs(1), t0);
        // A success in between starts the count again.
        for reached in [false, false, true, false, false] {
            let a = b.admit(at(0));
            assert_eq!(a, Admit::Pass);
            assert!(!b.settle(&a, reached, at(0)));
        }
        assert!(!b.is_open());
        let a = b.admit(at(10));
        assert!(
            b.settle(&a, false, at(10)),
            "the third failure in a row opens it"
        );
        assert!(b.is_open());
        assert_eq!(b.admit(at(10)), Admit::Reject);
        assert_eq!(b.admit(at(1009)), Admit::Reject, "still cooling down");
        let probe = b.admit(at(1010));
        assert_eq!(probe, Admit::Probe);
        assert_eq!(b.admit(at(1010)), Admit::Reject, "one probe at a time");
        // The probe fails: open for another cool-down.
        assert!(!b.settle(&probe, false, at(1020)));
        assert_eq!(b.admit(at(2019)), Admit::Reject);
        let probe = b.admit(at(2020));
        assert_eq!(probe, Admit::Probe);
        assert!(!b.settle(&probe, true, at(2021)));
        assert!(!b.is_open(), "a successful probe closes it");
        assert_eq!(b.admit(at(2021)), Admit::Pass);
        // And the count starts from zero.
        for _ in 0..2 {
            let a = b.admit(at(2022));
            assert!(!b.settle(&a, false, at(2022)));
        }
        assert_eq!(b.admit(at(2022)), Admit::Pass);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let t0 = Instant::now();
        let b = Breaker::new(1, Duration::from_secs(1), t0);
        let a = b.admit(t0);
        assert!(b.settle(&a, false, t0));
        let later = t0 + Duration::from_secs(1);
        let probe = b.admit(later);
        assert_eq!(probe, Admit::Probe);
        b.abandon(&probe);
        assert_eq!(b.admit(later), Admit::Probe);
    }

    #[test]
    fn a_late_success_of_a_call_let_through_before_closes_it() {
        let t0 = Instant::now();
        let b = Breaker::new(2, Duration::from_secs(60), t0);
        let slow = b.admit(t0);
        for _ in 0..2 {
            let a = b.admit(t0);
            b.settle(&a, false, t0);
        }
        assert!(b.is_open());
        // A call admitted before it opened comes back with an answer: Redis is there.
        b.settle(&slow, true, t0);
        assert!(!b.is_open());
        assert_eq!(b.admit(t0), Admit::Pass);
    }
}
