//! Embedded metadata store on redb: one file under the data directory, ACID
//! transactions, no server. Values are JSON; composite keys join names with `\0`
//! (names can never contain it). redb is synchronous, so every call runs on the
//! blocking pool.

use super::*;
use crate::domain::assets::has_label;
use crate::domain::version::VersionKind;
use crate::error::AssetRefusal;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens"); // hash -> record
const TOKEN_IDS: TableDefinition<&str, &str> = TableDefinition::new("token_ids"); // id -> hash
const PRODUCTS: TableDefinition<&str, &[u8]> = TableDefinition::new("products");
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants"); // product\0token
const TOKEN_GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("token_grants"); // token\0product
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions"); // product\0version
const BLOB_KEYS: TableDefinition<&str, &str> = TableDefinition::new("blob_keys"); // key -> product\0version
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events"); // id -> event
const PRODUCT_EVENTS: TableDefinition<&str, ()> = TableDefinition::new("product_events"); // product\0id
const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks"); // id -> record
const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries"); // webhook\0event
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases"); // name -> (owner, until)
const TRUST_POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("trust_policies"); // product\0id
const USED_TOKENS: TableDefinition<&str, i64> = TableDefinition::new("used_tokens"); // used_token_key -> until
const UPLOAD_SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("upload_sessions"); // id
const QUOTA_RESERVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("quota_reservations"); // product\0id -> reservation

/// Most events one audit page examines before it returns what it found with a cursor to
/// go on from: a selective filter over a long history costs bounded time per page.
const EVENT_SCAN_LIMIT: usize = 20_000;

#[derive(Clone)]
pub struct EmbeddedMetaStore {
    db: Arc<Database>,
}

fn unavailable(err: impl std::fmt::Display) -> MetaError {
    MetaError::Unavailable(err.to_string())
}

fn key2(a: &str, b: &str) -> String {
    format!("{a}\0{b}")
}

/// Range bounds covering every `prefix\0...` key.
fn prefix_range(prefix: &str) -> (String, String) {
    (format!("{prefix}\0"), format!("{prefix}\u{1}"))
}

fn encode<T: Serialize>(value: &T) -> MetaResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(unavailable)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> MetaResult<T> {
    serde_json::from_slice(bytes).map_err(unavailable)
}

