//! The deadline logic on a clock the test sets: tables of connection states and times, with
//! the deadline [`ConnState::arm`] arms and what [`ConnState::expired`] says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;

/// A clock that stands still where the test puts it.
#[derive(Default)]
struct Manual(AtomicU64);

impl Ticks for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const HEADER_MS: u64 = 100;
const IDLE_MS: u64 = 1_000;
const SEND_MS: u64 = 50;

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(HEADER_MS),
        idle_timeout: Duration::from_millis(IDLE_MS),
        send_timeout: Duration::from_millis(SEND_MS),
        shutdown_grace: Duration::from_secs(5),
        max_header_bytes: 8192,
    }
}

fn state() -> ConnState<Manual> {
    ConnState::new(&limits(), Manual::default())
}

/// One row: a connection's state at `now`.
struct Row {
    what: &'static str,
    inflight: usize,
    h2: bool,
    closing: bool,
    last_activity: u64,
    head_started: Option<u64>,
    write_blocked: Option<u64>,
    now: u64,
    /// The deadline `arm` must arm.
    armed: u64,
    /// What `expired` must say.
    expiry: Option<Expiry>,
}

/// A quiet HTTP/1.1 connection, last active at 0, at time `now`; rows change what they test.
const QUIET: Row = Row {
    what: "",
    inflight: 0,
    h2: false,
    closing: false,
    last_activity: 0,
    head_started: None,
    write_blocked: None,
    now: 0,
    armed: 0,
    expiry: None,
};

impl Row {
    fn state(&self) -> ConnState<Manual> {
        let s = state();
        s.inflight.store(self.inflight, Ordering::Relaxed);
        s.h2.store(self.h2, Ordering::Relaxed);
        s.closing.store(self.closing, Ordering::Relaxed);
        s.last_activity.store(self.last_activity, Ordering::Relaxed);
        s.head_started
            .store(self.head_started.map_or(0, |t| t + 1), Ordering::Relaxed);
        s.write_blocked
            .store(self.write_blocked.map_or(0, |t| t + 1), Ordering::Relaxed);
        s.clock.0.store(self.now, Ordering::Relaxed);
        s
    }
}

#[test]
fn arm_and_expired_by_table() {
    let rows = [
        // Idle keep-alive.
        Row {
            what: "quiet, before the idle timeout",
            now: 500,
            armed: IDLE_MS,
            ..QUIET
        },
        Row {
            what: "idle timeout reached",
            now: IDLE_MS,
            armed: IDLE_MS,
            expiry: Some(Expiry::Idle),
            ..QUIET
        },
        Row {
            what: "idle counts from the last activity",
            last_activity: 700,
            now: 1_500,
            armed: 1_700,
            ..QUIET
        },
        // Slow head (HTTP/1.1).
        Row {
            what: "a head under way, in time",
            last_activity: 200,
            head_started: Some(200),
            now: 299,
            armed: 300,
            ..QUIET
        },
        Row {
            what: "a head past header_timeout",
            last_activity: 200,
            head_started: Some(200),
            now: 300,
            armed: 300,
            expiry: Some(Expiry::SlowHead),
            ..QUIET
        },
        Row {
            what: "a head started at time 0 is still a head",
            head_started: Some(0),
            now: HEADER_MS,
            armed: HEADER_MS,
            expiry: Some(Expiry::SlowHead),
            ..QUIET
        },
        // HTTP/2: no head timeout between streams.
        Row {
            what: "h2: a slow frame is no slow head",
            h2: true,
            last_activity: 200,
            head_started: Some(200),
            now: 300,
            armed: 1_200,
            ..QUIET
        },
        Row {
            what: "h2: idle still applies",
            h2: true,
            last_activity: 200,
            head_started: Some(200),
            now: 1_200,
            armed: 1_200,
            expiry: Some(Expiry::Idle),
            ..QUIET
        },
        Row {
            what: "h2: a blocked write",
            h2: true,
            last_activity: 300,
            write_blocked: Some(300),
            now: 320,
            armed: 350,
            ..QUIET
        },
        // Slow reader.
        Row {
            what: "a blocked write, in time",
            last_activity: 100,
            write_blocked: Some(100),
            now: 149,
            armed: 150,
            ..QUIET
        },
        Row {
            what: "a blocked write past send_timeout",
            last_activity: 100,
            write_blocked: Some(100),
            now: 150,
            armed: 150,
            expiry: Some(Expiry::SlowReader),
            ..QUIET
        },
        Row {
            what: "a slow reader is named before a slow head",
            head_started: Some(0),
            write_blocked: Some(0),
            now: HEADER_MS,
            armed: SEND_MS,
            expiry: Some(Expiry::SlowReader),
            ..QUIET
        },
        // In flight: neither idle nor head, only the writes; looks again an idle timeout on.
        Row {
            what: "in flight, long past the idle timeout",
            inflight: 1,
            now: 5_000,
            armed: 5_000 + IDLE_MS,
            ..QUIET
        },
        Row {
            what: "in flight with a stale head start",
            inflight: 2,
            head_started: Some(0),
            now: 5_000,
            armed: 5_000 + IDLE_MS,
            ..QUIET
        },
        Row {
            what: "in flight, the client stopped reading",
            inflight: 1,
            write_blocked: Some(400),
            now: 450,
            armed: 450,
            expiry: Some(Expiry::SlowReader),
            ..QUIET
        },
        Row {
            what: "in flight, a blocked write in time",
            inflight: 1,
            write_blocked: Some(400),
            now: 449,
            armed: 450,
            ..QUIET
        },
        // Closing (idle or draining): as in flight.
        Row {
            what: "closing, past idle and head",
            closing: true,
            head_started: Some(0),
            now: 5_000,
            armed: 5_000 + IDLE_MS,
            ..QUIET
        },
        Row {
            what: "closing, the client stopped reading",
            closing: true,
            write_blocked: Some(100),
            now: 150,
            armed: 150,
            expiry: Some(Expiry::SlowReader),
            ..QUIET
        },
    ];
    for row in rows {
        let s = row.state();
        assert_eq!(s.expired(), row.expiry, "expired: {}", row.what);
        assert_eq!(s.arm(), row.armed, "arm: {}", row.what);
        assert_eq!(
            s.armed.load(Ordering::Relaxed),
            row.armed,
            "remembered: {}",
            row.what
        );
    }
}

