//! Grants: set and remove a token's permissions on a product.

use super::{Changed, Ctx};
use crate::app::AppState;
use crate::domain::events::EventType;
use crate::domain::permissions::Grant;
use crate::error::{ApiError, ApiResult, MetaError};
use crate::meta::TokenRecord;
use serde_json::json;

/// Creates or replaces `target`'s grant on `product`.
pub async fn set(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    target: &TokenRecord,
    grant: Grant,
) -> ApiResult<Changed<()>> {
    let event = ctx.event(
        EventType::GrantSet,
        Some(product),
        None,
        json!({ "token_id": target.id, "permissions": grant }),
    );
    app.meta
        .set_grant(product, &target.id, grant, std::slice::from_ref(&event))
        .await
        .map_err(|e| match e {
            MetaError::NotFound => ApiError::product_not_found(product),
            other => other.into(),
        })?;
    app.tokens
        .invalidate_hashes(std::slice::from_ref(&target.hash))
        .await;
    Ok(Changed::new((), vec![event]))
}

/// Removes `target`'s grant on `product`.
pub async fn remove(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    target: &TokenRecord,
) -> ApiResult<Changed<()>> {
    let event = ctx.event(
        EventType::GrantRemoved,
        Some(product),
        None,
        json!({ "token_id": target.id }),
    );
    if !app
        .meta
        .remove_grant(product, &target.id, std::slice::from_ref(&event))
        .await?
    {
        if app.meta.product(product).await?.is_none() {
            return Err(ApiError::product_not_found(product));
        }
        return Err(ApiError::not_found(
            "token_not_found",
            "that token has no grant on this product",
        ));
    }
    app.tokens
        .invalidate_hashes(std::slice::from_ref(&target.hash))
        .await;
    Ok(Changed::new((), vec![event]))
}
