//! Redis token cache (fred). Entries expire after the configured TTL; invalidation
//! overwrites the key with a short-lived tombstone, and fills use `SET NX`, so a reader
//! that fetched an old document just before a revocation cannot put it back.
//!
//! Redis is a cache, not a dependency: every command has a short timeout, and a failure
//! makes the lookup read the metadata store. Invalidations that fail while Redis is
//! unreachable are remembered and replayed before the cache is trusted again.

use super::*;
use fred::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

const KEY_PREFIX: &str = "depot:token:";
const TOMBSTONE: &str = "-";
/// Long enough for any store read that started before an invalidation to finish.
const TOMBSTONE_TTL_SECONDS: i64 = 10;
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// Past this many unflushed invalidations, flush the whole namespace instead.
const MAX_PENDING: usize = 10_000;

pub struct RedisCache {
    client: Client,
    ttl_seconds: i64,
    /// Invalidations that could not be delivered; the cache is bypassed until they are.
    pending: Arc<Mutex<HashSet<String>>>,
    overflowed: Arc<AtomicBool>,
}

fn key(hash: &str) -> String {
    format!("{KEY_PREFIX}{hash}")
}

impl RedisCache {
    pub async fn connect(url: &str, ttl: Duration) -> anyhow::Result<Self> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 1;
                c.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            // Keep trying forever in the background: Depot uses Redis again as soon as it is back.
            .set_policy(ReconnectPolicy::new_constant(0, 500))
            .build()?;
        tokio::time::timeout(Duration::from_secs(5), client.init())
            .await
            .map_err(|_| anyhow::anyhow!("timed out connecting to Redis"))??;
        let _: String = client.ping(None).await?;
        let cache = RedisCache {
            client,
            ttl_seconds: ttl.as_secs().max(1) as i64,
            pending: Arc::new(Mutex::new(HashSet::new())),
            overflowed: Arc::new(AtomicBool::new(false)),
        };
        cache.spawn_replayer();
        Ok(cache)
    }

    /// Retries undelivered invalidations every second, so other replicas stop seeing
    /// stale entries soon after Redis is reachable again.
    fn spawn_replayer(&self) {
        let client = self.client.clone();
        let pending = Arc::downgrade(&self.pending);
        let overflowed = self.overflowed.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(pending) = pending.upgrade() else {
                    break;
                };
                let _ = replay(&client, &pending, &overflowed).await;
            }
        });
    }

    async fn tombstone(&self, hashes: &[String]) -> Result<(), Error> {
        tombstone(&self.client, hashes.iter().map(String::as_str)).await
    }
}

async fn tombstone<'a>(
    client: &Client,
    hashes: impl Iterator<Item = &'a str>,
) -> Result<(), Error> {
    let pipeline = client.pipeline();
    let mut any = false;
    for hash in hashes {
        let _: () = pipeline
            .set(
                key(hash),
                TOMBSTONE,
                Some(Expiration::EX(TOMBSTONE_TTL_SECONDS)),
                None,
                false,
            )
            .await?;
        any = true;
    }
    if any {
        let _: Vec<Value> = pipeline.all().await?;
    }
    Ok(())
}

/// Delivers remembered invalidations; true when nothing is left pending.
async fn replay(
    client: &Client,
    pending: &Mutex<HashSet<String>>,
    overflowed: &AtomicBool,
) -> bool {
    let mut pending = pending.lock().await;
    if pending.is_empty() && !overflowed.load(Ordering::Acquire) {
        return true;
    }
    if overflowed.load(Ordering::Acquire) {
        if flush_namespace(client).await.is_err() {
            return false;
        }
        overflowed.store(false, Ordering::Release);
        pending.clear();
        return true;
    }
    if tombstone(client, pending.iter().map(String::as_str))
        .await
        .is_err()
    {
        return false;
    }
    pending.clear();
    true
}

async fn flush_namespace(client: &Client) -> Result<(), Error> {
    let mut cursor: String = "0".into();
    loop {
        let (next, keys): (String, Vec<String>) = client
            .scan_page(cursor.clone(), format!("{KEY_PREFIX}*"), Some(1000), None)
            .await?;
        if !keys.is_empty() {
            let _: i64 = client.del(keys).await?;
        }
        if next == "0" {
            return Ok(());
        }
        cursor = next;
    }
}

#[async_trait]
impl TokenCache for RedisCache {
    fn health_key(&self) -> Option<&'static str> {
        Some("redis")
    }

    async fn ping(&self) -> Result<(), String> {
        self.client
            .ping::<String>(None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn get(&self, hash: &str) -> CacheLookup {
        if !replay(&self.client, &self.pending, &self.overflowed).await {
            return CacheLookup::Bypass;
        }
        match self.client.get::<Option<String>, _>(key(hash)).await {
            Ok(None) => CacheLookup::Miss,
            Ok(Some(v)) if v == TOMBSTONE => CacheLookup::Bypass,
            Ok(Some(v)) => match serde_json::from_str(&v) {
                Ok(doc) => CacheLookup::Hit(doc),
                Err(_) => CacheLookup::Miss,
            },
            Err(err) => {
                tracing::debug!(error = %err, "redis get failed; reading the store");
                CacheLookup::Bypass
            }
        }
    }

    async fn put(&self, hash: &str, doc: &TokenDoc) {
        let Ok(value) = serde_json::to_string(doc) else {
            return;
        };
        let result: Result<Option<String>, Error> = self
            .client
            .set(
                key(hash),
                value,
                Some(Expiration::EX(self.ttl_seconds)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        if let Err(err) = result {
            tracing::debug!(error = %err, "redis set failed");
        }
    }

    async fn invalidate(&self, hashes: &[String]) {
        if hashes.is_empty() {
            return;
        }
        if let Err(err) = self.tombstone(hashes).await {
            tracing::warn!(error = %err, "redis invalidation failed; will replay when Redis is back");
            let mut pending = self.pending.lock().await;
            pending.extend(hashes.iter().cloned());
            if pending.len() > MAX_PENDING {
                pending.clear();
                self.overflowed.store(true, Ordering::Release);
            }
        }
    }
}
