//! The access log (contract §8): one line per answered request, unless `log.access = false`.
//!
//! Written off the request path. The front router hands an [`Entry`] (what it knows: the
//! config snapshot, times, method, path, status, and what the phases noted in the request's
//! [`Seen`]) to a bounded queue; one thread formats the entries and writes them in batches.
//! Nothing on the request path formats, allocates or makes a system call for it: building the
//! entry is a few reference-count increments, and the queue's send a few atomics. When the
//! queue is full (the writer cannot keep up, stderr is blocked), the line is dropped and
//! counted in `authgate_log_lines_dropped_total`; a request never waits for the log.
//!
//! The writer does not block on the queue (a blocked receiver would make every send wake it,
//! a system call per request): while lines come it polls every [`POLL`], and only after
//! [`IDLE_AFTER`] quiet polls does it park, flagging [`Writer::idle`] so that the next send
//! (and only that one) unparks it.
//!
//! JSON lines are the contract's; with `--log-format text` the same fields make a line a
//! person can read at a terminal (`GET /api/x 200 1.234ms route=/api ...`).

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::Method;

use crate::app::Live;
use crate::clock::rfc3339;
use crate::logs::scope::Seen;
use crate::logs::{self, Format};

/// Entries waiting for the writer; beyond it lines are dropped. Its slots (about 1 MB) are
/// allocated when the writer starts.
const QUEUE: usize = 4096;

/// The writer's poll interval while lines come: each poll is a wake-up and a write, so
/// it is long enough to batch a busy gateway's lines (at 50k/s, 500 a write) and short
/// enough that a line appears at once for a person watching.
const POLL: Duration = Duration::from_millis(10);

/// Quiet polls after which the writer parks until the next line (100 ms).
const IDLE_AFTER: u32 = 10;

/// Bytes formatted before they are written out, mid-batch.
const BATCH_BYTES: usize = 64 * 1024;

/// One answered request, as the front router saw it.
pub(super) struct Entry {
    /// The snapshot the request was served with (route and upstream names are looked up in
    /// it by the writer, not copied per request).
    pub live: Arc<Live>,
    /// Unix milliseconds when the request came.
    pub ts_ms: u64,
    pub elapsed: Duration,
    pub request_id: HeaderValue,
    pub method: Method,
    /// The target as sent: its path is written unless the phases noted a canonical one; the
    /// query never is.
    pub raw: Option<PathAndQuery>,
    pub seen: Seen,
    pub status: u16,
    pub client_ip: IpAddr,
}

// Every slot holds a line but for the rare flush: a boxed line would cost an allocation per
// request (freed on the writer thread).
#[allow(clippy::large_enum_variant)]
enum Msg {
    Line(Entry),
    /// Write out everything before this, then answer.
    Flush(mpsc::Sender<()>),
}

/// Where a writer puts its batches of whole lines.
type Output = fn(&[u8]);

/// A queue and the thread that drains it.
struct Writer {
    tx: SyncSender<Msg>,
    thread: Thread,
    /// The writer is parked (or about to be) and must be unparked for the next line.
    idle: Arc<AtomicBool>,
}

static WRITER: OnceLock<Option<Writer>> = OnceLock::new();

/// The process's writer, started on first use; `None` if its thread could not be started.
fn writer() -> Option<&'static Writer> {
    WRITER.get_or_init(|| {
        Writer::start(QUEUE, logs::write)
            .map_err(|e| {
                tracing::warn!(error = %e, "access log writer not started; access lines are dropped");
            })
            .ok()
    })
    .as_ref()
}

/// Registers `authgate_log_lines_dropped_total` (at 0, so a dashboard finds it) and starts the
/// writer before the first request.
pub(super) fn init() {
    metrics::counter!("authgate_log_lines_dropped_total").increment(0);
    writer();
}

/// Queues one line; drops (and counts) it when the queue is full.
pub(super) fn log(entry: Entry) {
    if !writer().is_some_and(|w| w.send(entry)) {
        metrics::counter!("authgate_log_lines_dropped_total").increment(1);
    }
}

