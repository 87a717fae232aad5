//! HTTP handlers, grouped by area. Handlers parse, authorize and call the stores;
//! the rules live in `domain`, the I/O behind the store traits.

use crate::app::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, head, options, patch, post, put};
use http::StatusCode;

pub mod artifacts;
pub mod audit;
pub mod health;
pub mod lifecycle;
pub mod openapi;
pub mod products;
pub mod tokens;
pub mod trust;
pub mod ui;
pub mod uploads;
pub mod webhooks;

/// Every route of the API as (method, path template): the single list that `routes()`
/// builds the router from, and that the OpenAPI test compares with
/// `openapi/openapi.yaml`. A route cannot be served without being listed here: adding
/// one means a line here and an arm in `handler`.
///
/// axum also answers `HEAD` on every `GET` route with the GET handler (body removed);
/// the routes in [`HEAD_ROUTES`] are the ones whose HEAD the spec documents.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("PUT", "/register"),
    ("GET", "/fetch/{token}"),
    ("DELETE", "/prune/{token}"),
    ("GET", "/tokens"),
    ("GET", "/product/access"),
    ("GET", "/product/list"),
    ("PUT", "/product/create"),
    ("GET", "/product/fetch/{product}"),
    ("DELETE", "/product/delete/{product}"),
    ("PUT", "/product/modify/{action}"),
    ("DELETE", "/product/modify/{action}"),
    ("POST", "/product/upload"),
    ("GET", "/product/download/{product}/{version}"),
    ("DELETE", "/product/delete/{product}/{version}"),
    ("GET", "/product/presign/{product}/{version}"),
    ("GET", "/product/versions/{product}"),
    ("GET", "/signed/{product}/{version}"),
    ("PUT", "/product/upload/{product}/{version}/{file}"),
    ("POST", "/product/publish/{product}/{version}"),
    ("DELETE", "/product/delete/{product}/{version}/{file}"),
    ("GET", "/product/download/{product}/{version}/{file}"),
    ("GET", "/product/presign/{product}/{version}/{file}"),
    ("GET", "/signed/{product}/{version}/{file}"),
    ("PUT", "/product/labels/{product}/{version}"),
    ("GET", "/product/settings/{product}"),
    ("PUT", "/product/settings/{product}"),
    ("GET", "/product/retention/{product}"),
    ("POST", "/product/retention/{product}/run"),
    ("GET", "/product/usage/{product}"),
    ("GET", "/usage"),
    ("PUT", "/product/trust/{product}"),
    ("GET", "/product/trust/{product}"),
    ("DELETE", "/product/trust/{product}/{id}"),
    ("POST", "/oidc/token"),
    ("OPTIONS", "/uploads"),
    ("POST", "/uploads"),
    ("GET", "/uploads"),
    ("HEAD", "/uploads/{id}"),
    ("PATCH", "/uploads/{id}"),
    ("DELETE", "/uploads/{id}"),
    ("POST", "/product/upload-url"),
    ("POST", "/product/upload-url/{upload_id}/complete"),
    ("DELETE", "/product/upload-url/{upload_id}"),
    ("PUT", "/direct/{upload_id}"),
    ("GET", "/audit"),
    ("POST", "/ui/login"),
    ("PUT", "/webhooks"),
    ("GET", "/webhooks"),
    ("DELETE", "/webhooks/{id}"),
    ("GET", "/webhooks/{id}/deliveries"),
    ("POST", "/webhooks/{id}/deliveries/{event_id}/redeliver"),
];

/// `GET` routes whose `HEAD` (served by the GET handler) is part of the documented API:
/// the artifact's headers without its body.
pub const HEAD_ROUTES: &[&str] = &[
    "/product/download/{product}/{version}",
    "/signed/{product}/{version}",
    "/product/download/{product}/{version}/{file}",
    "/signed/{product}/{version}/{file}",
];

