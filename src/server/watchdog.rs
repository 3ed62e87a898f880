//! One connection's deadlines: a request head slower than `header_timeout`, a keep-alive
//! connection idle for `idle_timeout`, a write the client has not taken for `send_timeout`,
//! and, once the shutdown signal asked it to finish, the end of `shutdown_grace`.
//!
//! The names, one thing each:
//! - [`ConnState`]: what the watchdog knows about a connection (times of the last activity,
//!   the head under way, the first blocked write; requests in flight), and the deadline logic
//!   over it ([`ConnState::arm`], [`ConnState::expired`]), which reads the time from a
//!   [`Ticks`] so that a test can drive it;
//! - [`MeteredIo`]: the socket wrapper that reports every read and write to the `ConnState`;
//! - [`Watchdog`]: the timer future of one connection and how the connection task polls it;
//! - [`Alarm`]: the watchdog's verdict, what ends a connection's normal life;
//! - [`Expiry`]: which deadline of the `ConnState` passed;
//! - the shutdown signal is the app's [`crate::shutdown::Shutdown`], heard through a
//!   [`Signal`].
//!
//! # Cost
//! [`ConnState::on_read`] and [`ConnState::on_write`] run on every socket read and write:
//! they are a clock read and a few relaxed loads and stores, and ring the watchdog's bell
//! only when a new head or a blocked write is due before the timer already armed. The timer
//! itself is re-armed only when it fires. The clock is a type parameter (`ConnState<C>`), so
//! the real one ([`Epoch`], a tokio `Instant`) costs what `epoch.elapsed()` did before.
//!
//! # Atomics
//! Every field the watchdog reads is written by the connection task itself (reads, writes,
//! the start of a request, which hyper calls the service for on that task), for HTTP/2 by
//! the task of one stream (the end of a request), and after a WebSocket upgrade by the
//! tunnel's task (reads, once the connection task has let go of the socket). Each is one independent number: no
//! other memory is published through it, and no decision needs two of them to be consistent
//! with each other at one instant (a value a moment old makes the watchdog decide as of a
//! moment ago, or look again one timer round later). So they are all `Relaxed`; a value
//! written by the connection task and read by the watchdog, which the same task polls, is in
//! program order anyway. Counting `inflight` with `fetch_add`/`fetch_sub` keeps it exact
//! whatever the threads. The one exception is [`ConnState::fired`]: see there.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::listen::Limits;
use crate::shutdown::Signal;

/// A millisecond clock for the deadline logic.
pub(super) trait Ticks: Send + Sync + 'static {
    /// Milliseconds since the clock's own start.
    fn now_ms(&self) -> u64;
}

/// The real clock: milliseconds since the connection was accepted.
pub(super) struct Epoch(Instant);

impl Ticks for Epoch {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

impl Epoch {
    /// The instant `ms` milliseconds after the start (a year from now if that overflows).
    fn instant(&self, ms: u64) -> Instant {
        self.0
            .checked_add(Duration::from_millis(ms))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400))
    }
}

