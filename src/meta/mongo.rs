//! MongoDB metadata store. One collection per kind (tokens, products, grants, versions),
//! indexed so each lookup is a single indexed query; a unique index on (product, version)
//! decides upload races. Every change is a single-document write (no read-modify-write
//! of a product document), and version strings are only ever field *values*, never
//! field names (dots in `v1.0.0` would become nested paths).
//!
//! Multi-step changes are ordered so a concurrent or interrupted step leaves nothing
//! reachable: e.g. a reservation is inserted first and then checked against the product,
//! and a product deletion removes the product document first.

use super::*;
use crate::domain::version::VersionKind;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::time::Duration;

#[derive(Clone)]
pub struct MongoMetaStore {
    db: Database,
    tokens: Collection<TokenRecord>,
    products: Collection<ProductRecord>,
    grants: Collection<GrantDoc>,
    versions: Collection<VersionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GrantDoc {
    product: String,
    token_id: String,
    #[serde(flatten)]
    grant: Grant,
}

fn unavailable(err: mongodb::error::Error) -> MetaError {
    MetaError::Unavailable(err.to_string())
}

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    matches!(&*err.kind, ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == 11000)
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
            tokens: db.collection("tokens"),
            products: db.collection("products"),
            grants: db.collection("grants"),
            versions: db.collection("versions"),
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
            .create_index(index(doc! { "state": 1, "uploaded_at": 1 }, false))
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

