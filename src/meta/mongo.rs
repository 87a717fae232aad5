//! MongoDB metadata store. One collection per kind (tokens, products, grants, versions,
//! events, webhooks, deliveries), indexed so each lookup is a single indexed query; a
//! unique index on (product, version) decides upload races. Version strings are only ever
//! field *values*, never field names (dots in `v1.0.0` would become nested paths).
//!
//! Every change that records events runs in a multi-document transaction with the
//! insert of its events (`in_transaction!`), so a crash cannot keep one without the other;
//! MongoDB needs a replica set for that (a single-node one will do). Changes that also
//! give a token rights on a product (grants) write the product document, so they conflict
//! with (and are retried after) a deletion of that product running at the same time; a
//! commit conflicts with such a deletion on the version record both write. The reservation,
//! which records no event, stays a single insert checked against the product afterwards.

use super::*;
use crate::domain::version::VersionKind;
use crate::error::AssetRefusal;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::time::Duration;

#[derive(Clone)]
pub struct MongoMetaStore {
    client: Client,
    db: Database,
    events: Collection<EventDoc>,
    webhooks: Collection<WebhookRecord>,
    deliveries: Collection<DeliveryRecord>,
    tokens: Collection<TokenRecord>,
    products: Collection<ProductRecord>,
    grants: Collection<GrantDoc>,
    versions: Collection<VersionRecord>,
    leases: Collection<Document>,
    quota_reservations: Collection<QuotaReservation>,
    trust_policies: Collection<crate::domain::trust::TrustPolicy>,
    used_tokens: Collection<Document>,
    upload_sessions: Collection<UploadSession>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GrantDoc {
    product: String,
    token_id: String,
    #[serde(flatten)]
    grant: Grant,
}

/// An event as stored: the event itself plus the fields `GET /audit` filters on. The
/// `_id` is the event id, so id order is time order; `at` carries the TTL index.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventDoc {
    #[serde(rename = "_id")]
    id: String,
    at: mongodb::bson::DateTime,
    #[serde(rename = "type")]
    kind: String,
    product: Option<String>,
    actor: String,
    event: Event,
}

impl From<&Event> for EventDoc {
    fn from(e: &Event) -> Self {
        EventDoc {
            id: e.id.clone(),
            at: mongodb::bson::DateTime::from_millis(e.time_ms()),
            kind: e.kind.as_str().to_string(),
            product: e.product.clone(),
            actor: e.actor.key(),
            event: e.clone(),
        }
    }
}

/// The fields of a version record a usage tally reads.
#[derive(Debug, Deserialize)]
struct UsageDoc {
    version: String,
    state: VersionState,
    #[serde(default)]
    lease_until: Option<i64>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    blob_key: String,
    #[serde(default)]
    files: Vec<UsageFile>,
}

#[derive(Debug, Deserialize)]
struct UsageFile {
    size: u64,
    blob_key: String,
}

/// Transient failures (write conflicts, elections) retry the whole transaction this often.
const TRANSACTION_ATTEMPTS: usize = 8;

fn is_transient(err: &mongodb::error::Error) -> bool {
    err.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
}

/// Runs `$body` in a transaction on session `$s`, retrying it on transient errors and its
/// commit on an unknown commit result. `$body` evaluates to
/// `mongodb::error::Result<MetaResult<T>>`: a driver error (`?` works inside), or the
/// change's outcome; an outcome of `Err` aborts the transaction.
macro_rules! in_transaction {
    ($store:expr, $s:ident, $body:block) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut $s = $store.client.start_session().await.map_err(unavailable)?;
            $s.start_transaction().await.map_err(unavailable)?;
            let outcome: mongodb::error::Result<MetaResult<_>> = async { $body }.await;
            match outcome {
                Ok(Ok(value)) => match commit(&mut $s).await {
                    Ok(()) => break Ok(value),
                    Err(e) if is_transient(&e) && attempt < TRANSACTION_ATTEMPTS => {
                        backoff(attempt).await;
                        continue;
                    }
                    Err(e) => break Err(unavailable(e)),
                },
                Ok(Err(refused)) => {
                    let _ = $s.abort_transaction().await;
                    break Err(refused);
                }
                Err(e) => {
                    let _ = $s.abort_transaction().await;
                    if is_transient(&e) && attempt < TRANSACTION_ATTEMPTS {
                        backoff(attempt).await;
                        continue;
                    }
                    break Err(unavailable(e));
                }
            }
        }
    }};
}

