//! The Redis session store, shared by every gateway instance; sessions survive gateway
//! restarts.
//!
//! # Key layout (`<p>` is `key_prefix`, default `authgate:`)
//! - `<p>{u:<user_id>}`: a string holding all of one user's session records back to back
//!   (`record.rs`; ~390 bytes of Redis memory per session with a browser user agent, key
//!   included). Its TTL is the latest expiry among them. One key per user (not a hash per
//!   session plus an index) because that is what meets the memory target: see `record.rs`.
//!   The hash tag keeps anything added for a user later on the same cluster slot. The hot-path
//!   check is one `GET` of it, decoded here (a user has a handful of records).
//! - `<p>lock:<key>`: failed logins (`lock:u:<username>`, `lock:ip:<ip>`), a hash
//!   `{n: count, e: window end}`, TTL (`PEXPIRE`) the window.
//! - `<p>locked:<key>`: lock-out, value the Unix millisecond it ends, TTL (`PX`) the lock
//!   duration.
//! - `<p>captcha:<id>`: a captcha challenge, value `<expiry in Unix ms>:<answer>`, TTL (`PX`)
//!   its `ttl`; taken with `GETDEL` (one winner across instances), and live only while the
//!   `now` passed in is before the expiry, like every other time here.
//! - `<p>stats:active`: the `authgate_sessions_active` approximation, a hash from expiry hour
//!   (`expires_at` in Unix hours) to the number of sessions expiring in it. Every change adjusts it
//!   after the fact, in a write the caller does not wait for; reading sums the hours not yet
//!   past. So it is off by sessions that idle out within the current hour and by any update
//!   lost to a failure, and heals as hours pass. TTL: the last hour it counts.
//! - Channel `<p>revoked`: `PUBLISH`ed by the scripts whenever a session ends, payload
//!   `base64url(user_id) "."` followed by the 16 raw bytes of the session id; and whenever
//!   one is rotated (its expiry moves), the same behind a `~`, which only the local caches
//!   heed (`cache.rs`: an instance answers repeat checks from memory, forgetting a session
//!   as soon as the channel names it, and trusting nothing while the channel is down).
//!
//! Every write that must be atomic (create with kick-out, rotation, end) is one Lua script on
//! the user's one key, so it works unchanged on Redis Cluster. Each script rewrites the key
//! without the records past their expiry, and returns those still marked active (lapsed,
//! never marked expired) with its answer: the caller tells `[notify]` of their expiry
//! ([`RedisStore::on_expired`]), the only caller that ever sees them. A user's last session
//! lapsing with no write after it is told by nobody: the key's TTL ends with it. Times inside records are the
//! `now` passed in (Unix milliseconds, in ARGV: the scripts never call `TIME`); Redis TTLs
//! (`PX`/`PEXPIRE`) only collect garbage.
//!
//! # Upgrading from seconds
//! Versions before issue 15 kept these times in Unix seconds. Session records carry a layout
//! version (`record.rs`): a layout-1 (seconds) record is converted to milliseconds whenever it
//! is read, by Rust and by the scripts alike, and stored so at the user's next write. The
//! lock-out values have no version, so they are told apart by size: a window end or lock end
//! below 10^11 is seconds (as milliseconds it would be 1973) and is read × 1000. Either way a
//! time cut to its second only makes a window shorter, so an upgrade logs nobody out and locks
//! nobody longer. Old and new versions must not run side by side on one Redis: an old one
//! cannot read layout-2 records.
//!
//! # Failure
//! A single node goes through a `ConnectionManager` (reconnects by itself); a cluster through
//! `cluster_async::ClusterConnection`; Sentinel through `sentinel.rs` (the master the sentinels
//! name, asked again when a call fails, so failovers are followed; `WAIT` for a replica after a
//! login and a rotation). Connect and response timeouts are both `timeout`, and every
//! operation is also bounded by it as a whole (`RedisStore::timed`): while Redis is down,
//! operations fail with [`StoreError::Unavailable`], and they work again once it is back,
//! without recreating the store. In front of every call, the circuit breaker (`breaker.rs`):
//! after a few unreachable calls in a row it fails them at once without a network call, and
//! lets one probe through per cool-down. The revocation subscriber is a task of its own that
//! resubscribes with backoff (each attempt bounded by twice the timeout, a ping every 10 s
//! bounded by it) and announces [`RECHECK_ALL`] after a gap.
//!
//! Lock-out counters and captcha challenges do not fail while Redis is unreachable: they fall
//! back to a per-instance [`MemoryStore`], each failure counted [`DEGRADED_WEIGHT`] times (so
//! the fallback locks sooner, never later), said once per outage in the log and counted in
//! `authgate_lockout_degraded_total`.
//!
//! A response lost to a timeout may still have been applied (a rotation, say): that is why a
//! refresh token retried within the grace gets the same successor, and why a store error is
//! never treated as a failed login or a theft. Sessions outlive a Redis restart only if Redis
//! persists its data (RDB or AOF); that is Redis's configuration, not ours.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use tokio::sync::{broadcast, watch};

use super::breaker::{self, Admit, Breaker};
use super::ids::{
    b64, format_token, random, sid_of_user, sid_prefix, token_hash, ParsedToken, Secret, SidBytes,
};
use super::memory::{ExpiryHook, MemoryStore};
use super::record::{self, Entry};
use super::sentinel::SentinelConn;
use super::{
    is_ancestor, Created, EndReason, Lifetimes, LocalCache, Millis, NewSession, RefreshOutcome,
    Session, SessionCheck, StoreError, StoreSettings, MAX_SESSIONS_PER_USER,
    MAX_TOMBSTONES_PER_USER, RECHECK_ALL,
};
use crate::clock::ms_of;

const COMMON: &str = include_str!("lua/common.lua");
/// Captcha challenges the per-instance fallback keeps at most (while Redis is unreachable).
const LOCAL_CAPTCHAS: usize = 10_000;
/// A request moves `last_seen_at` at most this often (a background write), in ms.
pub(crate) const TOUCH_EVERY: u64 = 60_000;
const HOUR: u64 = 3600;
const HOUR_MS: u64 = HOUR * 1000;
/// Lock-out values below this were written in Unix seconds by a version before issue 15
/// (10^11 s is the year 5138; 10^11 ms is 1973, before anything this version writes).
const LEGACY_SECONDS_BELOW: u64 = 100_000_000_000;

