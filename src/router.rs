//! The router: every route of `api::ROUTES` at `/` and again under `/api`, with the
//! request-id, tracing, metrics and time-limit layers around them.

use crate::api;
use crate::app::AppState;
use crate::error::ApiError;
use crate::observability::{self, REQUEST_ID};
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

/// The API routes, mounted at `/` and again under `/api` (where the original service
/// served them).
pub fn router(state: AppState) -> Router {
    let request_timeout = Duration::from_secs(state.settings.request_timeout_seconds);
    let routes = api::routes();
    let request_span = |req: &axum::http::Request<axum::body::Body>| {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        // Deliberately no URI here: paths can carry raw tokens.
        tracing::info_span!("request", request_id = %id)
    };
    let cors = cors_layer(&state.settings.cors_origins);
    Router::new()
        .merge(routes.clone())
        .nest("/api", routes)
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            time_limit,
        ))
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::from_fn_with_state(
            state.settings.max_upload_bytes,
            tus_discovery,
        ))
        .layer(axum::middleware::from_fn(observability::track))
        .layer(
            ServiceBuilder::new()
                // Outermost: the id is made safe before any span or log line sees it.
                .layer(axum::middleware::from_fn(observability::request_id))
                .layer(TraceLayer::new_for_http().make_span_with(request_span)),
        )
        .with_state(state)
}

/// `OPTIONS /uploads` is tus discovery: its headers go on the answer even when the CORS
/// layer (which answers every `OPTIONS` as a preflight) gave it.
async fn tus_discovery(State(max_upload_bytes): State<u64>, req: Request, next: Next) -> Response {
    let discovery = req.method() == http::Method::OPTIONS
        && matches!(req.uri().path(), "/uploads" | "/api/uploads");
    let mut response = next.run(req).await;
    if discovery {
        api::uploads::discovery_headers(response.headers_mut(), max_upload_bytes);
    }
    response
}

/// CORS for browser clients of the configured origins (`DEPOT_CORS_ORIGINS`): any route
/// (the token travels in a header, never a cookie, so no credentials mode), with the tus
/// headers allowed and exposed. `None` without origins: no CORS headers at all.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| http::HeaderValue::from_str(o).ok()),
        )
    };
    let names = |list: &[&'static str]| -> Vec<http::HeaderName> {
        list.iter()
            .map(|n| http::HeaderName::from_static(n))
            .collect()
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                http::Method::GET,
                http::Method::HEAD,
                http::Method::POST,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
                http::Method::OPTIONS,
            ])
            .allow_headers(names(&[
                "x-api-token",
                "authorization",
                "content-type",
                "tus-resumable",
                "upload-length",
                "upload-metadata",
                "upload-offset",
                "upload-checksum",
                "upload-defer-length",
                "upload-concat",
                "x-http-method-override",
                "x-request-id",
                "x-checksum-sha256",
            ]))
            .expose_headers(names(&[
                "location",
                "upload-offset",
                "upload-length",
                "upload-expires",
                "upload-metadata",
                "tus-resumable",
                "tus-version",
                "tus-extension",
                "tus-max-size",
                "tus-checksum-algorithm",
                "x-request-id",
                "retry-after",
                "x-checksum-sha256",
                "content-disposition",
                "etag",
            ]))
            .max_age(Duration::from_secs(3600)),
    )
}

/// Routes that move an artifact's bytes: their time depends on its size and the client's
/// speed, so [`time_limit`] does not apply (the upload has its own body idle timeout).
const TRANSFER_ROUTES: &[&str] = &[
    "/product/upload",
    "/product/upload/{product}/{version}/{file}",
    "/uploads",
    "/uploads/{id}",
    "/direct/{upload_id}",
    "/product/upload-url/{upload_id}/complete",
    "/product/download/{product}/{version}",
    "/signed/{product}/{version}",
];

/// Answers 503 `timeout` when a request other than a transfer takes longer than
/// `DEPOT_REQUEST_TIMEOUT_SECONDS` to produce its response. The handler itself runs to
/// completion on its own task (see `api::run_to_completion`); only the wait is cut short.
async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let route = observability::route_of(&req);
    let template = route.strip_prefix("/api").unwrap_or(&route);
    if TRANSFER_ROUTES.contains(&template) {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {} s; retry later",
                    limit.as_secs()
                ),
            )
            .into_response();
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        "done"
    }

    fn app() -> Router {
        Router::new()
            .route("/tokens", get(slow))
            .route("/product/upload", post(slow))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(200),
                time_limit,
            ))
    }

    fn request(method: &str, path: &str) -> Request {
        axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_slow_non_transfer_request_is_answered_503_timeout() {
        let response = app().oneshot(request("GET", "/tokens")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(http::header::RETRY_AFTER));
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "timeout");
    }

    #[tokio::test]
    async fn an_upload_is_not_cut_short_by_the_request_timeout() {
        let response = app()
            .oneshot(request("POST", "/product/upload"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