impl EmbeddedMetaStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = Database::create(path)?;
        // Create every table up front so read transactions never see a missing table.
        let txn = db.begin_write()?;
        txn.open_table(TOKENS)?;
        txn.open_table(TOKEN_IDS)?;
        txn.open_table(PRODUCTS)?;
        txn.open_table(GRANTS)?;
        txn.open_table(TOKEN_GRANTS)?;
        txn.open_table(VERSIONS)?;
        txn.open_table(BLOB_KEYS)?;
        txn.open_table(EVENTS)?;
        txn.open_table(PRODUCT_EVENTS)?;
        txn.open_table(WEBHOOKS)?;
        txn.open_table(DELIVERIES)?;
        txn.open_table(LEASES)?;
        txn.open_table(QUOTA_RESERVATIONS)?;
        txn.open_table(TRUST_POLICIES)?;
        txn.open_table(USED_TOKENS)?;
        txn.open_table(UPLOAD_SESSIONS)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T, F>(&self, f: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> MetaResult<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(unavailable)?
    }

    async fn write<T, F>(&self, f: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> MetaResult<T> + Send + 'static,
    {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let out = f(&txn)?;
            txn.commit().map_err(unavailable)?;
            Ok(out)
        })
        .await
    }

    /// Point lookups run inline: a read transaction over cached pages takes microseconds,
    /// less than a hop to the blocking pool. Scans use `read`.
    fn read_now<T, F>(&self, f: F) -> MetaResult<T>
    where
        F: FnOnce(&redb::ReadTransaction) -> MetaResult<T>,
    {
        let txn = self.db.begin_read().map_err(unavailable)?;
        f(&txn)
    }

    /// Deletes the version record if `deletable` accepts it, with its blob keys and its
    /// event (completed from the record); the record, or `None` when nothing was deleted.
    async fn delete_version_if<F>(
        &self,
        product: &str,
        version: &str,
        mut event: Event,
        deletable: F,
    ) -> MetaResult<Option<VersionRecord>>
    where
        F: FnOnce(&VersionRecord) -> bool + Send + 'static,
    {
        let key = key2(product, version);
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let Some(record) = get_version(&versions, &key)? else {
                return Ok(None);
            };
            if !deletable(&record) {
                return Ok(None);
            }
            versions.remove(key.as_str()).map_err(unavailable)?;
            let mut blob_keys = txn.open_table(BLOB_KEYS).map_err(unavailable)?;
            for blob_key in record.blob_keys() {
                blob_keys.remove(blob_key.as_str()).map_err(unavailable)?;
            }
            event.details = deleted_details(&record, &event.details);
            record_events(txn, std::slice::from_ref(&event))?;
            Ok(Some(record))
        })
        .await
    }

    /// Every version record (of any product) that `keep` accepts: the janitor's scans.
    async fn versions_where<F>(&self, keep: F) -> MetaResult<Vec<VersionRecord>>
    where
        F: Fn(&VersionRecord) -> bool + Send + 'static,
    {
        self.read(move |txn| {
            let versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in versions.iter().map_err(unavailable)? {
                let (_, v) = entry.map_err(unavailable)?;
                let record: VersionRecord = decode(v.value())?;
                if keep(&record) {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn read<T, F>(&self, f: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> MetaResult<T> + Send + 'static,
    {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            f(&txn)
        })
        .await
    }
}

/// Stores `events` in the transaction of the change they describe.
fn get_version(
    versions: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> MetaResult<Option<VersionRecord>> {
    match versions.get(key).map_err(unavailable)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn put_version(
    versions: &mut redb::Table<&'static str, &'static [u8]>,
    key: &str,
    record: &VersionRecord,
) -> MetaResult<()> {
    versions
        .insert(key, encode(record)?.as_slice())
        .map_err(unavailable)?;
    Ok(())
}

fn record_events(txn: &redb::WriteTransaction, events: &[Event]) -> MetaResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(EVENTS).map_err(unavailable)?;
    let mut by_product = txn.open_table(PRODUCT_EVENTS).map_err(unavailable)?;
    for event in events {
        table
            .insert(event.id.as_str(), encode(event)?.as_slice())
            .map_err(unavailable)?;
        if let Some(product) = &event.product {
            by_product
                .insert(key2(product, &event.id).as_str(), ())
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Every `(suffix, value)` under `prefix\0` in a table.
fn scan_prefix<T: ReadableTable<&'static str, &'static [u8]>, V: for<'de> Deserialize<'de>>(
    table: &T,
    prefix: &str,
) -> MetaResult<Vec<(String, V)>> {
    Ok(scan_prefix_upto(table, prefix, usize::MAX)?.unwrap_or_default())
}

/// Like [`scan_prefix`], but gives up (`None`) after `limit` entries.
fn scan_prefix_upto<T: ReadableTable<&'static str, &'static [u8]>, V: for<'de> Deserialize<'de>>(
    table: &T,
    prefix: &str,
    limit: usize,
) -> MetaResult<Option<Vec<(String, V)>>> {
    let (lo, hi) = prefix_range(prefix);
    let mut out = Vec::new();
    for entry in table.range(lo.as_str()..hi.as_str()).map_err(unavailable)? {
        if out.len() == limit {
            return Ok(None);
        }
        let (k, v) = entry.map_err(unavailable)?;
        let suffix = k.value()[lo.len()..].to_string();
        out.push((suffix, decode(v.value())?));
    }
    Ok(Some(out))
}

/// Feeds every version record of `product` to `tally`, one at a time (memory stays
/// bounded whatever the number of versions).
fn tally_versions<T: ReadableTable<&'static str, &'static [u8]>>(
    versions: &T,
    product: &str,
    tally: &mut UsageTally,
) -> MetaResult<()> {
    let (lo, hi) = prefix_range(product);
    for entry in versions
        .range(lo.as_str()..hi.as_str())
        .map_err(unavailable)?
    {
        let (_, v) = entry.map_err(unavailable)?;
        tally.add(&decode::<VersionRecord>(v.value())?);
    }
    Ok(())
}

/// Every reservation held against `product`'s quota (live or lapsed).
fn reservations_of<T: ReadableTable<&'static str, &'static [u8]>>(
    reservations: &T,
    product: &str,
) -> MetaResult<Vec<QuotaReservation>> {
    Ok(scan_prefix::<_, QuotaReservation>(reservations, product)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// The reservation with this id, and its key (few reservations exist at once: one per
/// upload in flight to a product with a quota).
fn find_reservation<T: ReadableTable<&'static str, &'static [u8]>>(
    reservations: &T,
    id: &str,
) -> MetaResult<Option<(String, QuotaReservation)>> {
    for entry in reservations.iter().map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        let record: QuotaReservation = decode(v.value())?;
        if record.id == id {
            return Ok(Some((k.value().to_string(), record)));
        }
    }
    Ok(None)
}

/// The key of a reservation: found by product for the tally, by id for the rest.
fn reservation_key(product: &str, id: &str) -> String {
    key2(product, id)
}

/// Versions a scan reads on the calling (runtime) thread before it moves to the blocking
/// pool: a product with a few versions is listed in microseconds, less than the two
/// thread hand-offs of the pool, which halved `GET /product/fetch` throughput.
const INLINE_SCAN_LIMIT: usize = 128;

/// The owner and end of the named lease, if one is recorded.
fn lease_holder(
    leases: &redb::Table<&str, &[u8]>,
    name: &str,
) -> MetaResult<Option<(String, i64)>> {
    match leases.get(name).map_err(unavailable)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

#[async_trait]
impl MetaStore for EmbeddedMetaStore {
    fn health_key(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> MetaResult<()> {
        self.read_now(|txn| {
            txn.open_table(PRODUCTS).map_err(unavailable)?;
            Ok(())
        })
    }

    async fn insert_token(
        &self,
        token: &TokenRecord,
        grants: &[(String, Grant)],
        events: &[Event],
    ) -> MetaResult<()> {
        let token = token.clone();
        let grants = grants.to_vec();
        let events = events.to_vec();
        self.write(move |txn| {
            let mut tokens = txn.open_table(TOKENS).map_err(unavailable)?;
            let mut ids = txn.open_table(TOKEN_IDS).map_err(unavailable)?;
            if tokens
                .get(token.hash.as_str())
                .map_err(unavailable)?
                .is_some()
                || ids.get(token.id.as_str()).map_err(unavailable)?.is_some()
            {
                return Err(MetaError::Conflict);
            }
            tokens
                .insert(token.hash.as_str(), encode(&token)?.as_slice())
                .map_err(unavailable)?;
            ids.insert(token.id.as_str(), token.hash.as_str())
                .map_err(unavailable)?;
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            let mut by_product = txn.open_table(GRANTS).map_err(unavailable)?;
            let mut by_token = txn.open_table(TOKEN_GRANTS).map_err(unavailable)?;
            for (product, grant) in &grants {
                if products
                    .get(product.as_str())
                    .map_err(unavailable)?
                    .is_none()
                {
                    return Err(MetaError::NotFound);
                }
                let value = encode(grant)?;
                by_product
                    .insert(key2(product, &token.id).as_str(), value.as_slice())
                    .map_err(unavailable)?;
                by_token
                    .insert(key2(&token.id, product).as_str(), value.as_slice())
                    .map_err(unavailable)?;
            }
            record_events(txn, &events)
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> MetaResult<Option<TokenRecord>> {
        self.read_now(|txn| {
            let tokens = txn.open_table(TOKENS).map_err(unavailable)?;
            match tokens.get(hash).map_err(unavailable)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn token_by_id(&self, id: &str) -> MetaResult<Option<TokenRecord>> {
        self.read_now(|txn| {
            let ids = txn.open_table(TOKEN_IDS).map_err(unavailable)?;
            let Some(hash) = ids.get(id).map_err(unavailable)? else {
                return Ok(None);
            };
            let tokens = txn.open_table(TOKENS).map_err(unavailable)?;
            match tokens.get(hash.value()).map_err(unavailable)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn list_tokens(&self) -> MetaResult<Vec<TokenRecord>> {
        self.read(|txn| {
            let tokens = txn.open_table(TOKENS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in tokens.iter().map_err(unavailable)? {
                let (_, v) = entry.map_err(unavailable)?;
                out.push(decode::<TokenRecord>(v.value())?);
            }
            out.sort_by_key(|t| t.created_at);
            Ok(out)
        })
        .await
    }

    async fn has_admin_token(&self) -> MetaResult<bool> {
        Ok(self.list_tokens().await?.iter().any(|t| t.admin))
    }

    async fn delete_token(&self, id: &str, events: &[Event]) -> MetaResult<bool> {
        let id = id.to_string();
        let events = events.to_vec();
        self.write(move |txn| {
            let mut ids = txn.open_table(TOKEN_IDS).map_err(unavailable)?;
            let Some(hash) = ids.remove(id.as_str()).map_err(unavailable)? else {
                return Ok(false);
            };
            let hash = hash.value().to_string();
            txn.open_table(TOKENS)
                .map_err(unavailable)?
                .remove(hash.as_str())
                .map_err(unavailable)?;
            let mut by_token = txn.open_table(TOKEN_GRANTS).map_err(unavailable)?;
            let products: Vec<(String, Grant)> = scan_prefix(&by_token, &id)?;
            let mut by_product = txn.open_table(GRANTS).map_err(unavailable)?;
            for (product, _) in products {
                by_token
                    .remove(key2(&id, &product).as_str())
                    .map_err(unavailable)?;
                by_product
                    .remove(key2(&product, &id).as_str())
                    .map_err(unavailable)?;
            }
            record_events(txn, &events)?;
            Ok(true)
        })
        .await
    }

    async fn set_token_bootstrap(&self, id: &str, bootstrap: bool) -> MetaResult<bool> {
        let id = id.to_string();
        self.write(move |txn| {
            let ids = txn.open_table(TOKEN_IDS).map_err(unavailable)?;
            let Some(hash) = ids.get(id.as_str()).map_err(unavailable)? else {
                return Ok(false);
            };
            let hash = hash.value().to_string();
            let mut tokens = txn.open_table(TOKENS).map_err(unavailable)?;
            let Some(mut token) = tokens
                .get(hash.as_str())
                .map_err(unavailable)?
                .map(|v| decode::<TokenRecord>(v.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            token.bootstrap = bootstrap;
            tokens
                .insert(hash.as_str(), encode(&token)?.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn grants_of_token(&self, token_id: &str) -> MetaResult<Vec<(String, Grant)>> {
        self.read_now(|txn| {
            let table = txn.open_table(TOKEN_GRANTS).map_err(unavailable)?;
            scan_prefix(&table, token_id)
        })
    }

    async fn grants_of_product(&self, product: &str) -> MetaResult<Vec<(String, Grant)>> {
        self.read_now(|txn| {
            let table = txn.open_table(GRANTS).map_err(unavailable)?;
            scan_prefix(&table, product)
        })
    }

    async fn set_grant(
        &self,
        product: &str,
        token_id: &str,
        grant: Grant,
        events: &[Event],
    ) -> MetaResult<()> {
        let (product, id) = (product.to_string(), token_id.to_string());
        let events = events.to_vec();
        self.write(move |txn| {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            if products
                .get(product.as_str())
                .map_err(unavailable)?
                .is_none()
            {
                return Err(MetaError::NotFound);
            }
            let ids = txn.open_table(TOKEN_IDS).map_err(unavailable)?;
            if ids.get(id.as_str()).map_err(unavailable)?.is_none() {
                return Err(MetaError::NotFound);
            }
            let value = encode(&grant)?;
            txn.open_table(GRANTS)
                .map_err(unavailable)?
                .insert(key2(&product, &id).as_str(), value.as_slice())
                .map_err(unavailable)?;
            txn.open_table(TOKEN_GRANTS)
                .map_err(unavailable)?
                .insert(key2(&id, &product).as_str(), value.as_slice())
                .map_err(unavailable)?;
            record_events(txn, &events)
        })
        .await
    }

    async fn remove_grant(
        &self,
        product: &str,
        token_id: &str,
        events: &[Event],
    ) -> MetaResult<bool> {
        let (product, id) = (product.to_string(), token_id.to_string());
        let events = events.to_vec();
        self.write(move |txn| {
            let removed = txn
                .open_table(GRANTS)
                .map_err(unavailable)?
                .remove(key2(&product, &id).as_str())
                .map_err(unavailable)?
                .is_some();
            txn.open_table(TOKEN_GRANTS)
                .map_err(unavailable)?
                .remove(key2(&id, &product).as_str())
                .map_err(unavailable)?;
            if removed {
                record_events(txn, &events)?;
            }
            Ok(removed)
        })
        .await
    }

    async fn create_product(
        &self,
        product: &ProductRecord,
        creator_id: &str,
        events: &[Event],
    ) -> MetaResult<()> {
        let (product, creator) = (product.clone(), creator_id.to_string());
        let events = events.to_vec();
        self.write(move |txn| {
            let mut products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            if products
                .get(product.name.as_str())
                .map_err(unavailable)?
                .is_some()
            {
                return Err(MetaError::Conflict);
            }
            products
                .insert(product.name.as_str(), encode(&product)?.as_slice())
                .map_err(unavailable)?;
            let value = encode(&Grant::ALL)?;
            txn.open_table(GRANTS)
                .map_err(unavailable)?
                .insert(key2(&product.name, &creator).as_str(), value.as_slice())
                .map_err(unavailable)?;
            txn.open_table(TOKEN_GRANTS)
                .map_err(unavailable)?
                .insert(key2(&creator, &product.name).as_str(), value.as_slice())
                .map_err(unavailable)?;
            record_events(txn, &events)
        })
        .await
    }

    async fn product(&self, name: &str) -> MetaResult<Option<ProductRecord>> {
        self.read_now(|txn| {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            match products.get(name).map_err(unavailable)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn product_view(&self, name: &str) -> MetaResult<Option<ProductView>> {
        // One read transaction for all three on the calling thread; only a product with
        // many versions has them listed on the blocking pool.
        let view = self.read_now(|txn| {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            let Some(record) = products.get(name).map_err(unavailable)? else {
                return Ok(None);
            };
            let record: ProductRecord = decode(record.value())?;
            let grants = scan_prefix(&txn.open_table(GRANTS).map_err(unavailable)?, name)?;
            let versions = scan_prefix_upto::<_, VersionRecord>(
                &txn.open_table(VERSIONS).map_err(unavailable)?,
                name,
                INLINE_SCAN_LIMIT,
            )?;
            Ok(Some((record, grants, versions)))
        })?;
        let Some((record, grants, versions)) = view else {
            return Ok(None);
        };
        let versions = match versions {
            Some(few) => few
                .into_iter()
                .map(|(_, r)| r)
                .filter(|r| r.state != VersionState::Pending)
                .collect(),
            None => self.list_versions(name).await?,
        };
        Ok(Some(ProductView {
            record,
            grants,
            versions,
        }))
    }

    async fn list_products(&self) -> MetaResult<Vec<String>> {
        fn names(txn: &redb::ReadTransaction, limit: usize) -> MetaResult<Option<Vec<String>>> {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in products.iter().map_err(unavailable)? {
                if out.len() == limit {
                    return Ok(None);
                }
                out.push(entry.map_err(unavailable)?.0.value().to_string());
            }
            Ok(Some(out))
        }
        if let Some(few) = self.read_now(|txn| names(txn, INLINE_SCAN_LIMIT))? {
            return Ok(few);
        }
        self.read(|txn| Ok(names(txn, usize::MAX)?.unwrap_or_default()))
            .await
    }

    async fn delete_product(
        &self,
        name: &str,
        mut event: Event,
    ) -> MetaResult<Option<DeletedProduct>> {
        let name = name.to_string();
        self.write(move |txn| {
            let mut products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            if products
                .remove(name.as_str())
                .map_err(unavailable)?
                .is_none()
            {
                return Ok(None);
            }
            let mut deleted = DeletedProduct::default();
            let mut by_product = txn.open_table(GRANTS).map_err(unavailable)?;
            let mut by_token = txn.open_table(TOKEN_GRANTS).map_err(unavailable)?;
            for (token_id, _) in scan_prefix::<_, Grant>(&by_product, &name)? {
                by_product
                    .remove(key2(&name, &token_id).as_str())
                    .map_err(unavailable)?;
                by_token
                    .remove(key2(&token_id, &name).as_str())
                    .map_err(unavailable)?;
                deleted.token_ids.push(token_id);
            }
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let mut blob_keys = txn.open_table(BLOB_KEYS).map_err(unavailable)?;
            for (version, record) in scan_prefix::<_, VersionRecord>(&versions, &name)? {
                versions
                    .remove(key2(&name, &version).as_str())
                    .map_err(unavailable)?;
                for blob_key in record.blob_keys() {
                    blob_keys.remove(blob_key.as_str()).map_err(unavailable)?;
                }
                deleted.versions.push(record);
            }
            let mut trust = txn.open_table(TRUST_POLICIES).map_err(unavailable)?;
            let (lo, hi) = prefix_range(&name);
            trust
                .retain_in(lo.as_str()..hi.as_str(), |_, _| false)
                .map_err(unavailable)?;
            event.details = product_deleted_details(&deleted);
            record_events(txn, std::slice::from_ref(&event))?;
            Ok(Some(deleted))
        })
        .await
    }

    async fn reserve_version(&self, record: &VersionRecord) -> MetaResult<Option<VersionRecord>> {
        let record = record.clone();
        let now = now_ms();
        self.write(move |txn| {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            if products
                .get(record.product.as_str())
                .map_err(unavailable)?
                .is_none()
            {
                return Err(MetaError::NotFound);
            }
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let mut blob_keys = txn.open_table(BLOB_KEYS).map_err(unavailable)?;
            let key = key2(&record.product, &record.version);
            let existing: Option<VersionRecord> =
                match versions.get(key.as_str()).map_err(unavailable)? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
            let displaced = match existing {
                None => None,
                Some(old) if old.lease_lapsed(now) => {
                    blob_keys
                        .remove(old.blob_key.as_str())
                        .map_err(unavailable)?;
                    Some(old)
                }
                Some(old) if old.state == VersionState::Pending => return Err(MetaError::Pending),
                Some(_) => return Err(MetaError::Conflict),
            };
            versions
                .insert(key.as_str(), encode(&record)?.as_slice())
                .map_err(unavailable)?;
            blob_keys
                .insert(record.blob_key.as_str(), key.as_str())
                .map_err(unavailable)?;
            Ok(displaced)
        })
        .await
    }

    async fn commit_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        files: &[FileRecord],
        labels: &[Label],
        events: &[Event],
    ) -> MetaResult<()> {
        let key = key2(product, version);
        let blob_key = blob_key.to_string();
        let (files, labels, events) = (files.to_vec(), labels.to_vec(), events.to_vec());
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let Some(record) = get_version(&versions, &key)? else {
                return Err(MetaError::NotFound);
            };
            if record.blob_key != blob_key {
                return Err(MetaError::NotFound);
            }
            if record.state == VersionState::Committed {
                // The same commit again (as a retried MongoDB write does): done already,
                // with its events.
                return Ok(());
            }
            let primary = files
                .first()
                .ok_or(MetaError::Asset(AssetRefusal::EmptyVersion))?;
            let mut record = record.with_primary(primary);
            record.state = VersionState::Committed;
            record.lease_until = None;
            record.files = files;
            record.labels = labels;
            let mut blob_keys = txn.open_table(BLOB_KEYS).map_err(unavailable)?;
            for f in &record.files {
                blob_keys
                    .insert(f.blob_key.as_str(), key.as_str())
                    .map_err(unavailable)?;
            }
            put_version(&mut versions, &key, &record)?;
            record_events(txn, &events)
        })
        .await
    }

    async fn add_draft_file(
        &self,
        draft: &VersionRecord,
        file: &FileRecord,
        created_events: &[Event],
        events: &[Event],
    ) -> MetaResult<bool> {
        let (draft, file) = (draft.clone(), file.clone());
        let (created_events, events) = (created_events.to_vec(), events.to_vec());
        self.write(move |txn| {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            if products
                .get(draft.product.as_str())
                .map_err(unavailable)?
                .is_none()
            {
                return Err(MetaError::NotFound);
            }
            let key = key2(&draft.product, &draft.version);
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let (mut record, created) = match get_version(&versions, &key)? {
                None => (draft, true),
                Some(r) => match r.state {
                    VersionState::Draft => (r, false),
                    // Even with its lease lapsed: the janitor sweeps it with its blob (and
                    // records that), as on MongoDB.
                    VersionState::Pending => return Err(MetaError::Pending),
                    VersionState::Committed => return Err(MetaError::Conflict),
                },
            };
            check_can_add(record.files.iter().map(|f| f.name.as_str()), &file.name)
                .map_err(MetaError::Asset)?;
            record.updated_at = record.updated_at.max(file.uploaded_at);
            record.files.push(file.clone());
            put_version(&mut versions, &key, &record)?;
            txn.open_table(BLOB_KEYS)
                .map_err(unavailable)?
                .insert(file.blob_key.as_str(), key.as_str())
                .map_err(unavailable)?;
            if created {
                record_events(txn, &created_events)?;
            }
            record_events(txn, &events)?;
            Ok(created)
        })
        .await
    }

    async fn remove_draft_file(
        &self,
        product: &str,
        version: &str,
        name: &str,
        events: &[Event],
    ) -> MetaResult<FileRecord> {
        let key = key2(product, version);
        let name = name.to_string();
        let events = events.to_vec();
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let mut record = match get_version(&versions, &key)? {
                Some(r) if r.state == VersionState::Draft => r,
                Some(r) if r.state == VersionState::Committed => {
                    return Err(MetaError::Asset(AssetRefusal::Published));
                }
                _ => return Err(MetaError::NotFound),
            };
            let Some(at) = record.files.iter().position(|f| f.name == name) else {
                return Err(MetaError::Asset(AssetRefusal::FileNotFound));
            };
            let removed = record.files.remove(at);
            record.updated_at = record.updated_at.max(now_ms());
            put_version(&mut versions, &key, &record)?;
            txn.open_table(BLOB_KEYS)
                .map_err(unavailable)?
                .remove(removed.blob_key.as_str())
                .map_err(unavailable)?;
            record_events(txn, &events)?;
            Ok(removed)
        })
        .await
    }

    async fn publish_draft(
        &self,
        product: &str,
        version: &str,
        files: Option<&[String]>,
        labels: &[Label],
        now_ms: i64,
        mut event: Event,
    ) -> MetaResult<VersionRecord> {
        let key = key2(product, version);
        let files = files.map(<[String]>::to_vec);
        let labels = labels.to_vec();
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let draft = match get_version(&versions, &key)? {
                Some(r) if r.state == VersionState::Draft => r,
                Some(r) if r.state == VersionState::Committed => return Err(MetaError::Conflict),
                Some(_) => return Err(MetaError::Pending),
                None => return Err(MetaError::NotFound),
            };
            let record = seal(draft, files.as_deref(), labels, now_ms).map_err(MetaError::Asset)?;
            put_version(&mut versions, &key, &record)?;
            event.details = published_details(&record);
            record_events(txn, std::slice::from_ref(&event))?;
            Ok(record)
        })
        .await
    }

    async fn set_labels(
        &self,
        product: &str,
        version: &str,
        changes: &std::collections::BTreeMap<String, Option<String>>,
        mut event: Event,
    ) -> MetaResult<Vec<Label>> {
        let key = key2(product, version);
        let changes = changes.clone();
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let mut record = match get_version(&versions, &key)? {
                Some(r) if r.state != VersionState::Pending => r,
                _ => return Err(MetaError::NotFound),
            };
            let (labels, change) =
                crate::domain::assets::apply_label_changes(&record.labels, &changes)
                    .map_err(|e| MetaError::Asset(AssetRefusal::InvalidLabel(e.to_string())))?;
            if change.set.is_empty() && change.removed.is_empty() {
                return Ok(labels);
            }
            record.labels = labels.clone();
            put_version(&mut versions, &key, &record)?;
            event.details = labels_details(&change);
            record_events(txn, std::slice::from_ref(&event))?;
            Ok(labels)
        })
        .await
    }

    async fn remove_pending_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        events: &[Event],
    ) -> MetaResult<()> {
        let key = key2(product, version);
        let blob_key = blob_key.to_string();
        let events = events.to_vec();
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let pending = match versions.get(key.as_str()).map_err(unavailable)? {
                Some(v) => {
                    let record: VersionRecord = decode(v.value())?;
                    record.state == VersionState::Pending && record.blob_key == blob_key
                }
                None => false,
            };
            if pending {
                versions.remove(key.as_str()).map_err(unavailable)?;
                txn.open_table(BLOB_KEYS)
                    .map_err(unavailable)?
                    .remove(blob_key.as_str())
                    .map_err(unavailable)?;
                record_events(txn, &events)?;
            }
            Ok(())
        })
        .await
    }

    async fn version(&self, product: &str, version: &str) -> MetaResult<Option<VersionRecord>> {
        let key = key2(product, version);
        self.read_now(|txn| {
            let versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            match versions.get(key.as_str()).map_err(unavailable)? {
                Some(v) => {
                    let record: VersionRecord = decode(v.value())?;
                    Ok((record.state != VersionState::Pending).then_some(record))
                }
                None => Ok(None),
            }
        })
    }

    async fn list_versions(&self, product: &str) -> MetaResult<Vec<VersionRecord>> {
        let few = self.read_now(|txn| {
            let versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            scan_prefix_upto::<_, VersionRecord>(&versions, product, INLINE_SCAN_LIMIT)
        })?;
        let all = match few {
            Some(few) => few,
            None => {
                let product = product.to_string();
                self.read(move |txn| {
                    let versions = txn.open_table(VERSIONS).map_err(unavailable)?;
                    scan_prefix::<_, VersionRecord>(&versions, &product)
                })
                .await?
            }
        };
        Ok(all
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.state != VersionState::Pending)
            .collect())
    }

    async fn versions_page(
        &self,
        product: &str,
        after: Option<&str>,
        limit: usize,
        drafts: bool,
        label: Option<&Label>,
    ) -> MetaResult<Vec<VersionRecord>> {
        // A local scan and sort of one product's versions takes milliseconds even for
        // tens of thousands; no second index needed.
        let mut versions = self.list_versions(product).await?;
        versions.retain(|v| {
            after.is_none_or(|a| v.sort_key.as_str() > a)
                && (drafts || v.state == VersionState::Committed)
                && has_label(&v.labels, label)
        });
        versions.sort_by(|a, b| a.sort_key.cmp(&b.sort_key));
        versions.truncate(limit);
        Ok(versions)
    }

    async fn first_version_of_kind(
        &self,
        product: &str,
        kinds: &[VersionKind],
        label: Option<&Label>,
    ) -> MetaResult<Option<VersionRecord>> {
        let versions = self.list_versions(product).await?;
        Ok(versions
            .into_iter()
            .filter(|v| {
                v.state == VersionState::Committed
                    && kinds.contains(&v.kind)
                    && has_label(&v.labels, label)
            })
            .min_by(|a, b| a.sort_key.cmp(&b.sort_key)))
    }

    async fn delete_version(
        &self,
        product: &str,
        version: &str,
        idle_before: Option<i64>,
        event: Event,
    ) -> MetaResult<Option<VersionRecord>> {
        self.delete_version_if(product, version, event, move |record| match idle_before {
            None => record.state != VersionState::Pending,
            Some(before) => record.state == VersionState::Draft && record.updated_at < before,
        })
        .await
    }

    async fn expire_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        event: Event,
    ) -> MetaResult<Option<VersionRecord>> {
        let blob_key = blob_key.to_string();
        self.delete_version_if(product, version, event, move |record| {
            record.state == VersionState::Committed && record.blob_key == blob_key
        })
        .await
    }

    async fn set_product_settings(
        &self,
        product: &str,
        settings: Option<&crate::domain::retention::ProductSettings>,
        mut event: Event,
    ) -> MetaResult<Option<crate::domain::retention::ProductSettings>> {
        let (product, settings) = (product.to_string(), settings.cloned());
        self.write(move |txn| {
            let mut products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            let mut record: ProductRecord =
                match products.get(product.as_str()).map_err(unavailable)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(MetaError::NotFound),
                };
            let old = std::mem::replace(&mut record.settings, settings);
            products
                .insert(product.as_str(), encode(&record)?.as_slice())
                .map_err(unavailable)?;
            event.details["old"] = serde_json::to_value(&old).map_err(unavailable)?;
            record_events(txn, std::slice::from_ref(&event))?;
            Ok(old)
        })
        .await
    }

    async fn note_download(
        &self,
        product: &str,
        version: &str,
        now_ms: i64,
        stale_before_ms: i64,
    ) -> MetaResult<()> {
        let key = key2(product, version);
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            if let Some(mut record) = get_version(&versions, &key)?
                && record.state == VersionState::Committed
                && record
                    .last_download_at
                    .is_none_or(|at| at < stale_before_ms)
            {
                record.last_download_at = Some(now_ms);
                put_version(&mut versions, &key, &record)?;
            }
            Ok(())
        })
        .await
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> MetaResult<bool> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write(move |txn| {
            let mut leases = txn.open_table(LEASES).map_err(unavailable)?;
            let held = lease_holder(&leases, &name)?;
            if held.is_some_and(|(holder, until)| holder != owner && until >= now_ms) {
                return Ok(false);
            }
            leases
                .insert(name.as_str(), encode(&(owner, until_ms))?.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> MetaResult<()> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write(move |txn| {
            let mut leases = txn.open_table(LEASES).map_err(unavailable)?;
            let held = lease_holder(&leases, &name)?;
            if held.is_some_and(|(holder, _)| holder == owner) {
                leases.remove(name.as_str()).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn insert_trust_policy(
        &self,
        policy: &crate::domain::trust::TrustPolicy,
        max_per_product: usize,
        events: &[Event],
    ) -> MetaResult<()> {
        let (policy, events) = (policy.clone(), events.to_vec());
        self.write(move |txn| {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            if products
                .get(policy.product.as_str())
                .map_err(unavailable)?
                .is_none()
            {
                return Err(MetaError::NotFound);
            }
            let mut trust = txn.open_table(TRUST_POLICIES).map_err(unavailable)?;
            let (lo, hi) = prefix_range(&policy.product);
            if trust
                .range(lo.as_str()..hi.as_str())
                .map_err(unavailable)?
                .count()
                >= max_per_product
            {
                return Err(MetaError::Conflict);
            }
            trust
                .insert(
                    key2(&policy.product, &policy.id).as_str(),
                    encode(&policy)?.as_slice(),
                )
                .map_err(unavailable)?;
            record_events(txn, &events)
        })
        .await
    }

    async fn trust_policies(
        &self,
        product: &str,
    ) -> MetaResult<Vec<crate::domain::trust::TrustPolicy>> {
        let mut policies: Vec<crate::domain::trust::TrustPolicy> = self.read_now(|txn| {
            let trust = txn.open_table(TRUST_POLICIES).map_err(unavailable)?;
            Ok(scan_prefix(&trust, product)?
                .into_iter()
                .map(|(_, p)| p)
                .collect())
        })?;
        policies.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(policies)
    }

    async fn trust_policies_of_issuer(
        &self,
        issuer: &str,
    ) -> MetaResult<Vec<crate::domain::trust::TrustPolicy>> {
        let issuer = issuer.to_string();
        self.read(move |txn| {
            let trust = txn.open_table(TRUST_POLICIES).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in trust.iter().map_err(unavailable)? {
                let (_, v) = entry.map_err(unavailable)?;
                let policy: crate::domain::trust::TrustPolicy = decode(v.value())?;
                if policy.issuer == issuer {
                    out.push(policy);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_trust_policy(
        &self,
        product: &str,
        id: &str,
        events: &[Event],
    ) -> MetaResult<bool> {
        let (key, events) = (key2(product, id), events.to_vec());
        self.write(move |txn| {
            let mut trust = txn.open_table(TRUST_POLICIES).map_err(unavailable)?;
            if trust.remove(key.as_str()).map_err(unavailable)?.is_none() {
                return Ok(false);
            }
            record_events(txn, &events)?;
            Ok(true)
        })
        .await
    }

    async fn insert_upload_session(&self, session: &UploadSession) -> MetaResult<()> {
        let session = session.clone();
        self.write(move |txn| {
            let mut sessions = txn.open_table(UPLOAD_SESSIONS).map_err(unavailable)?;
            if sessions
                .get(session.id.as_str())
                .map_err(unavailable)?
                .is_some()
            {
                return Err(MetaError::Conflict);
            }
            sessions
                .insert(session.id.as_str(), encode(&session)?.as_slice())
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn upload_session(&self, id: &str) -> MetaResult<Option<UploadSession>> {
        self.read_now(|txn| {
            let sessions = txn.open_table(UPLOAD_SESSIONS).map_err(unavailable)?;
            sessions
                .get(id)
                .map_err(unavailable)?
                .map(|v| decode(v.value()))
                .transpose()
        })
    }

    async fn save_upload_session(
        &self,
        session: &UploadSession,
        from: (u64, bool),
    ) -> MetaResult<bool> {
        let session = session.clone();
        self.write(move |txn| {
            let mut sessions = txn.open_table(UPLOAD_SESSIONS).map_err(unavailable)?;
            let stored: Option<UploadSession> = sessions
                .get(session.id.as_str())
                .map_err(unavailable)?
                .map(|v| decode(v.value()))
                .transpose()?;
            if stored.is_none_or(|s| (s.offset, s.completed) != from) {
                return Ok(false);
            }
            sessions
                .insert(session.id.as_str(), encode(&session)?.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn delete_upload_session(&self, id: &str) -> MetaResult<bool> {
        let id = id.to_string();
        self.write(move |txn| {
            let mut sessions = txn.open_table(UPLOAD_SESSIONS).map_err(unavailable)?;
            Ok(sessions.remove(id.as_str()).map_err(unavailable)?.is_some())
        })
        .await
    }

    async fn upload_sessions(
        &self,
        created_by: Option<&str>,
        limit: usize,
    ) -> MetaResult<Vec<UploadSession>> {
        let created_by = created_by.map(str::to_string);
        let mut found: Vec<UploadSession> = self
            .read(move |txn| {
                let sessions = txn.open_table(UPLOAD_SESSIONS).map_err(unavailable)?;
                let mut out = Vec::new();
                for entry in sessions.iter().map_err(unavailable)? {
                    let (_, v) = entry.map_err(unavailable)?;
                    let session: UploadSession = decode(v.value())?;
                    if created_by
                        .as_ref()
                        .is_none_or(|by| *by == session.created_by)
                    {
                        out.push(session);
                    }
                }
                Ok(out)
            })
            .await?;
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        found.truncate(limit);
        Ok(found)
    }

    async fn expired_upload_sessions(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> MetaResult<Vec<UploadSession>> {
        let mut expired = self.upload_sessions(None, usize::MAX).await?;
        expired.retain(|s| s.expires_at < now_ms);
        expired.truncate(limit);
        Ok(expired)
    }

    async fn use_token_once(&self, issuer: &str, jti: &str, until_ms: i64) -> MetaResult<bool> {
        let key = used_token_key(issuer, jti);
        self.write(move |txn| {
            let mut used = txn.open_table(USED_TOKENS).map_err(unavailable)?;
            if used.get(key.as_str()).map_err(unavailable)?.is_some() {
                return Ok(false);
            }
            used.insert(key.as_str(), until_ms).map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn prune_used_tokens(&self, now_ms: i64) -> MetaResult<u64> {
        self.write(move |txn| {
            let mut used = txn.open_table(USED_TOKENS).map_err(unavailable)?;
            let mut pruned = 0u64;
            used.retain(|_, until| {
                let keep = until >= now_ms;
                pruned += u64::from(!keep);
                keep
            })
            .map_err(unavailable)?;
            Ok(pruned)
        })
        .await
    }

    async fn product_usage(&self, product: &str, now_ms: i64) -> MetaResult<Option<ProductUsage>> {
        let product = product.to_string();
        self.read(move |txn| {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            if products
                .get(product.as_str())
                .map_err(unavailable)?
                .is_none()
            {
                return Ok(None);
            }
            let reservations = txn.open_table(QUOTA_RESERVATIONS).map_err(unavailable)?;
            let held = reservations_of(&reservations, &product)?;
            let mut tally = UsageTally::new(&held, now_ms);
            let versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            tally_versions(&versions, &product, &mut tally)?;
            Ok(Some(tally.finish()))
        })
        .await
    }

    async fn reserve_quota(
        &self,
        reservation: &QuotaReservation,
        quota: &crate::domain::retention::QuotaPolicy,
        now_ms: i64,
    ) -> MetaResult<Result<(), crate::domain::retention::QuotaExceeded>> {
        let (wanted, quota) = (reservation.clone(), quota.clone());
        // redb runs one write transaction at a time: the check and the write are atomic.
        self.write(move |txn| {
            let products = txn.open_table(PRODUCTS).map_err(unavailable)?;
            if products
                .get(wanted.product.as_str())
                .map_err(unavailable)?
                .is_none()
            {
                return Err(MetaError::NotFound);
            }
            let mut reservations = txn.open_table(QUOTA_RESERVATIONS).map_err(unavailable)?;
            let held = reservations_of(&reservations, &wanted.product)?;
            let judged = judged_reservation(&held, &wanted, now_ms);
            let mut tally = UsageTally::for_reservation(&held, &judged, now_ms);
            let versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            tally_versions(&versions, &wanted.product, &mut tally)?;
            if let Err(refused) = tally.judge(&judged, &quota) {
                return Ok(Err(refused));
            }
            let mut stored = wanted.clone();
            if let Some(existing) = held.iter().find(|r| r.id == wanted.id) {
                stored.bytes = existing.bytes.max(wanted.bytes);
            }
            reservations
                .insert(
                    reservation_key(&stored.product, &stored.id).as_str(),
                    encode(&stored)?.as_slice(),
                )
                .map_err(unavailable)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn renew_quota_reservation(&self, id: &str, lease_until: i64) -> MetaResult<bool> {
        let id = id.to_string();
        self.write(move |txn| {
            let mut reservations = txn.open_table(QUOTA_RESERVATIONS).map_err(unavailable)?;
            let Some((key, mut record)) = find_reservation(&reservations, &id)? else {
                return Ok(false);
            };
            record.lease_until = record.lease_until.max(lease_until);
            reservations
                .insert(key.as_str(), encode(&record)?.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn release_quota_reservation(&self, id: &str) -> MetaResult<()> {
        let id = id.to_string();
        self.write(move |txn| {
            let mut reservations = txn.open_table(QUOTA_RESERVATIONS).map_err(unavailable)?;
            if let Some((key, _)) = find_reservation(&reservations, &id)? {
                reservations.remove(key.as_str()).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn prune_quota_reservations(&self, now_ms: i64) -> MetaResult<u64> {
        self.write(move |txn| {
            let mut reservations = txn.open_table(QUOTA_RESERVATIONS).map_err(unavailable)?;
            let mut lapsed = 0u64;
            reservations
                .retain(|_, v| {
                    let live = serde_json::from_slice::<QuotaReservation>(v)
                        .is_ok_and(|r| r.lease_until >= now_ms);
                    lapsed += u64::from(!live);
                    live
                })
                .map_err(unavailable)?;
            Ok(lapsed)
        })
        .await
    }

    async fn stale_pending_versions(&self, before_ms: i64) -> MetaResult<Vec<VersionRecord>> {
        self.versions_where(move |r| r.state == VersionState::Pending && r.uploaded_at < before_ms)
            .await
    }

    async fn idle_drafts(&self, before_ms: i64) -> MetaResult<Vec<VersionRecord>> {
        self.versions_where(move |r| r.state == VersionState::Draft && r.updated_at < before_ms)
            .await
    }

    async fn blob_key_in_use(&self, key: &str) -> MetaResult<bool> {
        self.read_now(|txn| {
            let keys = txn.open_table(BLOB_KEYS).map_err(unavailable)?;
            Ok(keys.get(key).map_err(unavailable)?.is_some())
        })
    }

    async fn renew_lease(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        lease_until: i64,
    ) -> MetaResult<bool> {
        let key = key2(product, version);
        let blob_key = blob_key.to_string();
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let mut record: VersionRecord = match versions.get(key.as_str()).map_err(unavailable)? {
                Some(v) => decode(v.value())?,
                None => return Ok(false),
            };
            if record.state != VersionState::Pending || record.blob_key != blob_key {
                return Ok(false);
            }
            record.lease_until = Some(lease_until);
            versions
                .insert(key.as_str(), encode(&record)?.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn lapsed_pending_versions(&self, now_ms: i64) -> MetaResult<Vec<VersionRecord>> {
        self.versions_where(move |r| r.lease_lapsed(now_ms)).await
    }

    async fn remove_lapsed_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        now_ms: i64,
        events: &[Event],
    ) -> MetaResult<bool> {
        let key = key2(product, version);
        let blob_key = blob_key.to_string();
        let events = events.to_vec();
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
            let lapsed = match versions.get(key.as_str()).map_err(unavailable)? {
                Some(v) => {
                    let record: VersionRecord = decode(v.value())?;
                    record.lease_lapsed(now_ms) && record.blob_key == blob_key
                }
                None => false,
            };
            if lapsed {
                versions.remove(key.as_str()).map_err(unavailable)?;
                txn.open_table(BLOB_KEYS)
                    .map_err(unavailable)?
                    .remove(blob_key.as_str())
                    .map_err(unavailable)?;
                record_events(txn, &events)?;
            }
            Ok(lapsed)
        })
        .await
    }

    async fn insert_webhook(&self, webhook: &WebhookRecord, events: &[Event]) -> MetaResult<()> {
        let webhook = webhook.clone();
        let events = events.to_vec();
        self.write(move |txn| {
            let mut table = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            if table
                .get(webhook.id.as_str())
                .map_err(unavailable)?
                .is_some()
            {
                return Err(MetaError::Conflict);
            }
            table
                .insert(webhook.id.as_str(), encode(&webhook)?.as_slice())
                .map_err(unavailable)?;
            record_events(txn, &events)
        })
        .await
    }

    async fn list_webhooks(&self) -> MetaResult<Vec<WebhookRecord>> {
        self.read(|txn| {
            let table = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(unavailable)? {
                let (_, v) = entry.map_err(unavailable)?;
                out.push(decode::<WebhookRecord>(v.value())?);
            }
            out.sort_by_key(|w| w.created_at);
            Ok(out)
        })
        .await
    }

    async fn webhook(&self, id: &str) -> MetaResult<Option<WebhookRecord>> {
        self.read_now(|txn| {
            let table = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            match table.get(id).map_err(unavailable)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn delete_webhook(&self, id: &str, events: &[Event]) -> MetaResult<bool> {
        let id = id.to_string();
        let events = events.to_vec();
        self.write(move |txn| {
            let mut table = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            if table.remove(id.as_str()).map_err(unavailable)?.is_none() {
                return Ok(false);
            }
            let mut deliveries = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let (start, end) = prefix_range(&id);
            let keys: Vec<String> = deliveries
                .range(start.as_str()..end.as_str())
                .map_err(unavailable)?
                .map(|e| e.map(|(k, _)| k.value().to_string()).map_err(unavailable))
                .collect::<MetaResult<_>>()?;
            for key in keys {
                deliveries.remove(key.as_str()).map_err(unavailable)?;
            }
            record_events(txn, &events)?;
            Ok(true)
        })
        .await
    }

    async fn lease_webhook(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> MetaResult<bool> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |txn| {
            let mut table = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            let mut hook: WebhookRecord = match table.get(id.as_str()).map_err(unavailable)? {
                Some(v) => decode(v.value())?,
                None => return Ok(false),
            };
            if hook.lease_owner.as_deref() != Some(owner.as_str()) && hook.lease_until >= now_ms {
                return Ok(false);
            }
            hook.lease_owner = Some(owner);
            hook.lease_until = until_ms;
            table
                .insert(id.as_str(), encode(&hook)?.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn queue_deliveries(
        &self,
        webhook_id: &str,
        owner: &str,
        deliveries: &[DeliveryRecord],
        cursor: &str,
    ) -> MetaResult<bool> {
        let (id, owner, cursor) = (
            webhook_id.to_string(),
            owner.to_string(),
            cursor.to_string(),
        );
        let deliveries = deliveries.to_vec();
        self.write(move |txn| {
            let mut table = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            let mut hook: WebhookRecord = match table.get(id.as_str()).map_err(unavailable)? {
                Some(v) => decode(v.value())?,
                None => return Ok(false),
            };
            if hook.lease_owner.as_deref() != Some(owner.as_str()) {
                return Ok(false);
            }
            let mut queue = txn.open_table(DELIVERIES).map_err(unavailable)?;
            for d in &deliveries {
                let key = key2(&id, &d.event_id);
                if queue.get(key.as_str()).map_err(unavailable)?.is_none() {
                    queue
                        .insert(key.as_str(), encode(d)?.as_slice())
                        .map_err(unavailable)?;
                }
            }
            if cursor > hook.cursor {
                hook.cursor = cursor;
            }
            table
                .insert(id.as_str(), encode(&hook)?.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn next_delivery(&self, webhook_id: &str) -> MetaResult<Option<DeliveryRecord>> {
        let id = webhook_id.to_string();
        self.read(move |txn| {
            let queue = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let (start, end) = prefix_range(&id);
            for entry in queue
                .range(start.as_str()..end.as_str())
                .map_err(unavailable)?
            {
                let (_, v) = entry.map_err(unavailable)?;
                let d: DeliveryRecord = decode(v.value())?;
                if d.state == DeliveryState::Pending {
                    return Ok(Some(d));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn save_delivery(&self, delivery: &DeliveryRecord) -> MetaResult<()> {
        let d = delivery.clone();
        self.write(move |txn| {
            if txn
                .open_table(WEBHOOKS)
                .map_err(unavailable)?
                .get(d.webhook_id.as_str())
                .map_err(unavailable)?
                .is_none()
            {
                return Err(MetaError::NotFound);
            }
            txn.open_table(DELIVERIES)
                .map_err(unavailable)?
                .insert(
                    key2(&d.webhook_id, &d.event_id).as_str(),
                    encode(&d)?.as_slice(),
                )
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn delivery(
        &self,
        webhook_id: &str,
        event_id: &str,
    ) -> MetaResult<Option<DeliveryRecord>> {
        self.read_now(|txn| {
            let queue = txn.open_table(DELIVERIES).map_err(unavailable)?;
            match queue
                .get(key2(webhook_id, event_id).as_str())
                .map_err(unavailable)?
            {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> MetaResult<Vec<DeliveryRecord>> {
        let id = webhook_id.to_string();
        self.read(move |txn| {
            let queue = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let (start, end) = prefix_range(&id);
            queue
                .range(start.as_str()..end.as_str())
                .map_err(unavailable)?
                .rev()
                .take(limit)
                .map(|e| {
                    let (_, v) = e.map_err(unavailable)?;
                    decode(v.value())
                })
                .collect()
        })
        .await
    }

    async fn event(&self, id: &str) -> MetaResult<Option<Event>> {
        self.read_now(|txn| {
            let table = txn.open_table(EVENTS).map_err(unavailable)?;
            match table.get(id).map_err(unavailable)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn events_after(&self, after: &str, limit: usize) -> MetaResult<Vec<Event>> {
        let after = after.to_string();
        self.read(move |txn| {
            let table = txn.open_table(EVENTS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in table.range(after.as_str()..).map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                if k.value() == after {
                    continue;
                }
                out.push(decode(v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn newest_event_id(&self) -> MetaResult<String> {
        self.read_now(|txn| {
            let table = txn.open_table(EVENTS).map_err(unavailable)?;
            Ok(table
                .last()
                .map_err(unavailable)?
                .map(|(k, _)| k.value().to_string())
                .unwrap_or_default())
        })
    }

    async fn events_page(&self, filter: &EventFilter, limit: usize) -> MetaResult<EventPage> {
        let filter = filter.clone();
        self.read(move |txn| {
            let table = txn.open_table(EVENTS).map_err(unavailable)?;
            let mut page = EventPage::default();
            let mut examined = 0;
            let mut last_seen: Option<String> = None;
            // Newest first: walk ids downwards from the cursor (or the end).
            let mut consider = |id: &str, page: &mut EventPage| -> MetaResult<bool> {
                examined += 1;
                last_seen = Some(id.to_string());
                if let Some(v) = table.get(id).map_err(unavailable)? {
                    let event: Event = decode(v.value())?;
                    if filter.matches(&event) {
                        page.events.push(event);
                    }
                }
                Ok(page.events.len() < limit && examined < EVENT_SCAN_LIMIT)
            };
            let mut stopped_early = false;
            if let Some(product) = &filter.product {
                let index = txn.open_table(PRODUCT_EVENTS).map_err(unavailable)?;
                let (start, end) = prefix_range(product);
                let end = match &filter.before_id {
                    Some(before) => key2(product, before),
                    None => end,
                };
                for entry in index
                    .range(start.as_str()..end.as_str())
                    .map_err(unavailable)?
                    .rev()
                {
                    let (k, _) = entry.map_err(unavailable)?;
                    let id = k
                        .value()
                        .rsplit('\0')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    if !consider(&id, &mut page)? {
                        stopped_early = true;
                        break;
                    }
                }
            } else {
                // `~` sorts after every hex digit: the end of all event ids.
                let end = filter
                    .before_id
                    .clone()
                    .unwrap_or_else(|| "evt_~".to_string());
                let ids: Vec<String> = table
                    .range(..end.as_str())
                    .map_err(unavailable)?
                    .rev()
                    .take(EVENT_SCAN_LIMIT)
                    .map(|entry| {
                        entry
                            .map(|(k, _)| k.value().to_string())
                            .map_err(unavailable)
                    })
                    .collect::<MetaResult<_>>()?;
                for id in ids {
                    if !consider(&id, &mut page)? {
                        stopped_early = true;
                        break;
                    }
                }
            }
            if stopped_early {
                page.next_before = last_seen;
            }
            Ok(page)
        })
        .await
    }

    async fn prune_events(&self, before_ms: i64) -> MetaResult<u64> {
        let cutoff = crate::domain::events::event_id(before_ms, 0);
        let mut removed = 0;
        // In batches, so one pass over a long history never holds one huge transaction.
        loop {
            let cutoff = cutoff.clone();
            let batch = self
                .write(move |txn| {
                    let mut table = txn.open_table(EVENTS).map_err(unavailable)?;
                    let mut by_product = txn.open_table(PRODUCT_EVENTS).map_err(unavailable)?;
                    let old: Vec<(String, Option<String>)> = table
                        .range(..cutoff.as_str())
                        .map_err(unavailable)?
                        .take(EVENT_SCAN_LIMIT)
                        .map(|entry| {
                            let (k, v) = entry.map_err(unavailable)?;
                            let event: Event = decode(v.value())?;
                            Ok((k.value().to_string(), event.product))
                        })
                        .collect::<MetaResult<_>>()?;
                    for (id, product) in &old {
                        table.remove(id.as_str()).map_err(unavailable)?;
                        if let Some(product) = product {
                            by_product
                                .remove(key2(product, id).as_str())
                                .map_err(unavailable)?;
                        }
                    }
                    Ok(old.len() as u64)
                })
                .await?;
            removed += batch;
            if batch < EVENT_SCAN_LIMIT as u64 {
                return Ok(removed);
            }
        }
    }
}
