//! The log context of one request: a task-local [`Scope`] the front router sets around the
//! request's future (`server/router.rs`), holding the request id, the client's address and the
//! path as sent, and what the phases learn on the way ([`Seen`]: the route, the upstream, the
//! canonical path, who the caller is, the refusal's code, and the notes that explain it).
//!
//! Why a task-local rather than an argument: what reads it sits below every phase and endpoint
//! (an audit line, [`crate::error::GatewayError::into_response`], a refusal's cause found deep
//! in the token checks), and threading the id through each of them would touch every
//! signature. It is only as wide as the request's own future: a task spawned from it has no
//! scope, and everything here then does without (no request id; a note is logged at once).
//!
//! Cost on the hot path: the scope is moved in and out of a thread-local on each poll of the
//! request's future (a few words), and each setter is one thread-local access and a `RefCell`
//! flag. Nothing here allocates unless a note is made (refusals only).
//!
//! **Refusal lines.** [`refused`] writes the one line of a refusal, with the path, the client
//! address, the request id and the notes made before it (the cause: `unknown_kid`, "upstream
//! up: connection refused"), at the most severe of the notes' levels. A refusal nobody
//! explained (a missing token, no route, a 503 while the store is down, which the store's own
//! "session store lost" line explains once) is a debug line: the access line says all there
//! is, and an outage or a scan does not flood the log. Notes no refusal took are written by
//! [`finish`] at the end of the request, with the same context.

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use tracing::Level;

use super::event_at;

tokio::task_local! {
    static SCOPE: Scope;
}

/// Whose request it is, for the access line.
pub(crate) trait Who: Send + Sync {
    fn user_id(&self) -> &str;
    fn session_id(&self) -> Option<&str>;
}

/// A user and session known by their ids (a session just created by a login or a refresh).
pub(crate) struct Ids {
    pub user_id: String,
    pub session_id: Option<String>,
}

impl Who for Ids {
    fn user_id(&self) -> &str {
        &self.user_id
    }

    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

/// One request's log context.
pub(crate) struct Scope {
    id: HeaderValue,
    client_ip: IpAddr,
    /// The request target as sent (only its path is ever written).
    raw: Option<PathAndQuery>,
    seen: RefCell<Seen>,
}

/// What the phases found out, for the access line.
#[derive(Default)]
pub(crate) struct Seen {
    /// Position of the matched route in the route table.
    pub route: Option<usize>,
    /// Index of the upstream the request was sent to (or tried).
    pub upstream: Option<usize>,
    /// The canonical path, when it differs from the path as sent.
    pub canonical: Option<Box<str>>,
    pub who: Option<Arc<dyn Who>>,
    /// The contract's code of the gateway's own refusal.
    pub error: Option<&'static str>,
    notes: Vec<Note>,
}

struct Note {
    level: Level,
    text: Cow<'static, str>,
}

impl Scope {
    /// The context of a request with id `id` from `client_ip` for `raw` (path and query).
    pub(crate) fn new(id: HeaderValue, client_ip: IpAddr, raw: Option<PathAndQuery>) -> Self {
        Self {
            id,
            client_ip,
            raw,
            seen: RefCell::default(),
        }
    }

    pub(crate) fn id(&self) -> &HeaderValue {
        &self.id
    }

    pub(crate) fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// The path as sent, never the query.
    pub(crate) fn raw_path(&self) -> &str {
        self.raw.as_ref().map_or("/", |pq| pq.path())
    }

    /// The request target as sent (for the access line, which writes only its path).
    pub(crate) fn raw(&self) -> Option<&PathAndQuery> {
        self.raw.as_ref()
    }