/// Waits (up to `limit`) until every line queued so far is written; false if that took
/// longer. For a clean exit, and for tests that read the lines back.
pub(super) fn flush(limit: Duration) -> bool {
    WRITER
        .get()
        .and_then(Option::as_ref)
        .is_none_or(|w| w.flush(limit))
}

impl Writer {
    /// A queue of `capacity` lines and its thread, writing to `output`.
    fn start(capacity: usize, output: Output) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let idle = Arc::new(AtomicBool::new(false));
        let flag = idle.clone();
        let handle = std::thread::Builder::new()
            .name("authgate-access".into())
            .spawn(move || run(rx, &flag, output))?;
        Ok(Self {
            tx,
            thread: handle.thread().clone(),
            idle,
        })
    }

    /// Queues `entry`; false (and it is dropped) when the queue is full. Never waits.
    fn send(&self, entry: Entry) -> bool {
        // Not boxed: a box allocated here and freed on the writer thread costs the request
        // path more than the queue's slots (allocated once) cost memory.
        match self.tx.try_send(Msg::Line(entry)) {
            Ok(()) => {
                // Pairs with the writer's fence between flagging itself idle and looking at
                // the queue once more: one of the two sees the other.
                fence(Ordering::SeqCst);
                if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel) {
                    self.thread.unpark();
                }
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Waits (up to `limit`) until every line queued before is written.
    fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (tx, rx) = mpsc::channel();
        let mut msg = Msg::Flush(tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    self.thread.unpark();
                    std::thread::sleep(POLL);
                }
                Err(_) => return false,
            }
        }
        self.idle.store(false, Ordering::SeqCst);
        self.thread.unpark();
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// The writer thread: drains the queue, formats, writes; polls while busy, parks when idle.
fn run(rx: Receiver<Msg>, idle: &AtomicBool, output: Output) {
    let mut buf = Vec::with_capacity(BATCH_BYTES + 1024);
    let mut quiet = 0u32;
    loop {
        let mut got = false;
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    got = true;
                    handle(msg, &mut buf, output);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    write_out(&mut buf, output);
                    return;
                }
            }
        }
        write_out(&mut buf, output);
        if got {
            quiet = 0;
        } else {
            quiet = quiet.saturating_add(1);
        }
        if quiet < IDLE_AFTER {
            std::thread::sleep(POLL);
            continue;
        }
        idle.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        match rx.try_recv() {
            Ok(msg) => {
                idle.store(false, Ordering::SeqCst);
                quiet = 0;
                handle(msg, &mut buf, output);
            }
            Err(TryRecvError::Empty) => {
                // The timeout only bounds a missed wake-up, which the fences rule out.
                std::thread::park_timeout(Duration::from_secs(1));
                idle.store(false, Ordering::SeqCst);
            }
            Err(TryRecvError::Disconnected) => {
                write_out(&mut buf, output);
                return;
            }
        }
    }
}

fn handle(msg: Msg, buf: &mut Vec<u8>, output: Output) {
    match msg {
        Msg::Line(entry) => {
            format(&entry, logs::format(), buf);
            if buf.len() >= BATCH_BYTES {
                write_out(buf, output);
            }
        }
        Msg::Flush(done) => {
            write_out(buf, output);
            let _ = done.send(());
        }
    }
}

fn write_out(buf: &mut Vec<u8>, output: Output) {
    if !buf.is_empty() {
        output(buf);
        buf.clear();
    }
}

/// The fields of one line, borrowed from its entry.
struct Fields<'a> {
    path: &'a str,
    route: Option<&'a str>,
    upstream: Option<&'a str>,
    user_id: Option<&'a str>,
    session_id: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn of(e: &'a Entry) -> Self {
        let s = &e.seen;
        let cfg = &e.live.config;
        Self {
            path: s
                .canonical
                .as_deref()
                .unwrap_or_else(|| e.raw.as_ref().map_or("/", |pq| pq.path())),
            route: s
                .route
                .and_then(|i| cfg.routes.routes().get(i))
                .map(|r| r.label.as_str()),
            upstream: s
                .upstream
                .and_then(|i| cfg.upstreams.get(i))
                .map(|u| u.name.as_str()),
            user_id: s.who.as_deref().map(|w| w.user_id()),
            session_id: s.who.as_deref().and_then(|w| w.session_id()),
        }
    }
}