#[test]
fn a_read_starts_a_head_and_moves_the_armed_deadline_up() {
    let s = state();
    s.clock.0.store(40, Ordering::Relaxed);
    s.arm();
    assert_eq!(s.armed.load(Ordering::Relaxed), IDLE_MS);
    s.on_read(b"GET / HTTP/1.1\r\n");
    assert_eq!(s.last_activity.load(Ordering::Relaxed), 40);
    assert_eq!(s.head_started.load(Ordering::Relaxed), 41);
    assert_eq!(s.armed.load(Ordering::Relaxed), 40 + HEADER_MS);
    assert_eq!(s.bytes_read.load(Ordering::Relaxed), 16);
    // More of the same head: it started when it started.
    s.clock.0.store(60, Ordering::Relaxed);
    s.on_read(b"Host: a\r\n\r\n");
    assert_eq!(s.head_started.load(Ordering::Relaxed), 41);
    assert_eq!(s.last_activity.load(Ordering::Relaxed), 60);
    // The request is served: no head any more.
    s.request_started();
    assert_eq!(s.head_started.load(Ordering::Relaxed), 0);
    s.on_read(b"body");
    assert_eq!(
        s.head_started.load(Ordering::Relaxed),
        0,
        "a body is no head"
    );
    s.clock.0.store(90, Ordering::Relaxed);
    s.request_finished();
    assert_eq!(s.inflight.load(Ordering::Relaxed), 0);
    assert_eq!(s.last_activity.load(Ordering::Relaxed), 90);
}

#[test]
fn the_h2_preface_turns_the_head_timeout_off() {
    let s = state();
    s.arm();
    s.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(s.h2.load(Ordering::Relaxed));
    assert_eq!(
        s.armed.load(Ordering::Relaxed),
        IDLE_MS,
        "no head deadline armed"
    );
    // Only the first read counts: the preface later in a stream is just bytes.
    let h1 = state();
    h1.on_read(b"GET / HTTP/1.1\r\n");
    h1.on_read(b"PRI * HTTP/2.0");
    assert!(!h1.h2.load(Ordering::Relaxed));
}

#[test]
fn only_the_first_blocked_write_starts_the_send_clock() {
    let s = state();
    s.arm();
    s.clock.0.store(10, Ordering::Relaxed);
    s.wrote(&Poll::Pending);
    assert_eq!(s.write_blocked.load(Ordering::Relaxed), 11);
    assert_eq!(s.armed.load(Ordering::Relaxed), 10 + SEND_MS);
    s.clock.0.store(30, Ordering::Relaxed);
    s.wrote(&Poll::Pending);
    assert_eq!(s.write_blocked.load(Ordering::Relaxed), 11);
    // A write of nothing is no progress; one of some bytes is.
    s.wrote(&Poll::Ready(Ok(0)));
    assert_eq!(s.write_blocked.load(Ordering::Relaxed), 11);
    s.wrote(&Poll::Ready(Ok(5)));
    assert_eq!(s.write_blocked.load(Ordering::Relaxed), 0);
    assert_eq!(s.last_activity.load(Ordering::Relaxed), 30);
}
