//! In-process token cache for a single Depot process (the embedded default, where one
//! process owns the database, so invalidating here is invalidating everywhere). Same
//! rules as the Redis cache: TTL, tombstones on invalidation, fills only into empty slots.

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many entries the cache starts over rather than growing.
const MAX_ENTRIES: usize = 100_000;
const TOMBSTONE_TTL: Duration = Duration::from_secs(10);

enum Entry {
    Doc(TokenDoc),
    Tombstone,
}

pub struct LocalCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Entry, Instant)>>,
}

impl LocalCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Entry, Instant)>> {
        // A panic while holding the lock cannot leave the map inconsistent; keep going.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl TokenCache for LocalCache {
    fn health_key(&self) -> Option<&'static str> {
        None
    }

    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }

    async fn get(&self, hash: &str) -> CacheLookup {
        let mut entries = self.entries();
        match entries.get(hash) {
            Some((_, expires)) if *expires <= Instant::now() => {
                entries.remove(hash);
                CacheLookup::Miss
            }
            Some((Entry::Doc(doc), _)) => CacheLookup::Hit(doc.clone()),
            Some((Entry::Tombstone, _)) => CacheLookup::Bypass,
            None => CacheLookup::Miss,
        }
    }

    async fn put(&self, hash: &str, doc: &TokenDoc) {
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries
            .entry(hash.to_string())
            .or_insert_with(|| (Entry::Doc(doc.clone()), Instant::now() + self.ttl));
    }

    async fn invalidate(&self, hashes: &[String]) {
        let mut entries = self.entries();
        let until = Instant::now() + TOMBSTONE_TTL;
        for hash in hashes {
            entries.insert(hash.clone(), (Entry::Tombstone, until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::TokenRecord;

    fn doc(admin: bool) -> TokenDoc {
        TokenDoc {
            token: TokenRecord {
                id: "tok_1".into(),
                hash: "h".into(),
                admin,
                created_at: 0,
                name: None,
                expires_at: None,
                parent: None,
                bootstrap: false,
                exchanged: false,
            },
            grants: vec![],
        }
    }

    #[tokio::test]
    async fn an_invalidated_entry_cannot_be_refilled_with_a_stale_document() {
        let cache = LocalCache::new(Duration::from_secs(60));
        cache.put("h", &doc(true)).await;
        assert!(matches!(cache.get("h").await, CacheLookup::Hit(d) if d.token.admin));
        cache.invalidate(&["h".to_string()]).await;
        // A reader that fetched the old document before the invalidation tries to fill.
        cache.put("h", &doc(true)).await;
        assert!(matches!(cache.get("h").await, CacheLookup::Bypass));
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let cache = LocalCache::new(Duration::from_millis(1));
        cache.put("h", &doc(false)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(cache.get("h").await, CacheLookup::Miss));
    }
}