/// Appends the line of `e` (with its `\n`) to `out`.
fn format(e: &Entry, format: Format, out: &mut Vec<u8>) {
    let f = Fields::of(e);
    let id = e.request_id.to_str().unwrap_or("-");
    let micros = u64::try_from(e.elapsed.as_micros()).unwrap_or(u64::MAX);
    match format {
        Format::Json => {
            out.extend_from_slice(b"{\"access\":true,\"ts\":\"");
            out.extend_from_slice(&rfc3339(e.ts_ms));
            out.extend_from_slice(b"\",\"request_id\":");
            json_str(out, id);
            out.extend_from_slice(b",\"method\":");
            json_str(out, e.method.as_str());
            out.extend_from_slice(b",\"path\":");
            json_str(out, f.path);
            out.extend_from_slice(b",\"route\":");
            json_opt(out, f.route);
            out.extend_from_slice(b",\"status\":");
            num(out, u64::from(e.status));
            out.extend_from_slice(b",\"error\":");
            json_opt(out, e.seen.error);
            out.extend_from_slice(b",\"user_id\":");
            json_opt(out, f.user_id);
            out.extend_from_slice(b",\"session_id\":");
            json_opt(out, f.session_id);
            out.extend_from_slice(b",\"upstream\":");
            json_opt(out, f.upstream);
            out.extend_from_slice(b",\"duration_ms\":");
            millis(out, micros);
            out.extend_from_slice(b",\"client_ip\":\"");
            ip(out, e.client_ip);
            out.extend_from_slice(b"\"}");
        }
        Format::Text => {
            out.extend_from_slice(&rfc3339(e.ts_ms));
            out.extend_from_slice(b"  INFO access: ");
            text_value(out, e.method.as_str());
            out.push(b' ');
            text_value(out, f.path);
            out.push(b' ');
            num(out, u64::from(e.status));
            out.push(b' ');
            millis(out, micros);
            out.extend_from_slice(b"ms");
            for (key, value) in [
                ("error", e.seen.error),
                ("route", f.route),
                ("upstream", f.upstream),
                ("user_id", f.user_id),
                ("session_id", f.session_id),
            ] {
                if let Some(v) = value {
                    let _ = write!(out, " {key}=");
                    text_value(out, v);
                }
            }
            out.extend_from_slice(b" client_ip=");
            ip(out, e.client_ip);
            out.extend_from_slice(b" request_id=");
            text_value(out, id);
        }
    }
    out.push(b'\n');
}

// The writer formats every line itself, without `core::fmt` (its machinery was most of a
// line's cost): numbers by itoa, an IPv4 address by its octets, a plain string as it is.

