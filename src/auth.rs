//! Tokens: generation, hashing, public ids, and the authenticated caller.
//!
//! A raw token is `depot_` + 43 base62 characters (~256 random bits); only its SHA-256
//! is stored. The public id (`tok_` + 16 hex chars) is random and independent of the
//! secret, so it can be shown in listings and grant maps.

use crate::cache::{CacheLookup, TokenCache, TokenDoc};
use crate::domain::permissions::{Decision, Grant, ProductOp, decide};
use crate::error::{ApiError, ApiResult};
use crate::meta::{MetaStore, TokenRecord, now_ms};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

pub const TOKEN_PREFIX: &str = "depot_";
pub const TOKEN_ID_PREFIX: &str = "tok_";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub fn generate_token() -> String {
    let mut rng = rand::rng();
    let body: String = (0..43)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect();
    format!("{TOKEN_PREFIX}{body}")
}

/// True for a value in Depot's own token format: `depot_` + 43 base62 characters
/// (~256 bits when random). `DEPOT_ADMIN_TOKEN` must have this shape.
pub fn is_token_format(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|body| body.len() == 43 && body.bytes().all(|b| b.is_ascii_alphanumeric()))
}

pub fn generate_token_id() -> String {
    let bytes: [u8; 8] = rand::rng().random();
    format!("{TOKEN_ID_PREFIX}{}", hex::encode(bytes))
}

pub fn hash_token(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

pub fn looks_like_token_id(s: &str) -> bool {
    s.strip_prefix(TOKEN_ID_PREFIX)
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Token lookups go cache -> store; every write that changes a token or a grant
/// calls one of the `invalidate_*` methods with what it changed.
#[derive(Clone)]
pub struct TokenService {
    pub meta: Arc<dyn MetaStore>,
    pub cache: Arc<dyn TokenCache>,
}

impl TokenService {
    /// The token document for a raw token, or `None` if it does not exist.
    pub async fn lookup(&self, raw: &str) -> ApiResult<Option<TokenDoc>> {
        let hash = hash_token(raw);
        let lookup = self.cache.get(&hash).await;
        let outcome = match &lookup {
            CacheLookup::Hit(_) => "hit",
            CacheLookup::OutageHit(_) => "outage_hit",
            CacheLookup::Miss => "miss",
            CacheLookup::Bypass => "bypass",
        };
        metrics::counter!("depot_token_cache_lookups_total", "result" => outcome).increment(1);
        if let CacheLookup::Hit(doc) | CacheLookup::OutageHit(doc) = lookup {
            return Ok(Some(doc));
        }
        let Some(token) = self.meta.token_by_hash(&hash).await? else {
            return Ok(None);
        };
        let grants = self.meta.grants_of_token(&token.id).await?;
        let doc = TokenDoc { token, grants };
        if matches!(lookup, CacheLookup::Miss) {
            self.cache.put(&hash, &doc).await;
        }
        Ok(Some(doc))
    }

    /// Resolves a raw token or a public id to a token record.
    pub async fn resolve(&self, raw_or_id: &str) -> ApiResult<Option<TokenRecord>> {
        if looks_like_token_id(raw_or_id) {
            Ok(self.meta.token_by_id(raw_or_id).await?)
        } else {
            Ok(self.meta.token_by_hash(&hash_token(raw_or_id)).await?)
        }
    }

    pub async fn invalidate_hashes(&self, hashes: &[String]) {
        self.cache.invalidate(hashes).await;
    }

    pub async fn invalidate_ids(&self, ids: &[String]) -> ApiResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut hashes = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(token) = self.meta.token_by_id(id).await? {
                hashes.push(token.hash);
            }
        }
        self.cache.invalidate(&hashes).await;
        Ok(())
    }
}

/// An authenticated caller: the token and its grants, read once per request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenRecord,
    pub grants: HashMap<String, Grant>,
    /// The request's `X-Request-Id` (already made safe by the middleware), for events.
    pub request_id: Option<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.token.admin
    }

    pub fn grant(&self, product: &str) -> Option<&Grant> {
        self.grants.get(product)
    }

    /// Whether any product takes this caller's uploads: a file that arrives before its
    /// product is named is stored only for such a caller.
    pub fn may_upload_somewhere(&self) -> bool {
        self.is_admin()
            || self
                .grants
                .values()
                .any(|grant| ProductOp::Upload.allowed_by(grant))
    }

    /// Whether the caller sees a product's drafts: admins, and tokens that may upload to
    /// it or maintain it.
    pub fn sees_drafts(&self, product: &str) -> bool {
        self.is_admin()
            || self
                .grant(product)
                .is_some_and(|g| g.upload || g.maintainer)
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this operation needs an admin token"))
        }
    }

    /// Applies the permission matrix. A caller without any grant gets the same 404 as
    /// for a missing product, so product names do not leak.
    pub fn authorize(&self, product: &str, op: ProductOp) -> ApiResult<()> {
        if self.token.exchanged && op == ProductOp::DeleteProduct && self.grant(product).is_some() {
            // A CI job's `delete` right is for versions, not the whole product.
            return Err(ApiError::forbidden(format!(
                "a token from an OIDC exchange may not delete product '{product}'"
            )));
        }
        match decide(self.is_admin(), self.grant(product), op) {
            Decision::Allow => Ok(()),
            Decision::Hidden => Err(ApiError::product_not_found(product)),
            Decision::Deny => Err(ApiError::forbidden(format!(
                "your token may not {} on product '{product}'",
                op.describe()
            ))),
        }
    }
}

/// The raw token from `X-Api-Token` or `Authorization: Bearer`.
pub fn raw_token(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get("x-api-token") {
        return v.to_str().ok().map(str::trim).filter(|s| !s.is_empty());
    }
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, value) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| value.trim())
        .filter(|s| !s.is_empty())
}

/// Any state the token service can be taken from (`FromRef`): the extractor needs nothing
/// else of the application.
impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    TokenService: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tokens = TokenService::from_ref(state);
        let Some(raw) = raw_token(parts) else {
            return Err(ApiError::unauthorized(
                "missing_token",
                "an API token is required: send it in the X-Api-Token header",
            ));
        };
        let Some(doc) = tokens.lookup(raw).await? else {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "the API token is unknown or has been revoked",
            ));
        };
        if doc.token.is_expired(now_ms()) {
            return Err(ApiError::unauthorized(
                "token_expired",
                "the API token has expired",
            ));
        }
        let request_id = parts
            .headers
            .get(crate::observability::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Caller {
            request_id,
            token: doc.token,
            // An all-false grant (only old data can hold one) gives nothing: not even a listing.
            grants: doc
                .grants
                .into_iter()
                .filter(|(_, g)| !g.is_empty())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_prefix_and_enough_entropy() {
        let a = generate_token();
        let b = generate_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a).len(), 64);
        assert!(is_token_format(&a));
        assert!(!is_token_format("aaaaaaaaaaaaaaaa"));
        assert!(!is_token_format(""));
        assert!(!is_token_format(&format!("{a}x")));
        assert!(!is_token_format(&format!("depot_{}-", &a[7..])));
    }

    #[test]
    fn token_ids_are_recognised() {
        let id = generate_token_id();
        assert!(looks_like_token_id(&id));
        assert!(!looks_like_token_id(&generate_token()));
        assert!(!looks_like_token_id("tok_xyz"));
    }
}
