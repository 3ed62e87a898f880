//! The process's metrics: the Prometheus recorder (installed once, kept small by a
//! background upkeep that each running gateway keeps until its shutdown signal), the
//! catalogue of every metric the gateway exports ([`CATALOGUE`]: described, and registered
//! at 0 where its labels are known up front), the per-route request counters of the hot
//! path and the count of requests in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::routing::Route;
use crate::shutdown::Signal;

/// The process-wide Prometheus recorder (installed once, on first use).
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )
            // The matcher and buckets above are static and valid.
            .expect("static histogram buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests); ours still renders what it saw.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// What a metric is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the gateway exports: name, type, labels and help text (the `# HELP` line).
/// `examples/grafana/authgate.json` is built on these names, and the README's "Metrics"
/// list follows this one.
pub(crate) const CATALOGUE: &[(&str, Kind, &str)] = &[
    ("authgate_requests_total", Kind::Counter, "Answers by route pattern (\"auth\": the gateway's own endpoints; \"-\": no route) and status."),
    ("authgate_requests_in_flight", Kind::Gauge, "Requests on the main listeners between their head and their answer's head."),
    ("authgate_auth_failures_total", Kind::Counter, "401 answers by error code."),
    ("authgate_silent_refreshes_total", Kind::Counter, "Fresh access tokens handed back with a response."),
    ("authgate_logins_total", Kind::Counter, "Logins by result: success, failure, locked, flood."),
    ("authgate_sessions_active", Kind::Gauge, "Sessions in the store, counted at each scrape."),
    ("authgate_upstream_duration_seconds", Kind::Histogram, "Upstream exchanges, request sent to response head."),
    ("authgate_upstream_errors_total", Kind::Counter, "Failed upstream exchanges by upstream and kind: connect, timeout, reset, protocol, bad_upgrade, body."),
    ("authgate_store_errors_total", Kind::Counter, "Session store operations that failed."),
    ("authgate_store_breaker_open", Kind::Gauge, "1 while the Redis store's circuit breaker is open (calls fail fast without asking Redis), else 0."),
    ("authgate_store_breaker_rejections_total", Kind::Counter, "Redis store calls failed fast by the open circuit breaker, without a network call."),
    ("authgate_lockout_degraded_total", Kind::Counter, "Lock-out and captcha operations done on the per-instance fallback because Redis was unreachable, by operation."),
    ("authgate_config_reloads_total", Kind::Counter, "Config reloads by result: ok, error."),
    ("authgate_jwks_fetches_total", Kind::Counter, "Identity providers' key fetches by issuer and result."),
    ("authgate_captchas_total", Kind::Counter, "Login captchas by result."),
    ("authgate_notify_sent_total", Kind::Counter, "Session events ([notify]) a receiver took (answered 2xx), one per receiver."),
    ("authgate_notify_failures_total", Kind::Counter, "Session events dropped, by reason: queue_full (beyond max_queue), undelivered (every retry failed; one per receiver), disabled (a reload emptied notify.urls)."),
    ("authgate_log_lines_dropped_total", Kind::Counter, "Access log lines dropped because the writer fell behind (the request never waits)."),
    ("authgate_build_info", Kind::Gauge, "Always 1; the version label says which build is running."),
];

/// Describes every metric of [`CATALOGUE`] and registers, at 0, the series whose labels are
/// known before anything happens: a counter that first appears at its first increment hides
/// that increment from `rate()`, and a dashboard panel shows no data rather than 0.
fn describe() {
    for &(name, kind, help) in CATALOGUE {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    metrics::gauge!("authgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!("authgate_requests_in_flight").set(0.0);
    metrics::counter!("authgate_silent_refreshes_total").increment(0);
    metrics::counter!("authgate_store_errors_total").increment(0);
    metrics::gauge!("authgate_store_breaker_open").set(0.0);
    metrics::counter!("authgate_store_breaker_rejections_total").increment(0);
    for result in ["ok", "error"] {
        metrics::counter!("authgate_config_reloads_total", "result" => result).increment(0);
    }
    metrics::counter!("authgate_notify_sent_total").increment(0);
    for reason in ["queue_full", "undelivered", "disabled"] {
        metrics::counter!("authgate_notify_failures_total", "reason" => reason).increment(0);
    }
    for result in ["success", "failure", "locked", "flood"] {
        metrics::counter!("authgate_logins_total", "result" => result).increment(0);
    }
}

/// The requests of one gateway's main listeners between their head and their answer's
/// head, whichever protocol brought them: one per request, so several on an HTTP/2
/// connection, and none on an idle keep-alive one (`server/conn.rs` counts them where it
/// tells the connection's watchdog). A response body still streaming, or a WebSocket
/// tunnel, is no longer in flight: this is the gateway and its upstreams still owing an
/// answer. The admin listener's requests (the scrape itself) are not counted.
///
/// A relaxed atomic of the gateway's own per request; `authgate_requests_in_flight` is set
/// from it at each scrape, so each gateway of a test process shows its own count.
#[derive(Debug, Default)]
pub(crate) struct InFlight(AtomicU64);

impl InFlight {
    pub(crate) fn started(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the gauge to the count now (at a scrape).
    pub(crate) fn publish(&self) {
        metrics::gauge!("authgate_requests_in_flight").set(self.0.load(Ordering::Relaxed) as f64);
    }
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = if cfg!(test) {
    std::time::Duration::from_millis(20)
} else {
    std::time::Duration::from_secs(5)
};

/// The recorder keeps every histogram sample (24 bytes: one per proxied request for
/// `authgate_upstream_duration_seconds`) until something folds them into the buckets; only
/// a scrape of `/metrics` would, so a gateway nobody scrapes grew without bound. A thread of
/// its own (not a task: the recorder outlives any one runtime) does it every few seconds
/// until `stop` (the gateway's shutdown signal, or its app gone); waiting on the signal
/// rather than sleeping, it ends as soon as that comes. `server::start` starts one per
/// gateway (a process runs one; tests run several, folding the one recorder harmlessly).
pub(crate) fn spawn_upkeep(stop: Signal) -> Option<std::thread::JoinHandle<()>> {
    let handle = prometheus().clone();
    std::thread::Builder::new()
        .name("authgate-metrics".into())
        .spawn(move || {
            while !stop.wait_timeout(UPKEEP_EVERY) {
                handle.run_upkeep();
                upkeep::done();
            }
        })
        .map_err(|e| {
            tracing::warn!(error = %e, "metrics upkeep thread not started; /metrics scrapes will do it");
        })
        .ok()
}

/// Upkeep rounds, for the test that they happen.
mod upkeep {
    #[cfg(test)]
    pub(super) static ROUNDS: (std::sync::Mutex<u64>, std::sync::Condvar) =
        (std::sync::Mutex::new(0), std::sync::Condvar::new());

    pub(super) fn done() {
        #[cfg(test)]
        {
            *ROUNDS.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            ROUNDS.1.notify_all();
        }
    }
}

/// One series per status code seen, in the order first seen.
type StatusCounters = Vec<(u16, metrics::Counter)>;

/// Which `authgate_requests_total` series a request counts in: one route's, the `/auth`
/// endpoints', or that of requests no route took (`-`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted<'a> {
    pub label: &'a str,
    slot: usize,
}

impl<'a> Counted<'a> {
    pub(crate) const UNROUTED: Counted<'static> = Counted {
        label: "-",
        slot: 0,
    };
    pub(crate) const AUTH: Counted<'static> = Counted {
        label: "auth",
        slot: 1,
    };

    pub(crate) fn route(route: &'a Route) -> Self {
        Self {
            label: &route.label,
            slot: 2 + route.index,
        }
    }
}

/// `authgate_requests_total{route,status}` handles by [`Counted::slot`], each registered on
/// first use: the hot path then costs a read lock and a short scan instead of building a
/// metric key (or hashing the label) per request.
pub(crate) struct RequestCounters(Box<[RwLock<StatusCounters>]>);

impl RequestCounters {
    /// Counters for a table of `routes` routes (plus the unrouted and `/auth` series).
    pub(crate) fn new(routes: usize) -> Self {
        Self((0..2 + routes).map(|_| RwLock::new(Vec::new())).collect())
    }

    /// Counts one answer. `counted` must come from the route table these counters were made
    /// for (a slot is a position in it).
    pub(crate) fn count(&self, counted: Counted<'_>, status: http::StatusCode) {
        let code = status.as_u16();
        let Some(slot) = self.0.get(counted.slot) else {
            return new_request_counter(counted.label, status).increment(1);
        };
        {
            let seen = slot.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, c)) = seen.iter().find(|(s, _)| *s == code) {
                return c.increment(1);
            }
        }
        let mut seen = slot.write().unwrap_or_else(|p| p.into_inner());
        // Another request may have registered it between the two locks.
        if let Some((_, c)) = seen.iter().find(|(s, _)| *s == code) {
            return c.increment(1);
        }
        let counter = new_request_counter(counted.label, status);
        counter.increment(1);
        seen.push((code, counter));
    }
}