/// The handler of one entry of [`ROUTES`]. Every handler but the upload's runs to
/// completion on its own task (see [`run_to_completion`]); the upload stops when its client
/// does, and its guard cleans up.
fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    let handler = route_handler(method, path);
    let handler = if STREAMED_UPLOADS.contains(&(method, path)) {
        handler
    } else {
        handler.layer(axum::middleware::from_fn(run_to_completion))
    };
    if path.starts_with("/uploads") {
        handler.layer(axum::middleware::from_fn(uploads::tus_headers))
    } else {
        handler
    }
}

/// Routes whose body is a file's bytes: they stop when their client does (their guards
/// clean up, or keep what is durable), and enforce their own size limits.
const STREAMED_UPLOADS: &[(&str, &str)] = &[
    ("POST", "/product/upload"),
    ("PUT", "/product/upload/{product}/{version}/{file}"),
    ("POST", "/uploads"),
    ("PATCH", "/uploads/{id}"),
    ("PUT", "/direct/{upload_id}"),
];

/// Runs a request's handler on its own task, so a client that disconnects (or times out)
/// does not cancel it half-way through a backend call. The MongoDB driver must not have an
/// operation dropped mid-flight: it discards that connection, and after a load test's 64
/// clients hung up at once, the next requests waited 50-80 s for the metadata store while
/// the server itself sat idle. A response body (a download's stream) is still polled by
/// the connection, so a gone client still stops a transfer. Shutdown waits for these tasks.
async fn run_to_completion(request: Request, next: axum::middleware::Next) -> Response {
    match crate::cleanup::spawn_tracked(next.run(request)).await {
        Ok(response) => response,
        Err(err) => ApiError::internal(err).into_response(),
    }
}

fn route_handler(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path) {
        ("GET", "/health") => get(health::health),
        ("GET", "/livez") => get(health::livez),
        ("GET", "/readyz") => get(health::readyz),
        ("GET", "/metrics") => get(health::metrics),
        ("GET", "/openapi.json") => get(openapi::openapi_json),
        ("PUT", "/register") => put(tokens::register),
        ("GET", "/fetch/{token}") => get(tokens::fetch),
        ("DELETE", "/prune/{token}") => delete(tokens::prune),
        ("GET", "/tokens") => get(tokens::list),
        ("GET", "/product/access") => get(products::access),
        ("GET", "/product/list") => get(products::list),
        ("PUT", "/product/create") => put(products::create),
        ("GET", "/product/fetch/{product}") => get(products::fetch),
        ("DELETE", "/product/delete/{product}") => delete(products::delete),
        ("PUT", "/product/modify/{action}") => put(products::modify_put),
        ("DELETE", "/product/modify/{action}") => delete(products::modify_delete),
        // The upload enforces its own limit while streaming.
        ("POST", "/product/upload") => post(artifacts::upload).layer(DefaultBodyLimit::disable()),
        ("GET", "/product/download/{product}/{version}") => get(artifacts::download),
        ("DELETE", "/product/delete/{product}/{version}") => delete(artifacts::delete_version),
        ("GET", "/product/presign/{product}/{version}") => get(artifacts::presign),
        ("GET", "/product/versions/{product}") => get(artifacts::list_versions),
        ("GET", "/signed/{product}/{version}") => get(artifacts::signed_download),
        ("PUT", "/product/upload/{product}/{version}/{file}") => {
            put(artifacts::upload_file).layer(DefaultBodyLimit::disable())
        }
        ("POST", "/product/publish/{product}/{version}") => post(artifacts::publish),
        ("DELETE", "/product/delete/{product}/{version}/{file}") => delete(artifacts::delete_file),
        ("GET", "/product/download/{product}/{version}/{file}") => get(artifacts::download_file),
        ("GET", "/product/presign/{product}/{version}/{file}") => get(artifacts::presign_file),
        ("GET", "/signed/{product}/{version}/{file}") => get(artifacts::signed_file_download),
        ("PUT", "/product/labels/{product}/{version}") => put(artifacts::set_labels),
        ("GET", "/product/settings/{product}") => get(lifecycle::get_settings),
        ("PUT", "/product/settings/{product}") => put(lifecycle::put_settings),
        ("GET", "/product/retention/{product}") => get(lifecycle::preview),
        ("POST", "/product/retention/{product}/run") => post(lifecycle::run),
        ("GET", "/product/usage/{product}") => get(lifecycle::product_usage),
        ("GET", "/usage") => get(lifecycle::all_usage),
        ("PUT", "/product/trust/{product}") => put(trust::create),
        ("GET", "/product/trust/{product}") => get(trust::list),
        ("DELETE", "/product/trust/{product}/{id}") => delete(trust::delete),
        ("POST", "/oidc/token") => post(trust::exchange),
        ("OPTIONS", "/uploads") => options(uploads::options),
        ("POST", "/uploads") => post(uploads::create).layer(DefaultBodyLimit::disable()),
        ("GET", "/uploads") => get(uploads::list),
        ("HEAD", "/uploads/{id}") => head(uploads::head),
        ("PATCH", "/uploads/{id}") => patch(uploads::patch).layer(DefaultBodyLimit::disable()),
        ("DELETE", "/uploads/{id}") => delete(uploads::terminate),
        ("POST", "/product/upload-url") => post(uploads::upload_url),
        ("POST", "/product/upload-url/{upload_id}/complete") => post(uploads::complete),
        ("DELETE", "/product/upload-url/{upload_id}") => delete(uploads::cancel_direct),
        ("PUT", "/direct/{upload_id}") => {
            put(uploads::direct_put).layer(DefaultBodyLimit::disable())
        }
        ("GET", "/audit") => get(audit::audit),
        ("POST", "/ui/login") => post(ui::login),
        ("PUT", "/webhooks") => put(webhooks::create),
        ("GET", "/webhooks") => get(webhooks::list),
        ("DELETE", "/webhooks/{id}") => delete(webhooks::delete),
        ("GET", "/webhooks/{id}/deliveries") => get(webhooks::deliveries),
        ("POST", "/webhooks/{id}/deliveries/{event_id}/redeliver") => post(webhooks::redeliver),
        _ => panic!("api::ROUTES lists {method} {path}, which has no handler"),
    }
}

