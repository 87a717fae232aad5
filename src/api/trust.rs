//! Trusted publishing routes: a product's trust policies (maintainer or admin), and the
//! exchange of a CI job's OIDC token for a short-lived Depot token (no Depot token needed).

use super::{ApiBytes, ApiJson, ApiPath};
use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::names::validate_product;
use crate::domain::permissions::ProductOp;
use crate::domain::trust::{TrustPolicy, TrustPolicyInput};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// RFC 8693's grant type, and the subject token types it accepts here.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TOKEN_TYPES: &[&str] = &[
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
];

/// A policy as the API shows it: times in RFC 3339, like every other time it answers.
fn policy_view(policy: &TrustPolicy) -> Value {
    let mut view = serde_json::to_value(policy).unwrap_or_default();
    view["created_at"] = json!(crate::domain::events::rfc3339_ms(policy.created_at));
    view
}

/// `PUT /product/trust/{product}`: adds a trust policy; 201 with it.
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::ManageTrust)?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the policy must be a JSON object",
        ));
    }
    let input: TrustPolicyInput = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid trust policy: {e}")))?;
    let ctx = crate::ops::Ctx::of(&caller);
    let created =
        crate::ops::trust::create_policy(&app, &ctx, &product, &caller.token.id, input).await?;
    Ok((StatusCode::CREATED, Json(policy_view(&created.value))))
}

/// `GET /product/trust/{product}`: the product's policies, oldest first.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::ManageTrust)?;
    let policies = crate::ops::trust::policies(&app, &product).await?;
    let policies: Vec<Value> = policies.iter().map(policy_view).collect();
    Ok(Json(json!({ "policies": policies })))
}

/// `DELETE /product/trust/{product}/{id}`: 204.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((product, id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::ManageTrust)?;
    let ctx = crate::ops::Ctx::of(&caller);
    crate::ops::trust::delete_policy(&app, &ctx, &product, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonExchange {
    token: String,
}

/// `POST /oidc/token`: `{"token": "<jwt>"}`, or RFC 8693's form
/// (`grant_type`, `subject_token`, `subject_token_type`); 201 with the Depot token.
pub async fn exchange(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let form = content_type.starts_with("application/x-www-form-urlencoded");
    let jwt = if form {
        rfc8693_subject_token(&body)?
    } else {
        let parsed: JsonExchange = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("expected {{\"token\": \"<jwt>\"}} or an RFC 8693 form: {e}"),
            )
        })?;
        parsed.token
    };
    let request_id = headers
        .get(crate::observability::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| crate::observability::valid_request_id(id.as_bytes()))
        .map(str::to_string);
    let outcome = crate::ops::trust::exchange(&app, &jwt, request_id).await;
    let result = match &outcome {
        Ok(_) => "issued",
        Err(err) => err.code,
    };
    metrics::counter!("depot_oidc_exchanges_total", "result" => result).increment(1);
    let issued = outcome?.value;
    let mut out = serde_json::to_value(&issued).map_err(ApiError::internal)?;
    if form {
        // RFC 8693 section 2.2.1, beside Depot's own fields.
        let expires_in = crate::meta::now_ms();
        let expires_at = chrono::DateTime::parse_from_rfc3339(&issued.expires_at)
            .map(|t| t.timestamp_millis())
            .unwrap_or(expires_in);
        out["access_token"] = json!(issued.token);
        out["issued_token_type"] = json!("urn:ietf:params:oauth:token-type:access_token");
        out["token_type"] = json!("Bearer");
        out["expires_in"] = json!(((expires_at - expires_in) / 1000).max(0));
    }
    Ok((StatusCode::CREATED, Json(out)))
}

fn rfc8693_subject_token(body: &[u8]) -> ApiResult<String> {
    let mut grant_type = None;
    let mut subject_token = None;
    let mut subject_token_type = None;
    for (key, value) in url::form_urlencoded::parse(body) {
        let slot = match key.as_ref() {
            "grant_type" => &mut grant_type,
            "subject_token" => &mut subject_token,
            "subject_token_type" => &mut subject_token_type,
            // Optional RFC 8693 parameters (audience, scope, ...) are not used here.
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("the form has '{key}' more than once"),
            ));
        }
    }
    if grant_type.as_deref() != Some(TOKEN_EXCHANGE) {
        return Err(ApiError::bad_request(
            "unsupported_grant_type",
            format!("grant_type must be {TOKEN_EXCHANGE}"),
        ));
    }
    if !subject_token_type
        .as_deref()
        .is_some_and(|t| JWT_TOKEN_TYPES.contains(&t))
    {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!(
                "subject_token_type must be one of {}",
                JWT_TOKEN_TYPES.join(", ")
            ),
        ));
    }
    subject_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_body", "the form has no subject_token"))
}
