//! Session events for the services behind the gateway (`[notify]`, contract §8): when a
//! session ends (and, if asked, at each login) a small signed JSON event is POSTed to each
//! configured receiver, so an app that keeps its own state for the session can end it too.
//!
//! Off the request path: the request only queues the event (a `VecDeque` behind a
//! `std::sync::Mutex` held for a push, never across an await) and returns; a few worker tasks
//! ([`WORKERS`]) take events from the queue and POST them, each attempt bounded by
//! `notify.timeout`, a failed one (no connection, a timeout, an answer other than 2xx)
//! retried `notify.retries` times after growing pauses ([`backoff`]), then dropped. An event
//! beyond `notify.max_queue` is dropped at once. Every drop is counted in
//! `authgate_notify_failures_total{reason}` (`queue_full`, `undelivered`, `disabled`) and
//! logged; a slow or dead receiver never slows a logout.
//!
//! Each attempt goes to the receivers of the config live *when it starts* (the settings sit
//! behind an `ArcSwap` that a reload replaces), to those that have not taken the event yet:
//! events queued, or being retried, when a reload changes `urls` go to the new urls; a
//! reload that empties `urls` drops what is queued (`disabled`).
//!
//! Sent once across instances: the callers queue an event only where this instance ended
//! the session (the store answers each end to exactly one caller), never on the revocation
//! channel, which every instance hears. Never a token in an event: only ids (`sign.rs`).

mod sign;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub(crate) use sign::{About, Reason};

use crate::config::{Notify, NotifyTarget};
use crate::shutdown::Signal;

/// Deliveries at once: a hanging receiver holds at most this many events in flight.
pub(crate) const WORKERS: usize = 4;

/// The header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub(crate) const SIGNATURE_HEADER: &str = "x-authgate-signature";

/// The pause before retry `n` (0-based): 200 ms, 800 ms, 3.2 s, ... at most 10 s.
pub(crate) fn backoff(n: u32) -> Duration {
    let ms = 200u64.saturating_mul(4u64.saturating_pow(n));
    Duration::from_millis(ms.min(10_000))
}

/// The queue and the workers' shared state. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ArcSwap<Settings>,
    queue: Mutex<VecDeque<Bytes>>,
    wake: tokio::sync::Notify,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Round robin over a target's `host:port`s.
    next: AtomicUsize,
    counts: Counts,
}

/// One config's `[notify]` with its HMAC key.
struct Settings {
    notify: Notify,
    key: aws_lc_rs::hmac::Key,
}

/// This gateway's own counts (the metrics are the process's: a test process runs several
/// gateways, whose tests read these).
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    queue_full: AtomicU64,
    undelivered: AtomicU64,
    disabled: AtomicU64,
}

/// Counts one sent event, here and in `authgate_notify_sent_total`.
fn sent(c: &Counts) {
    c.sent.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("authgate_notify_sent_total").increment(1);
}

/// Counts one dropped event, here and in `authgate_notify_failures_total{reason}`.
fn dropped(n: &AtomicU64, reason: &'static str) {
    n.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("authgate_notify_failures_total", "reason" => reason).increment(1);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A push or pop never panics half-way: a poisoned queue is still good.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Notifier {
    pub(crate) fn new(notify: &Notify) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                settings: ArcSwap::from_pointee(Settings::new(notify)),
                queue: Mutex::new(VecDeque::new()),
                wake: tokio::sync::Notify::new(),
                client,
                next: AtomicUsize::new(0),
                counts: Counts::default(),
            }),
        }
    }

    /// Takes a reloaded config's `[notify]`: the next attempt of every event, queued or
    /// being retried, goes to its urls.
    pub(crate) fn configure(&self, notify: &Notify) {
        self.inner.settings.store(Arc::new(Settings::new(notify)));
    }

    /// Starts the workers; each stops at its shutdown signal (what is still queued then is
    /// logged, not sent).
    pub(crate) fn spawn(&self, mut signal: impl FnMut() -> Signal) {
        for _ in 0..WORKERS {
            tokio::spawn(worker(self.inner.clone(), signal()));
        }
    }

    /// Queues `session_ended` for a session this instance has just ended.
    pub(crate) fn session_ended(&self, about: About<'_>, reason: Reason) {
        let s = self.inner.settings.load();
        if s.notify.session_ended && !s.notify.targets.is_empty() {
            self.push(&s, sign::body(about, Some(reason), now(), rid().as_deref()));
        }
    }

    /// Queues `login` for a session just created (if `events` asks for it).
    pub(crate) fn login(&self, about: About<'_>) {
        let s = self.inner.settings.load();
        if s.notify.login && !s.notify.targets.is_empty() {
            self.push(&s, sign::body(about, None, now(), rid().as_deref()));
        }
    }

    fn push(&self, s: &Settings, body: Vec<u8>) {
        {
            let mut q = lock(&self.inner.queue);
            if q.len() >= s.notify.max_queue {
                drop(q);
                dropped(&self.inner.counts.queue_full, "queue_full");
                tracing::warn!(
                    max_queue = s.notify.max_queue,
                    "session event dropped: the notify queue is full (receivers too slow or down)"
                );
                return;
            }
            q.push_back(Bytes::from(body));
        }
        self.inner.wake.notify_one();
    }

    /// This gateway's counts: sent, and dropped for `queue_full`, `undelivered`, `disabled`.
    pub(crate) fn counts(&self) -> [u64; 4] {
        let c = &self.inner.counts;
        [&c.sent, &c.queue_full, &c.undelivered, &c.disabled].map(|n| n.load(Ordering::Relaxed))
    }
}

