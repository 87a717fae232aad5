//! Tokens: mint (over the API), create (start-up and the CLI), prune (with every token
//! minted below).

use super::{Changed, Ctx};
use crate::app::AppState;
use crate::auth::{Caller, generate_token, generate_token_id, hash_token};
use crate::domain::events::{Event, EventType, token_created_details};
use crate::domain::permissions::Grant;
use crate::error::{ApiError, ApiResult, MetaError};
use crate::meta::{MetaStore, TokenRecord, now_ms};
use serde_json::json;

/// What `PUT /register` asks for, parsed and checked for shape.
#[derive(Debug, Default)]
pub struct Mint {
    pub admin: bool,
    pub name: Option<String>,
    /// Unix milliseconds.
    pub expires_at: Option<i64>,
    pub grants: Vec<(String, Grant)>,
}

fn created_event(ctx: &Ctx, record: &TokenRecord, grants: &[(String, Grant)]) -> Event {
    let expires = record.expires_at.map(crate::domain::events::rfc3339_ms);
    ctx.event(
        EventType::TokenCreated,
        None,
        None,
        token_created_details(
            &record.id,
            record.name.as_deref(),
            record.admin,
            record.parent.as_deref(),
            expires.as_deref(),
            grants,
        ),
    )
}

fn pruned_event(ctx: &Ctx, record: &TokenRecord, reason: &str, root: &str) -> Event {
    ctx.event(
        EventType::TokenPruned,
        None,
        None,
        json!({ "token_id": record.id, "name": record.name, "reason": reason, "root": root }),
    )
}

/// Mints a token below `caller`: an admin may mint anything; anyone else only a token
/// with a subset of its own grants that does not outlive it. Returns the raw token.
pub async fn mint(
    app: &AppState,
    caller: &Caller,
    mut req: Mint,
) -> ApiResult<Changed<(String, TokenRecord)>> {
    if caller.token.exchanged {
        return Err(ApiError::forbidden(
            "a token from an OIDC exchange (trusted publishing) may not register tokens",
        ));
    }
    if let Some((product, _)) = req.grants.iter().find(|(_, g)| g.is_empty()) {
        return Err(ApiError::empty_grant(product));
    }
    if !caller.is_admin() {
        if req.admin || req.grants.is_empty() {
            return Err(ApiError::forbidden(
                "only admin tokens may register unrestricted tokens; non-admin tokens may mint a token with a subset of their own product grants",
            ));
        }
        for (product, grant) in &req.grants {
            let own = caller
                .grant(product)
                .ok_or_else(|| ApiError::product_not_found(product))?;
            if !grant.is_subset_of(own) {
                return Err(ApiError::forbidden(format!(
                    "the new token cannot have more rights on '{product}' than yours"
                )));
            }
        }
        if let Some(own) = caller.token.expires_at {
            match req.expires_at {
                Some(at) if at > own => {
                    return Err(ApiError::forbidden("the new token cannot outlive yours"));
                }
                None => req.expires_at = Some(own),
                _ => {}
            }
        }
    }
    let ctx = Ctx::of(caller);
    let raw = generate_token();
    let record = TokenRecord {
        id: generate_token_id(),
        hash: hash_token(&raw),
        admin: req.admin,
        created_at: now_ms(),
        name: req.name,
        expires_at: req.expires_at,
        parent: Some(caller.token.id.clone()),
        bootstrap: false,
        exchanged: false,
    };
    let created = created_event(&ctx, &record, &req.grants);
    app.meta
        .insert_token(&record, &req.grants, std::slice::from_ref(&created))
        .await
        .map_err(|e| match e {
            MetaError::NotFound => ApiError::not_found(
                "product_not_found",
                "a product in 'products' does not exist",
            ),
            other => other.into(),
        })?;
    // A prune of the minting token (or of one above it) that ran while this token was
    // being inserted did not see it: if the parent is gone now, so is this token.
    if app.meta.token_by_id(&caller.token.id).await?.is_none() {
        let pruned = pruned_event(&ctx, &record, "parent_pruned", &caller.token.id);
        app.meta
            .delete_token(&record.id, std::slice::from_ref(&pruned))
            .await?;
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the API token is unknown or has been revoked",
        ));
    }
    Ok(Changed::new((raw, record), vec![created]))
}