/// Commits, retrying while the outcome is unknown (the server may have committed).
async fn commit(session: &mut mongodb::ClientSession) -> mongodb::error::Result<()> {
    let mut tries = 0;
    loop {
        match session.commit_transaction().await {
            Err(e)
                if e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && tries < 3 =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// A short randomised pause before retrying a conflicted transaction.
async fn backoff(attempt: usize) {
    let base = 5u64 << attempt.min(6);
    let jitter = rand::Rng::random_range(&mut rand::rng(), 0..=base);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

fn unavailable(err: mongodb::error::Error) -> MetaError {
    MetaError::Unavailable(err.to_string())
}

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    matches!(&*err.kind, ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == 11000)
}

/// Matches a version carrying this label (labels are stored as `{key, value}` pairs).
fn label_match(label: &Label) -> Document {
    doc! { "$elemMatch": { "key": &label.key, "value": &label.value } }
}

fn version_filter(product: &str, version: &str) -> Document {
    doc! { "product": product, "version": version }
}

impl MongoMetaStore {
    pub async fn connect(url: &str, db_name: &str) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(url).await?;
        // Fail fast when the server is gone, instead of the driver's 30 s default.
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.connect_timeout = Some(Duration::from_secs(5));
        options.app_name = Some("depot".into());
        let client = Client::with_options(options)?;
        let db = client.database(db_name);
        db.run_command(doc! { "ping": 1 }).await?;
        let store = MongoMetaStore {
            client,
            events: db.collection("events"),
            webhooks: db.collection("webhooks"),
            deliveries: db.collection("deliveries"),
            tokens: db.collection("tokens"),
            products: db.collection("products"),
            grants: db.collection("grants"),
            versions: db.collection("versions"),
            leases: db.collection("leases"),
            quota_reservations: db.collection("quota_reservations"),
            trust_policies: db.collection("trust_policies"),
            used_tokens: db.collection("used_tokens"),
            upload_sessions: db.collection("upload_sessions"),
            db,
        };
        store.ensure_indexes().await?;
        Ok(store)
    }

    async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let unique = || IndexOptions::builder().unique(true).build();
        let index = |keys: Document, unique_index: bool| {
            let builder = IndexModel::builder().keys(keys);
            if unique_index {
                builder.options(unique()).build()
            } else {
                builder.build()
            }
        };
        self.tokens
            .create_index(index(doc! { "hash": 1 }, true))
            .await?;
        self.tokens
            .create_index(index(doc! { "id": 1 }, true))
            .await?;
        self.tokens
            .create_index(index(doc! { "admin": 1 }, false))
            .await?;
        self.products
            .create_index(index(doc! { "name": 1 }, true))
            .await?;
        self.grants
            .create_index(index(doc! { "product": 1, "token_id": 1 }, true))
            .await?;
        self.grants
            .create_index(index(doc! { "token_id": 1 }, false))
            .await?;
        self.versions
            .create_index(index(doc! { "product": 1, "version": 1 }, true))
            .await?;
        self.versions
            .create_index(index(doc! { "blob_key": 1 }, false))
            .await?;
        self.versions
            .create_index(index(doc! { "files.blob_key": 1 }, false))
            .await?;
        self.versions
            .create_index(index(doc! { "state": 1, "updated_at": 1 }, false))
            .await?;
        self.versions
            .create_index(index(doc! { "state": 1, "uploaded_at": 1 }, false))
            .await?;
        self.quota_reservations
            .create_index(index(doc! { "id": 1 }, true))
            .await?;
        self.trust_policies
            .create_index(index(doc! { "product": 1, "id": 1 }, true))
            .await?;
        self.trust_policies
            .create_index(index(doc! { "issuer": 1 }, false))
            .await?;
        self.used_tokens
            .create_index(index(doc! { "until": 1 }, false))
            .await?;
        self.upload_sessions
            .create_index(index(doc! { "id": 1 }, true))
            .await?;
        self.upload_sessions
            .create_index(index(doc! { "created_by": 1, "created_at": 1 }, false))
            .await?;
        self.upload_sessions
            .create_index(index(doc! { "expires_at": 1 }, false))
            .await?;
        self.quota_reservations
            .create_index(index(doc! { "product": 1 }, false))
            .await?;
        self.events
            .create_index(index(doc! { "product": 1, "_id": -1 }, false))
            .await?;
        self.events
            .create_index(index(doc! { "type": 1, "_id": -1 }, false))
            .await?;
        self.events
            .create_index(index(doc! { "actor": 1, "_id": -1 }, false))
            .await?;
        self.webhooks
            .create_index(index(doc! { "id": 1 }, true))
            .await?;
        self.deliveries
            .create_index(index(doc! { "webhook_id": 1, "event_id": 1 }, true))
            .await?;
        self.deliveries
            .create_index(index(
                doc! { "webhook_id": 1, "state": 1, "event_id": 1 },
                false,
            ))
            .await?;
        // Listing pages and `latest` are range scans in listing order.
        self.versions
            .create_index(index(
                doc! { "product": 1, "state": 1, "sort_key": 1 },
                false,
            ))
            .await?;
        Ok(())
    }

    async fn product_exists(&self, name: &str) -> MetaResult<bool> {
        Ok(self
            .products
            .clone_with_type::<Document>()
            .find_one(doc! { "name": name })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?
            .is_some())
    }

    async fn upsert_grant_in(
        &self,
        s: &mut mongodb::ClientSession,
        product: &str,
        token_id: &str,
        grant: Grant,
    ) -> mongodb::error::Result<()> {
        let g = mongodb::bson::to_document(&grant)?;
        self.grants
            .update_one(
                doc! { "product": product, "token_id": token_id },
                doc! { "$set": g, "$setOnInsert": { "product": product, "token_id": token_id } },
            )
            .upsert(true)
            .session(s)
            .await?;
        Ok(())
    }

    async fn product_exists_in(
        &self,
        s: &mut mongodb::ClientSession,
        name: &str,
    ) -> mongodb::error::Result<bool> {
        Ok(self
            .products
            .clone_with_type::<Document>()
            .find_one(doc! { "name": name })
            .projection(doc! { "_id": 1 })
            .session(s)
            .await?
            .is_some())
    }

    /// Writes the product document (a change counter) inside the transaction: false when
    /// the product does not exist; a deletion of it running meanwhile conflicts.
    async fn touch_product_in(
        &self,
        s: &mut mongodb::ClientSession,
        name: &str,
    ) -> mongodb::error::Result<bool> {
        let r = self
            .products
            .update_one(doc! { "name": name }, doc! { "$inc": { "changes": 1 } })
            .session(s)
            .await?;
        Ok(r.matched_count > 0)
    }

    /// Deletes the document `parent` matches and every document of `dependents` that
    /// `dependent` matches, with `events`, in one transaction. False (nothing written)
    /// when `parent` matches nothing.
    async fn delete_with_dependents<P: Send + Sync, D: Send + Sync>(
        &self,
        parents: &Collection<P>,
        parent: Document,
        dependents: &Collection<D>,
        dependent: Document,
        events: &[Event],
    ) -> MetaResult<bool> {
        in_transaction!(self, s, {
            let deleted = parents.delete_one(parent.clone()).session(&mut s).await?;
            if deleted.deleted_count == 0 {
                return Ok(Ok(false));
            }
            dependents
                .delete_many(dependent.clone())
                .session(&mut s)
                .await?;
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(true))
        })
    }

    async fn insert_events_in(
        &self,
        s: &mut mongodb::ClientSession,
        events: &[Event],
    ) -> mongodb::error::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let docs: Vec<EventDoc> = events.iter().map(EventDoc::from).collect();
        self.events.insert_many(docs).session(s).await?;
        Ok(())
    }

    /// Deletes the version record `filter` matches with its event (completed from the
    /// record), in one transaction; the record, or `None` when nothing matched.
    async fn delete_version_matching(
        &self,
        filter: Document,
        event: Event,
    ) -> MetaResult<Option<VersionRecord>> {
        in_transaction!(self, s, {
            let Some(record) = self
                .versions
                .find_one_and_delete(filter.clone())
                .session(&mut s)
                .await?
            else {
                return Ok(Ok(None));
            };
            let mut event = event.clone();
            event.details = deleted_details(&record, &event.details);
            self.insert_events_in(&mut s, std::slice::from_ref(&event))
                .await?;
            Ok(Ok(Some(record)))
        })
    }

    /// Feeds every version record of `product` to `tally` as the cursor yields them
    /// (memory stays bounded whatever the number of versions), inside the transaction.
    async fn tally_versions_in(
        &self,
        s: &mut mongodb::ClientSession,
        product: &str,
        tally: &mut UsageTally,
    ) -> mongodb::error::Result<()> {
        // Only the fields the tally reads: a product's every version crosses the wire.
        let mut cursor = self
            .versions
            .clone_with_type::<UsageDoc>()
            .find(doc! { "product": product })
            .projection(doc! {
                "_id": 0, "version": 1, "state": 1, "lease_until": 1, "size": 1,
                "blob_key": 1, "files.size": 1, "files.blob_key": 1,
            })
            .session(&mut *s)
            .await?;
        let mut docs = cursor.stream(s);
        let now = tally.now_ms();
        while let Some(doc) = docs.try_next().await? {
            let lapsed = doc.state == VersionState::Pending
                && doc.lease_until.is_some_and(|until| until < now);
            // Records from before several files per version: their primary file.
            let legacy = doc.files.is_empty() && doc.state == VersionState::Committed;
            let primary = legacy.then_some((doc.size, doc.blob_key.as_str()));
            let files = doc
                .files
                .iter()
                .map(|f| (f.size, f.blob_key.as_str()))
                .chain(primary);
            tally.add_parts(&doc.version, doc.state, lapsed, files);
        }
        Ok(())
    }

    async fn reservations_in(
        &self,
        s: &mut mongodb::ClientSession,
        product: &str,
    ) -> mongodb::error::Result<Vec<QuotaReservation>> {
        self.quota_reservations
            .find(doc! { "product": product })
            .session(&mut *s)
            .await?
            .stream(s)
            .try_collect()
            .await
    }

    async fn collect_grants(
        &self,
        filter: Document,
        key_of: fn(GrantDoc) -> (String, Grant),
    ) -> MetaResult<Vec<(String, Grant)>> {
        let cursor = self.grants.find(filter).await.map_err(unavailable)?;
        let docs: Vec<GrantDoc> = cursor.try_collect().await.map_err(unavailable)?;
        Ok(docs.into_iter().map(key_of).collect())
    }
}