fn new_request_counter(route: &str, status: http::StatusCode) -> metrics::Counter {
    metrics::counter!(
        "authgate_requests_total",
        "route" => route.to_owned(),
        "status" => status.as_str().to_owned()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (up to 5 s) until `rounds` more upkeep rounds than `from` have run.
    fn wait_rounds(from: u64, rounds: u64) -> u64 {
        let (lock, cv) = &upkeep::ROUNDS;
        let guard = lock.lock().unwrap();
        let (guard, _) = cv
            .wait_timeout_while(guard, std::time::Duration::from_secs(5), |n| {
                *n < from + rounds
            })
            .unwrap();
        *guard
    }

    #[test]
    fn histogram_samples_are_folded_in_without_a_scrape() {
        let handle = prometheus();
        let shutdown = crate::shutdown::Shutdown::new();
        spawn_upkeep(shutdown.signal()).expect("upkeep thread");
        let start = *upkeep::ROUNDS.0.lock().unwrap();
        metrics::histogram!("authgate_upkeep_probe_duration_seconds").record(0.003);
        // Two rounds: the first may have started before the sample.
        assert!(wait_rounds(start, 2) >= start + 2, "no upkeep ran");
        // Nothing is lost by it: the sample is in the buckets.
        let text = handle.render();
        assert!(
            text.contains("authgate_upkeep_probe_duration_seconds_count 1"),
            "{text}"
        );
    }

    /// The names in every `counter!`/`gauge!`/`histogram!` call under `src/`.
    fn names_used_in_src() -> Vec<(String, Kind, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut found = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (mac, kind) in [
                ("counter!(", Kind::Counter),
                ("gauge!(", Kind::Gauge),
                ("histogram!(", Kind::Histogram),
            ] {
                for (at, _) in text.match_indices(mac) {
                    let rest = text[at + mac.len()..].trim_start();
                    let Some(quoted) = rest.strip_prefix('"') else {
                        continue; // a name from a variable: the catalogue loop in describe()
                    };
                    let name = &quoted[..quoted.find('"').unwrap()];
                    // Not a metric (this test's own patterns), or this module's upkeep probe.
                    if !name.starts_with("authgate_") || name.starts_with("authgate_upkeep_probe") {
                        continue;
                    }
                    found.push((name.to_owned(), kind, file.display().to_string()));
                }
            }
        }
        found
    }

    /// The catalogue (the `# HELP` lines, the dashboard's and the README's list) cannot fall
    /// behind the code: every metric the code records is in it, with its type.
    #[test]
    fn every_metric_recorded_is_in_the_catalogue() {
        let used = names_used_in_src();
        assert!(used.len() > 10, "{used:?}");
        for (name, kind, file) in &used {
            let entry = CATALOGUE.iter().find(|(n, ..)| n == name);
            assert!(
                entry.is_some(),
                "{file}: {name} is not in metrics::CATALOGUE"
            );
            assert_eq!(entry.unwrap().1, *kind, "{file}: {name}");
        }
        for (name, ..) in CATALOGUE {
            assert!(
                used.iter().any(|(n, ..)| n == name),
                "{name} is in the catalogue but nothing records it"
            );
        }
    }

    #[test]
    fn known_series_show_before_anything_happens() {
        let text = prometheus().render();
        for want in [
            "# HELP authgate_logins_total Logins by result",
            "# TYPE authgate_requests_in_flight gauge",
            concat!(
                "authgate_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
            "authgate_silent_refreshes_total ",
            "authgate_store_errors_total ",
            "authgate_store_breaker_open ",
            "authgate_store_breaker_rejections_total ",
            "authgate_logins_total{result=\"locked\"} ",
            "authgate_config_reloads_total{result=\"error\"} ",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
    }

    /// Joins `thread`, failing if it has not ended within 5 s.
    fn join_within(thread: std::thread::JoinHandle<()>, what: &str) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(thread.join());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect(what)
            .unwrap();
    }

    #[test]
    fn the_upkeep_thread_stops_on_the_shutdown_signal() {
        let shutdown = crate::shutdown::Shutdown::new();
        let thread = spawn_upkeep(shutdown.signal()).expect("upkeep thread");
        shutdown.trigger();
        join_within(thread, "the upkeep thread ran on after the shutdown signal");
        // And when its app (the last `Shutdown`) is gone without one.
        let shutdown = crate::shutdown::Shutdown::new();
        let thread = spawn_upkeep(shutdown.signal()).expect("upkeep thread");
        drop(shutdown);
        join_within(thread, "the upkeep thread outlived its app");
    }
}
