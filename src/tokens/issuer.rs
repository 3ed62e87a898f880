//! One `[[token.issuers]]` entry: an identity provider whose tokens are verified here (and never
//! minted, refreshed or session-checked), with the keys it currently publishes.
//!
//! The keys live behind an `ArcSwap`, swapped whole by a fetch. A fetch happens:
//! - in the background ([`Issuer::spawn_refresher`]): at once, then every `jwks_refresh` (or
//!   the JWKS answer's shorter `Cache-Control: max-age`, never under a minute), and every
//!   [`RETRY_AFTER`] after a failure;
//! - on demand ([`Issuer::refetch`]) when a token names a `kid` the keys lack, or arrives before
//!   any keys did: at most once per [`RETRY_AFTER`] per issuer, single-flight (a burst of tokens
//!   with new kids makes one fetch; each waits for it, then looks again).
//!
//! A failed or malformed fetch keeps the last good keys. Each attempt is counted in
//! `authgate_jwks_fetches_total{issuer,result}` and failures are logged. The key set carries a
//! generation, raised only when the keys really change: the verify cache stamps a foreign
//! token with it, so a token verified by a key that a rotation removed is looked at again (and
//! refused) after the next fetch instead of living on in the cache.
//!
//! A reload keeps an issuer whose entry did not change: the new ring holds the same `Issuer`
//! (`KeyRing::reuse_issuers`), with its keys, its schedule and its running refresher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::fetch::{FetchError, Fetched, Fetcher, Source, MAX_KEYS};
use crate::claims::ClaimPath;
use crate::clock::{Clock, Millis};
use crate::shutdown::Signal;

/// Shortest wait between two on-demand fetches of one issuer, and between a failed fetch and
/// the next attempt; also the `Retry-After` of `issuer_unavailable`.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Shortest periodic refresh, whatever `max-age` says.
const MIN_REFRESH: Duration = Duration::from_secs(60);
/// How often the background task looks at the clock (tests move the clock, not the timers).
const TICK: Duration = Duration::from_secs(1);

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    Fetched(Source),
    /// `public_key_file`: one key, whatever `kid` a token names.
    Static(Vec<u8>),
}

/// An issuer as configured (validated).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IssuerSpec {
    /// The exact `iss`.
    pub(crate) issuer: String,
    pub(crate) source: KeySource,
    pub(crate) audiences: Vec<String>,
    /// Pinned; asymmetric only.
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) refresh: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) user_name: ClaimPath,
    pub(crate) roles: ClaimPath,
    pub(crate) tenant: ClaimPath,
    /// `ca_file`'s PEM text.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// The ring's leeway, for the validation.
    pub(crate) leeway: Duration,
}

/// One key an issuer's tokens verify with.
pub(crate) struct IssuerKey {
    pub(crate) decoding: DecodingKey,
    /// Exactly the algorithms this key may verify, iss, aud any-of, exp/iss/aud/sub required.
    pub(crate) validation: Validation,
    fingerprint: String,
}

/// The keys of one fetch (or of `public_key_file`).
#[derive(Default)]
pub(crate) struct KeySet {
    pub(crate) generation: u64,
    pub(crate) keys: HashMap<String, IssuerKey>,
}

/// The fetch schedule, behind the single-flight lock.
#[derive(Default)]
struct Schedule {
    /// When the next background fetch is due (0: at once).
    next_due: Millis,
    /// The last on-demand fetch.
    last_on_demand: Option<Millis>,
    /// The error of the last fetch, while fetches fail: a failure is logged once (and again
    /// only when its cause changes), and the first success after it says so.
    failing: Option<String>,
}

