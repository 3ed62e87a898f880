//! Everything the suite's gateways write to their log, captured ([`capture`]), read back by
//! the tests ([`wait_line`], [`access_line`]) and checked for secrets ([`check`]).
//!
//! The in-process gateways of every test share one process, so one capture holds all their
//! lines: audit and access lines through `authgate::logs::set_output`, tracing's through a
//! global JSON subscriber (`authgate=debug`, more than the binary's default `info`, so debug
//! lines are checked too). A test finds its own lines by the `X-Request-Id` its answer
//! carried. Set `AUTHGATE_TEST_LOGS=1` to see the lines on stderr as well.
//!
//! **The leak check.** No log line may hold a token, a cookie value, a password or a query
//! string. Every [`Gateway`](super::Gateway), when dropped, flushes the access log and checks
//! the lines captured since the last check ([`check`]): lines of other tests running at the
//! same time too, so a leak fails whichever test looks first, and the message quotes the line
//! (with its request id). What counts as a leak ([`leaks`]):
//! - a JWT: a run of base64url and `.` starting `eyJ` with two dots;
//! - a refresh token: `<base64url>.<22 chars>.<43 chars>` (session id and secret);
//! - any value the harness's clients sent or received as a secret ([`secret`]: bearer tokens,
//!   `Cookie` and `Set-Cookie` values, tokens in JSON answers, the admin token, the test
//!   users' passwords), found as a whole run;
//! - a query string a client sent ([`query`]), found after a `?`.
//!
//! Gateways run as processes (`tests/it/shutdown.rs`, `captcha.rs`) hand their stderr lines
//! to [`check_lines`].

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Condvar, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::gateway::ADMIN_TOKEN;
use super::users::{ALICE_PW, BOB_PW, ZHANG_PW};

struct Captured {
    lines: Vec<String>,
    /// Lines before this index were checked.
    checked: usize,
}

static LINES: Mutex<Captured> = Mutex::new(Captured {
    lines: Vec::new(),
    checked: 0,
});
static ARRIVED: Condvar = Condvar::new();

#[derive(Default)]
struct Secrets {
    values: HashSet<String>,
    queries: HashSet<String>,
}

static SECRETS: Mutex<Option<Secrets>> = Mutex::new(None);

fn push(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if std::env::var_os("AUTHGATE_TEST_LOGS").is_some() {
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    let mut c = LINES.lock().unwrap_or_else(PoisonError::into_inner);
    c.lines
        .extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
    drop(c);
    ARRIVED.notify_all();
}

/// A tracing writer: one event per write, pushed when the writer is dropped.
struct Writer(Vec<u8>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            push(&self.0);
        }
    }
}

/// Starts capturing (once per process; every harness entry point calls it).
pub fn capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        authgate::logs::set_format(authgate::logs::Format::Json);
        authgate::logs::set_output(push);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,authgate=debug"))
            .with_ansi(false)
            .with_writer(|| Writer(Vec::new()))
            .json()
            .flatten_event(true)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        for s in [ADMIN_TOKEN, ALICE_PW, BOB_PW, ZHANG_PW] {
            record(s, 8, false);
        }
    });
}

fn record(value: &str, min: usize, is_query: bool) {
    if value.len() < min {
        return;
    }
    let mut s = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    let s = s.get_or_insert_with(Secrets::default);
    if is_query {
        s.queries.insert(value.to_owned());
    } else {
        s.values.insert(value.to_owned());
    }
}

/// A value that must never be logged (a token, a cookie value), if it is long enough to be
/// told from ordinary words (16 characters).
pub fn secret(value: &str) {
    record(value.trim(), 16, false);
}

/// A query string a client sent (without the `?`), if it is not trivially short.
pub fn query(q: &str) {
    record(q, 3, true);
}

/// Every line captured so far.
pub fn lines() -> Vec<String> {
    LINES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .lines
        .clone()
}

/// Waits (up to 10 s) for a JSON line for which `pred` holds, flushing the access log first.
pub async fn wait_line(what: &str, pred: impl Fn(&Value) -> bool + Send + 'static) -> Value {
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        authgate::server::flush_access_log(Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = LINES.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let found = c
                .lines
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v));
            if let Some(v) = found {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no log line: {what}");
            c = ARRIVED
                .wait_timeout(c, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    })
    .await
    .expect("the wait for a log line")
}

/// Every JSON line captured so far for which `pred` holds (flushing the access log first).
pub async fn find_lines(pred: impl Fn(&Value) -> bool + Send + 'static) -> Vec<Value> {
    tokio::task::spawn_blocking(move || {
        authgate::server::flush_access_log(Duration::from_secs(5));
        lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| pred(v))
            .collect()
    })
    .await
    .expect("reading the log lines")
}

/// The access line of the request with `request_id`.
pub async fn access_line(request_id: &str) -> Value {
    let id = request_id.to_owned();
    wait_line(&format!("the access line of {request_id}"), move |v| {
        v["access"] == true && v["request_id"] == id.as_str()
    })
    .await
}

/// Checks the lines captured since the last check (see the module's doc); panics naming each
/// leak and its line.
pub fn check() {
    authgate::server::flush_access_log(Duration::from_secs(2));
    let new: Vec<String> = {
        let mut c = LINES.lock().unwrap_or_else(PoisonError::into_inner);
        let new = c.lines[c.checked..].to_vec();
        c.checked = c.lines.len();
        new
    };
    check_lines(&new);
}

/// Checks `lines` (from anywhere: a gateway run as a process) for leaks.
pub fn check_lines(lines: &[String]) {
    let found: Vec<String> = {
        let s = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
        let empty = Secrets::default();
        let s = s.as_ref().unwrap_or(&empty);
        lines
            .iter()
            .flat_map(|l| {
                leaks(l, &s.values, &s.queries)
                    .into_iter()
                    .map(move |what| format!("{what} in: {l}"))
            })
            .collect()
    };
    assert!(
        found.is_empty(),
        "secrets in the gateways' log lines:\n{}",
        found.join("\n")
    );
}

fn is_run_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// The leaks in one line: what kind each is (see the module's doc).
pub fn leaks(line: &str, secrets: &HashSet<String>, queries: &HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !is_run_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_run_byte(bytes[i]) {
            i += 1;
        }
        let run = line[start..i].trim_matches('.');
        if run.len() < 8 {
            continue;
        }
        let parts: Vec<&str> = run.split('.').collect();
        if run.starts_with("eyJ") && parts.len() >= 3 && parts[..2].iter().all(|p| p.len() >= 4) {
            out.push(format!("a JWT ({}...)", &run[..12.min(run.len())]));
        } else if parts.len() == 3
            && !parts[0].is_empty()
            && parts[1].len() == 22
            && parts[2].len() == 43
        {
            out.push("a refresh token".to_owned());
        } else if secrets.contains(run) {
            out.push(format!("the secret {run:?}"));
        }
    }
    for (at, _) in line.match_indices('?') {
        let rest = &line[at + 1..];
        let end = rest
            .find(|c: char| c == '"' || c == '\\' || c.is_whitespace())
            .unwrap_or(rest.len());
        let candidate = &rest[..end];
        if candidate.len() >= 3
            && queries
                .iter()
                .any(|q| candidate.starts_with(q.as_str()) || q.starts_with(candidate))
        {
            out.push(format!("the query {candidate:?}"));
        }
    }
    out
}