/// A lock-out time as stored: Unix ms, or Unix seconds from an older version.
fn stored_time(v: u64) -> Millis {
    if v < LEGACY_SECONDS_BELOW {
        Millis::from_secs(v)
    } else {
        Millis(v)
    }
}

/// The answer of a stored challenge (`<expiry ms>:<answer>`), if it is live at `now`.
fn live_captcha(value: &str, now: Millis) -> Option<String> {
    let (expires, answer) = value.split_once(':')?;
    let expires: u64 = expires.parse().ok()?;
    (Millis(expires) > now).then(|| answer.to_owned())
}

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://` or `rediss://` URL of one node.
    Single(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    /// The master the sentinels at `nodes` know as `master`, with the credentials, database
    /// and TLS of `redis_url` (its host unused).
    Sentinel {
        master: String,
        nodes: Vec<String>,
        redis_url: String,
    },
}

/// The connection: one reconnecting node, a cluster, or the master the sentinels name. All
/// cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}

struct Scripts {
    create: Script,
    refresh: Script,
    end: Script,
    touch: Script,
    failure: Script,
    forgive: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            create: with_common(include_str!("lua/create.lua")),
            refresh: with_common(include_str!("lua/refresh.lua")),
            end: with_common(include_str!("lua/end.lua")),
            touch: with_common(include_str!("lua/touch.lua")),
            failure: Script::new(include_str!("lua/failure.lua")),
            forgive: Script::new(include_str!("lua/forgive.lua")),
        }
    }
}

/// The Redis store. Cheap to clone (shared state).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    prefix: String,
    channel: String,
    stats_key: String,
    settings: StoreSettings,
    timeout: Duration,
    scripts: Scripts,
    revoked: broadcast::Sender<String>,
    /// Whether the revocation subscription is up; tests wait on it before revoking.
    subscribed: watch::Receiver<bool>,
    subscriber: tokio::task::AbortHandle,
    health: Arc<Health>,
    /// The local session cache (`cache.rs`), shared with the subscriber task that keeps it.
    cache: Option<Arc<LocalCache>>,
    /// Fails calls fast while Redis is unreachable ([`breaker`]).
    breaker: Breaker,
    /// Lock-out counters and captcha challenges while Redis is unreachable: per instance,
    /// each failure counted [`DEGRADED_WEIGHT`] times (see [`RedisStore::record_failure`]).
    local: MemoryStore,
    /// The lock-out is on `local` now (for one log line per outage).
    degraded: AtomicBool,
    /// Told of the sessions a script dropped while still marked active, past their expiry
    /// (`LAPSED` in `lua/common.lua`): `[notify]`'s `expired` events.
    on_expired: OnceLock<ExpiryHook>,
}

/// While Redis is unreachable, each failed login counts this many times in the per-instance
/// counters: every instance then locks a username (or an IP) at half its limit, so N
/// instances together allow about N/2 times the limit instead of N times, and a captcha is
/// asked for sooner.
pub(crate) const DEGRADED_WEIGHT: u32 = 2;

/// Whether Redis answers, for one line when it stops ("session store lost") and one when it
/// answers again ("back"), instead of an error line per failed request. Told by every call
/// ([`RedisStore::timed`]) and by the revocation subscription (so an idle gateway notices
/// too). Two relaxed loads on the hot path; the swap only when the state changes.
struct Health {
    down: AtomicBool,
    /// `host:port` of the server (or the cluster's seed nodes), never a password.
    at: String,
}

impl Health {
    fn new(at: String) -> Self {
        Self {
            down: AtomicBool::new(false),
            at,
        }
    }

    fn answered(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(store = "redis", redis = %self.at, "session store back: Redis answers again");
        }
    }

    fn lost(&self, why: &dyn std::fmt::Display) {
        if !self.down.load(Ordering::Relaxed) && !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                store = "redis",
                redis = %self.at,
                error = %why,
                "session store lost: Redis does not answer; requests that need it get 503 \
                 store_unavailable (or pass on their tokens alone with on_store_error = \
                 \"allow_stateless\") until it is back"
            );
        }
    }
}

/// Hands a probe back to the breaker ([`Breaker::abandon`]) when the call that carried it is
/// dropped (its caller cancelled) before it settled, so the next call may probe.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    admitted: &'a Admit,
    settled: bool,
}

impl ProbeGuard<'_> {
    fn defuse(mut self) {
        self.settled = true;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.abandon(self.admitted);
        }
    }
}

/// The `host:port` of a Redis URL: no scheme, no user or password, no database.
pub(crate) fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, h)| h)
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("cluster", &matches!(self.inner.conn, Conn::Cluster(_)))
            .field("sentinel", &matches!(self.inner.conn, Conn::Sentinel(_)))
            .finish_non_exhaustive()
    }
}

fn map_err(e: RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError)
        | ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType
        | ErrorKind::InvalidClientConfig => StoreError::Backend(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Backend(format!("unexpected answer from Redis ({what})"))
}

/// A `{answer, lapsed}` script reply (create, end): the answer's array and the lapsed
/// records for [`RedisStore::tell_lapsed`].
fn split_lapsed(v: Value) -> Result<(Vec<Value>, Option<Value>), StoreError> {
    let mut parts = array(v)?;
    if parts.len() != 2 {
        return Err(unexpected("script reply"));
    }
    let lapsed = parts.pop();
    let answer = parts.pop().map_or(Ok(Vec::new()), array)?;
    Ok((answer, lapsed))
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        _ => Err(unexpected("integer")),
    }
}

fn bytes(v: &Value) -> Result<&[u8], StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        _ => Err(unexpected("string")),
    }
}

fn array(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        _ => Err(unexpected("array")),
    }
}

/// The refresh script's answer: its code, the session's expiry before (for the active
/// counts) and its record after.
struct RefreshReply<'a> {
    code: i64,
    old: Millis,
    record: Entry<'a>,
    session: Session,
}

impl<'a> RefreshReply<'a> {
    /// Reads `[code, old expiry, record]`; `None` for code 0 (no such session).
    fn parse(out: &'a [Value]) -> Result<Option<Self>, StoreError> {
        let [code, old, rec] = out else {
            return Err(unexpected("refresh"));
        };
        let (code, old) = (int(code)?, Millis(int(old)?.max(0) as u64));
        if code == 0 {
            return Ok(None);
        }
        let rec = bytes(rec)?;
        if rec.len() < record::HEADER {
            return Err(unexpected("refresh record"));
        }
        let record = Entry(rec);
        let session = record.to_session()?;
        Ok(Some(Self {
            code,
            old,
            record,
            session,
        }))
    }
}