/// An issuer with its current keys.
pub(crate) struct Issuer {
    pub(crate) spec: IssuerSpec,
    keys: ArcSwap<KeySet>,
    /// Mirrors `keys.generation`, for the verify cache's cheap check.
    generation: AtomicU64,
    /// Whether any keys ever arrived.
    has_keys: std::sync::atomic::AtomicBool,
    /// Single flight: held for the whole of a fetch.
    schedule: tokio::sync::Mutex<Schedule>,
    /// Fetches finished, so a caller that waited for the lock can tell one ran meanwhile.
    finished: AtomicU64,
    fetcher: OnceLock<Result<Fetcher, String>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.spec.issuer)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer without keys yet; a static key is loaded at once (and must load).
    pub(crate) fn new(spec: IssuerSpec, static_key: Option<DecodingKey>) -> Self {
        let issuer = Self {
            keys: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            has_keys: false.into(),
            schedule: tokio::sync::Mutex::new(Schedule::default()),
            finished: AtomicU64::new(0),
            fetcher: OnceLock::new(),
            spec,
        };
        if let Some(decoding) = static_key {
            let key = IssuerKey {
                validation: validation(&issuer.spec, issuer.spec.algorithms.clone()),
                decoding,
                fingerprint: String::new(),
            };
            issuer.install(HashMap::from([(String::new(), key)]));
        }
        issuer
    }

    /// The issuer's `iss`.
    pub(crate) fn name(&self) -> &str {
        &self.spec.issuer
    }

    pub(crate) fn is_static(&self) -> bool {
        matches!(self.spec.source, KeySource::Static(_))
    }

    /// The current keys.
    pub(crate) fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// The key for a token's `kid`: the static key whatever it names, else by kid.
    pub(crate) fn key<'k>(&self, set: &'k KeySet, kid: Option<&str>) -> Option<&'k IssuerKey> {
        if self.is_static() {
            set.keys.values().next()
        } else {
            set.keys.get(kid.unwrap_or(""))
        }
    }

    /// The generation of the current keys (0: none yet).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn has_keys(&self) -> bool {
        self.has_keys.load(Ordering::Acquire)
    }

    pub(crate) fn key_count(&self) -> usize {
        self.keys.load().keys.len()
    }

    /// An on-demand fetch for a token whose key is missing: at most one per [`RETRY_AFTER`],
    /// single-flight. Returns once this issuer's keys are as fresh as they will get for now.
    ///
    /// The fetch runs in a task of its own, so a request that is cancelled while it waits
    /// (a client gone, a stream reset) neither spends the 30 s slot on nothing nor leaves the
    /// requests waiting behind it without keys.
    pub(crate) async fn refetch(self: &Arc<Self>, clock: &Clock) {
        if self.is_static() {
            return;
        }
        let seen = self.finished.load(Ordering::Acquire);
        let me = Arc::clone(self);
        let clock = clock.clone();
        // A join error (the runtime shutting down) leaves the keys as they are.
        let _ = tokio::spawn(async move { me.refetch_after(seen, &clock).await }).await;
    }

    /// [`Self::refetch`]'s work: `seen` is the count of finished fetches when it was asked.
    async fn refetch_after(&self, seen: u64, clock: &Clock) {
        let mut schedule = self.schedule.lock().await;
        if self.finished.load(Ordering::Acquire) != seen {
            // A fetch (another request's, or the background one) finished while this waited.
            return;
        }
        let now = clock.now_ms();
        if schedule
            .last_on_demand
            .is_some_and(|last| now < last + RETRY_AFTER)
        {
            return;
        }
        schedule.last_on_demand = Some(now);
        // The outcome is logged and counted there; the caller just looks at the keys again.
        let _ = self.fetch_locked(&mut schedule, clock, "kid").await;
    }

    /// Fetches at once, through the single-flight lock, and reports the outcome (for
    /// `authgate check --probe`).
    pub(crate) async fn probe(&self, clock: &Clock) -> Result<usize, String> {
        if self.is_static() {
            return Ok(self.key_count());
        }
        let mut schedule = self.schedule.lock().await;
        match self.fetch_locked(&mut schedule, clock, "probe").await {
            Ok(()) => Ok(self.key_count()),
            Err(e) => Err(e),
        }
    }

    /// Keeps the keys fresh until the issuer is dropped (a reload replaced it) or shutdown.
    pub(crate) fn spawn_refresher(self: &Arc<Self>, clock: Clock, mut stop: Signal) {
        if self.is_static() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                if let Some(me) = weak.upgrade() {
                    let mut schedule = me.schedule.lock().await;
                    if clock.now_ms() >= schedule.next_due {
                        tokio::select! {
                            _ = stop.signalled() => return,
                            _ = me.fetch_locked(&mut schedule, &clock, "refresh") => {}
                        }
                    }
                } else {
                    return;
                }
                tokio::select! {
                    _ = stop.signalled() => return,
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
        });
    }

    /// One fetch, the lock held: installs the keys when they changed, schedules the next one,
    /// counts and logs.
    async fn fetch_locked(
        &self,
        schedule: &mut Schedule,
        clock: &Clock,
        why: &'static str,
    ) -> Result<(), String> {
        let KeySource::Fetched(source) = &self.spec.source else {
            return Ok(());
        };
        let fetcher = match self
            .fetcher
            .get_or_init(|| Fetcher::new(self.spec.ca_pem.as_deref()))
        {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(issuer = %self.spec.issuer, error = %e, "issuer keys: no HTTP client");
                schedule.next_due = clock.now_ms() + RETRY_AFTER;
                return Err(e.clone());
            }
        };
        let result = fetcher
            .fetch(
                &self.spec.issuer,
                source,
                &self.spec.algorithms,
                self.spec.fetch_timeout,
            )
            .await;
        self.finished.fetch_add(1, Ordering::Release);
        // Counted once it took effect (keys installed, next fetch scheduled): a fetch the
        // metric shows is one whose outcome requests already see.
        let (label, outcome) = match result {
            Ok(fetched) => {
                schedule.next_due = clock.now_ms() + self.next_refresh(&fetched);
                let recovered = schedule.failing.take().is_some();
                self.take(fetched, why, recovered);
                ("ok", Ok(()))
            }
            Err(e) => {
                schedule.next_due = clock.now_ms() + RETRY_AFTER;
                let text = e.to_string();
                if schedule.failing.as_deref() == Some(text.as_str()) {
                    tracing::debug!(issuer = %self.spec.issuer, why, error = %e, "issuer keys: fetch failed again");
                } else {
                    self.failed(&e, why);
                    schedule.failing = Some(text.clone());
                }
                (e.label(), Err(text))
            }
        };
        metrics::counter!(
            "authgate_jwks_fetches_total",
            "issuer" => self.spec.issuer.clone(),
            "result" => label,
        )
        .increment(1);
        outcome
    }

    fn next_refresh(&self, fetched: &Fetched) -> Duration {
        let refresh = match fetched.max_age {
            Some(age) => age.min(self.spec.refresh),
            None => self.spec.refresh,
        };
        refresh.max(MIN_REFRESH)
    }

    /// Installs fetched keys (when they differ from the current ones); `recovered`: the
    /// fetches before this one failed.
    fn take(&self, fetched: Fetched, why: &'static str, recovered: bool) {
        for skipped in &fetched.skipped {
            tracing::debug!(issuer = %self.spec.issuer, key = %skipped, "issuer keys: JWK skipped");
        }
        if !fetched.beyond_limit.is_empty() {
            // Unlike an encryption key or a foreign algorithm, these are signing keys whose
            // tokens will be refused: the operator needs to hear of it.
            tracing::warn!(issuer = %self.spec.issuer, why, dropped = %fetched.beyond_limit.join(", "),
                "issuer keys: the JWKS holds more than {MAX_KEYS} usable keys; only the first {MAX_KEYS} are used");
        }
        let keys: HashMap<String, IssuerKey> = fetched
            .keys
            .into_iter()
            .map(|(kid, k)| {
                let key = IssuerKey {
                    validation: validation(&self.spec, k.algs),
                    decoding: k.decoding,
                    fingerprint: k.fingerprint,
                };
                (kid, key)
            })
            .collect();
        let current = self.keys.load();
        let same = current.keys.len() == keys.len()
            && keys.iter().all(|(kid, k)| {
                current
                    .keys
                    .get(kid)
                    .is_some_and(|c| c.fingerprint == k.fingerprint)
            });
        if same && self.has_keys() {
            if recovered {
                tracing::info!(issuer = %self.spec.issuer, why, "issuer keys: fetched again after failures; unchanged");
            } else {
                tracing::debug!(issuer = %self.spec.issuer, why, "issuer keys: unchanged");
            }
            return;
        }
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        let kids = kids.join(", ");
        tracing::info!(issuer = %self.spec.issuer, why, %kids, "issuer keys: loaded");
        drop(current);
        self.install(keys);
    }

    fn install(&self, keys: HashMap<String, IssuerKey>) {
        let generation = self.generation() + 1;
        self.keys.store(Arc::new(KeySet { generation, keys }));
        self.generation.store(generation, Ordering::Release);
        self.has_keys.store(true, Ordering::Release);
    }

    fn failed(&self, e: &FetchError, why: &'static str) {
        if self.has_keys() {
            tracing::warn!(issuer = %self.spec.issuer, why, error = %e, keys = self.key_count(),
                "issuer keys: fetch failed; the last good keys stay");
        } else {
            tracing::error!(issuer = %self.spec.issuer, why, error = %e,
                "issuer keys: fetch failed; this issuer's tokens get 503 issuer_unavailable until keys arrive");
        }
    }
}

