//! Products: create and delete.

use super::{Changed, Ctx};
use crate::app::AppState;
use crate::domain::events::EventType;
use crate::domain::permissions::Grant;
use crate::error::{ApiError, ApiResult, MetaError};
use crate::meta::{DeletedProduct, ProductRecord, now_ms};
use serde_json::json;

/// Creates `name` with an all-flags grant for its creator (`creator_id`).
pub async fn create(
    app: &AppState,
    ctx: &Ctx,
    name: &str,
    creator_id: &str,
) -> ApiResult<Changed<ProductRecord>> {
    let record = ProductRecord {
        name: name.to_string(),
        created_at: now_ms(),
        settings: None,
    };
    let event = ctx.event(
        EventType::ProductCreated,
        Some(name),
        None,
        json!({ "grant": { "token_id": creator_id, "permissions": Grant::ALL } }),
    );
    app.meta
        .create_product(&record, creator_id, std::slice::from_ref(&event))
        .await
        .map_err(|e| match e {
            MetaError::Conflict => {
                ApiError::conflict("product_exists", format!("product '{name}' already exists"))
            }
            other => other.into(),
        })?;
    Ok(Changed::new(record, vec![event]))
}

/// Deletes `name` with its grants and versions: metadata first (with its event), then
/// blobs (a blob left behind is the janitor's), then the cache entries of its grantees.
pub async fn delete(app: &AppState, ctx: &Ctx, name: &str) -> ApiResult<Changed<DeletedProduct>> {
    let event = ctx.event(EventType::ProductDeleted, Some(name), None, json!({}));
    let deleted = app
        .meta
        .delete_product(name, event.clone())
        .await?
        .ok_or_else(|| ApiError::product_not_found(name))?;
    app.tokens.invalidate_ids(&deleted.token_ids).await?;
    let keys: Vec<String> = deleted
        .versions
        .iter()
        .flat_map(|v| v.blob_keys())
        .collect();
    crate::ops::versions::delete_blobs(app, keys).await;
    let mut event = event;
    event.details = crate::meta::product_deleted_details(&deleted);
    Ok(Changed::new(deleted, vec![event]))
}
