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
    /// More fields of the JSON body, beside `error` and `code` (e.g. a refused quota's
    /// figures).
    pub details: Option<Box<serde_json::Map<String, serde_json::Value>>>,
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
            details: None,
        }
    }
    /// Adds the fields of `details` (an object) to the body; `error` and `code` stay.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        if let serde_json::Value::Object(fields) = details {
            self.details = Some(Box::new(fields));
        }
        self
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
        let mut body = self.details.map(|d| *d).unwrap_or_default();
        body.insert("error".into(), json!(self.message));
        body.insert("code".into(), json!(self.code));
        let body = Json(serde_json::Value::Object(body));
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
    /// A rule of a version's files refused the change (nothing was written).
    #[error("{0}")]
    Asset(AssetRefusal),
}

impl MetaError {
    /// The store answered no, so nothing was written. `Unavailable` may hide a change
    /// that did land (a commit whose outcome stayed unknown): its blobs must stay, for
    /// the janitor to judge once the store answers again.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, MetaError::Unavailable(_))
    }
}

/// Why a store refused a change to a version's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetRefusal {
    /// The draft already has a file of that name.
    FileExists,
    /// The draft holds `MAX_FILES` files.
    TooManyFiles,
    /// The version is published: its files no longer change.
    Published,
    /// A publish listed other files than the draft holds.
    FilesMismatch,
    /// A publish of a draft without files.
    EmptyVersion,
    /// The version has no file of that name.
    FileNotFound,
    /// A label change that breaks the label rules (message says which).
    InvalidLabel(String),
}

impl std::fmt::Display for AssetRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AssetRefusal::FileExists => "the version already has a file of that name",
            AssetRefusal::TooManyFiles => "the version holds as many files as allowed",
            AssetRefusal::Published => "the version is published",
            AssetRefusal::FilesMismatch => "the files differ from the draft's",
            AssetRefusal::EmptyVersion => "the draft has no file",
            AssetRefusal::FileNotFound => "no such file",
            AssetRefusal::InvalidLabel(m) => m,
        })
    }
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
            MetaError::Asset(refusal) => refusal.into(),
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

impl From<AssetRefusal> for ApiError {
    fn from(refusal: AssetRefusal) -> Self {
        match refusal {
            AssetRefusal::FileExists => ApiError::conflict(
                "file_exists",
                "the version already has a file of that name; files are never replaced",
            ),
            AssetRefusal::TooManyFiles => ApiError::conflict(
                "too_many_files",
                format!(
                    "a version holds at most {} files",
                    crate::domain::assets::MAX_FILES
                ),
            ),
            AssetRefusal::Published => ApiError::conflict(
                "version_published",
                "the version is published and immutable: no file is added, replaced or removed",
            ),
            AssetRefusal::FilesMismatch => ApiError::conflict(
                "files_mismatch",
                "the listed files are not exactly the draft's files; nothing was published",
            ),
            AssetRefusal::EmptyVersion => ApiError::conflict(
                "empty_version",
                "the draft has no file; upload at least one before publishing",
            ),
            AssetRefusal::FileNotFound => {
                ApiError::not_found("file_not_found", "the version has no file of that name")
            }
            AssetRefusal::InvalidLabel(m) => ApiError::bad_request("invalid_label", m),
        }
    }
}

impl From<crate::domain::assets::AssetError> for ApiError {
    fn from(err: crate::domain::assets::AssetError) -> Self {
        use crate::domain::assets::AssetError;
        let code = match err {
            AssetError::InvalidName(_) => "invalid_name",
            AssetError::ReservedName => "reserved_name",
            AssetError::InvalidLabel(_) => "invalid_label",
        };
        ApiError::bad_request(code, err.to_string())
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
