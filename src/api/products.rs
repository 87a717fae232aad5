//! Products: access list, create, fetch, delete, and the `modify` actions.

use super::{ApiBytes, ApiJson, ApiPath, ApiQuery, rfc3339};
use crate::api::artifacts::{remove_version, version_info};
use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::names::validate_product;
use crate::domain::permissions::{Grant, GrantInput, ProductOp};
use crate::domain::version::latest_of;
use crate::dto::VersionInfo;
use crate::error::{ApiError, ApiResult};
use crate::meta::ProductView;
use crate::ops::{self, Ctx};
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
    /// The original web UI sends `"tokens": {}`; grants go through addToken, so only an
    /// empty object is accepted here.
    #[serde(default)]
    tokens: Option<serde_json::Map<String, Value>>,
}

/// `GET /product/list`: the names of the products the caller can see (admin: all), as
/// the original web UI lists them. The same answer as `/product/access`.
pub async fn list(app: State<AppState>, caller: Caller) -> ApiResult<Json<Vec<String>>> {
    access(app, caller).await
}

/// `PUT /product/create`: the creator gets all four flags.
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate_product(&req.name)?;
    if caller.token.exchanged {
        // It would be the new product's maintainer: more than any trust policy gives.
        return Err(ApiError::forbidden(
            "a token from an OIDC exchange (trusted publishing) may not create products",
        ));
    }
    if req.tokens.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "'tokens' must be empty when creating a product: grant access with PUT /product/modify/addToken",
        ));
    }
    ops::products::create(&app, &Ctx::of(&caller), &req.name, &caller.token.id).await?;
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
    validate_product(&product)?;
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
    // Drafts only for those who may see them; never `latest`.
    let drafts = caller.sees_drafts(&product);
    let versions: Vec<_> = versions
        .into_iter()
        .filter(|v| drafts || v.state != crate::meta::VersionState::Draft)
        .collect();
    // Every version is loaded already: pick `latest` among them rather than asking again.
    let latest = latest_of(
        versions
            .iter()
            .filter(|v| v.state == crate::meta::VersionState::Committed)
            .map(|v| (v.kind, v.sort_key.as_str(), v)),
        query.prerelease,
    )
    .cloned();
    Ok(Json(ProductInfo {
        name: record.name,
        created_at: rfc3339(record.created_at),
        tokens: grants.into_iter().collect(),
        versions: versions
            .iter()
            .map(|v| (v.version.clone(), version_info(v)))
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
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::DeleteProduct)?;
    let deleted = ops::products::delete(&app, &Ctx::of(&caller), &product).await?;
    tracing::info!(product = %product, versions = deleted.value.versions.len(), by = %caller.token.id, "product deleted");
    Ok(StatusCode::NO_CONTENT)
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
    validate_product(&req.product)?;
    let permissions = Grant::from(req.permissions);
    if permissions.is_empty() {
        return Err(ApiError::empty_grant(&req.product));
    }
    caller.authorize(&req.product, ProductOp::ManageTokens)?;
    let target = app
        .tokens
        .resolve(&req.token)
        .await?
        .ok_or_else(|| ApiError::not_found("token_not_found", "no such token"))?;
    ops::grants::set(&app, &Ctx::of(&caller), &req.product, &target, permissions).await?;
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
            validate_product(&req.product)?;
            caller.authorize(&req.product, ProductOp::ManageTokens)?;
            let target = app
                .tokens
                .resolve(&req.token)
                .await?
                .ok_or_else(|| ApiError::not_found("token_not_found", "no such token"))?;
            ops::grants::remove(&app, &Ctx::of(&caller), &req.product, &target).await?;
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
