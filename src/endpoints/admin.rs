//! The admin listener: `/healthz`, `/readyz`, `/metrics` without a token; `/admin/*` behind
//! the admin bearer token.

use std::sync::{Arc, OnceLock};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::app::App;
use crate::body::{full, Body};
use crate::error::GatewayError;
use crate::pipeline::ConnInfo;

/// The process-wide Prometheus recorder (installed once, on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            )
            // The matcher and buckets above are static and valid.
            .expect("static histogram buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests); ours still renders what it saw.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Answers one request on the admin listener.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, _conn: ConnInfo) -> Response<Body> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/healthz") => text(StatusCode::OK, "ok\n"),
        ("GET" | "HEAD", "/readyz") => {
            let _live = app.live();
            text(StatusCode::OK, "ready\n")
        }
        ("GET", "/metrics") => {
            let mut r = Response::new(full(prometheus().render()));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        _ => GatewayError::NotFound.into_response(),
    }
}