/// The router, built from [`ROUTES`] (axum merges several methods on one path).
pub fn routes() -> Router<AppState> {
    ROUTES
        .iter()
        .fold(Router::new(), |router, &(method, path)| {
            router.route(path, handler(method, path))
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// JSON body whose rejections are JSON `invalid_body` errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters whose rejections are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters whose rejections are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A raw request body whose rejections (too large, unreadable) are JSON errors.
pub struct ApiBytes(pub Bytes);

/// A body that holds no JSON value: empty, or only JSON's own whitespace (space, tab,
/// line feed, carriage return; not a form feed, which a JSON parser refuses).
pub fn is_blank_json(body: &[u8]) -> bool {
    body.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(ApiError::from)
    }
}

/// The default body limit of the JSON endpoints (axum's `DefaultBodyLimit`).
const JSON_BODY_LIMIT: &str = "2 MiB";

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body exceeds the limit of {JSON_BODY_LIMIT}"),
    )
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return body_too_large();
        }
        ApiError::bad_request(
            "invalid_body",
            format!("unreadable request body: {}", rejection.body_text()),
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return body_too_large();
        }
        ApiError::bad_request(
            "invalid_body",
            format!("invalid JSON body: {}", rejection.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(
            "invalid_name",
            format!("invalid path: {}", rejection.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(
            "invalid_query",
            format!("invalid query: {}", rejection.body_text()),
        )
    }
}

/// Unix milliseconds as RFC 3339 (UTC, seconds precision).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_route_has_a_handler_and_builds() {
        // Panics on a route without a handler, or on the same method twice on a path.
        let _ = routes();
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(seen.insert(route), "{route:?} is listed twice");
        }
        for path in HEAD_ROUTES {
            assert!(
                ROUTES.contains(&("GET", path)),
                "HEAD {path} needs a GET route"
            );
        }
    }
}
