//! One error type for the whole HTTP surface. Every failure becomes a JSON body
//! `{"error": <human message>, "code": <stable snake_case code>}`; the internal cause
//! (driver text, I/O errors) goes to the log only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (busy and rate-limited answers).
    pub retry_after: Option<u32>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// What a client refused for lack of capacity is told to wait before it retries.
pub const BUSY_RETRY_AFTER_SECONDS: u32 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    /// 503 `too_busy`: a limit on concurrent work is reached; retry after `seconds`.
    pub fn too_busy(message: impl Into<String>, seconds: u32) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "too_busy", message).with_retry_after(seconds)
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 400 `empty_grant`: a grant without any flag would give nothing (not even visibility).
    pub fn empty_grant(product: &str) -> Self {
        Self::bad_request(
            "empty_grant",
            format!(
                "the grant on '{product}' sets no permission; set at least one of maintainer, download, upload, delete (to take access away, use deleteToken)"
            ),
        )
    }
    pub fn product_not_found(product: &str) -> Self {
        Self::not_found(
            "product_not_found",
            format!("product '{product}' does not exist or you have no access to it"),
        )
    }
    pub fn version_not_found(product: &str, version: &str) -> Self {
        Self::not_found(
            "version_not_found",
            format!("product '{product}' has no version '{version}'"),
        )
    }
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the upload exceeds the limit of {limit} bytes"),
        )
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message, "code": self.code }));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}

/// Errors of the metadata store. `Unavailable` keeps the driver's text for the log.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A pending record whose upload still runs (its lease is live) holds the key.
    #[error("held by an upload in progress")]
    Pending,
}

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob not found")]
    NotFound,
    /// A bounded resource (the S3 part buffers) stayed taken for too long.
    #[error("storage busy")]
    Busy,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// The error response with a download's headers (ETag, digests, ...) added, except
    /// those that describe the artifact's body: this body is the JSON error.
    pub fn with_artifact_headers(self, extra: http::HeaderMap) -> axum::response::Response {
        use http::header;
        let mut resp = axum::response::IntoResponse::into_response(self);
        for (k, v) in extra.iter() {
            if k != header::CONTENT_LENGTH
                && k != header::CONTENT_TYPE
                && k != header::CONTENT_DISPOSITION
            {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
        }
        resp
    }
}

impl From<crate::domain::names::NameError> for ApiError {
    fn from(err: crate::domain::names::NameError) -> Self {
        use crate::domain::names::NameError;
        match err {
            NameError::Invalid(msg) => ApiError::bad_request("invalid_name", msg),
            NameError::Reserved(msg) => ApiError::bad_request("reserved_name", msg),
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(err: MetaError) -> Self {
        match err {
            MetaError::Conflict => ApiError::conflict("conflict", "the resource already exists"),
            MetaError::NotFound => ApiError::not_found("not_found", "not found"),
            MetaError::Pending => ApiError::conflict(
                "version_pending",
                "another upload of this version is in progress",
            ),
            MetaError::Unavailable(cause) => {
                tracing::error!(cause = %cause, "metadata store error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "metadata_unavailable",
                    "the metadata store is unavailable; retry later",
                )
            }
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(err: BlobError) -> Self {
        match err {
            BlobError::NotFound => {
                tracing::error!("blob missing for a committed version");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the artifact could not be read from storage",
                )
            }
            BlobError::Busy => ApiError::too_busy(
                "every upload buffer is taken; retry later",
                BUSY_RETRY_AFTER_SECONDS,
            ),
            BlobError::Unavailable(cause) => {
                tracing::error!(cause = %cause, "blob store error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the artifact storage is unavailable; retry later",
                )
            }
        }
    }
}
