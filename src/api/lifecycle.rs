//! Lifecycle routes: a product's retention and quota settings, the retention preview and
//! an on-demand run (maintainer or admin), and what products hold (usage).

use super::{ApiJson, ApiPath, ApiQuery};
use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::names::validate_product;
use crate::domain::permissions::ProductOp;
use crate::domain::retention::ProductSettings;
use crate::error::{ApiError, ApiResult};
use crate::ops::quota::{UsageOrder, UsageReport};
use crate::ops::retention::{Preview, RunReport};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;

/// `GET /product/settings/{product}`: the settings the product follows (its own, else
/// the server's defaults), in the shape `PUT` takes.
pub async fn get_settings(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
) -> ApiResult<Json<ProductSettings>> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::Lifecycle)?;
    Ok(Json(
        crate::ops::retention::effective_settings(&app, &product).await?,
    ))
}

/// `PUT /product/settings/{product}`: replaces the product's settings (a field left out
/// or `null` is off); `settings.changed` records old and new.
pub async fn put_settings(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Json<ProductSettings>> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::Lifecycle)?;
    let settings = parse_settings(body)?;
    settings
        .validate()
        .map_err(|e| ApiError::bad_request("invalid_settings", e.to_string()))?;
    let ctx = crate::ops::Ctx::of(&caller);
    crate::ops::retention::set_settings(&app, &ctx, &product, Some(settings.clone())).await?;
    Ok(Json(settings))
}

/// `GET /product/retention/{product}`: exactly what the next run would delete and keep.
pub async fn preview(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
) -> ApiResult<Json<Preview>> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::Lifecycle)?;
    Ok(Json(crate::ops::retention::preview(&app, &product).await?))
}

/// `POST /product/retention/{product}/run`: applies the policy now; what it deleted.
pub async fn run(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
) -> ApiResult<Json<RunReport>> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::Lifecycle)?;
    Ok(Json(crate::ops::retention::run(&app, &product).await?))
}

/// The body as settings. Objects only, at each level: serde would also read a struct
/// from an array (`[null, null]`), which is no way to write settings.
fn parse_settings(body: serde_json::Value) -> ApiResult<ProductSettings> {
    let invalid = |message: String| ApiError::bad_request("invalid_body", message);
    let top = body
        .as_object()
        .ok_or_else(|| invalid("the settings must be a JSON object".into()))?;
    for key in ["retention", "quota"] {
        if let Some(part) = top.get(key)
            && !(part.is_object() || part.is_null())
        {
            return Err(invalid(format!("'{key}' must be an object or null")));
        }
    }
    serde_json::from_value(body).map_err(|e| invalid(format!("invalid settings: {e}")))
}

/// `GET /product/usage/{product}`: what the product holds, and its quota (any grant on
/// the product, or admin).
pub async fn product_usage(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
) -> ApiResult<Json<UsageReport>> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::Fetch)?;
    Ok(Json(crate::ops::quota::usage(&app, &product).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    sort: Option<String>,
    limit: Option<usize>,
}

/// Most products `GET /usage` returns (and its default).
const MAX_USAGE_LIMIT: usize = 10_000;

/// `GET /usage` (admin): every product's usage, largest first (`?sort=bytes|versions|name`,
/// `?limit=`).
pub async fn all_usage(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require_admin()?;
    let order = match query.sort.as_deref() {
        None | Some("bytes") => UsageOrder::Bytes,
        Some("versions") => UsageOrder::Versions,
        Some("name") => UsageOrder::Name,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "sort must be one of bytes, versions, name",
            ));
        }
    };
    let limit = match query.limit {
        None => MAX_USAGE_LIMIT,
        Some(n) if (1..=MAX_USAGE_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_USAGE_LIMIT}"),
            ));
        }
    };
    let products = crate::ops::quota::usage_of_all(&app, order, limit).await?;
    Ok(Json(serde_json::json!({ "products": products })))
}
