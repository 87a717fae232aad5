//! HTTP handlers, grouped by area. Handlers parse, authorize and call the stores;
//! the rules live in `domain`, the I/O behind the store traits.

use crate::app::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::routing::{delete, get, post, put};

pub mod artifacts;
pub mod health;
pub mod products;
pub mod tokens;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/register", put(tokens::register))
        .route("/fetch/{token}", get(tokens::fetch))
        .route("/prune/{token}", delete(tokens::prune))
        .route("/tokens", get(tokens::list))
        .route("/product/access", get(products::access))
        .route("/product/create", put(products::create))
        .route("/product/fetch/{product}", get(products::fetch))
        .route("/product/delete/{product}", delete(products::delete))
        .route(
            "/product/modify/{action}",
            put(products::modify_put).delete(products::modify_delete),
        )
        .route(
            "/product/upload",
            // The upload enforces its own limit while streaming.
            post(artifacts::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/product/download/{product}/{version}",
            get(artifacts::download),
        )
        .route(
            "/product/delete/{product}/{version}",
            delete(artifacts::delete_version),
        )
        .route(
            "/product/presign/{product}/{version}",
            get(artifacts::presign),
        )
        .route("/product/versions/{product}", get(artifacts::list_versions))
        .route(
            "/signed/{product}/{version}",
            get(artifacts::signed_download),
        )
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

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
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

/// Maps a name-validation failure to a 400.
pub fn name_error(err: crate::domain::names::NameError) -> ApiError {
    use crate::domain::names::NameError;
    match err {
        NameError::Invalid(msg) => ApiError::bad_request("invalid_name", msg),
        NameError::Reserved(msg) => ApiError::bad_request("reserved_name", msg),
    }
}
