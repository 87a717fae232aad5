//! Webhooks: create, delete, redeliver.

use super::{Changed, Ctx};
use crate::app::AppState;
use crate::domain::events::EventType;
use crate::domain::webhooks::WEBHOOK_ID_PREFIX;
use crate::error::{ApiError, ApiResult, MetaError};
use crate::meta::{DeliveryRecord, DeliveryState, WebhookRecord, now_ms};
use serde_json::json;

/// At most this many webhooks per deployment: each costs a store read per delivery poll.
pub const MAX_WEBHOOKS: usize = 100;

/// What events may show of a target: scheme, host, port and path, never the query
/// (which may carry a receiver's key).
pub fn shown_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => String::new(),
    }
}

/// What `PUT /webhooks` asks for, checked for shape.
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub product: Option<String>,
    pub secret: String,
    pub created_by: String,
}

pub async fn create(
    app: &AppState,
    ctx: &Ctx,
    new: NewWebhook,
) -> ApiResult<Changed<WebhookRecord>> {
    if app.meta.list_webhooks().await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::conflict(
            "webhook_limit",
            format!("there are {MAX_WEBHOOKS} webhooks already; delete one first"),
        ));
    }
    if let Some(product) = &new.product
        && app.meta.product(product).await?.is_none()
    {
        return Err(ApiError::product_not_found(product));
    }
    let id = format!(
        "{WEBHOOK_ID_PREFIX}{}",
        hex::encode(rand::random::<[u8; 8]>())
    );
    let record = WebhookRecord {
        id: id.clone(),
        url: new.url,
        events: new.events,
        product: new.product,
        secret: new.secret,
        created_at: now_ms(),
        created_by: new.created_by,
        // Only what happens from now on is delivered.
        cursor: app.meta.newest_event_id().await?,
        lease_owner: None,
        lease_until: 0,
    };
    let event = ctx.event(
        EventType::WebhookCreated,
        record.product.as_deref(),
        None,
        json!({
            "webhook_id": id,
            "target": shown_target(&record.url),
            "events": record.events,
        }),
    );
    app.meta
        .insert_webhook(&record, std::slice::from_ref(&event))
        .await?;
    Ok(Changed::new(record, vec![event]))
}

pub async fn delete(app: &AppState, ctx: &Ctx, hook: &WebhookRecord) -> ApiResult<Changed<()>> {
    let event = ctx.event(
        EventType::WebhookDeleted,
        hook.product.as_deref(),
        None,
        json!({
            "webhook_id": hook.id,
            "target": shown_target(&hook.url),
            "events": hook.events,
        }),
    );
    if !app
        .meta
        .delete_webhook(&hook.id, std::slice::from_ref(&event))
        .await?
    {
        return Err(webhook_not_found());
    }
    Ok(Changed::new((), vec![event]))
}

/// Sends an event to a webhook again: its delivery goes back to pending, due now, with a
/// fresh retry window. Only an event the webhook was sent (a delivery exists) qualifies.
pub async fn redeliver(
    app: &AppState,
    hook: &WebhookRecord,
    event_id: &str,
) -> ApiResult<DeliveryRecord> {
    let mut delivery = app
        .meta
        .delivery(&hook.id, event_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "delivery_not_found",
                "this webhook has no delivery of that event",
            )
        })?;
    delivery.state = DeliveryState::Pending;
    delivery.attempts = 0;
    delivery.first_attempt_at = None;
    delivery.next_attempt_at = now_ms();
    app.meta
        .save_delivery(&delivery)
        .await
        .map_err(|e| match e {
            MetaError::NotFound => webhook_not_found(),
            other => other.into(),
        })?;
    Ok(delivery)
}

pub fn webhook_not_found() -> ApiError {
    ApiError::not_found("webhook_not_found", "no such webhook")
}