fn num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `micros` as milliseconds with three decimals (`1.234`).
fn millis(out: &mut Vec<u8>, micros: u64) {
    num(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                num(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Most values (ids, paths, route names) need no escape: printable ASCII but `"` and `\`.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A value of a text line: as it is when it is plain, quoted (JSON escapes) when it holds a
/// space, a quote, `=`, a backslash or anything but visible ASCII.
fn text_value(out: &mut Vec<u8>, s: &str) {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'=' | b'\\'));
    if plain {
        out.extend_from_slice(s.as_bytes());
    } else {
        json_str(out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::scope::{self, Ids, Scope};

    fn live() -> Arc<Live> {
        let text = r#"
[token]
secret_env = "S"
[session]
mode = "stateless"
[login]
backend = "none"
[[upstreams]]
name = "legacy"
urls = ["http://127.0.0.1:9000"]
[[routes]]
path = "/api"
upstream = "legacy"
"#;
        let env = |_: &str| Some("s".repeat(32));
        let dir = std::env::temp_dir();
        let loaded = crate::config::load_str(text, &dir, &env).expect("a valid config");
        Arc::new(Live::new(loaded.config))
    }

    #[test]
    fn the_hand_formatting_matches_fmt_and_serde_json() {
        for s in [
            "",
            "/api/x",
            "a\"b",
            "back\\slash",
            "tab\t",
            "\u{7f}",
            "é/ü",
            "\u{1}",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        for micros in [0, 7, 999, 1000, 1234, 60_000_001, u64::MAX] {
            let mut out = Vec::new();
            millis(&mut out, micros);
            let want = format!("{}.{:03}", micros / 1000, micros % 1000);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        for addr in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.3.4",
            "::1",
            "2001:db8::8:1",
        ] {
            let addr: IpAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            ip(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn the_queue_stays_near_a_megabyte() {
        // The slots are allocated with the queue; what it holds is the entries themselves.
        let slot = std::mem::size_of::<Msg>();
        assert!(
            QUEUE * slot <= 5 << 18,
            "{QUEUE} slots of {slot} bytes: over 1.25 MB"
        );
    }

    async fn entry(status: u16) -> Entry {
        let scope = Scope::new(
            HeaderValue::from_static("abc123"),
            "192.0.2.9".parse().unwrap(),
            Some(PathAndQuery::from_static("/api/x?token=secret")),
        );
        let seen = scope::run(scope, async {
            scope::set_route(0);
            scope::set_upstream(0);
            scope::set_who(Arc::new(Ids {
                user_id: "u \"1\"".into(),
                session_id: Some("s1".into()),
            }));
            scope::finish(status)
        })
        .await;
        Entry {
            live: live(),
            ts_ms: 1_735_689_600_123,
            elapsed: Duration::from_micros(1_234),
            request_id: HeaderValue::from_static("abc123"),
            method: Method::GET,
            raw: Some(PathAndQuery::from_static("/api/x?token=secret")),
            seen,
            status,
            client_ip: "192.0.2.9".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn json_lines_have_every_field_and_never_the_query() {
        let e = entry(200).await;
        let mut out = Vec::new();
        format(&e, Format::Json, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let line = std::str::from_utf8(&out).unwrap();
        assert!(!line.contains("secret"), "{line}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["access"], true);
        assert_eq!(v["ts"], "2025-01-01T00:00:00.123Z");
        assert_eq!(v["request_id"], "abc123");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/api/x");
        assert_eq!(v["status"], 200);
        assert!(v["error"].is_null());
        assert_eq!(v["user_id"], "u \"1\"");
        assert_eq!(v["session_id"], "s1");
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["client_ip"], "192.0.2.9");
        assert_eq!(v["route"], "/api");
        assert_eq!(v["upstream"], "legacy");
    }

    static GATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// An output that waits while the test holds [`GATE`] (a blocked stderr), then counts.
    fn gated(lines: &[u8]) {
        let _open = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let n = lines.iter().filter(|b| **b == b'\n').count();
        WRITTEN.fetch_add(n, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn a_blocked_output_drops_lines_and_never_stalls_a_request() {
        let w = Writer::start(4, gated).unwrap();
        let mut entries = Vec::new();
        for _ in 0..40 {
            entries.push(entry(200).await);
        }
        let shut = GATE.lock().unwrap();
        let started = Instant::now();
        let mut accepted = 0;
        for e in entries {
            accepted += usize::from(w.send(e));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "sending took {took:?}");
        assert!(accepted < 40, "nothing was dropped");
        drop(shut);
        assert!(w.flush(Duration::from_secs(5)));
        assert_eq!(
            WRITTEN.load(Ordering::SeqCst),
            accepted,
            "every queued line is written"
        );
    }

    #[tokio::test]
    async fn text_lines_read_as_text_and_quote_what_needs_it() {
        let e = entry(502).await;
        let mut out = Vec::new();
        format(&e, Format::Text, &mut out);
        let line = std::str::from_utf8(&out).unwrap();
        assert!(
            line.starts_with("2025-01-01T00:00:00.123Z  INFO access: GET /api/x 502 1.234ms "),
            "{line}"
        );
        assert!(
            line.contains(r#" user_id="u \"1\"" session_id=s1 "#),
            "{line}"
        );
        assert!(
            line.ends_with(" client_ip=192.0.2.9 request_id=abc123\n"),
            "{line}"
        );
        assert!(!line.contains("secret") && !line.contains('{'), "{line}");
    }
}