/// What the watchdog knows about one connection. Times are milliseconds of `clock`; a time
/// stored `+1` uses 0 for "none".
pub(super) struct ConnState<C: Ticks = Epoch> {
    /// Where the times below come from.
    clock: C,
    /// When the last read or write (or the end of a request) happened.
    last_activity: AtomicU64,
    /// When (+1) the first byte of a request head not yet complete was read; 0: none.
    head_started: AtomicU64,
    /// Requests being served: from their head to their answer's head.
    inflight: AtomicUsize,
    /// The client spoke the HTTP/2 preface: no head timeout between streams.
    h2: AtomicBool,
    /// Whether any byte has been read yet (the preface check looks at the first read only).
    seen: AtomicBool,
    /// Bytes read from the socket so far (for [`crate::proxy::SocketReads`]).
    bytes_read: AtomicU64,
    /// When (+1) the first write the client did not take happened, since the last one it
    /// did; 0: none blocked.
    write_blocked: AtomicU64,
    /// Asked to finish (idle or shutdown): no more idle or head deadlines, only the writes.
    pub(super) closing: AtomicBool,
    /// Rung when a request head starts, or a write blocks, before the watchdog's armed
    /// deadline would notice it. (A `Notify` synchronises itself.)
    head_bell: tokio::sync::Notify,
    /// The watchdog's armed deadline; `u64::MAX` until first armed.
    armed: AtomicU64,
    /// `header_timeout` in milliseconds.
    header_timeout_ms: u64,
    /// `idle_timeout` in milliseconds.
    idle_timeout_ms: u64,
    /// `send_timeout` in milliseconds.
    send_timeout_ms: u64,
    /// Set when the watchdog's timer, bell or shutdown signal woke the connection task, so
    /// that the task polls the watchdog only then.
    ///
    /// Release when set (by the waker, on whichever thread the timer driver, the bell or the
    /// signal wakes from), AcqRel when cleared by the connection task: unlike the fields
    /// above, this flag is a hand-off between threads that steers what the task does next, so
    /// it carries its own happens-before edge instead of leaning on the one inside
    /// [`futures_util::task::AtomicWaker`]. Whatever the waking side did before setting it is
    /// visible to the task that sees it set, and the clear (an atomic swap, never a separate
    /// load and store) cannot swallow a wake that lands between the two: that wake sets the
    /// flag again after the swap. It changes only on watchdog wakes, never per byte.
    fired: AtomicBool,
    /// The connection task, woken for the watchdog.
    parent: futures_util::task::AtomicWaker,
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// A request head took longer than `header_timeout`.
    SlowHead,
    /// Nothing happened for `idle_timeout` with nothing in flight.
    Idle,
    /// A write has not been taken for `send_timeout`.
    SlowReader,
}

impl<C: Ticks> ConnState<C> {
    pub(super) fn new(limits: &Limits, clock: C) -> Self {
        Self {
            clock,
            armed: AtomicU64::new(u64::MAX),
            header_timeout_ms: limits.header_timeout.as_millis() as u64,
            idle_timeout_ms: limits.idle_timeout.as_millis() as u64,
            send_timeout_ms: limits.send_timeout.as_millis() as u64,
            write_blocked: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            // The watchdog's first poll arms its timer.
            fired: AtomicBool::new(true),
            parent: futures_util::task::AtomicWaker::new(),
            last_activity: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
            seen: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            head_bell: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A read returned `first` (non-empty): activity, and perhaps the start of a head.
    fn on_read(&self, first: &[u8]) {
        // Load and store, not an atomic add: one task at a time reads a connection.
        let read = self.bytes_read.load(Ordering::Relaxed);
        self.bytes_read
            .store(read + first.len() as u64, Ordering::Relaxed);
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if !self.seen.swap(true, Ordering::Relaxed) && first.starts_with(b"PRI * HTTP/2.0") {
            self.h2.store(true, Ordering::Relaxed);
        }
        if self.inflight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
            // Only a head due before the armed deadline needs the watchdog to move it up; it
            // is then armed for this head (not re-derived when the watchdog runs, by which
            // time the head may be complete), so the following heads of a busy keep-alive
            // connection ring no bell until the timer has fired once.
            let due = now + self.header_timeout_ms;
            if !self.h2.load(Ordering::Relaxed) && due < self.armed.load(Ordering::Relaxed) {
                self.armed.store(due, Ordering::Relaxed);
                self.head_bell.notify_one();
            }
        }
    }

    /// A write went through: activity, and no write is blocked any more.
    fn on_write(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    /// Reports one write's outcome: bytes taken, or the socket full.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => self.on_write(),
            Poll::Pending => self.on_write_blocked(),
            Poll::Ready(_) => {}
        }
    }

