//! `GET /openapi.json`: `openapi/openapi.yaml`, embedded in the binary and converted to
//! JSON once, on first use.

use crate::error::ApiError;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::sync::LazyLock;

/// The OpenAPI document, as written.
pub const SPEC_YAML: &str = include_str!("../../openapi/openapi.yaml");

/// The OpenAPI document as a JSON value.
pub fn spec() -> Result<serde_json::Value, String> {
    serde_yaml::from_str(SPEC_YAML).map_err(|e| format!("openapi/openapi.yaml: {e}"))
}

static SPEC_JSON: LazyLock<Result<Bytes, String>> = LazyLock::new(|| {
    let value = spec()?;
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| format!("openapi/openapi.yaml as JSON: {e}"))
});

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    match &*SPEC_JSON {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        // The unit tests parse the same document, so this is a build that skipped them.
        Err(err) => ApiError::internal(err).into_response(),
    }
}
