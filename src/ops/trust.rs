//! Trusted publishing: a product's trust policies, and the exchange of a CI job's OIDC
//! token for a short-lived Depot token (`POST /oidc/token`).
//!
//! The exchange verifies the token (`crate::oidc`), matches it against every policy of
//! its issuer (`domain::trust`), refuses a token seen before (its `jti`, recorded in the
//! store, so on every replica), and issues an ordinary token, flagged as exchanged (it
//! may not mint others), named `oidc:<sub>`, with the union of the matching policies'
//! rights and the shortest of their lifetimes; `token.exchanged` records the identity.

use super::{Changed, Ctx};
use crate::app::AppState;
use crate::auth::{generate_token, generate_token_id, hash_token};
use crate::domain::events::{EventType, SystemActor};
use crate::domain::permissions::Grant;
use crate::domain::trust::{
    MAX_POLICIES_PER_PRODUCT, TrustPolicy, TrustPolicyInput, combine, exchanged_expiry,
    policy_matches,
};
use crate::error::{ApiError, ApiResult, MetaError};
use crate::meta::{TokenRecord, now_ms};
use crate::oidc::{LEEWAY_SECONDS, OidcError};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Most bytes of `sub` kept in the issued token's name.
const MAX_SUBJECT_IN_NAME: usize = 120;
/// How long past its expiry (and the leeway) a used token id is remembered.
const USED_TOKEN_MARGIN_SECONDS: i64 = 300;

fn feature_off() -> ApiError {
    ApiError::not_found(
        "oidc_disabled",
        "trusted publishing is off on this server (DEPOT_OIDC_ISSUERS is not set)",
    )
}

/// Adds a policy to `product` (its maintainer, or an admin, checked by the caller).
pub async fn create_policy(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    created_by: &str,
    input: TrustPolicyInput,
) -> ApiResult<Changed<TrustPolicy>> {
    if !app.oidc.enabled() {
        return Err(feature_off());
    }
    let ttl_seconds = input
        .validate(app.oidc.issuers(), app.settings.oidc_max_ttl_seconds)
        .map_err(|e| ApiError::bad_request("invalid_trust_policy", e.to_string()))?;
    let policy = TrustPolicy {
        id: format!("trust_{}", hex::encode(rand::random::<[u8; 8]>())),
        product: product.to_string(),
        issuer: input.issuer,
        claims: input.claims,
        permissions: input.permissions,
        ttl_seconds,
        created_at: now_ms(),
        created_by: created_by.to_string(),
    };
    let event = ctx.event(
        EventType::TrustCreated,
        Some(product),
        None,
        json!({
            "id": policy.id, "issuer": policy.issuer, "claims": policy.claims,
            "permissions": policy.permissions, "ttl_seconds": policy.ttl_seconds,
        }),
    );
    app.meta
        .insert_trust_policy(&policy, MAX_POLICIES_PER_PRODUCT, std::slice::from_ref(&event))
        .await
        .map_err(|e| match e {
            MetaError::NotFound => ApiError::product_not_found(product),
            MetaError::Conflict => ApiError::conflict(
                "too_many_policies",
                format!(
                    "a product holds at most {MAX_POLICIES_PER_PRODUCT} trust policies; delete one first"
                ),
            ),
            other => other.into(),
        })?;
    Ok(Changed::new(policy, vec![event]))
}

pub async fn policies(app: &AppState, product: &str) -> ApiResult<Vec<TrustPolicy>> {
    if app.meta.product(product).await?.is_none() {
        return Err(ApiError::product_not_found(product));
    }
    Ok(app.meta.trust_policies(product).await?)
}

pub async fn delete_policy(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    id: &str,
) -> ApiResult<Changed<()>> {
    let event = ctx.event(
        EventType::TrustDeleted,
        Some(product),
        None,
        json!({ "id": id }),
    );
    if !app
        .meta
        .delete_trust_policy(product, id, std::slice::from_ref(&event))
        .await?
    {
        return Err(ApiError::not_found(
            "trust_policy_not_found",
            format!(
                "product '{product}' has no trust policy '{}'",
                crate::domain::names::terminal_safe(id)
            ),
        ));
    }
    Ok(Changed::new((), vec![event]))
}

/// What `POST /oidc/token` answers.
#[derive(Debug, Serialize)]
pub struct Exchanged {
    pub token: String,
    pub token_id: String,
    /// RFC 3339.
    pub expires_at: String,
    pub grants: BTreeMap<String, Grant>,
}

