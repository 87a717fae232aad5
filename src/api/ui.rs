//! What the original service's web UI calls besides the API proper: its login check.

use super::ApiBytes;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::meta::now_ms;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct LoginRequest {
    token: Option<String>,
}

/// `POST /ui/login` `{"token"}`: 200 `{"success": true, "admin"}` for a valid token, 400
/// without one, 401 for an unknown, revoked or expired one. It changes nothing.
pub async fn login(
    State(app): State<AppState>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<Value>> {
    let req: LoginRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}")))?;
    let Some(raw) = req.token.filter(|t| !t.trim().is_empty()) else {
        return Err(ApiError::bad_request(
            "missing_token",
            "send the API token as {\"token\": \"...\"}",
        ));
    };
    match app.tokens.lookup(raw.trim()).await? {
        Some(doc) if !doc.token.is_expired(now_ms()) => {
            Ok(Json(json!({ "success": true, "admin": doc.token.admin })))
        }
        Some(_) => Err(ApiError::unauthorized(
            "token_expired",
            "the API token has expired",
        )),
        None => Err(ApiError::unauthorized(
            "invalid_token",
            "the API token is unknown or has been revoked",
        )),
    }
}
