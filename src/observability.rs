//! Metrics, request ids and the access log.
//!
//! The access log and the metrics name a request by its route *template*
//! (`/fetch/{token}`), never by its raw path, so tokens carried in paths never reach a
//! log line or a label.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // A second install (e.g. two apps in one test process) keeps the first recorder.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string())
}

/// Records request counts and latencies by route template, method and status, and
/// writes one access-log line per request.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_of(&req);
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    metrics::counter!(
        "depot_http_requests_total",
        "route" => route.clone(), "method" => method.to_string(), "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!("depot_http_request_duration_seconds", "route" => route.clone(), "method" => method.to_string())
        .record(elapsed.as_secs_f64());
    tracing::info!(
        target: "depot::access",
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}