/// What a message on the revocation channel says.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// The session ended (payload `base64url(user) "."` + 16 raw bytes).
    Ended(String),
    /// The session was rotated, so its expiry moved (the same, behind [`ROTATED_MARK`]):
    /// only for the local cache, not an end.
    Rotated(String),
}

/// Starts the payload of a rotation. Not a base64url character, so never the start of an
/// end's payload; a version before the local cache reads it as the end of a session id that
/// does not exist, which ends nothing.
const ROTATED_MARK: u8 = b'~';

/// Reads a message of the revocation channel.
fn decode_revocation(payload: &[u8]) -> Option<Change> {
    match payload.split_first() {
        Some((&ROTATED_MARK, rest)) => session_id_of(rest).map(Change::Rotated),
        _ => session_id_of(payload).map(Change::Ended),
    }
}

/// `base64url(user) "."` + 16 raw bytes as a session id.
fn session_id_of(payload: &[u8]) -> Option<String> {
    let split = payload.len().checked_sub(16)?;
    let (prefix, raw) = payload.split_at(split);
    let prefix = std::str::from_utf8(prefix).ok()?;
    if !prefix.ends_with('.') || prefix.len() < 2 {
        return None;
    }
    Some(format!("{prefix}{}", b64(raw)))
}

impl RedisStore {
    /// Sets up the store. Does not wait for Redis: an unreachable server shows in
    /// [`Self::ping`] and in each operation's `Err`, and is picked up once it answers. Fails
    /// only for an unusable URL.
    ///
    /// `timeout` bounds connecting and every operation (1 s is a good value).
    pub(crate) async fn connect(
        target: RedisTarget,
        key_prefix: &str,
        settings: StoreSettings,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let bad = |e: RedisError| StoreError::InvalidInput(bad_url(e));
        let (conn, source) = match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(bad)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let manager =
                    ConnectionManager::new_lazy_with_config(client, config).map_err(map_err)?;
                (Conn::Single(manager), Source::Urls(vec![url]))
            }
            RedisTarget::Cluster(nodes) => {
                if nodes.is_empty() {
                    return Err(StoreError::InvalidInput("no Redis Cluster nodes given"));
                }
                for n in &nodes {
                    redis::Client::open(n.as_str()).map_err(bad)?;
                }
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .map_err(bad)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                (
                    Conn::Cluster(client.get_pending_async_connection_with_config(config)),
                    Source::Urls(nodes),
                )
            }
            RedisTarget::Sentinel {
                master,
                nodes,
                redis_url,
            } => {
                if nodes.is_empty() {
                    return Err(StoreError::InvalidInput("no Redis Sentinel nodes given"));
                }
                for n in &nodes {
                    redis::Client::open(n.as_str()).map_err(bad)?;
                }
                let conn = SentinelConn::new(&master, &nodes, &redis_url, timeout).map_err(bad)?;
                (Conn::Sentinel(conn.clone()), Source::Sentinel(conn))
            }
        };
        let channel = format!("{key_prefix}revoked");
        let settings_for_local = settings.clone();
        let (revoked, _) = broadcast::channel(1024);
        let (ready_tx, ready_rx) = watch::channel(false);
        let health = Arc::new(Health::new(source.describe()));
        let cache = settings
            .local_cache
            .map(|c| Arc::new(LocalCache::new(c.ttl, c.max_bytes)));
        let subscriber = tokio::spawn(subscriber(
            source,
            channel.clone(),
            Listeners {
                tx: revoked.clone(),
                ready: ready_tx,
                cache: cache.clone(),
            },
            timeout,
            health.clone(),
        ))
        .abort_handle();
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                prefix: key_prefix.to_owned(),
                stats_key: format!("{key_prefix}stats:active"),
                channel,
                settings,
                timeout,
                scripts: Scripts::new(),
                revoked,
                subscribed: ready_rx,
                subscriber,
                health,
                cache,
                breaker: Breaker::new(breaker::FAILURES, breaker::COOL_DOWN, Instant::now()),
                local: MemoryStore::with_captcha_cap(settings_for_local, LOCAL_CAPTCHAS),
                degraded: AtomicBool::new(false),
                on_expired: OnceLock::new(),
            }),
        })
    }

    /// Sets what is told of the sessions a write drops after their expiry (once; later calls
    /// are ignored).
    pub(crate) fn on_expired(&self, hook: ExpiryHook) {
        let _ = self.inner.on_expired.set(hook);
    }

    /// Tells the expiry hook (if any) of the lapsed sessions a script dropped (its `LAPSED`,
    /// an array of records). The script that dropped them is the only one that saw them, so
    /// each is told once across instances. A record that does not decode is skipped (the
    /// write it came with stands).
    fn tell_lapsed(&self, lapsed: Option<Value>) {
        let Some(lapsed) = lapsed else {
            return;
        };
        let Ok(records) = array(lapsed) else {
            tracing::warn!("unexpected answer from Redis (lapsed sessions)");
            return;
        };
        if records.is_empty() {
            return;
        }
        let sessions: Vec<Session> = records
            .iter()
            .filter_map(|r| {
                let rec = bytes(r).ok().filter(|b| b.len() >= record::HEADER)?;
                Entry(rec).to_session().ok()
            })
            .collect();
        if sessions.len() < records.len() {
            tracing::warn!(
                "a lapsed session record from Redis did not decode; its expiry is not told"
            );
        }
        for s in &sessions {
            self.forget(&s.id);
        }
        if let (Some(hook), false) = (self.inner.on_expired.get(), sessions.is_empty()) {
            hook(sessions);
        }
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}{{u:{user_id}}}", self.inner.prefix)
    }

    /// The tombstone TTL in ms (at least 1: a tombstone of 0 ms would never be seen).
    fn tomb(&self) -> u64 {
        ms_of(self.inner.settings.tombstone_ttl).max(1)
    }

    /// Runs one Redis call, bounded by the timeout, through the circuit breaker: while it is
    /// open the call fails at once and `fut` is never polled (so nothing is sent).
    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        let inner = &*self.inner;
        // Closed (the common case): one relaxed load, no clock read.
        let admitted = if inner.breaker.is_open() {
            inner.breaker.admit(Instant::now())
        } else {
            Admit::Pass
        };
        if admitted == Admit::Reject {
            metrics::counter!("authgate_store_breaker_rejections_total").increment(1);
            return Err(StoreError::Unavailable(
                "circuit open: Redis failed repeatedly, not asked again until the cool-down".into(),
            ));
        }
        // Gives the probe back if this call is dropped before it settles.
        let probe = ProbeGuard {
            breaker: &inner.breaker,
            admitted: &admitted,
            settled: false,
        };
        let result = match tokio::time::timeout(inner.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_err(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                inner.timeout.as_millis()
            ))),
        };
        let reached = !matches!(result, Err(StoreError::Unavailable(_)));
        let was_open = inner.breaker.is_open();
        probe.defuse();
        if inner.breaker.settle(&admitted, reached, Instant::now()) {
            metrics::gauge!("authgate_store_breaker_open").set(1.0);
            tracing::warn!(
                store = "redis",
                redis = %inner.health.at,
                failures = breaker::FAILURES,
                cool_down_ms = breaker::COOL_DOWN.as_millis() as u64,
                "session store circuit open: calls fail fast (503 store_unavailable) without \
                 asking Redis; one probe per cool-down"
            );
        } else if was_open && reached {
            metrics::gauge!("authgate_store_breaker_open").set(0.0);
            tracing::info!(store = "redis", redis = %inner.health.at, "session store circuit closed: a probe got an answer");
        }
        match &result {
            Err(e @ StoreError::Unavailable(_)) => inner.health.lost(e),
            _ => inner.health.answered(),
        }
        result
    }

    /// After a login's or a rotation's write: with Sentinel, waits until a replica has it
    /// (`WAIT`, see `sentinel.rs`) on the same connection `conn` wrote on. Elsewhere nothing.
    async fn replicated(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let Conn::Sentinel(s) = conn else {
            return Ok(());
        };
        if self.timed(s.wait_replicated()).await? {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "no Redis replica acknowledged the write in time".into(),
            ))
        }
    }

    /// The lock-out or captcha operation `what` could not reach Redis: from now on it uses the
    /// per-instance counters (said once per outage, counted each time).
    fn degrade(&self, what: &'static str, e: &StoreError) {
        metrics::counter!("authgate_lockout_degraded_total", "op" => what).increment(1);
        if !self.inner.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                store = "redis",
                redis = %self.inner.health.at,
                error = %e,
                weight = DEGRADED_WEIGHT,
                "login lock-out and captcha degraded to per-instance counters while Redis is \
                 unreachable: each failed login counts double, so accounts lock at half their \
                 limit on each instance"
            );
        }
    }

    /// Whether the lock-out and captcha run on the per-instance fallback now.
    pub(crate) fn lockout_degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::Relaxed)
    }

    /// `r`, or (Redis unreachable: the operation is degraded) `fallback`.
    fn or_degraded<T>(
        &self,
        what: &'static str,
        r: Result<T, StoreError>,
        fallback: T,
    ) -> Result<T, StoreError> {
        match r {
            Err(e @ StoreError::Unavailable(_)) => {
                self.degrade(what, &e);
                Ok(fallback)
            }
            other => other,
        }
    }

    /// A lock-out or captcha operation reached Redis again.
    fn undegrade(&self) {
        if self.inner.degraded.load(Ordering::Relaxed)
            && self.inner.degraded.swap(false, Ordering::Relaxed)
        {
            tracing::info!(store = "redis", "login lock-out and captcha back on Redis");
        }
    }

    /// Starts the sweep of the per-instance lock-out fallback (until `stop`).
    pub(crate) fn spawn_sweeper(&self, stop: crate::shutdown::Signal) {
        self.inner.local.spawn_sweeper(stop);
    }

    /// Whether the circuit breaker is open now (tests).
    #[cfg(test)]
    pub(crate) fn breaker_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Tells this instance at once that these sessions ended (their cache entries go before
    /// the caller answers); other instances hear it through Redis.
    fn publish_local(&self, sids: impl IntoIterator<Item = String>) {
        for sid in sids {
            self.forget(&sid);
            // No receivers is fine.
            let _ = self.inner.revoked.send(sid);
        }
    }

    /// Drops `session_id`'s cache entry (it changed).
    fn forget(&self, session_id: &str) {
        if let Some(c) = &self.inner.cache {
            c.invalidate(session_id);
        }
    }

    /// Adjusts the active-session counters in the background: `(expires_at, delta)`.
    fn bump(&self, deltas: &[(Millis, i64)], now: Millis) {
        let mut by_hour: Vec<(u64, i64)> = Vec::new();
        for &(exp, d) in deltas {
            let h = exp.0 / HOUR_MS;
            match by_hour.iter_mut().find(|(b, _)| *b == h) {
                Some((_, n)) => *n += d,
                None => by_hour.push((h, d)),
            }
        }
        by_hour.retain(|&(_, d)| d != 0);
        if by_hour.is_empty() {
            return;
        }
        let key = &self.inner.stats_key;
        let mut p = redis::pipe();
        for &(h, d) in &by_hour {
            p.cmd("HINCRBY").arg(key).arg(h).arg(d).ignore();
        }
        let last = by_hour.iter().map(|&(h, _)| h).max().unwrap_or(0);
        let ttl = ((last + 1) * HOUR).saturating_sub(now.as_secs()).max(HOUR);
        p.cmd("EXPIRE").arg(key).arg(ttl).arg("NX").ignore();
        p.cmd("EXPIRE").arg(key).arg(ttl).arg("GT").ignore();
        if self.inner.breaker.is_open() {
            return;
        }
        let mut conn = self.inner.conn.clone();
        let timeout = self.inner.timeout;
        tokio::spawn(async move {
            if let Ok(Err(e)) = tokio::time::timeout(timeout, p.exec_async(&mut conn)).await {
                tracing::debug!(error = %e, "active-session counter update lost");
            }
        });
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
        let expires = lifetimes.expiry(now, now);
        let rec = record::encode(&new, &sid, &token_hash(&secret), now, expires)?;
        let session = Entry(&rec).to_session()?;
        let prefix = sid_prefix(&new.user_id);
        let mut conn = self.inner.conn.clone();
        let mut inv = self.inner.scripts.create.key(self.user_key(&new.user_id));
        inv.arg(now.0)
            .arg(&rec[..])
            .arg(max_per_platform.map_or(0, |m| m.max(1)))
            .arg(self.tomb())
            .arg(&self.inner.channel)
            .arg(&prefix)
            .arg(MAX_SESSIONS_PER_USER)
            .arg(MAX_TOMBSTONES_PER_USER);
        let (out, lapsed) = split_lapsed(self.timed(inv.invoke_async(&mut conn)).await?)?;
        self.tell_lapsed(lapsed);
        let mut kicked = Vec::with_capacity(out.len() / 3);
        let mut kicked_platforms = Vec::with_capacity(out.len() / 3);
        let mut deltas = vec![(session.expires_at, 1)];
        for triple in out.chunks(3) {
            let [sid, exp, platform] = triple else {
                return Err(unexpected("create"));
            };
            kicked.push(format!("{prefix}{}", b64(bytes(sid)?)));
            deltas.push((Millis(int(exp)?.max(0) as u64), -1));
            kicked_platforms.push(String::from_utf8_lossy(bytes(platform)?).into_owned());
        }
        self.bump(&deltas, now);
        self.publish_local(kicked.iter().cloned());
        // After the bookkeeping: the kick-outs happened whatever the replicas say.
        self.replicated(&mut conn).await?;
        Ok(Created {
            refresh_token: format_token(&new.user_id, &sid, &secret),
            session,
            kicked,
            kicked_platforms,
        })
    }

    pub(crate) async fn check(
        &self,
        user_id: &str,
        session_id: &str,
        now: Millis,
    ) -> Result<SessionCheck, StoreError> {
        let cache = self.inner.cache.as_deref();
        if let Some(answer) = cache.and_then(|c| c.answer(user_id, session_id, now)) {
            return Ok(answer);
        }
        let Some(sid) = sid_of_user(user_id, session_id) else {
            return Ok(SessionCheck::Unknown);
        };
        let ticket = cache.and_then(LocalCache::ticket);
        let keep = |e: Option<(Entry<'_>, Millis)>| {
            if let (Some(c), Some(t)) = (cache, ticket) {
                c.put(t, session_id, e, now);
            }
        };
        let key = self.user_key(user_id);
        let mut conn = self.inner.conn.clone();
        let doc: Option<Vec<u8>> = self
            .timed(redis::cmd("GET").arg(&key).query_async(&mut conn))
            .await?;
        let Some(doc) = doc else {
            keep(None);
            return Ok(SessionCheck::Unknown);
        };
        let doc = record::upgrade(doc)?;
        let Some(r) = record::find(&doc, user_id, &sid)? else {
            keep(None);
            return Ok(SessionCheck::Unknown);
        };
        let e = Entry(&doc[r]);
        let answer = e.check(now);
        let mut seen = e.seen();
        if answer == SessionCheck::Active && seen.0.saturating_add(TOUCH_EVERY) <= now.0 {
            self.touch(key, sid, now);
            seen = now;
        }
        keep(Some((e, seen)));
        Ok(answer)
    }

    /// Moves `last_seen_at` in the background; a failure only leaves it older.
    fn touch(&self, key: String, sid: SidBytes, now: Millis) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut conn = store.inner.conn.clone();
            let mut inv = store.inner.scripts.touch.key(key);
            inv.arg(now.0).arg(&sid[..]);
            match store.timed(inv.invoke_async::<Value>(&mut conn)).await {
                Ok(lapsed) => store.tell_lapsed(Some(lapsed)),
                Err(e) => tracing::debug!(error = %e, "last-seen update lost"),
            }
        });
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
        let next = self.inner.settings.refresh_key.successor(&p.secret);
        let mut conn = self.inner.conn.clone();
        let mut out = self
            .refresh_script(&mut conn, &p, &next, lifetimes, now)
            .await?;
        // The lapsed sessions this rotation (or theft) dropped: {code, old, record, lapsed}.
        let lapsed = (out.len() == 4).then(|| out.pop()).flatten();
        self.tell_lapsed(lapsed);
        match RefreshReply::parse(&out)? {
            None => Ok(RefreshOutcome::Invalid),
            Some(reply) => {
                let rotated = reply.code == 1;
                let outcome = self.settle_refresh(reply, &p, &next, now).await?;
                if rotated {
                    // A rotation the client is told about must survive a failover; if it is
                    // not known to, the client's retry within the grace gets the same pair.
                    self.replicated(&mut conn).await?;
                }
                Ok(outcome)
            }
        }
    }

    /// Runs the refresh script on the user's key: it decides and applies the rotation, grace
    /// or theft atomically; its raw answer.
    async fn refresh_script(
        &self,
        conn: &mut Conn,
        p: &ParsedToken,
        next: &Secret,
        lifetimes: Lifetimes,
        now: Millis,
    ) -> Result<Vec<Value>, StoreError> {
        let presented = token_hash(&p.secret);
        let prefix = sid_prefix(&p.user_id);
        let mut inv = self.inner.scripts.refresh.key(self.user_key(&p.user_id));
        inv.arg(now.0)
            .arg(&p.sid[..])
            .arg(&presented[..])
            .arg(&token_hash(next)[..])
            .arg(ms_of(self.inner.settings.reuse_grace))
            .arg(ms_of(lifetimes.refresh_ttl))
            // 0 means "no cap" to the script.
            .arg(lifetimes.max_lifetime.map_or(0, |d| ms_of(d).max(1)))
            .arg(self.tomb())
            .arg(&self.inner.channel)
            .arg(&prefix);
        array(self.timed(inv.invoke_async::<Value>(conn)).await?)
    }

    /// The outcome the script's code stands for, with the local bookkeeping it calls for
    /// (active counts, local revocations); code 4 is checked here for theft.
    async fn settle_refresh(
        &self,
        reply: RefreshReply<'_>,
        p: &ParsedToken,
        next: &Secret,
        now: Millis,
    ) -> Result<RefreshOutcome, StoreError> {
        let RefreshReply {
            code,
            old,
            record: e,
            session,
        } = reply;
        Ok(match code {
            1 => {
                self.bump(&[(old, -1), (session.expires_at, 1)], now);
                // Its expiry moved (the script told the other instances).
                self.forget(&session.id);
                RefreshOutcome::Rotated {
                    session,
                    token: format_token(&p.user_id, &p.sid, next),
                }
            }
            2 => RefreshOutcome::Grace {
                session,
                token: format_token(&p.user_id, &p.sid, next),
            },
            3 => {
                self.bump(&[(old, -1)], now);
                self.publish_local([session.id.clone()]);
                RefreshOutcome::Theft { session }
            }
            4 => return self.older_token(p, e, now).await,
            5 => {
                tracing::warn!(
                    "refresh token parent reused within grace, but its successor does not \
                     match: do all instances share the same refresh key?"
                );
                RefreshOutcome::Invalid
            }
            _ => return Err(unexpected("refresh code")),
        })
    }

    /// Neither token matched (code 4): an older token of the session `e` is theft (the
    /// session ends), anything else a forgery.
    async fn older_token(
        &self,
        p: &ParsedToken,
        e: Entry<'_>,
        now: Millis,
    ) -> Result<RefreshOutcome, StoreError> {
        let key_ = &self.inner.settings.refresh_key;
        if !is_ancestor(key_, &p.secret, e.generation(), e.current(), e.parent()) {
            return Ok(RefreshOutcome::Invalid);
        }
        Ok(
            match self
                .end_matching(&p.user_id, Some(&p.sid), EndReason::Theft, now, false)
                .await?
                .pop()
            {
                Some(session) => RefreshOutcome::Theft { session },
                None => RefreshOutcome::Invalid,
            },
        )
    }

    /// Ends one session (`sid`) or all of a user's; the sessions ended. `lapsed`: only one
    /// still marked active but past its expiry (see [`Self::expire`]).
    async fn end_matching(
        &self,
        user_id: &str,
        sid: Option<&SidBytes>,
        reason: EndReason,
        now: Millis,
        lapsed: bool,
    ) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.inner.conn.clone();
        let mut inv = self.inner.scripts.end.key(self.user_key(user_id));
        inv.arg(now.0)
            .arg(sid.map_or(&[][..], |s| &s[..]))
            .arg(record::reason_code(reason))
            .arg(self.tomb())
            .arg(&self.inner.channel)
            .arg(sid_prefix(user_id))
            .arg(if lapsed { "1" } else { "" });
        let (out, dropped) = split_lapsed(self.timed(inv.invoke_async(&mut conn)).await?)?;
        self.tell_lapsed(dropped);
        let mut ended = Vec::with_capacity(out.len() / 2);
        let mut deltas = Vec::with_capacity(out.len() / 2);
        for pair in out.chunks(2) {
            let [old, rec] = pair else {
                return Err(unexpected("end"));
            };
            let rec = bytes(rec)?;
            if rec.len() < record::HEADER {
                return Err(unexpected("end record"));
            }
            if !lapsed {
                // A lapsed session's hour has passed or is passing: the counters drop it.
                deltas.push((Millis(int(old)?.max(0) as u64), -1));
            }
            ended.push(Entry(rec).to_session()?);
        }
        self.bump(&deltas, now);
        self.publish_local(ended.iter().map(|s| s.id.clone()));
        Ok(ended)
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
        Ok(self
            .end_matching(user_id, Some(&sid), reason, now, false)
            .await?
            .pop())
    }

    pub(crate) async fn end_all(
        &self,
        user_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        self.end_matching(user_id, None, reason, now, false).await
    }

    /// Marks every session of `user_id` still active but past its expiry as ended
    /// (`Expired`); the sessions this call marked (one caller across instances does).
    pub(crate) async fn expire(
        &self,
        user_id: &str,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        self.end_matching(user_id, None, EndReason::Expired, now, true)
            .await
    }

    /// A user's blob, every record in the current layout.
    async fn load(&self, user_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.inner.conn.clone();
        let doc: Option<Vec<u8>> = self
            .timed(
                redis::cmd("GET")
                    .arg(self.user_key(user_id))
                    .query_async(&mut conn),
            )
            .await?;
        doc.map(record::upgrade).transpose()
    }

    pub async fn list(&self, user_id: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        let Some(doc) = self.load(user_id).await? else {
            return Ok(Vec::new());
        };
        record::live_sessions(&doc, user_id, now)
    }

    pub async fn get(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        let Some(sid) = sid_of_user(user_id, session_id) else {
            return Ok(None);
        };
        let Some(doc) = self.load(user_id).await? else {
            return Ok(None);
        };
        record::session(&doc, user_id, &sid)
    }

    async fn redis_record_failure(
        &self,
        key: &str,
        window: Duration,
        now: Millis,
    ) -> Result<u32, StoreError> {
        let mut conn = self.inner.conn.clone();
        let mut inv = self
            .inner
            .scripts
            .failure
            .key(format!("{}lock:{key}", self.inner.prefix));
        // At least 1 ms: PEXPIRE 0 would delete the counter it just wrote.
        inv.arg(now.0).arg(ms_of(window).max(1));
        let n: i64 = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(n.clamp(0, i64::from(u32::MAX)) as u32)
    }

    async fn redis_lock(
        &self,
        key: &str,
        duration: Duration,
        now: Millis,
    ) -> Result<Millis, StoreError> {
        let until = now + duration;
        let mut conn = self.inner.conn.clone();
        let () = self
            .timed(
                redis::cmd("SET")
                    .arg(format!("{}locked:{key}", self.inner.prefix))
                    .arg(until.0)
                    .arg("PX")
                    .arg(ms_of(duration).max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(until)
    }

    async fn redis_locked_until(
        &self,
        key: &str,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        let mut conn = self.inner.conn.clone();
        let until: Option<u64> = self
            .timed(
                redis::cmd("GET")
                    .arg(format!("{}locked:{key}", self.inner.prefix))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(until.map(stored_time).filter(|&u| u > now))
    }

    async fn redis_failures(&self, key: &str, now: Millis) -> Result<u32, StoreError> {
        let mut conn = self.inner.conn.clone();
        let (n, end): (Option<i64>, Option<u64>) = self
            .timed(
                redis::cmd("HMGET")
                    .arg(format!("{}lock:{key}", self.inner.prefix))
                    .arg("n")
                    .arg("e")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(match (n, end) {
            (Some(n), Some(end)) if stored_time(end) > now => {
                n.clamp(0, i64::from(u32::MAX)) as u32
            }
            _ => 0,
        })
    }

    fn captcha_key(&self, id: &str) -> String {
        format!("{}captcha:{id}", self.inner.prefix)
    }

    async fn redis_put_captcha(
        &self,
        id: &str,
        answer: &str,
        ttl: Duration,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        let () = self
            .timed(
                redis::cmd("SET")
                    .arg(self.captcha_key(id))
                    .arg(format!("{}:{answer}", (now + ttl).0))
                    .arg("PX")
                    .arg(ms_of(ttl).max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn redis_take_captcha(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        self.read_captcha("GETDEL", id, now).await
    }

    async fn redis_captcha_answer(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        self.read_captcha("GET", id, now).await
    }

    /// A live challenge's answer by `GET` (a look) or `GETDEL` (spent).
    async fn read_captcha(
        &self,
        command: &str,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.inner.conn.clone();
        let value: Option<String> = self
            .timed(
                redis::cmd(command)
                    .arg(self.captcha_key(id))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(value.and_then(|v| live_captcha(&v, now)))
    }

    async fn redis_forgive_one(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        let mut inv = self
            .inner
            .scripts
            .forgive
            .key(format!("{}lock:{key}", self.inner.prefix));
        inv.arg(0);
        let _: i64 = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn redis_clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        let _: i64 = self
            .timed(
                redis::cmd("DEL")
                    .arg(format!("{}lock:{key}", self.inner.prefix))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn redis_unlock(&self, key: &str) -> Result<(), StoreError> {
        // Two commands, not one DEL of both keys: on a Cluster they live in different slots.
        // The lock goes last, so a failure in between leaves the account locked, not half
        // unlocked with its old count (the caller sees the error and can try again).
        let mut conn = self.inner.conn.clone();
        for name in ["lock", "locked"] {
            let _: i64 = self
                .timed(
                    redis::cmd("DEL")
                        .arg(format!("{}{name}:{key}", self.inner.prefix))
                        .query_async(&mut conn),
                )
                .await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        let _: Value = self
            .timed(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    pub(crate) fn subscribe_revocations(&self) -> broadcast::Receiver<String> {
        self.inner.revoked.subscribe()
    }

    /// Whether the revocation subscription is up now ([`super::SessionStore::hears_revocations`]).
    pub(crate) fn hears_revocations(&self) -> bool {
        *self.inner.subscribed.borrow()
    }

    /// Waits until the revocation subscription is up (at most `limit`); whether it is.
    #[cfg(test)]
    pub(crate) async fn wait_subscribed(&self, limit: Duration) -> bool {
        self.wait_subscription(true, limit).await
    }

    /// Waits until the revocation subscription is `up` or down (at most `limit`); whether
    /// it got there.
    #[cfg(test)]
    pub(crate) async fn wait_subscription(&self, up: bool, limit: Duration) -> bool {
        let mut rx = self.inner.subscribed.clone();
        let reached = matches!(
            tokio::time::timeout(limit, rx.wait_for(|now| *now == up)).await,
            Ok(Ok(_))
        );
        reached
    }

    /// The local cache's entries (0 without one).
    #[cfg(test)]
    pub(crate) fn cached_sessions(&self) -> u64 {
        self.inner.cache.as_ref().map_or(0, |c| c.len())
    }

    pub(crate) async fn active_count(&self, now: Millis) -> Result<u64, StoreError> {
        let mut conn = self.inner.conn.clone();
        let key = &self.inner.stats_key;
        let hours: Vec<(u64, i64)> = self
            .timed(redis::cmd("HGETALL").arg(key).query_async(&mut conn))
            .await?;
        let current = now.0 / HOUR_MS;
        let sum: i64 = hours
            .iter()
            .filter(|(h, _)| *h >= current)
            .map(|(_, n)| n)
            .sum();
        let stale: Vec<u64> = hours
            .iter()
            .filter(|(h, _)| *h < current)
            .map(|(h, _)| *h)
            .collect();
        if !stale.is_empty() {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(key).arg(stale);
            let timeout = self.inner.timeout;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(timeout, cmd.exec_async(&mut conn)).await;
            });
        }
        Ok(sum.max(0) as u64)
    }
}

/// Lock-out counters and captcha challenges: on Redis, or (while it is unreachable, the breaker
/// open included) on the per-instance fallback `local`, never failing open: see
/// [`DEGRADED_WEIGHT`]. What the fallback holds (a lock, a challenge) is still honoured after
/// Redis is back, on this instance, until it runs out.
impl RedisStore {
    /// Counts a failure. With Redis unreachable: in the per-instance counter, weighted.
    pub(crate) async fn record_failure(
        &self,
        key: &str,
        window: Duration,
        now: Millis,
    ) -> Result<u32, StoreError> {
        match self.redis_record_failure(key, window, now).await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.degrade("record_failure", &e);
                let n = self.inner.local.record_failure(key, window, now).await?;
                Ok(n.saturating_mul(DEGRADED_WEIGHT))
            }
            other => {
                self.undegrade_if(&other);
                other
            }
        }
    }

    pub async fn lock(
        &self,
        key: &str,
        duration: Duration,
        now: Millis,
    ) -> Result<Millis, StoreError> {
        match self.redis_lock(key, duration, now).await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.degrade("lock", &e);
                self.inner.local.lock(key, duration, now).await
            }
            other => other,
        }
    }

    /// A lock of this instance's fallback first (no network), then Redis's.
    pub(crate) async fn locked_until(
        &self,
        key: &str,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        if let Some(until) = self.inner.local.locked_until(key, now).await? {
            return Ok(Some(until));
        }
        self.or_degraded(
            "locked_until",
            self.redis_locked_until(key, now).await,
            None,
        )
    }

    /// The larger of Redis's count and this instance's weighted fallback count.
    pub(crate) async fn failures(&self, key: &str, now: Millis) -> Result<u32, StoreError> {
        let local = self
            .inner
            .local
            .failures(key, now)
            .await?
            .saturating_mul(DEGRADED_WEIGHT);
        match self.redis_failures(key, now).await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.degrade("failures", &e);
                Ok(local)
            }
            other => other.map(|n| n.max(local)),
        }
    }

    pub(crate) async fn put_captcha(
        &self,
        id: &str,
        answer: &str,
        ttl: Duration,
        now: Millis,
    ) -> Result<(), StoreError> {
        match self.redis_put_captcha(id, answer, ttl, now).await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.degrade("put_captcha", &e);
                self.inner.local.put_captcha(id, answer, ttl, now).await
            }
            other => other,
        }
    }

    /// A challenge of the fallback first (spent there), then Redis's.
    pub(crate) async fn take_captcha(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        if let Some(answer) = self.inner.local.take_captcha(id, now).await? {
            return Ok(Some(answer));
        }
        self.or_degraded("take_captcha", self.redis_take_captcha(id, now).await, None)
    }

    pub(crate) async fn captcha_answer(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        if let Some(answer) = self.inner.local.captcha_answer(id, now).await? {
            return Ok(Some(answer));
        }
        self.or_degraded(
            "captcha_answer",
            self.redis_captcha_answer(id, now).await,
            None,
        )
    }

    /// Gives one failure back, in the fallback and in Redis.
    pub(crate) async fn forgive_one(&self, key: &str) -> Result<(), StoreError> {
        self.inner.local.forgive_one(key).await?;
        self.or_degraded("forgive_one", self.redis_forgive_one(key).await, ())
    }

    pub(crate) async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        self.inner.local.clear_failures(key).await?;
        self.or_degraded("clear_failures", self.redis_clear_failures(key).await, ())
    }

    /// An admin's unlock: the fallback's lock goes at once; Redis's error is the caller's
    /// (the account may still be locked there).
    pub(crate) async fn unlock(&self, key: &str) -> Result<(), StoreError> {
        self.inner.local.unlock(key).await?;
        self.redis_unlock(key).await
    }

    fn undegrade_if<T>(&self, result: &Result<T, StoreError>) {
        if result.is_ok() {
            self.undegrade();
        }
    }
}

fn bad_url(e: RedisError) -> &'static str {
    tracing::error!(error = %e, "unusable Redis URL");
    "unusable Redis URL"
}

