//! Products: access list, create, fetch, delete, and the `modify` actions.

use super::{ApiBytes, ApiJson, ApiPath, ApiQuery, name_error, rfc3339};
use crate::api::artifacts::{VersionInfo, remove_version};
use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::names::validate_product;
use crate::domain::permissions::{Grant, GrantInput, ProductOp};
use crate::domain::version::latest_of;
use crate::error::{ApiError, ApiResult, MetaError};
use crate::meta::{ProductRecord, ProductView, now_ms};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `GET /product/access`: products where the caller has any grant (admin: all).
pub async fn access(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<String>>> {
    let mut names: Vec<String> = if caller.is_admin() {
        app.meta.list_products().await?
    } else {
        caller.grants.keys().cloned().collect()
    };
    names.sort();
    Ok(Json(names))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
}

/// `PUT /product/create`: the creator gets all four flags.
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate_product(&req.name).map_err(name_error)?;
    let record = ProductRecord {
        name: req.name.clone(),
        created_at: now_ms(),
    };
    app.meta
        .create_product(&record, &caller.token.id)
        .await
        .map_err(|e| match e {
            MetaError::Conflict => ApiError::conflict(
                "product_exists",
                format!("product '{}' already exists", req.name),
            ),
            other => other.into(),
        })?;
    app.tokens
        .invalidate_hashes(std::slice::from_ref(&caller.token.hash))
        .await;
    Ok((StatusCode::CREATED, Json(json!({ "name": req.name }))))
}

#[derive(Serialize)]
pub struct ProductInfo {
    name: String,
    created_at: String,
    tokens: BTreeMap<String, Grant>,
    versions: BTreeMap<String, VersionInfo>,
    /// What the version name `latest` resolves to (null when nothing qualifies).
    latest: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FetchQuery {
    /// Let `latest` be a pre-release.
    #[serde(default)]
    prerelease: bool,
}

/// `GET /product/fetch/{product}`: metadata, grants by public token id, versions, and
/// the version `latest` resolves to.
pub async fn fetch(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
    ApiQuery(query): ApiQuery<FetchQuery>,
) -> ApiResult<Json<ProductInfo>> {
    validate_product(&product).map_err(name_error)?;
    caller.authorize(&product, ProductOp::Fetch)?;
    let ProductView {
        record,
        grants,
        versions,
    } = app
        .meta
        .product_view(&product)
        .await?
        .ok_or_else(|| ApiError::product_not_found(&product))?;
    // Every version is loaded already: pick `latest` among them rather than asking again.
    let latest = latest_of(
        versions.iter().map(|v| (v.kind, v.sort_key.as_str(), v)),
        query.prerelease,
    )
    .cloned();
    Ok(Json(ProductInfo {
        name: record.name,
        created_at: rfc3339(record.created_at),
        tokens: grants.into_iter().collect(),
        versions: versions
            .iter()
            .map(|v| (v.version.clone(), VersionInfo::from(v)))
            .collect(),
        latest: latest.map(|v| v.version),
    }))
}

/// `DELETE /product/delete/{product}`: metadata first, then blobs, then caches.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
) -> ApiResult<StatusCode> {
    validate_product(&product).map_err(name_error)?;
    caller.authorize(&product, ProductOp::DeleteProduct)?;
    let deleted = app
        .meta
        .delete_product(&product)
        .await?
        .ok_or_else(|| ApiError::product_not_found(&product))?;
    app.tokens.invalidate_ids(&deleted.token_ids).await?;
    for version in &deleted.versions {
        if let Err(err) = app.blobs.delete(&version.blob_key).await {
            // The record is gone; the janitor's orphan sweep removes the object later.
            tracing::warn!(key = %version.blob_key, error = %err, "blob delete failed; left for the janitor");
        }
    }
    tracing::info!(product = %product, versions = deleted.versions.len(), by = %caller.token.id, "product deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// 400 `empty_grant`: a grant without any flag would give nothing (not even visibility).
pub(crate) fn empty_grant(product: &str) -> ApiError {
    ApiError::bad_request(
        "empty_grant",
        format!(
            "the grant on '{product}' sets no permission; set at least one of maintainer, download, upload, delete (to take access away, use deleteToken)"
        ),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddTokenRequest {
    product: String,
    token: String,
    #[serde(default)]
    permissions: GrantInput,
}

/// `PUT /product/modify/{action}`: only `addToken`.
pub async fn modify_put(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(action): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<StatusCode> {
    if action != "addToken" {
        return Err(unknown_action(&action, "addToken"));
    }
    let req: AddTokenRequest = parse_body(&body)?;
    validate_product(&req.product).map_err(name_error)?;
    let permissions = Grant::from(req.permissions);
    if permissions.is_empty() {
        return Err(empty_grant(&req.product));
    }
    caller.authorize(&req.product, ProductOp::ManageTokens)?;
    let target = app
        .tokens
        .resolve(&req.token)
        .await?
        .ok_or_else(|| ApiError::not_found("token_not_found", "no such token"))?;
    app.meta
        .set_grant(&req.product, &target.id, permissions)
        .await
        .map_err(|e| match e {
            MetaError::NotFound => ApiError::product_not_found(&req.product),
            other => other.into(),
        })?;
    app.tokens
        .invalidate_hashes(std::slice::from_ref(&target.hash))
        .await;
    Ok(StatusCode::CREATED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteVersionRequest {
    product: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteTokenRequest {
    product: String,
    token: String,
}

/// `DELETE /product/modify/{action}`: `deleteVersion` or `deleteToken`.
pub async fn modify_delete(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(action): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<StatusCode> {
    match action.as_str() {
        "deleteVersion" => {
            let req: DeleteVersionRequest = parse_body(&body)?;
            remove_version(&app, &caller, &req.product, &req.version).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        "deleteToken" => {
            let req: DeleteTokenRequest = parse_body(&body)?;
            validate_product(&req.product).map_err(name_error)?;
            caller.authorize(&req.product, ProductOp::ManageTokens)?;
            let target = app
                .tokens
                .resolve(&req.token)
                .await?
                .ok_or_else(|| ApiError::not_found("token_not_found", "no such token"))?;
            if !app.meta.remove_grant(&req.product, &target.id).await? {
                if app.meta.product(&req.product).await?.is_none() {
                    return Err(ApiError::product_not_found(&req.product));
                }
                return Err(ApiError::not_found(
                    "token_not_found",
                    "that token has no grant on this product",
                ));
            }
            app.tokens
                .invalidate_hashes(std::slice::from_ref(&target.hash))
                .await;
            Ok(StatusCode::NO_CONTENT)
        }
        other => Err(unknown_action(other, "deleteVersion or deleteToken")),
    }
}

fn unknown_action(action: &str, expected: &str) -> ApiError {
    let shown: String = action
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    ApiError::bad_request(
        "unknown_action",
        format!("unknown action '{shown}': expected {expected}"),
    )
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}")))
}