/// Creates a token directly in the store (start-up, `depot token create`): no parent.
/// `raw` is generated when `None`; `bootstrap` marks the one from `DEPOT_ADMIN_TOKEN`.
pub async fn create(
    meta: &dyn MetaStore,
    ctx: &Ctx,
    admin: bool,
    raw: Option<&str>,
    bootstrap: bool,
) -> Result<Changed<(String, TokenRecord)>, MetaError> {
    let raw = raw.map(str::to_string).unwrap_or_else(generate_token);
    let record = TokenRecord {
        id: generate_token_id(),
        hash: hash_token(&raw),
        admin,
        created_at: now_ms(),
        name: None,
        expires_at: None,
        parent: None,
        bootstrap,
        exchanged: false,
    };
    let created = created_event(ctx, &record, &[]);
    meta.insert_token(&record, &[], std::slice::from_ref(&created))
        .await?;
    Ok(Changed::new((raw, record), vec![created]))
}

/// Marks an existing admin token as the one registered from `DEPOT_ADMIN_TOKEN` (a
/// bookkeeping flag for the next rotation, not a change anyone sees: no event).
pub async fn mark_bootstrap(app: &AppState, token: &TokenRecord) -> Result<(), MetaError> {
    app.meta.set_token_bootstrap(&token.id, true).await?;
    app.tokens
        .invalidate_hashes(std::slice::from_ref(&token.hash))
        .await;
    Ok(())
}

/// Revokes the bootstrap token of an earlier `DEPOT_ADMIN_TOKEN`, alone: the tokens it
/// minted stay (rotating the admin secret must not cut off every pipeline).
pub async fn revoke_rotated(
    app: &AppState,
    ctx: &Ctx,
    old: &TokenRecord,
) -> Result<Changed<()>, MetaError> {
    let event = pruned_event(ctx, old, "admin_token_rotated", &old.id);
    let events = if app
        .meta
        .delete_token(&old.id, std::slice::from_ref(&event))
        .await?
    {
        vec![event]
    } else {
        Vec::new()
    };
    app.tokens
        .invalidate_hashes(std::slice::from_ref(&old.hash))
        .await;
    Ok(Changed::new((), events))
}

/// Revokes `root` at once, then every token minted below it (children, grandchildren,
/// ...), each with its own `token.pruned` event, and invalidates their cache entries so
/// every replica sharing the cache sees it. Returns the ids revoked, root first.
pub async fn prune(
    app: &AppState,
    ctx: &Ctx,
    root: &TokenRecord,
) -> Result<Changed<Vec<String>>, MetaError> {
    let mut events = Vec::new();
    // The root first: from then on it can mint nothing new (a mint racing this prune
    // checks its parent after inserting and removes itself).
    let event = pruned_event(ctx, root, "pruned", &root.id);
    if app
        .meta
        .delete_token(&root.id, std::slice::from_ref(&event))
        .await?
    {
        events.push(event);
    }
    app.tokens
        .invalidate_hashes(std::slice::from_ref(&root.hash))
        .await;
    // Then everything below it, listing again until a pass finds nothing: a token minted
    // by a descendant while this ran is caught by the next pass.
    let mut revoked = vec![root.id.clone()];
    loop {
        let below = crate::meta::descendants(&app.meta.list_tokens().await?, &revoked);
        if below.is_empty() {
            break;
        }
        for token in &below {
            let event = pruned_event(ctx, token, "parent_pruned", &root.id);
            if app
                .meta
                .delete_token(&token.id, std::slice::from_ref(&event))
                .await?
            {
                events.push(event);
            }
        }
        let hashes: Vec<String> = below.iter().map(|t| t.hash.clone()).collect();
        app.tokens.invalidate_hashes(&hashes).await;
        revoked.extend(below.into_iter().map(|t| t.id));
    }
    Ok(Changed::new(revoked, events))
}