fn now() -> u64 {
    crate::clock::unix_now()
}

fn rid() -> Option<String> {
    crate::logs::scope::request_id()
}

impl Settings {
    fn new(notify: &Notify) -> Self {
        Self {
            key: sign::key(&notify.secret),
            notify: notify.clone(),
        }
    }
}

async fn worker(inner: Arc<Inner>, mut stop: Signal) {
    loop {
        let next = lock(&inner.queue).pop_front();
        let body = match next {
            Some(body) => body,
            None => {
                // A push between the pop and this wait left a permit: nothing is missed.
                tokio::select! {
                    _ = stop.signalled() => break,
                    _ = inner.wake.notified() => {}
                }
                continue;
            }
        };
        tokio::select! {
            _ = stop.signalled() => break,
            _ = inner.deliver(&body) => {}
        }
    }
    let left = std::mem::take(&mut *lock(&inner.queue)).len();
    if left > 0 {
        tracing::warn!(
            events = left,
            "session events not sent: the gateway is shutting down"
        );
    }
}

impl Inner {
    /// Every attempt of one event, until each live receiver took it or the retries ran out.
    async fn deliver(&self, body: &Bytes) {
        let mut done: Vec<String> = Vec::new();
        let mut attempt = 0u32;
        loop {
            let s = self.settings.load_full();
            if s.notify.targets.is_empty() {
                dropped(&self.counts.disabled, "disabled");
                tracing::info!("session event dropped: [notify] was turned off by a reload");
                return;
            }
            let pending: Vec<&NotifyTarget> = s
                .notify
                .targets
                .iter()
                .filter(|t| !done.contains(&t.url))
                .collect();
            let results =
                futures_util::future::join_all(pending.iter().map(|t| self.post(&s, t, body)))
                    .await;
            let mut failed = Vec::new();
            for (t, r) in pending.iter().zip(results) {
                match r {
                    Ok(()) => {
                        sent(&self.counts);
                        done.push(t.url.clone());
                    }
                    Err(why) => failed.push((t.url.as_str(), why)),
                }
            }
            if failed.is_empty() {
                return;
            }
            if attempt >= s.notify.retries {
                for (url, why) in failed {
                    dropped(&self.counts.undelivered, "undelivered");
                    tracing::warn!(
                        %url,
                        attempts = attempt + 1,
                        error = %why,
                        "session event dropped: the receiver did not take it"
                    );
                }
                return;
            }
            for (url, why) in &failed {
                tracing::debug!(%url, error = %why, attempt, "session event not taken; retrying");
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// One POST: `Ok` on a 2xx answer's head within the timeout.
    async fn post(&self, s: &Settings, t: &NotifyTarget, body: &Bytes) -> Result<(), String> {
        if t.authorities.is_empty() {
            return Err("no address to send to".into());
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % t.authorities.len();
        let authority = t.authorities[i].clone();
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(t.path.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let sig = sign::signature(&s.key, now(), body);
        let req = Request::post(uri)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .header(SIGNATURE_HEADER, sig)
            .header(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("authgate/", env!("CARGO_PKG_VERSION"))),
            )
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(s.notify.timeout, self.client.request(req)).await {
            Err(_) => Err(format!(
                "no answer within {}",
                crate::config::duration::format(s.notify.timeout)
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(format!("answered {}", resp.status().as_u16())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(800));
        assert_eq!(backoff(2), Duration::from_millis(3200));
        assert_eq!(backoff(3), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn off_queues_nothing_and_a_full_queue_drops_and_counts() {
        let n = Notifier::new(&Notify::off());
        let about = About {
            session_id: "s",
            user_id: "u",
            platform: "web",
        };
        n.session_ended(about, Reason::Logout);
        assert_eq!(lock(&n.inner.queue).len(), 0);
        // No workers: the queue only fills.
        let mut on = Notify::off();
        on.targets.push(NotifyTarget {
            url: "http://127.0.0.1:9/h".into(),
            authorities: vec!["127.0.0.1:9".parse().unwrap()],
            path: "/h".parse().unwrap(),
        });
        on.session_ended = true;
        on.max_queue = 2;
        n.configure(&on);
        n.login(about);
        assert_eq!(lock(&n.inner.queue).len(), 0, "login is not asked for");
        for _ in 0..3 {
            n.session_ended(about, Reason::Logout);
        }
        assert_eq!(lock(&n.inner.queue).len(), 2);
        assert_eq!(n.inner.counts.queue_full.load(Ordering::Relaxed), 1);
    }
}
