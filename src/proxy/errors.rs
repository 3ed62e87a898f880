//! What went wrong with an upstream, by kind: `authgate_upstream_errors_total{upstream,kind}`.
//!
//! The kinds are the ones an operator tells apart at the upstream's end (README, "Metrics"):
//! `connect` (no url took a connection: refused, unreachable, `connect_timeout`), `timeout`
//! (no answer head within `request_timeout`), `reset` (the connection closed or broke before
//! a whole answer head), `protocol` (the answer was not HTTP/1 the gateway could read),
//! `bad_upgrade` (a 101 that does not complete the WebSocket handshake the client began) and
//! `body` (the answer's body broke off after its head: the client got a cut response). An
//! answer with any status, 5xx included, is the upstream answering, not an error here
//! (`authgate_requests_total{status}` counts it); neither is a request the gateway refused
//! itself, a client's upload that broke or outgrew `max_body_bytes`.
//!
//! Every upstream's series are registered when its client is built (at start and on each
//! reload), so each shows on `/metrics` at 0 before its first error and `rate()` sees the
//! first one. The label values are the configured upstream names and the fixed kinds below:
//! the number of series is bounded by the config.

/// Why an exchange with an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Connect,
    Timeout,
    Reset,
    Protocol,
    BadUpgrade,
    Body,
}

impl Failure {
    /// Every kind, in the order of [`UpstreamErrors`]' counters.
    pub(crate) const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Timeout,
        Failure::Reset,
        Failure::Protocol,
        Failure::BadUpgrade,
        Failure::Body,
    ];

    /// The `kind` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::Protocol => "protocol",
            Failure::BadUpgrade => "bad_upgrade",
            Failure::Body => "body",
        }
    }

    /// The kind of a failed exchange on an open connection; `None` when the failure was not
    /// the upstream's (hyper's "user" errors: the client's request body broke off).
    pub(crate) fn of_exchange(e: &hyper::Error) -> Option<Failure> {
        if e.is_user() {
            None
        } else if e.is_parse() {
            Some(Failure::Protocol)
        } else if e.is_timeout() {
            Some(Failure::Timeout)
        } else {
            // Closed before an answer (incomplete message, canceled), or an I/O error.
            Some(Failure::Reset)
        }
    }
}

/// One upstream's `authgate_upstream_errors_total` series, a handle per kind: counting one
/// is an atomic add, no key built or hashed per error.
#[derive(Clone)]
pub(crate) struct UpstreamErrors([metrics::Counter; 6]);

impl UpstreamErrors {
    /// Registers (at 0 if new) the series of upstream `name`.
    pub(crate) fn register(name: &str) -> Self {
        Self(Failure::ALL.map(|kind| {
            metrics::counter!(
                "authgate_upstream_errors_total",
                "upstream" => name.to_owned(),
                "kind" => kind.label()
            )
        }))
    }

    /// Counters that count nowhere (unit tests of the pool).
    #[cfg(test)]
    pub(crate) fn noop() -> Self {
        Self(Failure::ALL.map(|_| metrics::Counter::noop()))
    }

    pub(crate) fn count(&self, kind: Failure) {
        // `ALL` lists the kinds in declaration order, so a kind's discriminant is its index.
        self.0[kind as usize].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_each_kind_at_its_own_index() {
        for (i, kind) in Failure::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{}", kind.label());
        }
        let mut labels: Vec<_> = Failure::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Failure::ALL.len());
    }
}
