//! Where the gateway's log lines go, in which format, and what a line knows of the request it
//! belongs to.
//!
//! Three kinds of line share stderr: tracing's (text or JSON, `--log-format`), the audit lines
//! (always JSON, `crate::audit`) and the access lines (`server::access`: JSON, or a readable
//! text line in the text format). The binary leaves the output on stderr; [`set_output`] sends
//! the audit and access lines elsewhere (the integration tests read them back). Each line is
//! handed over whole, so lines from several threads never interleave.
//!
//! [`scope`] is the request's log context (its id, client and path, and what the phases found
//! out: route, upstream, user, the refusal's code and cause), a task-local the front router
//! sets around each request: audit lines, error answers and refusal lines read it from there,
//! so none of them needs it passed down. [`request_id`] makes and checks `X-Request-Id`s.

pub(crate) mod request_id;
pub(crate) mod scope;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The format of log lines on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (the default when stderr is not a terminal).
    Json,
    /// Lines for a person at a terminal.
    Text,
}

/// `true` once [`set_format`] chose text. JSON unless told: what a library user or a test
/// reads back is then machine-readable.
static TEXT: AtomicBool = AtomicBool::new(false);

/// Sets the format of the access lines (tracing's own format is set where its subscriber is
/// built: `main.rs`). Audit lines stay JSON whatever the format.
pub fn set_format(format: Format) {
    TEXT.store(format == Format::Text, Ordering::Relaxed);
}

/// The format [`set_format`] chose.
pub(crate) fn format() -> Format {
    if TEXT.load(Ordering::Relaxed) {
        Format::Text
    } else {
        Format::Json
    }
}

type Output = Box<dyn Fn(&[u8]) + Send + Sync>;

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Sends the audit and access lines to `output` instead of stderr, for the life of the
/// process: it gets one or more whole lines (each ending in `\n`) per call. Only the first
/// call counts; `false` when an output was already set.
pub fn set_output(output: impl Fn(&[u8]) + Send + Sync + 'static) -> bool {
    OUTPUT.set(Box::new(output)).is_ok()
}

/// Writes whole lines (each ending in `\n`) to the output: stderr, locked for the one write so
/// that no other thread's line lands inside them.
pub(crate) fn write(lines: &[u8]) {
    match OUTPUT.get() {
        Some(output) => output(lines),
        None => {
            // Nothing sensible to do if stderr is gone.
            let _ = std::io::stderr().lock().write_all(lines);
        }
    }
}

/// A tracing event at a level chosen at run time (the macros want a constant one).
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            tracing::Level::ERROR => tracing::error!($($rest)+),
            tracing::Level::WARN => tracing::warn!($($rest)+),
            tracing::Level::INFO => tracing::info!($($rest)+),
            tracing::Level::DEBUG => tracing::debug!($($rest)+),
            _ => tracing::trace!($($rest)+),
        }
    };
}
pub(crate) use event_at;
