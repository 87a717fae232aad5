//! Token management: register, fetch, prune, list.

use super::{ApiBytes, ApiPath, rfc3339};
use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::permissions::{Grant, GrantInput};
use crate::error::{ApiError, ApiResult};
use crate::meta::{TokenRecord, now_ms};
use crate::ops::{self, Ctx};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[serde(default)]
    admin: bool,
    name: Option<String>,
    expires_in: Option<u64>,
    expires_at: Option<String>,
    /// Grants for the new token; a non-admin caller may only hand out a subset of its own.
    products: Option<BTreeMap<String, GrantInput>>,
}

#[derive(Debug, Serialize)]
pub struct TokenInfo {
    id: String,
    /// The public id again: the original web UI shows and revokes tokens by `token`.
    token: String,
    admin: bool,
    created_at: String,
    name: Option<String>,
    expires_at: Option<String>,
    /// Id of the token that minted this one; null for tokens made at start-up or by the CLI.
    parent: Option<String>,
    /// True for a token issued by an OIDC exchange (trusted publishing).
    exchanged: bool,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(t: &TokenRecord) -> Self {
        TokenInfo {
            id: t.id.clone(),
            token: t.id.clone(),
            admin: t.admin,
            created_at: rfc3339(t.created_at),
            name: t.name.clone(),
            expires_at: t.expires_at.map(rfc3339),
            parent: t.parent.clone(),
            exchanged: t.exchanged,
        }
    }
}

/// The last instant RFC 3339 can write, `9999-12-31T23:59:59Z`, in Unix milliseconds: a
/// later expiry could not be shown (and `expires_at` cannot name one).
const MAX_EXPIRY_MS: i64 = 253_402_300_799_000;

/// `PUT /register`: returns the raw token once, as text/plain.
pub async fn register(
    State(app): State<AppState>,
    caller: Caller,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, [(http::HeaderName, &'static str); 1], String)> {
    let req: RegisterRequest = if super::is_blank_json(&body) {
        RegisterRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}")))?
    };
    let now = now_ms();
    let expires_at = match (req.expires_in, &req.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give either expires_in or expires_at, not both",
            ));
        }
        (Some(secs), None) => {
            let ms = i64::try_from(secs)
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .and_then(|ms| ms.checked_add(now))
                .filter(|_| secs > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_body",
                        "expires_in must be a positive number of seconds",
                    )
                })?;
            if ms > MAX_EXPIRY_MS {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "expires_in reaches past 9999-12-31T23:59:59Z, the last expiry a token can have",
                ));
            }
            Some(ms)
        }
        (None, Some(at)) => {
            let at = chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_body",
                        "expires_at must be an RFC 3339 date-time",
                    )
                })?
                .timestamp_millis();
            if at <= now {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "expires_at is in the past",
                ));
            }
            Some(at)
        }
        (None, None) => None,
    };
    if let Some(name) = &req.name
        && (name.len() > 128 || name.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_body",
            "name must be at most 128 printable characters",
        ));
    }
    let grants: Vec<(String, Grant)> = req
        .products
        .unwrap_or_default()
        .into_iter()
        .map(|(product, g)| (product, Grant::from(g)))
        .collect();
    let minted = ops::tokens::mint(
        &app,
        &caller,
        ops::tokens::Mint {
            admin: req.admin,
            name: req.name,
            expires_at,
            grants,
        },
    )
    .await?;
    let (raw, record) = minted.value;
    tracing::info!(token_id = %record.id, admin = record.admin, by = %caller.token.id, "token registered");
    Ok((
        StatusCode::CREATED,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        raw,
    ))
}

/// `GET /fetch/{token}`: admin, or the token itself.
pub async fn fetch(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<Json<TokenInfo>> {
    let found = app.tokens.resolve(&token).await?;
    let is_self = found.as_ref().is_some_and(|t| t.id == caller.token.id);
    if !caller.is_admin() && !is_self {
        return Err(ApiError::forbidden("only admins may look up other tokens"));
    }
    let found = found.ok_or_else(|| ApiError::not_found("token_not_found", "no such token"))?;
    Ok(Json(TokenInfo::from(&found)))
}

/// `DELETE /prune/{token}`: revokes at once and removes the token from every product,
/// together with every token minted below it (children, grandchildren, ...). The cache
/// entries of all of them are invalidated, so every replica sharing the cache sees it.
pub async fn prune(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let found = app
        .tokens
        .resolve(&token)
        .await?
        .ok_or_else(|| ApiError::not_found("token_not_found", "no such token"))?;
    let revoked = ops::tokens::prune(&app, &Ctx::of(&caller), &found)
        .await?
        .value;
    tracing::info!(token_id = %found.id, descendants = revoked.len().saturating_sub(1), by = %caller.token.id, "token pruned");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /tokens` (admin): every token's public metadata.
pub async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<TokenInfo>>> {
    caller.require_admin()?;
    let tokens = app.meta.list_tokens().await?;
    Ok(Json(tokens.iter().map(TokenInfo::from).collect()))
}