/// Who the subscriber tells.
struct Listeners {
    /// Ended sessions, and [`RECHECK_ALL`] after a gap ([`RedisStore::subscribe_revocations`]).
    tx: broadcast::Sender<String>,
    /// Whether the subscription is up.
    ready: watch::Sender<bool>,
    /// Forgets each changed session; trusted only while the subscription is up.
    cache: Option<Arc<LocalCache>>,
}

/// Where the revocation subscriber connects.
enum Source {
    /// One of these nodes, in turn (a single node; any node of a cluster, where `PUBLISH`
    /// reaches every node).
    Urls(Vec<String>),
    /// Whatever master the sentinels name at each attempt: a failover ends the subscription
    /// (Sentinel kills the clients of both nodes), and the next attempt finds the new master.
    Sentinel(SentinelConn),
}

impl Source {
    /// For log lines: `host:port` of the nodes or the sentinels, never a password.
    fn describe(&self) -> String {
        match self {
            Self::Urls(urls) => urls
                .iter()
                .map(|u| host_port(u))
                .collect::<Vec<_>>()
                .join(", "),
            Self::Sentinel(s) => s.describe(),
        }
    }

    /// A client for the `attempt`th try.
    async fn client(&self, attempt: usize) -> Result<redis::Client, RedisError> {
        match self {
            Self::Urls(urls) => redis::Client::open(urls[attempt % urls.len()].as_str()),
            Self::Sentinel(s) => s.master_client().await,
        }
    }
}