#[async_trait]
impl MetaStore for MongoMetaStore {
    fn health_key(&self) -> &'static str {
        "mongo"
    }

    async fn ping(&self) -> MetaResult<()> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn insert_token(
        &self,
        token: &TokenRecord,
        grants: &[(String, Grant)],
        events: &[Event],
    ) -> MetaResult<()> {
        in_transaction!(self, s, {
            for (product, _) in grants {
                if !self.touch_product_in(&mut s, product).await? {
                    return Ok(Err(MetaError::NotFound));
                }
            }
            match self.tokens.insert_one(token).session(&mut s).await {
                Err(e) if is_duplicate_key(&e) => return Ok(Err(MetaError::Conflict)),
                other => other?,
            };
            for (product, grant) in grants {
                self.upsert_grant_in(&mut s, product, &token.id, *grant)
                    .await?;
            }
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(()))
        })
    }

    async fn token_by_hash(&self, hash: &str) -> MetaResult<Option<TokenRecord>> {
        self.tokens
            .find_one(doc! { "hash": hash })
            .await
            .map_err(unavailable)
    }

    async fn token_by_id(&self, id: &str) -> MetaResult<Option<TokenRecord>> {
        self.tokens
            .find_one(doc! { "id": id })
            .await
            .map_err(unavailable)
    }

    async fn list_tokens(&self) -> MetaResult<Vec<TokenRecord>> {
        let cursor = self
            .tokens
            .find(doc! {})
            .sort(doc! { "created_at": 1 })
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn has_admin_token(&self) -> MetaResult<bool> {
        Ok(self
            .tokens
            .find_one(doc! { "admin": true })
            .await
            .map_err(unavailable)?
            .is_some())
    }

    async fn delete_token(&self, id: &str, events: &[Event]) -> MetaResult<bool> {
        self.delete_with_dependents(
            &self.tokens,
            doc! { "id": id },
            &self.grants,
            doc! { "token_id": id },
            events,
        )
        .await
    }

    async fn set_token_bootstrap(&self, id: &str, bootstrap: bool) -> MetaResult<bool> {
        let updated = self
            .tokens
            .update_one(
                doc! { "id": id },
                doc! { "$set": { "bootstrap": bootstrap } },
            )
            .await
            .map_err(unavailable)?;
        Ok(updated.matched_count > 0)
    }

    async fn grants_of_token(&self, token_id: &str) -> MetaResult<Vec<(String, Grant)>> {
        self.collect_grants(doc! { "token_id": token_id }, |g| (g.product, g.grant))
            .await
    }

    async fn grants_of_product(&self, product: &str) -> MetaResult<Vec<(String, Grant)>> {
        self.collect_grants(doc! { "product": product }, |g| (g.token_id, g.grant))
            .await
    }

    async fn set_grant(
        &self,
        product: &str,
        token_id: &str,
        grant: Grant,
        events: &[Event],
    ) -> MetaResult<()> {
        in_transaction!(self, s, {
            let token = self
                .tokens
                .clone_with_type::<Document>()
                .find_one(doc! { "id": token_id })
                .projection(doc! { "_id": 1 })
                .session(&mut s)
                .await?;
            if token.is_none() || !self.touch_product_in(&mut s, product).await? {
                return Ok(Err(MetaError::NotFound));
            }
            self.upsert_grant_in(&mut s, product, token_id, grant)
                .await?;
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(()))
        })
    }

    async fn remove_grant(
        &self,
        product: &str,
        token_id: &str,
        events: &[Event],
    ) -> MetaResult<bool> {
        in_transaction!(self, s, {
            let r = self
                .grants
                .delete_one(doc! { "product": product, "token_id": token_id })
                .session(&mut s)
                .await?;
            if r.deleted_count == 0 {
                return Ok(Ok(false));
            }
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(true))
        })
    }

    async fn create_product(
        &self,
        product: &ProductRecord,
        creator_id: &str,
        events: &[Event],
    ) -> MetaResult<()> {
        in_transaction!(self, s, {
            match self.products.insert_one(product).session(&mut s).await {
                Err(e) if is_duplicate_key(&e) => return Ok(Err(MetaError::Conflict)),
                other => other?,
            };
            self.upsert_grant_in(&mut s, &product.name, creator_id, Grant::ALL)
                .await?;
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(()))
        })
    }

    async fn product(&self, name: &str) -> MetaResult<Option<ProductRecord>> {
        self.products
            .find_one(doc! { "name": name })
            .await
            .map_err(unavailable)
    }

    async fn list_products(&self) -> MetaResult<Vec<String>> {
        let cursor = self
            .products
            .find(doc! {})
            .sort(doc! { "name": 1 })
            .await
            .map_err(unavailable)?;
        let products: Vec<ProductRecord> = cursor.try_collect().await.map_err(unavailable)?;
        Ok(products.into_iter().map(|p| p.name).collect())
    }

    async fn delete_product(&self, name: &str, event: Event) -> MetaResult<Option<DeletedProduct>> {
        in_transaction!(self, s, {
            let removed = self
                .products
                .delete_one(doc! { "name": name })
                .session(&mut s)
                .await?;
            if removed.deleted_count == 0 {
                return Ok(Ok(None));
            }
            let grants: Vec<GrantDoc> = self
                .grants
                .find(doc! { "product": name })
                .session(&mut s)
                .await?
                .stream(&mut s)
                .try_collect()
                .await?;
            self.grants
                .delete_many(doc! { "product": name })
                .session(&mut s)
                .await?;
            let versions: Vec<VersionRecord> = self
                .versions
                .find(doc! { "product": name })
                .session(&mut s)
                .await?
                .stream(&mut s)
                .try_collect()
                .await?;
            self.versions
                .delete_many(doc! { "product": name })
                .session(&mut s)
                .await?;
            self.trust_policies
                .delete_many(doc! { "product": name })
                .session(&mut s)
                .await?;
            let deleted = DeletedProduct {
                versions,
                token_ids: grants.into_iter().map(|g| g.token_id).collect(),
            };
            let mut event = event.clone();
            event.details = product_deleted_details(&deleted);
            self.insert_events_in(&mut s, std::slice::from_ref(&event))
                .await?;
            Ok(Ok(Some(deleted)))
        })
    }

    async fn reserve_version(&self, record: &VersionRecord) -> MetaResult<Option<VersionRecord>> {
        // Insert; on a duplicate, take over a pending record whose lease lapsed (one
        // conditional replace, so two takers cannot both win); else say who holds it.
        // A record removed between two steps sends us round again.
        for _ in 0..3 {
            let displaced = match self.versions.insert_one(record).await {
                Ok(_) => None,
                Err(e) if is_duplicate_key(&e) => {
                    let mut lapsed = version_filter(&record.product, &record.version);
                    lapsed.insert("state", "pending");
                    lapsed.insert("lease_until", doc! { "$lt": now_ms() });
                    match self
                        .versions
                        .find_one_and_replace(lapsed, record)
                        .await
                        .map_err(unavailable)?
                    {
                        Some(old) => Some(old),
                        None => {
                            match self
                                .versions
                                .find_one(version_filter(&record.product, &record.version))
                                .await
                                .map_err(unavailable)?
                            {
                                // Our own insert, retried by the driver after a network error.
                                Some(r) if r.blob_key == record.blob_key => None,
                                // Published, or a draft being filled file by file.
                                Some(r) if r.state != VersionState::Pending => {
                                    return Err(MetaError::Conflict);
                                }
                                Some(_) => return Err(MetaError::Pending),
                                None => continue,
                            }
                        }
                    }
                }
                Err(e) => return Err(unavailable(e)),
            };
            if !self.product_exists(&record.product).await? {
                self.remove_pending_version(
                    &record.product,
                    &record.version,
                    &record.blob_key,
                    &[],
                )
                .await?;
                return Err(MetaError::NotFound);
            }
            return Ok(displaced);
        }
        Err(MetaError::Pending)
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
        let Some(primary) = files.first() else {
            return Err(MetaError::Asset(AssetRefusal::EmptyVersion));
        };
        let bson_error = |e: mongodb::bson::ser::Error| MetaError::Unavailable(e.to_string());
        let files_bson = mongodb::bson::to_bson(files).map_err(bson_error)?;
        let labels_bson = mongodb::bson::to_bson(labels).map_err(bson_error)?;
        let size = i64::try_from(primary.size)
            .map_err(|_| MetaError::Unavailable("size out of range".into()))?;
        in_transaction!(self, s, {
            // A deletion of the product that overlaps deletes this very record, so the two
            // conflict on it and one of them is retried (commits of one product must not
            // all write its document: 64 parallel uploads would queue on it).
            if !self.product_exists_in(&mut s, product).await? {
                return Ok(Err(MetaError::NotFound));
            }
            let mut filter = version_filter(product, version);
            filter.insert("blob_key", blob_key);
            filter.insert("state", "pending");
            let r = self
                .versions
                .update_one(
                    filter,
                    doc! { "$set": {
                        "state": "committed",
                        "file_name": &primary.name,
                        "size": size,
                        "checksum": &primary.checksum,
                        "blob_key": &primary.blob_key,
                        "files": files_bson.clone(),
                        "labels": labels_bson.clone(),
                        "lease_until": mongodb::bson::Bson::Null,
                    } },
                )
                .session(&mut s)
                .await?;
            if r.matched_count == 0 {
                // A retried commit (the driver retries once after a network error) finds
                // the record already committed by its first attempt: that is success, not
                // a lost reservation, or the caller's cleanup would delete a committed
                // version's blob. Its events went in with that first attempt.
                let mut mine = version_filter(product, version);
                mine.insert("blob_key", &primary.blob_key);
                mine.insert("state", "committed");
                let already = self.versions.count_documents(mine).session(&mut s).await?;
                return Ok(if already == 0 {
                    Err(MetaError::NotFound)
                } else {
                    Ok(())
                });
            }
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(()))
        })
    }

    async fn add_draft_file(
        &self,
        draft: &VersionRecord,
        file: &FileRecord,
        created_events: &[Event],
        events: &[Event],
    ) -> MetaResult<bool> {
        let file_bson =
            mongodb::bson::to_bson(file).map_err(|e| MetaError::Unavailable(e.to_string()))?;
        // Two first files of one new draft both try to create it: the loser's insert meets
        // the winner's record and goes round again to add its file to it.
        for _ in 0..3 {
            let outcome = in_transaction!(self, s, {
                if !self.product_exists_in(&mut s, &draft.product).await? {
                    return Ok(Err(MetaError::NotFound));
                }
                let filter = version_filter(&draft.product, &draft.version);
                let existing = self
                    .versions
                    .find_one(filter.clone())
                    .session(&mut s)
                    .await?;
                let created = match existing {
                    None => {
                        let mut record = draft.clone();
                        record.files = vec![file.clone()];
                        record.updated_at = record.updated_at.max(file.uploaded_at);
                        match self.versions.insert_one(&record).session(&mut s).await {
                            Err(e) if is_duplicate_key(&e) => return Ok(Err(MetaError::Pending)),
                            other => other?,
                        };
                        true
                    }
                    Some(r) => {
                        match r.state {
                            VersionState::Draft => {}
                            VersionState::Committed => return Ok(Err(MetaError::Conflict)),
                            VersionState::Pending => return Ok(Err(MetaError::Pending)),
                        }
                        if let Err(refused) =
                            check_can_add(r.files.iter().map(|f| f.name.as_str()), &file.name)
                        {
                            return Ok(Err(MetaError::Asset(refused)));
                        }
                        let mut only_draft = filter.clone();
                        only_draft.insert("state", "draft");
                        self.versions
                            .update_one(
                                only_draft,
                                doc! {
                                    "$push": { "files": file_bson.clone() },
                                    "$max": { "updated_at": file.uploaded_at },
                                },
                            )
                            .session(&mut s)
                            .await?;
                        false
                    }
                };
                if created {
                    self.insert_events_in(&mut s, created_events).await?;
                }
                self.insert_events_in(&mut s, events).await?;
                Ok(Ok(created))
            });
            match outcome {
                // The lost creation race (or a pending record whose lease lapsed): look again.
                Err(MetaError::Pending) => {
                    let now = file.uploaded_at;
                    match self
                        .versions
                        .find_one(version_filter(&draft.product, &draft.version))
                        .await
                        .map_err(unavailable)?
                    {
                        Some(r) if r.state == VersionState::Pending && !r.lease_lapsed(now) => {
                            return Err(MetaError::Pending);
                        }
                        Some(r) if r.state == VersionState::Pending => {
                            // A dead one-request upload's reservation: the janitor's to remove.
                            return Err(MetaError::Pending);
                        }
                        _ => continue,
                    }
                }
                other => return other,
            }
        }
        Err(MetaError::Pending)
    }

    async fn remove_draft_file(
        &self,
        product: &str,
        version: &str,
        name: &str,
        events: &[Event],
    ) -> MetaResult<FileRecord> {
        in_transaction!(self, s, {
            let filter = version_filter(product, version);
            let record = match self
                .versions
                .find_one(filter.clone())
                .session(&mut s)
                .await?
            {
                Some(r) if r.state == VersionState::Draft => r,
                Some(r) if r.state == VersionState::Committed => {
                    return Ok(Err(MetaError::Asset(AssetRefusal::Published)));
                }
                _ => return Ok(Err(MetaError::NotFound)),
            };
            let Some(removed) = record.files.iter().find(|f| f.name == name).cloned() else {
                return Ok(Err(MetaError::Asset(AssetRefusal::FileNotFound)));
            };
            let mut only_draft = filter;
            only_draft.insert("state", "draft");
            self.versions
                .update_one(
                    only_draft,
                    doc! {
                        "$pull": { "files": { "name": name } },
                        "$max": { "updated_at": now_ms() },
                    },
                )
                .session(&mut s)
                .await?;
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(removed))
        })
    }

    async fn publish_draft(
        &self,
        product: &str,
        version: &str,
        files: Option<&[String]>,
        labels: &[Label],
        now_ms: i64,
        event: Event,
    ) -> MetaResult<VersionRecord> {
        in_transaction!(self, s, {
            let filter = version_filter(product, version);
            let draft = match self
                .versions
                .find_one(filter.clone())
                .session(&mut s)
                .await?
            {
                Some(r) if r.state == VersionState::Draft => r,
                Some(r) if r.state == VersionState::Committed => {
                    return Ok(Err(MetaError::Conflict));
                }
                Some(_) => return Ok(Err(MetaError::Pending)),
                None => return Ok(Err(MetaError::NotFound)),
            };
            let record = match seal(draft, files, labels.to_vec(), now_ms) {
                Ok(record) => record,
                Err(refused) => return Ok(Err(MetaError::Asset(refused))),
            };
            let mut only_draft = filter;
            only_draft.insert("state", "draft");
            self.versions
                .replace_one(only_draft, &record)
                .session(&mut s)
                .await?;
            let mut event = event.clone();
            event.details = published_details(&record);
            self.insert_events_in(&mut s, std::slice::from_ref(&event))
                .await?;
            Ok(Ok(record))
        })
    }

    async fn set_labels(
        &self,
        product: &str,
        version: &str,
        changes: &std::collections::BTreeMap<String, Option<String>>,
        event: Event,
    ) -> MetaResult<Vec<Label>> {
        in_transaction!(self, s, {
            let filter = version_filter(product, version);
            let record = match self
                .versions
                .find_one(filter.clone())
                .session(&mut s)
                .await?
            {
                Some(r) if r.state != VersionState::Pending => r,
                _ => return Ok(Err(MetaError::NotFound)),
            };
            let (labels, change) =
                match crate::domain::assets::apply_label_changes(&record.labels, changes) {
                    Ok(applied) => applied,
                    Err(e) => {
                        return Ok(Err(MetaError::Asset(AssetRefusal::InvalidLabel(
                            e.to_string(),
                        ))));
                    }
                };
            if change.set.is_empty() && change.removed.is_empty() {
                return Ok(Ok(labels));
            }
            let labels_bson = mongodb::bson::to_bson(&labels)?;
            let mut unchanged = filter;
            unchanged.insert("state", mongodb::bson::to_bson(&record.state)?);
            self.versions
                .update_one(unchanged, doc! { "$set": { "labels": labels_bson } })
                .session(&mut s)
                .await?;
            let mut event = event.clone();
            event.details = labels_details(&change);
            self.insert_events_in(&mut s, std::slice::from_ref(&event))
                .await?;
            Ok(Ok(labels))
        })
    }

    async fn remove_pending_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        events: &[Event],
    ) -> MetaResult<()> {
        let mut filter = version_filter(product, version);
        filter.insert("blob_key", blob_key);
        filter.insert("state", "pending");
        if events.is_empty() {
            self.versions
                .delete_one(filter)
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        in_transaction!(self, s, {
            let r = self
                .versions
                .delete_one(filter.clone())
                .session(&mut s)
                .await?;
            if r.deleted_count > 0 {
                self.insert_events_in(&mut s, events).await?;
            }
            Ok(Ok(()))
        })
    }

    async fn version(&self, product: &str, version: &str) -> MetaResult<Option<VersionRecord>> {
        let mut filter = version_filter(product, version);
        filter.insert("state", doc! { "$in": ["committed", "draft"] });
        self.versions.find_one(filter).await.map_err(unavailable)
    }

    async fn list_versions(&self, product: &str) -> MetaResult<Vec<VersionRecord>> {
        let cursor = self
            .versions
            .find(doc! { "product": product, "state": { "$in": ["committed", "draft"] } })
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn versions_page(
        &self,
        product: &str,
        after: Option<&str>,
        limit: usize,
        drafts: bool,
        label: Option<&Label>,
    ) -> MetaResult<Vec<VersionRecord>> {
        let mut filter = doc! { "product": product };
        if drafts {
            filter.insert("state", doc! { "$in": ["committed", "draft"] });
        } else {
            filter.insert("state", "committed");
        }
        if let Some(label) = label {
            filter.insert("labels", label_match(label));
        }
        if let Some(after) = after {
            filter.insert("sort_key", doc! { "$gt": after });
        }
        let cursor = self
            .versions
            .find(filter)
            .sort(doc! { "sort_key": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn first_version_of_kind(
        &self,
        product: &str,
        kinds: &[VersionKind],
        label: Option<&Label>,
    ) -> MetaResult<Option<VersionRecord>> {
        let kinds: Vec<mongodb::bson::Bson> = kinds
            .iter()
            .filter_map(|k| mongodb::bson::to_bson(k).ok())
            .collect();
        let mut filter =
            doc! { "product": product, "state": "committed", "kind": { "$in": kinds } };
        if let Some(label) = label {
            filter.insert("labels", label_match(label));
        }
        self.versions
            .find_one(filter)
            .sort(doc! { "sort_key": 1 })
            .await
            .map_err(unavailable)
    }

    async fn delete_version(
        &self,
        product: &str,
        version: &str,
        idle_before: Option<i64>,
        event: Event,
    ) -> MetaResult<Option<VersionRecord>> {
        let mut filter = version_filter(product, version);
        match idle_before {
            None => filter.insert("state", doc! { "$in": ["committed", "draft"] }),
            Some(before) => {
                filter.insert("updated_at", doc! { "$lt": before });
                filter.insert("state", "draft")
            }
        };
        self.delete_version_matching(filter, event).await
    }

    async fn expire_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        event: Event,
    ) -> MetaResult<Option<VersionRecord>> {
        let mut filter = version_filter(product, version);
        filter.insert("state", "committed");
        filter.insert("blob_key", blob_key);
        self.delete_version_matching(filter, event).await
    }

    async fn set_product_settings(
        &self,
        product: &str,
        settings: Option<&crate::domain::retention::ProductSettings>,
        event: Event,
    ) -> MetaResult<Option<crate::domain::retention::ProductSettings>> {
        let value = match settings {
            Some(settings) => mongodb::bson::to_bson(settings)
                .map_err(|e| MetaError::Unavailable(e.to_string()))?,
            None => mongodb::bson::Bson::Null,
        };
        in_transaction!(self, s, {
            let Some(before) = self
                .products
                .find_one_and_update(
                    doc! { "name": product },
                    doc! { "$set": { "settings": value.clone() } },
                )
                .session(&mut s)
                .await?
            else {
                return Ok(Err(MetaError::NotFound));
            };
            let mut event = event.clone();
            event.details["old"] = serde_json::to_value(&before.settings).unwrap_or_default();
            self.insert_events_in(&mut s, std::slice::from_ref(&event))
                .await?;
            Ok(Ok(before.settings))
        })
    }

    async fn note_download(
        &self,
        product: &str,
        version: &str,
        now_ms: i64,
        stale_before_ms: i64,
    ) -> MetaResult<()> {
        let mut filter = version_filter(product, version);
        filter.insert("state", "committed");
        filter.insert(
            "$or",
            vec![
                doc! { "last_download_at": mongodb::bson::Bson::Null },
                doc! { "last_download_at": { "$lt": stale_before_ms } },
            ],
        );
        self.versions
            .update_one(filter, doc! { "$set": { "last_download_at": now_ms } })
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> MetaResult<bool> {
        // Free, lapsed or ours: one conditional upsert. Held by another: the filter
        // misses, the upsert meets the existing `_id`, and that duplicate means no.
        let filter = doc! {
            "_id": name,
            "$or": [ { "until": { "$lt": now_ms } }, { "owner": owner } ],
        };
        let update = doc! { "$set": { "owner": owner, "until": until_ms } };
        match self.leases.update_one(filter, update).upsert(true).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn release_lease(&self, name: &str, owner: &str) -> MetaResult<()> {
        self.leases
            .delete_one(doc! { "_id": name, "owner": owner })
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn insert_trust_policy(
        &self,
        policy: &crate::domain::trust::TrustPolicy,
        max_per_product: usize,
        events: &[Event],
    ) -> MetaResult<()> {
        in_transaction!(self, s, {
            // Writing the product document: a deletion of the product conflicts with this.
            if !self.touch_product_in(&mut s, &policy.product).await? {
                return Ok(Err(MetaError::NotFound));
            }
            // Two creations conflict on the product document: the count is exact.
            let held = self
                .trust_policies
                .count_documents(doc! { "product": &policy.product })
                .session(&mut s)
                .await?;
            if held >= max_per_product as u64 {
                return Ok(Err(MetaError::Conflict));
            }
            self.trust_policies
                .insert_one(policy)
                .session(&mut s)
                .await?;
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(()))
        })
    }

    async fn trust_policies(
        &self,
        product: &str,
    ) -> MetaResult<Vec<crate::domain::trust::TrustPolicy>> {
        self.trust_policies
            .find(doc! { "product": product })
            .sort(doc! { "created_at": 1, "id": 1 })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }

    async fn trust_policies_of_issuer(
        &self,
        issuer: &str,
    ) -> MetaResult<Vec<crate::domain::trust::TrustPolicy>> {
        self.trust_policies
            .find(doc! { "issuer": issuer })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }

    async fn delete_trust_policy(
        &self,
        product: &str,
        id: &str,
        events: &[Event],
    ) -> MetaResult<bool> {
        self.delete_with_dependents(
            &self.trust_policies,
            doc! { "product": product, "id": id },
            &self.used_tokens,
            // Nothing depends on a policy.
            doc! { "_id": { "$exists": false } },
            events,
        )
        .await
    }

    async fn insert_upload_session(&self, session: &UploadSession) -> MetaResult<()> {
        match self.upload_sessions.insert_one(session).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(MetaError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn upload_session(&self, id: &str) -> MetaResult<Option<UploadSession>> {
        self.upload_sessions
            .find_one(doc! { "id": id })
            .await
            .map_err(unavailable)
    }

    async fn save_upload_session(
        &self,
        session: &UploadSession,
        (offset, completed): (u64, bool),
    ) -> MetaResult<bool> {
        let offset = i64::try_from(offset).map_err(|_| MetaError::Conflict)?;
        let replaced = self
            .upload_sessions
            .replace_one(
                doc! { "id": &session.id, "offset": offset, "completed": completed },
                session,
            )
            .await
            .map_err(unavailable)?;
        Ok(replaced.matched_count == 1)
    }

    async fn delete_upload_session(&self, id: &str) -> MetaResult<bool> {
        let deleted = self
            .upload_sessions
            .delete_one(doc! { "id": id })
            .await
            .map_err(unavailable)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn upload_sessions(
        &self,
        created_by: Option<&str>,
        limit: usize,
    ) -> MetaResult<Vec<UploadSession>> {
        let filter = match created_by {
            Some(by) => doc! { "created_by": by },
            None => doc! {},
        };
        let cursor = self
            .upload_sessions
            .find(filter)
            .sort(doc! { "created_at": 1, "id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn expired_upload_sessions(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> MetaResult<Vec<UploadSession>> {
        let cursor = self
            .upload_sessions
            .find(doc! { "expires_at": { "$lt": now_ms } })
            .sort(doc! { "expires_at": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn use_token_once(&self, issuer: &str, jti: &str, until_ms: i64) -> MetaResult<bool> {
        // The unique `_id` decides between replicas exchanging the same token at once.
        match self
            .used_tokens
            .insert_one(doc! { "_id": used_token_key(issuer, jti), "until": until_ms })
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn prune_used_tokens(&self, now_ms: i64) -> MetaResult<u64> {
        let r = self
            .used_tokens
            .delete_many(doc! { "until": { "$lt": now_ms } })
            .await
            .map_err(unavailable)?;
        Ok(r.deleted_count)
    }

    async fn product_usage(&self, product: &str, now_ms: i64) -> MetaResult<Option<ProductUsage>> {
        // One snapshot for the product, its reservations and its versions.
        in_transaction!(self, s, {
            if !self.product_exists_in(&mut s, product).await? {
                return Ok(Ok(None));
            }
            let held = self.reservations_in(&mut s, product).await?;
            let mut tally = UsageTally::new(&held, now_ms);
            self.tally_versions_in(&mut s, product, &mut tally).await?;
            Ok(Ok(Some(tally.finish())))
        })
    }

    async fn reserve_quota(
        &self,
        reservation: &QuotaReservation,
        quota: &crate::domain::retention::QuotaPolicy,
        now_ms: i64,
    ) -> MetaResult<Result<(), crate::domain::retention::QuotaExceeded>> {
        let product = reservation.product.as_str();
        in_transaction!(self, s, {
            // Writing the product document makes two reservations of one product conflict
            // (one is retried, and then sees the other's): a check and its write are atomic.
            if !self.touch_product_in(&mut s, product).await? {
                return Ok(Err(MetaError::NotFound));
            }
            let held = self.reservations_in(&mut s, product).await?;
            let judged = judged_reservation(&held, reservation, now_ms);
            let mut tally = UsageTally::for_reservation(&held, &judged, now_ms);
            self.tally_versions_in(&mut s, product, &mut tally).await?;
            if let Err(refused) = tally.judge(&judged, quota) {
                return Ok(Ok(Err(refused)));
            }
            if held.iter().any(|r| r.id == reservation.id) {
                self.quota_reservations
                    .update_one(
                        doc! { "id": &reservation.id },
                        doc! {
                            "$max": {
                                "bytes": reservation.bytes as i64,
                                "lease_until": reservation.lease_until,
                            },
                        },
                    )
                    .session(&mut s)
                    .await?;
            } else {
                self.quota_reservations
                    .insert_one(reservation)
                    .session(&mut s)
                    .await?;
            }
            Ok(Ok(Ok(())))
        })
    }

    async fn renew_quota_reservation(&self, id: &str, lease_until: i64) -> MetaResult<bool> {
        let r = self
            .quota_reservations
            .update_one(
                doc! { "id": id },
                doc! { "$max": { "lease_until": lease_until } },
            )
            .await
            .map_err(unavailable)?;
        Ok(r.matched_count > 0)
    }

    async fn release_quota_reservation(&self, id: &str) -> MetaResult<()> {
        self.quota_reservations
            .delete_one(doc! { "id": id })
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn prune_quota_reservations(&self, now_ms: i64) -> MetaResult<u64> {
        let r = self
            .quota_reservations
            .delete_many(doc! { "lease_until": { "$lt": now_ms } })
            .await
            .map_err(unavailable)?;
        Ok(r.deleted_count)
    }

    async fn idle_drafts(&self, before_ms: i64) -> MetaResult<Vec<VersionRecord>> {
        let cursor = self
            .versions
            .find(doc! { "state": "draft", "updated_at": { "$lt": before_ms } })
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn stale_pending_versions(&self, before_ms: i64) -> MetaResult<Vec<VersionRecord>> {
        let cursor = self
            .versions
            .find(doc! { "state": "pending", "uploaded_at": { "$lt": before_ms } })
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn renew_lease(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        lease_until: i64,
    ) -> MetaResult<bool> {
        let mut filter = version_filter(product, version);
        filter.insert("blob_key", blob_key);
        filter.insert("state", "pending");
        let r = self
            .versions
            .update_one(filter, doc! { "$set": { "lease_until": lease_until } })
            .await
            .map_err(unavailable)?;
        Ok(r.matched_count > 0)
    }

    async fn lapsed_pending_versions(&self, now_ms: i64) -> MetaResult<Vec<VersionRecord>> {
        let cursor = self
            .versions
            .find(doc! { "state": "pending", "lease_until": { "$lt": now_ms } })
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn remove_lapsed_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        now_ms: i64,
        events: &[Event],
    ) -> MetaResult<bool> {
        let mut filter = version_filter(product, version);
        filter.insert("blob_key", blob_key);
        filter.insert("state", "pending");
        filter.insert("lease_until", doc! { "$lt": now_ms });
        in_transaction!(self, s, {
            let r = self
                .versions
                .delete_one(filter.clone())
                .session(&mut s)
                .await?;
            if r.deleted_count == 0 {
                return Ok(Ok(false));
            }
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(true))
        })
    }

    async fn blob_key_in_use(&self, key: &str) -> MetaResult<bool> {
        Ok(self
            .versions
            .clone_with_type::<Document>()
            .find_one(doc! { "$or": [{ "blob_key": key }, { "files.blob_key": key }] })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?
            .is_some())
    }

    async fn insert_webhook(&self, webhook: &WebhookRecord, events: &[Event]) -> MetaResult<()> {
        in_transaction!(self, s, {
            match self.webhooks.insert_one(webhook).session(&mut s).await {
                Err(e) if is_duplicate_key(&e) => return Ok(Err(MetaError::Conflict)),
                other => other?,
            };
            self.insert_events_in(&mut s, events).await?;
            Ok(Ok(()))
        })
    }

    async fn list_webhooks(&self) -> MetaResult<Vec<WebhookRecord>> {
        self.webhooks
            .find(doc! {})
            .sort(doc! { "created_at": 1 })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }

    async fn webhook(&self, id: &str) -> MetaResult<Option<WebhookRecord>> {
        self.webhooks
            .find_one(doc! { "id": id })
            .await
            .map_err(unavailable)
    }

    async fn delete_webhook(&self, id: &str, events: &[Event]) -> MetaResult<bool> {
        self.delete_with_dependents(
            &self.webhooks,
            doc! { "id": id },
            &self.deliveries,
            doc! { "webhook_id": id },
            events,
        )
        .await
    }

    async fn lease_webhook(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> MetaResult<bool> {
        let r = self
            .webhooks
            .update_one(
                doc! { "id": id, "$or": [
                    { "lease_owner": owner },
                    { "lease_until": { "$lt": now_ms } },
                ] },
                doc! { "$set": { "lease_owner": owner, "lease_until": until_ms } },
            )
            .await
            .map_err(unavailable)?;
        Ok(r.matched_count > 0)
    }

    async fn queue_deliveries(
        &self,
        webhook_id: &str,
        owner: &str,
        deliveries: &[DeliveryRecord],
        cursor: &str,
    ) -> MetaResult<bool> {
        in_transaction!(self, s, {
            let hook = self
                .webhooks
                .find_one(doc! { "id": webhook_id, "lease_owner": owner })
                .session(&mut s)
                .await?;
            let Some(hook) = hook else {
                return Ok(Ok(false));
            };
            for d in deliveries {
                let exists = self
                    .deliveries
                    .clone_with_type::<Document>()
                    .find_one(doc! { "webhook_id": webhook_id, "event_id": &d.event_id })
                    .projection(doc! { "_id": 1 })
                    .session(&mut s)
                    .await?;
                if exists.is_none() {
                    self.deliveries.insert_one(d).session(&mut s).await?;
                }
            }
            if cursor > hook.cursor.as_str() {
                self.webhooks
                    .update_one(
                        doc! { "id": webhook_id },
                        doc! { "$set": { "cursor": cursor } },
                    )
                    .session(&mut s)
                    .await?;
            }
            Ok(Ok(true))
        })
    }

    async fn next_delivery(&self, webhook_id: &str) -> MetaResult<Option<DeliveryRecord>> {
        self.deliveries
            .find_one(doc! { "webhook_id": webhook_id, "state": "pending" })
            .sort(doc! { "event_id": 1 })
            .await
            .map_err(unavailable)
    }

    async fn save_delivery(&self, delivery: &DeliveryRecord) -> MetaResult<()> {
        if self.webhook(&delivery.webhook_id).await?.is_none() {
            return Err(MetaError::NotFound);
        }
        self.deliveries
            .replace_one(
                doc! { "webhook_id": &delivery.webhook_id, "event_id": &delivery.event_id },
                delivery,
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delivery(
        &self,
        webhook_id: &str,
        event_id: &str,
    ) -> MetaResult<Option<DeliveryRecord>> {
        self.deliveries
            .find_one(doc! { "webhook_id": webhook_id, "event_id": event_id })
            .await
            .map_err(unavailable)
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> MetaResult<Vec<DeliveryRecord>> {
        self.deliveries
            .find(doc! { "webhook_id": webhook_id })
            .sort(doc! { "event_id": -1 })
            .limit(limit as i64)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }

    async fn event(&self, id: &str) -> MetaResult<Option<Event>> {
        Ok(self
            .events
            .find_one(doc! { "_id": id })
            .await
            .map_err(unavailable)?
            .map(|d| d.event))
    }

    async fn events_after(&self, after: &str, limit: usize) -> MetaResult<Vec<Event>> {
        let docs: Vec<EventDoc> = self
            .events
            .find(doc! { "_id": { "$gt": after } })
            .sort(doc! { "_id": 1 })
            .limit(limit as i64)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        Ok(docs.into_iter().map(|d| d.event).collect())
    }

    async fn newest_event_id(&self) -> MetaResult<String> {
        Ok(self
            .events
            .find_one(doc! {})
            .sort(doc! { "_id": -1 })
            .await
            .map_err(unavailable)?
            .map(|d| d.id)
            .unwrap_or_default())
    }

    async fn events_page(&self, filter: &EventFilter, limit: usize) -> MetaResult<EventPage> {
        let mut query = Document::new();
        if let Some(product) = &filter.product {
            query.insert("product", product);
        }
        if let Some(kind) = filter.kind {
            query.insert("type", kind.as_str());
        }
        if let Some(actor) = &filter.actor {
            query.insert("actor", actor);
        }
        let mut id_range = Document::new();
        if let Some(before) = &filter.before_id {
            id_range.insert("$lt", before);
        }
        if let Some(until) = filter.until_ms {
            let bound = crate::domain::events::event_id(until, 0);
            let bound = match filter.before_id.as_deref() {
                Some(before) if before < bound.as_str() => before.to_string(),
                _ => bound,
            };
            id_range.insert("$lt", bound);
        }
        if let Some(since) = filter.since_ms {
            id_range.insert("$gte", crate::domain::events::event_id(since, 0));
        }
        if !id_range.is_empty() {
            query.insert("_id", id_range);
        }
        let docs: Vec<EventDoc> = self
            .events
            .find(query)
            .sort(doc! { "_id": -1 })
            .limit(limit as i64)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let events: Vec<Event> = docs.into_iter().map(|d| d.event).collect();
        let next_before = (events.len() == limit)
            .then(|| events.last().map(|e| e.id.clone()))
            .flatten();
        Ok(EventPage {
            events,
            next_before,
        })
    }

    async fn prune_events(&self, before_ms: i64) -> MetaResult<u64> {
        let cutoff = crate::domain::events::event_id(before_ms, 0);
        let r = self
            .events
            .delete_many(doc! { "_id": { "$lt": cutoff } })
            .await
            .map_err(unavailable)?;
        Ok(r.deleted_count)
    }
}
