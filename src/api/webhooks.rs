//! Webhooks: create, list, delete, and their deliveries.

use super::{ApiJson, ApiPath, ApiQuery, rfc3339};
use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::events::is_event_id;
use crate::domain::names::validate_product;
use crate::domain::permissions::ProductOp;
use crate::domain::webhooks::{
    MAX_SECRET_LEN, MIN_SECRET_LEN, Subscription, TargetError, check_ip, check_target,
    is_webhook_id,
};
use crate::error::{ApiError, ApiResult};
use crate::meta::{DeliveryRecord, DeliveryState, WebhookRecord};
use crate::ops::webhooks::{NewWebhook, webhook_not_found};
use crate::ops::{self, Ctx};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    url: String,
    events: Vec<String>,
    product: Option<String>,
    secret: String,
}

#[derive(Serialize)]
pub struct WebhookInfo {
    id: String,
    url: String,
    events: Vec<String>,
    product: Option<String>,
    created_at: String,
    created_by: String,
}

impl From<&WebhookRecord> for WebhookInfo {
    fn from(w: &WebhookRecord) -> Self {
        WebhookInfo {
            id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            product: w.product.clone(),
            created_at: rfc3339(w.created_at),
            created_by: w.created_by.clone(),
        }
    }
}

#[derive(Serialize)]
pub struct DeliveryInfo {
    event_id: String,
    event_type: String,
    state: DeliveryState,
    attempts: u32,
    last_status: Option<u16>,
    last_error: Option<String>,
    last_attempt_at: Option<String>,
    /// When the next attempt is due; null once delivered or failed.
    next_attempt_at: Option<String>,
}

impl From<&DeliveryRecord> for DeliveryInfo {
    fn from(d: &DeliveryRecord) -> Self {
        DeliveryInfo {
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            last_attempt_at: d.last_attempt_at.map(rfc3339),
            next_attempt_at: (d.state == DeliveryState::Pending)
                .then(|| rfc3339(d.next_attempt_at)),
        }
    }
}

fn target_error(err: TargetError) -> ApiError {
    ApiError::bad_request("invalid_webhook_url", err.to_string())
}

/// Every address the host resolves to must be allowed too (a name that does not resolve
/// yet is accepted: each delivery resolves and checks again).
async fn check_resolved(url: &url::Url, allow_private: bool) -> ApiResult<()> {
    let Some(url::Host::Domain(host)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await;
    if let Ok(Ok(addrs)) = lookup {
        for addr in addrs {
            check_ip(addr.ip(), allow_private).map_err(target_error)?;
        }
    }
    Ok(())
}

/// `PUT /webhooks`: admin; a maintainer for a product it maintains.
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let allow_private = app.settings.webhook_allow_private;
    let url = check_target(&req.url, allow_private).map_err(target_error)?;
    let events = Subscription::parse(&req.events)
        .map_err(|why| ApiError::bad_request("invalid_events", why))?;
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&req.secret.len())
        || !req.secret.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            "invalid_secret",
            format!(
                "secret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    match &req.product {
        Some(product) => {
            validate_product(product)?;
            caller.authorize(product, ProductOp::ManageWebhooks)?;
        }
        None if !caller.is_admin() => {
            return Err(ApiError::forbidden(
                "only admins may create a webhook for every event; a maintainer may create one with \"product\" set to a product it maintains",
            ));
        }
        None => {}
    }
    check_resolved(&url, allow_private).await?;
    let created = ops::webhooks::create(
        &app,
        &Ctx::of(&caller),
        NewWebhook {
            url: req.url,
            events: events.as_strings(),
            product: req.product,
            secret: req.secret,
            created_by: caller.token.id.clone(),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": created.value.id }))))
}

/// Admin sees every webhook; a maintainer those of the products it maintains.
fn may_see(caller: &Caller, hook: &WebhookRecord) -> bool {
    caller.is_admin()
        || hook
            .product
            .as_deref()
            .is_some_and(|p| caller.authorize(p, ProductOp::ManageWebhooks).is_ok())
}

/// The webhook `id`, if the caller may see it (else the same 404 as a missing one).
async fn visible(app: &AppState, caller: &Caller, id: &str) -> ApiResult<WebhookRecord> {
    if !is_webhook_id(id) {
        return Err(webhook_not_found());
    }
    match app.meta.webhook(id).await? {
        Some(hook) if may_see(caller, &hook) => Ok(hook),
        _ => Err(webhook_not_found()),
    }
}

/// `GET /webhooks`. The secret is never shown.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<WebhookInfo>>> {
    let hooks = app.meta.list_webhooks().await?;
    Ok(Json(
        hooks
            .iter()
            .filter(|h| may_see(&caller, h))
            .map(WebhookInfo::from)
            .collect(),
    ))
}

/// `DELETE /webhooks/{id}`: with its deliveries.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let hook = visible(&app, &caller, &id).await?;
    ops::webhooks::delete(&app, &Ctx::of(&caller), &hook).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    limit: Option<usize>,
}

/// `GET /webhooks/{id}/deliveries`: newest event first.
pub async fn deliveries(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Vec<DeliveryInfo>>> {
    let hook = visible(&app, &caller, &id).await?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    let deliveries = app.meta.deliveries(&hook.id, limit).await?;
    Ok(Json(deliveries.iter().map(DeliveryInfo::from).collect()))
}

/// `POST /webhooks/{id}/deliveries/{event_id}/redeliver`: 202, due at once.
pub async fn redeliver(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryInfo>)> {
    let hook = visible(&app, &caller, &id).await?;
    if !is_event_id(&event_id) {
        return Err(ApiError::not_found(
            "delivery_not_found",
            "this webhook has no delivery of that event",
        ));
    }
    let delivery = ops::webhooks::redeliver(&app, &hook, &event_id).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryInfo::from(&delivery))))
}