/// Keeps one subscription to the revocation channel, forwarding into `to`. Every step is
/// bounded: subscribing by twice the timeout, the liveness ping by the timeout.
async fn subscriber(
    source: Source,
    channel: String,
    to: Listeners,
    timeout: Duration,
    health: Arc<Health>,
) {
    let Listeners { tx, ready, cache } = to;
    let mut attempt = 0usize;
    let mut delay = Duration::from_millis(100);
    let mut had_subscription = false;
    loop {
        match tokio::time::timeout(timeout * 2, subscribe_once(&source, attempt, &channel)).await {
            Ok(Ok((pubsub, at))) => {
                let (mut sink, mut stream) = pubsub.split();
                // Whatever the cache held may have missed a change while we were away (or
                // before we first subscribed): it starts empty, and is trusted from now on,
                // messages being delivered from here.
                if let Some(c) = &cache {
                    c.trust_afresh();
                }
                if had_subscription {
                    let _ = tx.send(RECHECK_ALL.to_owned());
                }
                had_subscription = true;
                ready.send_replace(true);
                health.answered();
                delay = Duration::from_millis(100);
                let mut ping = tokio::time::interval(Duration::from_secs(10));
                ping.tick().await;
                // Sentinel: ask every second whether the master moved. After a failover the
                // old master keeps its clients (this subscription, the store's reads) until
                // Sentinel demotes it, some 10 s later; this moves both within a second.
                let mut moved = tokio::time::interval(Duration::from_secs(1));
                moved.tick().await;
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(m) => match decode_revocation(m.get_payload_bytes()) {
                                Some(Change::Ended(sid)) => {
                                    if let Some(c) = &cache {
                                        c.invalidate(&sid);
                                    }
                                    let _ = tx.send(sid);
                                }
                                Some(Change::Rotated(sid)) => {
                                    if let Some(c) = &cache {
                                        c.invalidate(&sid);
                                    }
                                }
                                None => {}
                            },
                            None => break,
                        },
                        _ = ping.tick() => {
                            let pong = tokio::time::timeout(timeout, sink.ping::<Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                        }
                        _ = moved.tick(), if matches!(source, Source::Sentinel(_)) => {
                            let Source::Sentinel(s) = &source else { continue };
                            if let Ok(true) = tokio::time::timeout(timeout, s.moved_from(&at)).await {
                                break;
                            }
                        }
                    }
                }
                // Before anyone can see the subscription down: from here on every check reads
                // Redis, until the next subscription empties the cache.
                if let Some(c) = &cache {
                    c.distrust();
                }
                ready.send_replace(false);
                health.lost(&"the revocation subscription was lost");
                tracing::debug!("revocation subscription lost; resubscribing");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "revocation subscription failed"),
            Err(_) => tracing::debug!("revocation subscription timed out"),
        }
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// A subscription to `channel`, and the `host:port` it is on.
async fn subscribe_once(
    source: &Source,
    attempt: usize,
    channel: &str,
) -> Result<(redis::aio::PubSub, String), RedisError> {
    let client = source.client(attempt).await?;
    let at = client.get_connection_info().addr().to_string();
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok((pubsub, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_lines_name_the_server_never_its_password() {
        for (url, want) in [
            ("redis://127.0.0.1:6379/0", "127.0.0.1:6379"),
            (
                "rediss://:s3cret@redis.internal:6380/2",
                "redis.internal:6380",
            ),
            ("redis://user:p@ss@[::1]:7000", "[::1]:7000"),
            ("redis://h:1?protocol=resp3", "h:1"),
        ] {
            assert_eq!(host_port(url), want, "{url}");
        }
    }

    #[test]
    fn revocation_payload() {
        let mut p = b"MTAwMQ.".to_vec();
        p.extend_from_slice(&[0xfb; 16]);
        let sid = format!("MTAwMQ.{}", b64(&[0xfb; 16]));
        assert_eq!(decode_revocation(&p), Some(Change::Ended(sid.clone())));
        let mut r = b"~".to_vec();
        r.extend_from_slice(&p);
        assert_eq!(decode_revocation(&r), Some(Change::Rotated(sid)));
        assert_eq!(decode_revocation(&[0; 16]), None);
        assert_eq!(decode_revocation(b"x"), None);
        assert_eq!(decode_revocation(b"~"), None);
    }
}