    /// A write found the socket full: the client is not reading. Only the first blocked
    /// write since the last one that went through starts the clock.
    fn on_write_blocked(&self) {
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            return;
        }
        let now = self.now_ms();
        self.write_blocked.store(now + 1, Ordering::Relaxed);
        let due = now + self.send_timeout_ms;
        if due < self.armed.load(Ordering::Relaxed) {
            self.armed.store(due, Ordering::Relaxed);
            self.head_bell.notify_one();
        }
    }

    /// A request's head is complete and its service called.
    pub(super) fn request_started(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// A request's answer head went out (or the request was dropped).
    pub(super) fn request_finished(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When the watchdog should look again (milliseconds of the clock); remembered as the
    /// armed deadline.
    pub(super) fn arm(&self) -> u64 {
        let idle = self.last_activity.load(Ordering::Relaxed) + self.idle_timeout_ms;
        let head = match self.head_started.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => t - 1 + self.header_timeout_ms,
        };
        let send = match self.write_blocked.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => t - 1 + self.send_timeout_ms,
        };
        let at =
            if self.inflight.load(Ordering::Relaxed) > 0 || self.closing.load(Ordering::Relaxed) {
                // Neither the idle nor the head limit applies while a request is served or once
                // the connection is finishing: look again an idle timeout from now (a deadline
                // already past would fire at once, again and again).
                send.min(self.now_ms() + self.idle_timeout_ms)
            } else if self.h2.load(Ordering::Relaxed) {
                idle.min(send)
            } else {
                idle.min(head).min(send)
            };
        self.armed.store(at, Ordering::Relaxed);
        at
    }

    /// Which deadline has passed now, if any; a client that stopped reading first.
    pub(super) fn expired(&self) -> Option<Expiry> {
        let now = self.now_ms();
        // A client that stopped reading is cut whatever else is going on.
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != 0 && now + 1 >= blocked + self.send_timeout_ms {
            return Some(Expiry::SlowReader);
        }
        if self.inflight.load(Ordering::Relaxed) > 0 || self.closing.load(Ordering::Relaxed) {
            return None;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 && !self.h2.load(Ordering::Relaxed) && now + 1 >= head + self.header_timeout_ms
        {
            return Some(Expiry::SlowHead);
        }
        if now >= self.last_activity.load(Ordering::Relaxed) + self.idle_timeout_ms {
            return Some(Expiry::Idle);
        }
        None
    }
}

impl ConnState<Epoch> {
    /// The state of a connection accepted now, on the real clock.
    pub(super) fn accepted(limits: &Limits) -> Self {
        Self::new(limits, Epoch(Instant::now()))
    }

    /// [`Self::arm`], as an instant for the timer.
    fn arm_at(&self) -> Instant {
        self.clock.instant(self.arm())
    }

    /// The deadline `on_read` or `on_write_blocked` armed, as an instant for the timer.
    fn armed_at(&self) -> Instant {
        self.clock.instant(self.armed.load(Ordering::Relaxed))
    }
}

impl<C: Ticks> crate::proxy::SocketReads for ConnState<C> {
    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

/// The watchdog's waker: records that it asked, and wakes the connection task.
impl<C: Ticks> std::task::Wake for ConnState<C> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.parent.wake();
    }
}

/// What ends a connection's normal life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alarm {
    /// Shutdown: finish in-flight requests, then close.
    Drain,
    /// Idle past `idle_timeout`: close (hyper closes an idle connection at once).
    Idle,
    /// A request head took longer than `header_timeout`: close now.
    SlowHead,
    /// A write the client did not take for `send_timeout`: close now.
    SlowReader,
    /// Draining took longer than `shutdown_grace`: close now.
    GraceOver,
}

/// Where a connection is in its life, for its watchdog.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    Serving,
    /// Asked to finish after it went idle; the shutdown signal still counts.
    Closing,
    /// Asked to finish by the shutdown signal, by this instant.
    Draining(Instant),
}

