//! Redis token cache (fred). Entries expire after the configured TTL; invalidation
//! overwrites the key with a short-lived tombstone, and fills use `SET NX`, so a reader
//! that fetched an old document just before a revocation cannot put it back.
//!
//! Redis is untrusted: anyone who can write to it must not be able to mint a token. Every
//! cached document carries an HMAC-SHA256 over its Redis key, its expiry and its JSON, with
//! a key derived from `DEPOT_SIGNING_KEY` (which every replica shares). An entry whose MAC
//! does not verify (forged, copied from another token's key, or expired) is a miss.
//!
//! Redis is a cache, not a dependency: every command has a short timeout, and a failure
//! opens a circuit breaker, so lookups read the metadata store without waiting on Redis
//! for a while; a background task then probes Redis and closes the breaker when it
//! answers. Invalidations that could not be delivered are remembered, replayed by that
//! background task only, and until they are delivered the cache is not trusted at all.
//! No lock is held across a network call.
//!
//! While Redis cannot be used, each replica keeps the documents it reads from the store
//! in a small in-process cache for `DEPOT_REDIS_OUTAGE_CACHE_SECONDS` (default 1 s, 0 =
//! off), so an outage does not turn every request into a store read. That is the one
//! place revocation is not immediate everywhere: this replica's own invalidations apply
//! at once (tombstones), another replica's within that many seconds.

use super::*;
use fred::prelude::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const KEY_PREFIX: &str = "depot:token:";
const TOMBSTONE: &str = "-";
/// Long enough for any store read that started before an invalidation to finish.
const TOMBSTONE_TTL_SECONDS: i64 = 10;
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// Past this many unflushed invalidations, flush the whole namespace instead.
const MAX_PENDING: usize = 10_000;
/// After a failed command, requests skip Redis this long; then the background task
/// sends one probe, and each failed probe doubles the wait up to `MAX_OPEN`.
const OPEN_PERIOD: Duration = Duration::from_millis(500);
const MAX_OPEN: Duration = Duration::from_secs(2);
/// Context string of the cache key's derivation from the signing key.
const MAC_CONTEXT: &[u8] = b"depot token cache v1";
/// Format tag of an authenticated entry: `v1.<expires ms>.<hex mac>.<json>`.
const ENTRY_TAG: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

fn key(hash: &str) -> String {
    format!("{KEY_PREFIX}{hash}")
}

fn now_ms() -> u64 {
    crate::meta::now_ms().max(0) as u64
}

/// Signs and checks cached entries. The MAC covers the Redis key (so a document copied
/// under another token's key fails), the expiry (so an old document replayed later
/// fails once its TTL is over) and the serialized document.
struct EntryMac {
    /// HMAC keyed with the derived cache key, cloned for each entry.
    base: HmacSha256,
}

impl EntryMac {
    fn from_signing_key(signing_key: &[u8]) -> anyhow::Result<Self> {
        let mut derive = HmacSha256::new_from_slice(signing_key)
            .map_err(|_| anyhow::anyhow!("DEPOT_SIGNING_KEY cannot key an HMAC"))?;
        derive.update(MAC_CONTEXT);
        let key = derive.finalize().into_bytes();
        let base = HmacSha256::new_from_slice(&key)
            .map_err(|_| anyhow::anyhow!("the token cache key cannot key an HMAC"))?;
        Ok(EntryMac { base })
    }

