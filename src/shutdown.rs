//! The one shutdown signal of a gateway, and the work it waits for.
//!
//! [`Shutdown`] is made once, with the [`crate::app::App`] (`app.shutdown`), and everything
//! that runs in the background hears it: the listeners stop accepting, connections finish
//! gracefully, WebSocket tunnels send a Close frame, the reload watchers and their retries,
//! the store-revocation watcher, the memory store's sweeper and the metrics upkeep thread
//! stop. `server::Handle::shutdown` and SIGTERM/SIGINT [`Shutdown::trigger`] it.
//!
//! Three things hang off it, one name each:
//! - [`Signal`]: a listener, cloneable, awaited with [`Signal::signalled`] (tasks) or waited
//!   for with [`Signal::wait_timeout`] (threads, which cannot await). It does not keep the
//!   `Shutdown` alive: once every `Shutdown` is dropped (the app is gone), it counts as
//!   signalled, so a task or thread that only listens never outlives its app;
//! - [`Work`]: a guard held by what shutdown must wait for (listeners, connections, tunnels,
//!   a reload under way); [`Shutdown::finished`] resolves once none is left;
//! - the trigger itself, sticky: once fired it stays fired, so a listener made afterwards
//!   hears it at once and no wake-up can be missed.
//!
//! Built on tokio's `watch` channel, which is used nowhere else in the serving code.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// A gateway's shutdown signal; clones share it.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    /// `true` once triggered; every [`Signal`] holds a receiver of it.
    signal: watch::Sender<bool>,
    /// Carries nothing: only its receivers count. Each [`Work`] holds one, and the channel
    /// reports closed once every one is dropped.
    work: watch::Sender<()>,
    /// The same flag for threads, shared with every [`Signal`].
    threads: Arc<ThreadBell>,
}

/// The flag of a [`Shutdown`] for threads: set under the lock, with the condvar rung. The
/// lock is never held across an `.await` (no async code takes it).
#[derive(Debug, Default)]
struct ThreadBell {
    fired: Mutex<bool>,
    rung: Condvar,
}

impl ThreadBell {
    fn ring(&self) {
        *self.fired.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.rung.notify_all();
    }
}

/// The last `Shutdown` gone: its listeners stop, threads too.
impl Drop for Inner {
    fn drop(&mut self) {
        self.threads.ring();
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                signal: watch::channel(false).0,
                work: watch::channel(()).0,
                threads: Arc::default(),
            }),
        }
    }

    /// Fires the signal (again is harmless): every listener hears it, now or when it next
    /// looks.
    pub(crate) fn trigger(&self) {
        // `send_replace`, not `send`: it stores the value even while nobody listens.
        self.inner.signal.send_replace(true);
        self.inner.threads.ring();
    }

    /// Whether [`Self::trigger`] was called.
    pub(crate) fn is_triggered(&self) -> bool {
        *self.inner.signal.borrow()
    }

    /// A listener, for a task to keep and await.
    pub(crate) fn signal(&self) -> Signal {
        Signal {
            fired: self.inner.signal.subscribe(),
            threads: self.inner.threads.clone(),
        }
    }

    /// Resolves once the signal fires (at once if it has). Owns its listener, so it can be
    /// moved into a spawned task or a `select!`.
    pub(crate) fn signalled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut signal = self.signal();
        async move { signal.signalled().await }
    }

    /// A guard that [`Self::finished`] waits for until it is dropped.
    pub(crate) fn work(&self) -> Work {
        Work {
            _held: self.inner.work.subscribe(),
        }
    }

    /// Resolves once no [`Work`] of this signal is left (at once if there is none).
    pub async fn finished(&self) {
        self.inner.work.closed().await;
    }
}

/// A listener of a [`Shutdown`]; signalled when it fires or once every `Shutdown` is gone
/// (nobody can trigger it any more, and the owner that would have is gone too, so stopping
/// is right).
#[derive(Clone, Debug)]
pub(crate) struct Signal {
    /// For tasks: the trigger's value.
    fired: watch::Receiver<bool>,
    /// For threads.
    threads: Arc<ThreadBell>,
}

impl Signal {
    /// Resolves once signalled (at once if it is). Cancel-safe: dropped unfinished, it loses
    /// nothing, so it can be one branch of a `select!` in a loop.
    pub(crate) async fn signalled(&mut self) {
        // An error: every `Shutdown` is gone, which counts as signalled.
        let _ = self.fired.wait_for(|fired| *fired).await;
    }

    /// Whether it is signalled.
    #[cfg(test)]
    pub(crate) fn is_signalled(&self) -> bool {
        *self.fired.borrow() || self.fired.has_changed().is_err()
    }

    /// Blocks the calling thread until signalled or until `timeout` passes; whether it is
    /// signalled. For threads only: in async code it would block the runtime.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> bool {
        let fired = self
            .threads
            .fired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (fired, _) = self
            .threads
            .rung
            .wait_timeout_while(fired, timeout, |fired| !*fired)
            .unwrap_or_else(PoisonError::into_inner);
        *fired
    }
}

/// Work that shutdown waits for (within `shutdown_grace`): held while it runs.
#[derive(Debug)]
pub(crate) struct Work {
    _held: watch::Receiver<()>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_hears_the_trigger_even_one_made_after_it() {
        let shutdown = Shutdown::new();
        let mut early = shutdown.signal();
        let waiting = tokio::spawn(async move { early.signalled().await });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        waiting.await.unwrap();
        assert!(shutdown.is_triggered());
        assert!(shutdown.signal().is_signalled());
        // Made after the trigger: resolves at once.
        shutdown.signalled().await;
        shutdown.clone().trigger();
        assert!(shutdown.signal().wait_timeout(Duration::ZERO));
    }

    #[tokio::test]
    async fn a_dropped_shutdown_counts_as_signalled() {
        let shutdown = Shutdown::new();
        let mut signal = shutdown.signal();
        assert!(!signal.is_signalled());
        assert!(!signal.wait_timeout(Duration::ZERO));
        drop(shutdown);
        assert!(signal.is_signalled());
        assert!(signal.wait_timeout(Duration::ZERO), "threads hear it too");
        signal.signalled().await;
    }

    #[tokio::test]
    async fn finished_waits_for_every_work_guard() {
        let shutdown = Shutdown::new();
        shutdown.finished().await;
        let a = shutdown.work();
        let b = shutdown.work();
        let finished = shutdown.clone();
        let mut done = tokio::spawn(async move { finished.finished().await });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!done.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), &mut done)
            .await
            .expect("finished once the last guard is gone")
            .unwrap();
    }

    #[test]
    fn a_thread_wakes_when_triggered_not_at_its_timeout() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.signal().wait_timeout(Duration::from_millis(1)));
        let waiter = shutdown.signal();
        let started = std::time::Instant::now();
        let thread = std::thread::spawn(move || waiter.wait_timeout(Duration::from_secs(60)));
        shutdown.trigger();
        assert!(thread.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