/// One connection's watchdog: the timer future ([`next_alarm`]) and the waker that tells the
/// connection task it fired.
///
/// The connection task polls it only when its own timer, bell or shutdown signal woke it,
/// not on every wake of the connection (a `select!` would poll it several times per request
/// and re-arm its timer each time).
pub(super) struct Watchdog {
    /// What the watchdog knows about the connection; shared with its socket and requests.
    state: Arc<ConnState>,
    /// The app's shutdown signal, handed to each timer future.
    signal: Signal,
    /// Boxed once per connection (and again per phase change): pinned in place inside the
    /// connection's future it would make every idle connection larger.
    alarm: Pin<Box<dyn Future<Output = Alarm> + Send>>,
    /// Wakes the connection task, and records that it was the watchdog that woke it.
    side_waker: Waker,
}

impl Watchdog {
    pub(super) fn new(state: Arc<ConnState>, signal: Signal) -> Self {
        Self {
            alarm: Box::pin(next_alarm(state.clone(), signal.clone(), Phase::Serving)),
            side_waker: Waker::from(state.clone()),
            state,
            signal,
        }
    }

    /// Polls the watchdog if its own timer, bell or signal woke the connection task.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Alarm> {
        self.state.parent.register(cx.waker());
        if self.state.fired.swap(false, Ordering::AcqRel) {
            return self
                .alarm
                .as_mut()
                .poll(&mut Context::from_waker(&self.side_waker));
        }
        Poll::Pending
    }

    /// The connection is finishing (idle, or draining after the shutdown signal): a fresh
    /// watchdog for the rest of its life, polled at once.
    pub(super) fn restart(&mut self, phase: Phase) {
        self.state.closing.store(true, Ordering::Relaxed);
        self.alarm = Box::pin(next_alarm(self.state.clone(), self.signal.clone(), phase));
        self.state.fired.store(true, Ordering::Release);
    }
}

/// Watches one connection for a slow head, an idle keep-alive, a client that stopped reading,
/// the shutdown signal and (draining) the end of the grace period. Its timer is armed for the
/// earliest deadline and re-armed only when it fires or when a new head or a blocked write
/// would be due before it.
async fn next_alarm(state: Arc<ConnState>, mut signal: Signal, phase: Phase) -> Alarm {
    let sleep = tokio::time::sleep_until(state.arm_at());
    tokio::pin!(sleep);
    let (draining, grace_end) = match phase {
        Phase::Draining(at) => (true, at),
        // Never polled (the branch is off), so any instant will do.
        Phase::Serving | Phase::Closing => (false, Instant::now()),
    };
    let grace = tokio::time::sleep_until(grace_end);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = signal.signalled(), if !draining => return Alarm::Drain,
            _ = grace.as_mut(), if draining => return Alarm::GraceOver,
            _ = state.head_bell.notified() => {
                let at = state.armed_at();
                sleep.as_mut().reset(at);
            }
            _ = sleep.as_mut() => match state.expired() {
                Some(Expiry::SlowReader) => return Alarm::SlowReader,
                Some(Expiry::SlowHead) => return Alarm::SlowHead,
                Some(Expiry::Idle) => return Alarm::Idle,
                None => {
                    let at = state.arm_at();
                    sleep.as_mut().reset(at);
                }
            },
        }
    }
}

/// The socket, reporting reads and writes to the connection's [`ConnState`].
pub(super) struct MeteredIo<S> {
    /// The socket (TCP, or TLS over it).
    inner: S,
    /// Where reads and writes are reported.
    state: Arc<ConnState>,
}

impl<S> MeteredIo<S> {
    pub(super) fn new(inner: S, state: Arc<ConnState>) -> Self {
        Self { inner, state }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MeteredIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MeteredIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.state.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.state.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream writes its buffered records here: blocked, the client is not reading.
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if r.is_pending() {
            self.state.on_write_blocked();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