fn oidc_error(err: OidcError) -> ApiError {
    match err {
        OidcError::Invalid(why) => ApiError::unauthorized(
            "invalid_oidc_token",
            format!("the OIDC token was refused: {why}"),
        ),
        OidcError::Unavailable(why) => {
            tracing::warn!(reason = %why, "OIDC issuer unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "oidc_issuer_unavailable",
                format!("the token's issuer could not be asked for its keys ({why}); no token was issued, retry later"),
            )
            .with_retry_after(crate::error::BUSY_RETRY_AFTER_SECONDS)
        }
    }
}

/// Exchanges a CI job's OIDC token for a Depot token.
pub async fn exchange(
    app: &AppState,
    jwt: &str,
    request_id: Option<String>,
) -> ApiResult<Changed<Exchanged>> {
    if !app.oidc.enabled() {
        return Err(feature_off());
    }
    let now = now_ms();
    let identity = app.oidc.verify(jwt, now / 1000).await.map_err(oidc_error)?;
    let matching: Vec<TrustPolicy> = app
        .meta
        .trust_policies_of_issuer(&identity.issuer)
        .await?
        .into_iter()
        .filter(|p| policy_matches(p, &identity.claims))
        .collect();
    let Some(grant) = combine(&matching) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no_trust_policy",
            "the OIDC token is valid, but no trust policy matches its claims (repository, ref, workflow, ...)",
        ));
    };
    let jti = identity
        .claim("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| {
            oidc_error(OidcError::Invalid(
                "the token has no usable 'jti' claim".into(),
            ))
        })?;
    // Kept until the token could no longer pass the expiry check anyway, with a margin
    // for replicas whose clocks disagree.
    let used_until = identity
        .expires_at
        .saturating_add(LEEWAY_SECONDS as i64 + USED_TOKEN_MARGIN_SECONDS)
        .saturating_mul(1000);
    if !app
        .meta
        .use_token_once(&identity.issuer, jti, used_until)
        .await?
    {
        return Err(oidc_error(OidcError::Invalid(
            "this token was already exchanged (its jti is used once)".into(),
        )));
    }
    let ttl = grant.ttl_seconds.min(app.settings.oidc_max_ttl_seconds);
    let expires_at = exchanged_expiry(now, identity.expires_at, ttl);
    let sub = identity.claim("sub").unwrap_or_default();
    let raw = generate_token();
    let record = TokenRecord {
        id: generate_token_id(),
        hash: hash_token(&raw),
        admin: false,
        created_at: now,
        name: Some(format!("oidc:{}", token_name_subject(sub))),
        expires_at: Some(expires_at),
        parent: None,
        bootstrap: false,
        exchanged: true,
    };
    let grants: Vec<(String, Grant)> = grant.grants.clone().into_iter().collect();
    let ctx = Ctx {
        actor: crate::domain::events::Actor::System {
            system: SystemActor::Oidc,
        },
        request_id,
    };
    let claim = |name: &str| identity.claim(name).map(str::to_string);
    let expires = crate::domain::events::rfc3339_ms(expires_at);
    let details = json!({
        "token_id": record.id,
        "name": record.name,
        "expires_at": expires,
        "grants": grant.grants,
        "policies": grant.policy_ids,
        "iss": identity.issuer,
        "sub": claim("sub"),
        "repository": claim("repository").or_else(|| claim("project_path")),
        "ref": claim("ref"),
        "workflow_ref": claim("workflow_ref"),
        "jti": jti,
    });
    // One event per product the token reaches: each product's audit log and webhooks
    // see the exchanges that concern it.
    let events: Vec<crate::domain::events::Event> = grant
        .grants
        .keys()
        .map(|product| {
            ctx.event(
                EventType::TokenExchanged,
                Some(product),
                None,
                details.clone(),
            )
        })
        .collect();
    app.meta
        .insert_token(&record, &grants, &events)
        .await
        .map_err(|e| match e {
            // A product deleted since its policy matched.
            MetaError::NotFound => ApiError::new(
                StatusCode::FORBIDDEN,
                "no_trust_policy",
                "a product of the matching trust policies no longer exists",
            ),
            other => other.into(),
        })?;
    tracing::info!(token_id = %record.id, issuer = %identity.issuer, "OIDC token exchanged");
    Ok(Changed::new(
        Exchanged {
            token: raw,
            token_id: record.id,
            expires_at: expires,
            grants: grant.grants,
        },
        events,
    ))
}

/// The subject as it goes into the token's name: without control or format characters
/// (bidi overrides), at most `MAX_SUBJECT_IN_NAME` bytes.
fn token_name_subject(sub: &str) -> String {
    let mut out = String::new();
    for c in sub
        .chars()
        .filter(|c| !c.is_control() && !crate::domain::names::is_format_character(*c))
    {
        if out.len() + c.len_utf8() > MAX_SUBJECT_IN_NAME {
            break;
        }
        out.push(c);
    }
    out
}
