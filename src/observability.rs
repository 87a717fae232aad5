//! Metrics, request ids and the access log.
//!
//! The access log and the metrics name a request by its route *template*
//! (`/fetch/{token}`), never by its raw path, so tokens carried in paths never reach a
//! log line or a label.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
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

/// The `method` label and log field: one of a fixed set, so a client sending random
/// methods cannot grow the metrics without bound.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// An incoming `X-Request-Id` is kept only when it is 1-64 characters of `[A-Za-z0-9._-]`.
pub fn valid_request_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Gives every request a safe `X-Request-Id` before anything logs it: the client's when
/// [`valid_request_id`] accepts it, else a generated UUID; the response carries the same.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(REQUEST_ID) {
        Some(v) if valid_request_id(v.as_bytes()) => v.clone(),
        _ => {
            let generated = uuid::Uuid::new_v4().to_string();
            match HeaderValue::from_str(&generated) {
                Ok(v) => v,
                Err(_) => HeaderValue::from_static("-"),
            }
        }
    };
    req.headers_mut().insert(REQUEST_ID, id.clone());
    let mut response = next.run(req).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
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
    let method = method_label(req.method());
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
        "route" => route.clone(), "method" => method, "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!("depot_http_request_duration_seconds", "route" => route.clone(), "method" => method)
        .record(elapsed.as_secs_f64());
    tracing::info!(
        target: "depot::access",
        request_id = %request_id,
        method,
        route = %route,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_come_from_a_fixed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        let odd = Method::from_bytes(b"XYZZYXYZZYXYZZY").unwrap();
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&Method::CONNECT), "other");
    }

    #[test]
    fn request_ids_are_short_and_of_safe_characters() {
        assert!(valid_request_id(b"abc-123_X.y"));
        assert!(valid_request_id(&[b'a'; 64]));
        assert!(!valid_request_id(&[b'a'; 65]));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"user=admin"));
        assert!(!valid_request_id(b"a\"b"));
    }
}
