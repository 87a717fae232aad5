//! No cache: every lookup reads the metadata store. The embedded default uses it,
//! since a local redb read is as cheap as a cache round trip.

use super::*;

pub struct NoCache;

#[async_trait]
impl TokenCache for NoCache {
    fn health_key(&self) -> Option<&'static str> {
        None
    }
    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
    async fn get(&self, _hash: &str) -> CacheLookup {
        CacheLookup::Miss
    }
    async fn put(&self, _hash: &str, _doc: &TokenDoc) {}
    async fn invalidate(&self, _hashes: &[String]) {}
}