    fn id_str(&self) -> &str {
        // Kept ids are checked to be visible ASCII, made ones are hex.
        self.id.to_str().unwrap_or("-")
    }
}

/// Runs `f` in `scope`.
pub(crate) fn run<F: Future>(scope: Scope, f: F) -> impl Future<Output = F::Output> {
    SCOPE.scope(scope, f)
}

/// `f` of the current request's scope; `None` outside one.
pub(crate) fn with<R>(f: impl FnOnce(&Scope) -> R) -> Option<R> {
    SCOPE.try_with(f).ok()
}

fn seen(f: impl FnOnce(&mut Seen)) {
    let _ = SCOPE.try_with(|s| f(&mut s.seen.borrow_mut()));
}

/// The current request's id (an owned string: for the audit line and error JSON, which
/// allocate anyway); `None` outside a request.
pub(crate) fn request_id() -> Option<String> {
    with(|s| s.id_str().to_owned())
}

/// The route the request matched (its position in the table).
pub(crate) fn set_route(index: usize) {
    seen(|s| s.route = Some(index));
}

/// The upstream the request goes to (its index).
pub(crate) fn set_upstream(index: usize) {
    seen(|s| s.upstream = Some(index));
}

/// The canonical path, where it differs from the path as sent.
pub(crate) fn set_canonical(path: &str) {
    seen(|s| s.canonical = Some(path.into()));
}

/// Who the caller is.
pub(crate) fn set_who(who: Arc<dyn Who>) {
    seen(|s| s.who = Some(who));
}

/// Why the request is being refused, or anything else worth a line about it; written with
/// the request's context by [`refused`] or [`finish`], or at once outside a request.
pub(crate) fn note(level: Level, text: impl Into<Cow<'static, str>>) {
    let text = text.into();
    let mut text = Some(text);
    seen(|s| {
        if let Some(text) = text.take() {
            s.notes.push(Note { level, text });
        }
    });
    if let Some(text) = text {
        event_at!(level, "{text}");
    }
}

/// The notes joined, and the most severe of their levels and `floor`.
fn drain_notes(seen: &mut Seen, floor: Level) -> (Option<String>, Level) {
    if seen.notes.is_empty() {
        return (None, floor);
    }
    // tracing orders levels by verbosity: the most severe is the smallest.
    let level = seen.notes.iter().map(|n| n.level).fold(floor, Level::min);
    let text = seen
        .notes
        .drain(..)
        .map(|n| n.text)
        .collect::<Vec<_>>()
        .join("; ");
    (Some(text), level)
}

/// The line of the gateway's refusal with `status` and `code` (see the module's doc).
pub(crate) fn refused(status: u16, code: &'static str) {
    let base = Level::DEBUG;
    let logged = with(|s| {
        let (reason, level) = {
            let mut seen = s.seen.borrow_mut();
            seen.error = Some(code);
            drain_notes(&mut seen, base)
        };
        let seen = s.seen.borrow();
        let path = seen.canonical.as_deref().unwrap_or(s.raw_path());
        event_at!(
            level,
            target: "authgate::request",
            status,
            code = %code,
            path = %path,
            client_ip = %s.client_ip,
            request_id = %s.id_str(),
            reason = reason.as_deref(),
            "refused"
        );
    });
    if logged.is_none() {
        event_at!(base, target: "authgate::request", status, code = %code, "refused");
    }
}

/// The end of the request with `status`: the notes no refusal took are written (one line,
/// with the request's context), and what the phases found is handed to the access line.
pub(crate) fn finish(status: u16) -> Seen {
    with(|s| {
        let mut seen = s.seen.take();
        let (notes, level) = drain_notes(&mut seen, Level::INFO);
        if let Some(text) = notes {
            let path = seen.canonical.as_deref().unwrap_or(s.raw_path());
            event_at!(
                level,
                target: "authgate::request",
                status,
                path = %path,
                client_ip = %s.client_ip,
                request_id = %s.id_str(),
                "{text}"
            );
        }
        seen
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new(
            HeaderValue::from_static("rid-1"),
            "192.0.2.7".parse().unwrap(),
            Some(PathAndQuery::from_static("/a/../b?token=x")),
        )
    }

    #[tokio::test]
    async fn what_the_phases_set_comes_back_at_the_end_and_only_inside_the_scope() {
        set_route(9);
        assert!(request_id().is_none());
        let seen = run(scope(), async {
            assert_eq!(request_id().as_deref(), Some("rid-1"));
            assert_eq!(
                with(|s| s.raw_path().to_owned()).as_deref(),
                Some("/a/../b")
            );
            set_route(2);
            set_upstream(1);
            set_canonical("/b");
            set_who(Arc::new(Ids {
                user_id: "1001".into(),
                session_id: None,
            }));
            tokio::task::yield_now().await;
            refused(403, "forbidden");
            finish(403)
        })
        .await;
        assert_eq!(seen.route, Some(2));
        assert_eq!(seen.upstream, Some(1));
        assert_eq!(seen.canonical.as_deref(), Some("/b"));
        assert_eq!(
            seen.who.as_ref().map(|w| w.user_id().to_owned()).as_deref(),
            Some("1001")
        );
        assert_eq!(seen.error, Some("forbidden"));
    }

    #[tokio::test]
    async fn a_refusal_takes_the_notes_and_the_most_severe_level() {
        run(scope(), async {
            note(Level::INFO, "bad signature");
            note(Level::WARN, "and more");
            let (text, level) =
                with(|s| drain_notes(&mut s.seen.borrow_mut(), Level::DEBUG)).unwrap();
            assert_eq!(text.as_deref(), Some("bad signature; and more"));
            assert_eq!(level, Level::WARN);
            let (text, level) =
                with(|s| drain_notes(&mut s.seen.borrow_mut(), Level::DEBUG)).unwrap();
            assert_eq!((text, level), (None, Level::DEBUG));
        })
        .await;
    }
}