/// The validation of one issuer key: exactly `algs`, the issuer's `iss`, any of its audiences,
/// exp/iss/aud/sub required; time is checked by the ring against its `now`.
fn validation(spec: &IssuerSpec, algs: Vec<Algorithm>) -> Validation {
    let mut v = Validation::new(algs.first().copied().unwrap_or(Algorithm::RS256));
    v.algorithms = algs;
    v.leeway = spec.leeway.as_secs();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = true;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.set_issuer(&[&spec.issuer]);
    v.set_audience(&spec.audiences);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn spec(jwks_url: String) -> IssuerSpec {
        IssuerSpec {
            issuer: "http://idp.test".into(),
            source: KeySource::Fetched(Source::Jwks(jwks_url)),
            audiences: vec!["legacy-app".into()],
            algorithms: vec![Algorithm::ES256],
            refresh: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(5),
            user_name: ClaimPath::Name("preferred_username".into()),
            roles: ClaimPath::Name("roles".into()),
            tenant: ClaimPath::Name("tenant".into()),
            ca_pem: None,
            leeway: Duration::from_secs(30),
        }
    }

    /// A request cancelled while its fetch runs must not spend the 30 s slot on nothing: the
    /// fetch finishes without it, and whoever waited behind it finds the keys.
    #[tokio::test]
    async fn a_cancelled_request_does_not_cancel_its_fetch() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = accepted_tx.send(());
            // The fetch is under way; it is answered only once its caller is gone.
            let _ = answer_rx.await;
            let body = serde_json::json!({"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            }]})
            .to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
        let issuer = Arc::new(Issuer::new(spec(url), None));
        let clock = Clock::system();
        let first = {
            let (issuer, clock) = (issuer.clone(), clock.clone());
            tokio::spawn(async move { issuer.refetch(&clock).await })
        };
        accepted_rx.await.unwrap();
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        answer_tx.send(()).unwrap();
        // Waits for the lock the fetch holds, then sees that a fetch finished.
        issuer.refetch(&clock).await;
        assert!(
            issuer.has_keys(),
            "the fetch of the cancelled request finished"
        );
        assert_eq!(issuer.key_count(), 1);
    }
}
