//! The token cache seam. A cached entry is a token document (the token record and its
//! grants) keyed by the token's hash. Writers invalidate the keys they change in the
//! same code path; a miss always falls back to the metadata store.

use crate::domain::permissions::Grant;
use crate::meta::TokenRecord;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod local;
pub mod none;
pub mod redis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenDoc {
    pub token: TokenRecord,
    pub grants: Vec<(String, Grant)>,
}

#[derive(Debug)]
pub enum CacheLookup {
    Hit(TokenDoc),
    /// From the in-process copy kept while Redis is unreachable (see `redis.rs`).
    OutageHit(TokenDoc),
    Miss,
    /// The cache cannot answer (down, or the key was just invalidated): read the store
    /// and do not populate.
    Bypass,
}

#[async_trait]
pub trait TokenCache: Send + Sync {
    /// `/health` key, or `None` when no cache service is configured.
    fn health_key(&self) -> Option<&'static str>;
    async fn ping(&self) -> Result<(), String>;
    async fn get(&self, hash: &str) -> CacheLookup;
    async fn put(&self, hash: &str, doc: &TokenDoc);
    async fn invalidate(&self, hashes: &[String]);
}