    fn mac(&self, redis_key: &str, expires_ms: u64, json: &str) -> HmacSha256 {
        let mut mac = self.base.clone();
        mac.update(redis_key.as_bytes());
        mac.update(b"\n");
        mac.update(expires_ms.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(json.as_bytes());
        mac
    }

    fn seal(&self, redis_key: &str, expires_ms: u64, json: &str) -> String {
        let tag = hex::encode(
            self.mac(redis_key, expires_ms, json)
                .finalize()
                .into_bytes(),
        );
        format!("{ENTRY_TAG}.{expires_ms}.{tag}.{json}")
    }

    /// The document of an entry that verifies, is not expired and parses; else `None`.
    fn open(&self, redis_key: &str, value: &str, now_ms: u64) -> Option<TokenDoc> {
        let mut parts = value.splitn(4, '.');
        let (tag, expires, mac, json) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if tag != ENTRY_TAG {
            return None;
        }
        let expires_ms: u64 = expires.parse().ok()?;
        let mac = hex::decode(mac).ok()?;
        // Constant time, and before anything looks at the document.
        self.mac(redis_key, expires_ms, json)
            .verify_slice(&mac)
            .ok()?;
        if expires_ms <= now_ms {
            return None;
        }
        serde_json::from_str(json).ok()
    }
}

/// Closed: Redis is used. Open: requests skip Redis until `until`; then the background
/// task probes it (requests keep skipping it meanwhile) and closes the breaker on success.
struct Breaker {
    state: Mutex<BreakerState>,
}

struct BreakerState {
    open_until: Option<Instant>,
    backoff: Duration,
}

impl Breaker {
    fn new() -> Self {
        Breaker {
            state: Mutex::new(BreakerState {
                open_until: None,
                backoff: OPEN_PERIOD,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.lock().open_until.is_none()
    }

    /// True when open and its open period is over: time for one probe.
    fn probe_due(&self) -> bool {
        self.lock().open_until.is_some_and(|t| t <= Instant::now())
    }

    /// Makes an open breaker's probe due at once.
    fn probe_now(&self) {
        let mut s = self.lock();
        if s.open_until.is_some() {
            s.open_until = Some(Instant::now());
        }
    }

    fn trip(&self) {
        let mut s = self.lock();
        let was_open = s.open_until.is_some();
        if was_open {
            s.backoff = (s.backoff * 2).min(MAX_OPEN);
        } else {
            s.backoff = OPEN_PERIOD;
        }
        s.open_until = Some(Instant::now() + s.backoff);
        drop(s);
        if !was_open {
            metrics::counter!("depot_redis_breaker_opened_total").increment(1);
            tracing::warn!("Redis failed; the token cache is bypassed until Redis answers again");
        }
    }

    fn close(&self) {
        let mut s = self.lock();
        let was_open = s.open_until.take().is_some();
        s.backoff = OPEN_PERIOD;
        drop(s);
        if was_open {
            tracing::info!("Redis answers again; the token cache is used again");
        }
    }
}

/// Invalidations not delivered yet. `dirty` stays set from the first one until a replay
/// delivered everything, including while a replay is in flight.
struct Pending {
    hashes: HashSet<String>,
    overflowed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    dirty: AtomicBool,
    breaker: Breaker,
    wake: Notify,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, hashes: impl IntoIterator<Item = String>) {
        let mut pending = self.pending();
        if !pending.overflowed {
            pending.hashes.extend(hashes);
            if pending.hashes.len() > MAX_PENDING {
                pending.hashes = HashSet::new();
                pending.overflowed = true;
            }
        }
        self.dirty.store(true, Ordering::Release);
        drop(pending);
        self.wake.notify_one();
    }

    /// True while some invalidation may not have reached Redis: nothing read from it may
    /// be trusted then.
    fn undelivered(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }
}

pub struct RedisCache {
    client: Client,
    ttl_seconds: i64,
    mac: EntryMac,
    shared: Arc<Shared>,
    /// Used only while Redis is bypassed; `None` when the outage cache is off.
    outage: Option<super::local::LocalCache>,
}

/// A connection error without the URL (which may hold a password).
fn describe(err: &Error) -> String {
    let details = err.details();
    let lower = details.to_ascii_lowercase();
    if lower.contains("wrongpass") || lower.contains("invalid password") {
        "Redis refused the credentials in DEPOT_REDIS_URL (WRONGPASS)".to_string()
    } else if lower.contains("noauth") || lower.contains("authentication required") {
        "Redis requires a password (NOAUTH): put it in DEPOT_REDIS_URL as redis://:password@host:port"
            .to_string()
    } else {
        format!("{:?}: {details}", err.kind())
    }
}

impl RedisCache {
    /// Connects and checks the connection (credentials included) with a PING.
    /// `signing_key` is `DEPOT_SIGNING_KEY`, from which the entries' MAC key is derived.
    pub async fn connect(
        url: &str,
        ttl: Duration,
        outage_ttl: Duration,
        signing_key: &[u8],
    ) -> anyhow::Result<Self> {
        let config = Config::from_url(url).map_err(|e| {
            anyhow::anyhow!(
                "DEPOT_REDIS_URL is not a usable Redis URL: {}",
                describe(&e)
            )
        })?;
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
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis client: {}", describe(&e)))?;
        let ready = async {
            client.init().await?;
            client.ping::<String>(None).await
        };
        let result = tokio::time::timeout(Duration::from_secs(5), ready).await;
        let failure = match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(describe(&e)),
            Err(_) => Some("timed out connecting to Redis".to_string()),
        };
        if let Some(why) = failure {
            anyhow::bail!("{why}");
        }
        let cache = RedisCache {
            client,
            ttl_seconds: ttl.as_secs().max(1) as i64,
            mac: EntryMac::from_signing_key(signing_key)?,
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending {
                    hashes: HashSet::new(),
                    overflowed: false,
                }),
                dirty: AtomicBool::new(false),
                breaker: Breaker::new(),
                wake: Notify::new(),
            }),
            outage: (!outage_ttl.is_zero()).then(|| super::local::LocalCache::new(outage_ttl)),
        };
        cache.spawn_replayer();
        Ok(cache)
    }

    /// Probes Redis while the breaker is open and delivers remembered invalidations, off
    /// the request path; it ends when the cache is dropped.
    fn spawn_replayer(&self) {
        let client = self.client.clone();
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            while let Some(s) = shared.upgrade() {
                let _ = tokio::time::timeout(Duration::from_millis(100), s.wake.notified()).await;
                if !s.breaker.is_closed() && !s.breaker.probe_due() {
                    continue;
                }
                if s.undelivered() {
                    match replay(&client, &s).await {
                        // Redis answered; what arrived meanwhile goes next round.
                        Replay::Done | Replay::MoreArrived => s.breaker.close(),
                        Replay::Failed => s.breaker.trip(),
                    }
                } else if s.breaker.probe_due() {
                    match tokio::time::timeout(COMMAND_TIMEOUT, client.ping::<String>(None)).await {
                        Ok(Ok(_)) => s.breaker.close(),
                        _ => s.breaker.trip(),
                    }
                }
            }
        });
    }

    /// True while Redis must not be asked or trusted (breaker open, or invalidations
    /// not yet delivered).
    fn bypassed(&self) -> bool {
        self.shared.undelivered() || !self.shared.breaker.is_closed()
    }

    /// The outage cache's answer while Redis is bypassed; without one, read the store.
    async fn outage_get(&self, hash: &str) -> CacheLookup {
        match &self.outage {
            Some(outage) => match outage.get(hash).await {
                CacheLookup::Hit(doc) => CacheLookup::OutageHit(doc),
                other => other,
            },
            None => CacheLookup::Bypass,
        }
    }

    /// A command's result; a failure or timeout trips the breaker.
    async fn guarded<T>(&self, command: impl Future<Output = Result<T, Error>>) -> Option<T> {
        match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(err)) => {
                tracing::debug!(error = %describe(&err), "redis command failed; reading the store");
                self.shared.breaker.trip();
                None
            }
            Err(_) => {
                tracing::debug!("redis command timed out; reading the store");
                self.shared.breaker.trip();
                None
            }
        }
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