    async fn upsert_grant(&self, product: &str, token_id: &str, grant: Grant) -> MetaResult<()> {
        let g = mongodb::bson::to_document(&grant)
            .map_err(|e| MetaError::Unavailable(e.to_string()))?;
        self.grants
            .update_one(
                doc! { "product": product, "token_id": token_id },
                doc! { "$set": g, "$setOnInsert": { "product": product, "token_id": token_id } },
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
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
    ) -> MetaResult<()> {
        for (product, _) in grants {
            if !self.product_exists(product).await? {
                return Err(MetaError::NotFound);
            }
        }
        self.tokens.insert_one(token).await.map_err(|e| {
            if is_duplicate_key(&e) {
                MetaError::Conflict
            } else {
                unavailable(e)
            }
        })?;
        for (product, grant) in grants {
            self.set_grant(product, &token.id, *grant).await?;
        }
        Ok(())
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

    async fn delete_token(&self, id: &str) -> MetaResult<bool> {
        // Token first: once it is gone nobody can authenticate with it, whatever grants remain.
        let deleted = self
            .tokens
            .delete_one(doc! { "id": id })
            .await
            .map_err(unavailable)?;
        self.grants
            .delete_many(doc! { "token_id": id })
            .await
            .map_err(unavailable)?;
        Ok(deleted.deleted_count > 0)
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

    async fn set_grant(&self, product: &str, token_id: &str, grant: Grant) -> MetaResult<()> {
        if self.token_by_id(token_id).await?.is_none() {
            return Err(MetaError::NotFound);
        }
        self.upsert_grant(product, token_id, grant).await?;
        // Checked after the write: a product deleted concurrently cannot keep this grant.
        if !self.product_exists(product).await? {
            self.grants
                .delete_one(doc! { "product": product, "token_id": token_id })
                .await
                .map_err(unavailable)?;
            return Err(MetaError::NotFound);
        }
        Ok(())
    }

    async fn remove_grant(&self, product: &str, token_id: &str) -> MetaResult<bool> {
        let r = self
            .grants
            .delete_one(doc! { "product": product, "token_id": token_id })
            .await
            .map_err(unavailable)?;
        Ok(r.deleted_count > 0)
    }

    async fn create_product(&self, product: &ProductRecord, creator_id: &str) -> MetaResult<()> {
        self.products.insert_one(product).await.map_err(|e| {
            if is_duplicate_key(&e) {
                MetaError::Conflict
            } else {
                unavailable(e)
            }
        })?;
        self.upsert_grant(&product.name, creator_id, Grant::ALL)
            .await
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

    async fn delete_product(&self, name: &str) -> MetaResult<Option<DeletedProduct>> {
        // The product document goes first: from then on no reservation or grant can attach to it.
        let removed = self
            .products
            .delete_one(doc! { "name": name })
            .await
            .map_err(unavailable)?;
        if removed.deleted_count == 0 {
            return Ok(None);
        }
        let token_ids = self
            .grants_of_product(name)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.grants
            .delete_many(doc! { "product": name })
            .await
            .map_err(unavailable)?;
        let versions: Vec<VersionRecord> = self
            .versions
            .find(doc! { "product": name })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        self.versions
            .delete_many(doc! { "product": name })
            .await
            .map_err(unavailable)?;
        Ok(Some(DeletedProduct {
            versions,
            token_ids,
        }))
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
                                Some(r) if r.state == VersionState::Committed => {
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
                self.remove_pending_version(&record.product, &record.version, &record.blob_key)
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
        size: u64,
        checksum: &str,
    ) -> MetaResult<()> {
        let mut filter = version_filter(product, version);
        filter.insert("blob_key", blob_key);
        filter.insert("state", "pending");
        let size =
            i64::try_from(size).map_err(|_| MetaError::Unavailable("size out of range".into()))?;
        let r = self
            .versions
            .update_one(
                filter,
                doc! { "$set": { "state": "committed", "size": size, "checksum": checksum } },
            )
            .await
            .map_err(unavailable)?;
        if r.matched_count == 0 {
            // A retried write (the driver retries once after a network error) finds the
            // record already committed by its first attempt: that is success, not a lost
            // reservation, or the caller's cleanup would delete a committed version's blob.
            let mut mine = version_filter(product, version);
            mine.insert("blob_key", blob_key);
            mine.insert("state", "committed");
            let already = self
                .versions
                .count_documents(mine)
                .await
                .map_err(unavailable)?;
            if already == 0 {
                return Err(MetaError::NotFound);
            }
        }
        Ok(())
    }

    async fn remove_pending_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
    ) -> MetaResult<()> {
        let mut filter = version_filter(product, version);
        filter.insert("blob_key", blob_key);
        filter.insert("state", "pending");
        self.versions
            .delete_one(filter)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn version(&self, product: &str, version: &str) -> MetaResult<Option<VersionRecord>> {
        let mut filter = version_filter(product, version);
        filter.insert("state", "committed");
        self.versions.find_one(filter).await.map_err(unavailable)
    }

    async fn list_versions(&self, product: &str) -> MetaResult<Vec<VersionRecord>> {
        let cursor = self
            .versions
            .find(doc! { "product": product, "state": "committed" })
            .await
            .map_err(unavailable)?;
        cursor.try_collect().await.map_err(unavailable)
    }

    async fn versions_page(
        &self,
        product: &str,
        after: Option<&str>,
        limit: usize,
    ) -> MetaResult<Vec<VersionRecord>> {
        let mut filter = doc! { "product": product, "state": "committed" };
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
    ) -> MetaResult<Option<VersionRecord>> {
        let kinds: Vec<mongodb::bson::Bson> = kinds
            .iter()
            .filter_map(|k| mongodb::bson::to_bson(k).ok())
            .collect();
        self.versions
            .find_one(doc! { "product": product, "state": "committed", "kind": { "$in": kinds } })
            .sort(doc! { "sort_key": 1 })
            .await
            .map_err(unavailable)
    }

    async fn delete_version(
        &self,
        product: &str,
        version: &str,
    ) -> MetaResult<Option<VersionRecord>> {
        let mut filter = version_filter(product, version);
        filter.insert("state", "committed");
        self.versions
            .find_one_and_delete(filter)
            .await
            .map_err(unavailable)
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
    ) -> MetaResult<bool> {
        let mut filter = version_filter(product, version);
        filter.insert("blob_key", blob_key);
        filter.insert("state", "pending");
        filter.insert("lease_until", doc! { "$lt": now_ms });
        let r = self
            .versions
            .delete_one(filter)
            .await
            .map_err(unavailable)?;
        Ok(r.deleted_count > 0)
    }

    async fn blob_key_in_use(&self, key: &str) -> MetaResult<bool> {
        Ok(self
            .versions
            .clone_with_type::<Document>()
            .find_one(doc! { "blob_key": key })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?
            .is_some())
    }
}