enum Replay {
    /// Everything delivered: the cache may be trusted again.
    Done,
    /// Delivered, but more invalidations were remembered meanwhile.
    MoreArrived,
    Failed,
}

/// Delivers remembered invalidations. The pending set
/// is swapped out under the (std) lock and the lock released before any network call;
/// on failure it is merged back.
async fn replay(client: &Client, shared: &Shared) -> Replay {
    let (hashes, overflowed) = {
        let mut pending = shared.pending();
        (
            std::mem::take(&mut pending.hashes),
            std::mem::replace(&mut pending.overflowed, false),
        )
    };
    let delivered = if overflowed {
        // Generous: a namespace flush pages through every key.
        tokio::time::timeout(Duration::from_secs(30), flush_namespace(client))
            .await
            .is_ok_and(|r| r.is_ok())
    } else {
        tokio::time::timeout(
            COMMAND_TIMEOUT * 4,
            tombstone(client, hashes.iter().map(String::as_str)),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    };
    let mut pending = shared.pending();
    if !delivered {
        if overflowed {
            pending.overflowed = true;
            pending.hashes.clear();
        } else if !pending.overflowed {
            pending.hashes.extend(hashes);
            if pending.hashes.len() > MAX_PENDING {
                pending.hashes = HashSet::new();
                pending.overflowed = true;
            }
        }
        return Replay::Failed;
    }
    if pending.hashes.is_empty() && !pending.overflowed {
        shared.dirty.store(false, Ordering::Release);
        Replay::Done
    } else {
        // The next round delivers them.
        shared.wake.notify_one();
        Replay::MoreArrived
    }
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

    /// Healthy only when Redis answers and the cache is in use: while the breaker is open
    /// or invalidations are undelivered, it is bypassed, and `/health` says so. A PING that
    /// succeeds meanwhile brings the background probe forward.
    async fn ping(&self) -> Result<(), String> {
        self.client
            .ping::<String>(None)
            .await
            .map_err(|e| describe(&e))?;
        if self.shared.breaker.is_closed() && !self.shared.undelivered() {
            return Ok(());
        }
        self.shared.breaker.probe_now();
        self.shared.wake.notify_one();
        Err("Redis answers, but the token cache is bypassed until the next probe".to_string())
    }

    async fn get(&self, hash: &str) -> CacheLookup {
        if self.bypassed() {
            return self.outage_get(hash).await;
        }
        let redis_key = key(hash);
        let Some(value) = self
            .guarded(self.client.get::<Option<String>, _>(redis_key.as_str()))
            .await
        else {
            return self.outage_get(hash).await;
        };
        // An invalidation may have failed while the GET ran.
        if self.shared.undelivered() {
            return CacheLookup::Bypass;
        }
        match value {
            None => CacheLookup::Miss,
            Some(v) if v == TOMBSTONE => CacheLookup::Bypass,
            Some(v) => match self.mac.open(&redis_key, &v, now_ms()) {
                Some(doc) if doc.token.hash == hash => CacheLookup::Hit(doc),
                _ => {
                    // Forged, copied from another key, or expired: never trusted. The
                    // store answers; the fill's SET NX leaves the entry to its own TTL.
                    metrics::counter!("depot_token_cache_rejected_total").increment(1);
                    tracing::warn!("a token cache entry in Redis failed authentication; ignored");
                    CacheLookup::Miss
                }
            },
        }
    }

    async fn put(&self, hash: &str, doc: &TokenDoc) {
        if self.bypassed() {
            if let Some(outage) = &self.outage {
                outage.put(hash, doc).await;
            }
            return;
        }
        let Ok(json) = serde_json::to_string(doc) else {
            return;
        };
        let redis_key = key(hash);
        let expires_ms = now_ms() + self.ttl_seconds as u64 * 1000;
        let value = self.mac.seal(&redis_key, expires_ms, &json);
        let _: Option<Option<String>> = self
            .guarded(self.client.set(
                redis_key,
                value,
                Some(Expiration::EX(self.ttl_seconds)),
                Some(SetOptions::NX),
                false,
            ))
            .await;
    }

    async fn invalidate(&self, hashes: &[String]) {
        if hashes.is_empty() {
            return;
        }
        // Whatever happens to Redis, this replica stops trusting its own copies at once.
        if let Some(outage) = &self.outage {
            outage.invalidate(hashes).await;
        }
        // With the breaker open, or older invalidations still undelivered, queue behind
        // them without touching the network: the background task delivers them in order.
        if self.shared.undelivered() || !self.shared.breaker.is_closed() {
            self.shared.remember(hashes.iter().cloned());
            return;
        }
        let sent = self
            .guarded(tombstone(&self.client, hashes.iter().map(String::as_str)))
            .await;
        if sent.is_none() {
            tracing::warn!(
                "redis invalidation failed; the cache is bypassed until it is delivered"
            );
            self.shared.remember(hashes.iter().cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::TokenRecord;

    fn doc(hash: &str, admin: bool) -> TokenDoc {
        TokenDoc {
            token: TokenRecord {
                id: "tok_1".into(),
                hash: hash.into(),
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

    #[test]
    fn the_breaker_opens_on_failure_and_is_due_for_a_probe_after_its_open_period() {
        let breaker = Breaker::new();
        assert!(breaker.is_closed());
        breaker.trip();
        assert!(!breaker.is_closed());
        assert!(
            !breaker.probe_due(),
            "requests skip Redis for the open period"
        );
        breaker.probe_now();
        assert!(breaker.probe_due());
        breaker.trip();
        assert_eq!(
            breaker.lock().backoff,
            OPEN_PERIOD * 2,
            "a failed probe backs off"
        );
        breaker.close();
        assert!(breaker.is_closed());
        assert_eq!(breaker.lock().backoff, OPEN_PERIOD);
    }

    #[test]
    fn remembered_invalidations_keep_the_cache_untrusted_and_overflow_to_a_flush() {
        let shared = Shared {
            pending: Mutex::new(Pending {
                hashes: HashSet::new(),
                overflowed: false,
            }),
            dirty: AtomicBool::new(false),
            breaker: Breaker::new(),
            wake: Notify::new(),
        };
        assert!(!shared.undelivered());
        shared.remember(["h".to_string()]);
        assert!(shared.undelivered());
        shared.remember((0..=MAX_PENDING).map(|i| i.to_string()));
        let pending = shared.pending();
        assert!(pending.overflowed && pending.hashes.is_empty());
    }

    #[test]
    fn a_sealed_entry_opens_only_under_its_key_before_its_expiry_with_the_same_secret() {
        let mac = EntryMac::from_signing_key(b"a signing key that replicas share").unwrap();
        let json = serde_json::to_string(&doc("h1", true)).unwrap();
        let sealed = mac.seal(&key("h1"), 2_000, &json);
        assert!(mac.open(&key("h1"), &sealed, 1_000).is_some());
        assert!(mac.open(&key("h2"), &sealed, 1_000).is_none(), "copied key");
        assert!(mac.open(&key("h1"), &sealed, 2_000).is_none(), "expired");
        let other = EntryMac::from_signing_key(b"another deployment's key").unwrap();
        assert!(other.open(&key("h1"), &sealed, 1_000).is_none());
        let forged = sealed.replace("\"admin\":true", "\"admin\":false");
        assert_ne!(forged, sealed);
        assert!(mac.open(&key("h1"), &forged, 1_000).is_none(), "edited");
        let later = sealed.replacen("2000", "9000", 1);
        assert!(
            mac.open(&key("h1"), &later, 1_000).is_none(),
            "expiry moved"
        );
        assert!(
            mac.open(&key("h1"), &json, 1_000).is_none(),
            "bare document"
        );
        assert!(mac.open(&key("h1"), "v1.x.y.z", 1_000).is_none());
    }
}
