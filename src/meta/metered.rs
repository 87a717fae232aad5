//! A `MetaStore` decorator that records each call's latency and failures as Prometheus
//! metrics (`depot_backend_call_seconds`, `depot_backend_errors_total`), whatever store
//! sits underneath.

use super::*;
use crate::domain::version::VersionKind;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

pub struct MeteredMetaStore {
    inner: Arc<dyn MetaStore>,
}

impl MeteredMetaStore {
    pub fn new(inner: Arc<dyn MetaStore>) -> Self {
        Self { inner }
    }
}

/// Times `call`; counts it as an error only when the backend failed (not for
/// "not found" or "conflict" answers).
pub async fn observe<T, E>(
    backend: &'static str,
    op: &'static str,
    call: impl Future<Output = Result<T, E>>,
    is_failure: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let start = Instant::now();
    let result = call.await;
    metrics::histogram!("depot_backend_call_seconds", "backend" => backend, "op" => op)
        .record(start.elapsed().as_secs_f64());
    if let Err(err) = &result
        && is_failure(err)
    {
        metrics::counter!("depot_backend_errors_total", "backend" => backend, "op" => op)
            .increment(1);
    }
    result
}

fn failed(err: &MetaError) -> bool {
    matches!(err, MetaError::Unavailable(_))
}

/// Forwards each listed method to the inner store through `observe`.
macro_rules! metered_methods {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        #[async_trait]
        impl MetaStore for MeteredMetaStore {
            fn health_key(&self) -> &'static str {
                self.inner.health_key()
            }
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    observe("metadata", stringify!($name), self.inner.$name($($arg),*), failed).await
                }
            )*
        }
    };
}

metered_methods! {
    ping() -> MetaResult<()>;
    insert_token(token: &TokenRecord, grants: &[(String, Grant)], events: &[Event]) -> MetaResult<()>;
    token_by_hash(hash: &str) -> MetaResult<Option<TokenRecord>>;
    token_by_id(id: &str) -> MetaResult<Option<TokenRecord>>;
    list_tokens() -> MetaResult<Vec<TokenRecord>>;
    has_admin_token() -> MetaResult<bool>;
    delete_token(id: &str, events: &[Event]) -> MetaResult<bool>;
    set_token_bootstrap(id: &str, bootstrap: bool) -> MetaResult<bool>;
    grants_of_token(token_id: &str) -> MetaResult<Vec<(String, Grant)>>;
    grants_of_product(product: &str) -> MetaResult<Vec<(String, Grant)>>;
    set_grant(product: &str, token_id: &str, grant: Grant, events: &[Event]) -> MetaResult<()>;
    remove_grant(product: &str, token_id: &str, events: &[Event]) -> MetaResult<bool>;
    create_product(product: &ProductRecord, creator_id: &str, events: &[Event]) -> MetaResult<()>;
    product(name: &str) -> MetaResult<Option<ProductRecord>>;
    list_products() -> MetaResult<Vec<String>>;
    product_view(name: &str) -> MetaResult<Option<ProductView>>;
    delete_product(name: &str, event: Event) -> MetaResult<Option<DeletedProduct>>;
    reserve_version(record: &VersionRecord) -> MetaResult<Option<VersionRecord>>;
    commit_version(product: &str, version: &str, blob_key: &str, files: &[FileRecord], labels: &[Label], events: &[Event]) -> MetaResult<()>;
    add_draft_file(draft: &VersionRecord, file: &FileRecord, created_events: &[Event], events: &[Event]) -> MetaResult<bool>;
    remove_draft_file(product: &str, version: &str, name: &str, events: &[Event]) -> MetaResult<FileRecord>;
    publish_draft(product: &str, version: &str, files: Option<&[String]>, labels: &[Label], now_ms: i64, event: Event) -> MetaResult<VersionRecord>;
    set_labels(product: &str, version: &str, changes: &std::collections::BTreeMap<String, Option<String>>, event: Event) -> MetaResult<Vec<Label>>;
    idle_drafts(before_ms: i64) -> MetaResult<Vec<VersionRecord>>;
    remove_pending_version(product: &str, version: &str, blob_key: &str, events: &[Event]) -> MetaResult<()>;
    version(product: &str, version: &str) -> MetaResult<Option<VersionRecord>>;
    list_versions(product: &str) -> MetaResult<Vec<VersionRecord>>;
    versions_page(product: &str, after: Option<&str>, limit: usize, drafts: bool, label: Option<&Label>) -> MetaResult<Vec<VersionRecord>>;
    first_version_of_kind(product: &str, kinds: &[VersionKind], label: Option<&Label>) -> MetaResult<Option<VersionRecord>>;
    delete_version(product: &str, version: &str, idle_before: Option<i64>, event: Event) -> MetaResult<Option<VersionRecord>>;
    expire_version(product: &str, version: &str, blob_key: &str, event: Event) -> MetaResult<Option<VersionRecord>>;
    set_product_settings(product: &str, settings: Option<&crate::domain::retention::ProductSettings>, event: Event) -> MetaResult<Option<crate::domain::retention::ProductSettings>>;
    note_download(product: &str, version: &str, now_ms: i64, stale_before_ms: i64) -> MetaResult<()>;
    take_lease(name: &str, owner: &str, now_ms: i64, until_ms: i64) -> MetaResult<bool>;
    release_lease(name: &str, owner: &str) -> MetaResult<()>;
    product_usage(product: &str, now_ms: i64) -> MetaResult<Option<ProductUsage>>;
    reserve_quota(reservation: &QuotaReservation, quota: &crate::domain::retention::QuotaPolicy, now_ms: i64) -> MetaResult<Result<(), crate::domain::retention::QuotaExceeded>>;
    renew_quota_reservation(id: &str, lease_until: i64) -> MetaResult<bool>;
    release_quota_reservation(id: &str) -> MetaResult<()>;
    prune_quota_reservations(now_ms: i64) -> MetaResult<u64>;
    stale_pending_versions(before_ms: i64) -> MetaResult<Vec<VersionRecord>>;
    blob_key_in_use(key: &str) -> MetaResult<bool>;
    renew_lease(product: &str, version: &str, blob_key: &str, lease_until: i64) -> MetaResult<bool>;
    lapsed_pending_versions(now_ms: i64) -> MetaResult<Vec<VersionRecord>>;
    remove_lapsed_version(product: &str, version: &str, blob_key: &str, now_ms: i64, events: &[Event]) -> MetaResult<bool>;
    events_page(filter: &EventFilter, limit: usize) -> MetaResult<EventPage>;
    insert_trust_policy(policy: &crate::domain::trust::TrustPolicy, max_per_product: usize, events: &[Event]) -> MetaResult<()>;
    trust_policies(product: &str) -> MetaResult<Vec<crate::domain::trust::TrustPolicy>>;
    trust_policies_of_issuer(issuer: &str) -> MetaResult<Vec<crate::domain::trust::TrustPolicy>>;
    delete_trust_policy(product: &str, id: &str, events: &[Event]) -> MetaResult<bool>;
    use_token_once(issuer: &str, jti: &str, until_ms: i64) -> MetaResult<bool>;
    insert_upload_session(session: &UploadSession) -> MetaResult<()>;
    upload_session(id: &str) -> MetaResult<Option<UploadSession>>;
    save_upload_session(session: &UploadSession, from: (u64, bool)) -> MetaResult<bool>;
    delete_upload_session(id: &str) -> MetaResult<bool>;
    upload_sessions(created_by: Option<&str>, limit: usize) -> MetaResult<Vec<UploadSession>>;
    expired_upload_sessions(now_ms: i64, limit: usize) -> MetaResult<Vec<UploadSession>>;
    prune_used_tokens(now_ms: i64) -> MetaResult<u64>;
    insert_webhook(webhook: &WebhookRecord, events: &[Event]) -> MetaResult<()>;
    list_webhooks() -> MetaResult<Vec<WebhookRecord>>;
    webhook(id: &str) -> MetaResult<Option<WebhookRecord>>;
    delete_webhook(id: &str, events: &[Event]) -> MetaResult<bool>;
    lease_webhook(id: &str, owner: &str, now_ms: i64, until_ms: i64) -> MetaResult<bool>;
    queue_deliveries(webhook_id: &str, owner: &str, deliveries: &[DeliveryRecord], cursor: &str) -> MetaResult<bool>;
    next_delivery(webhook_id: &str) -> MetaResult<Option<DeliveryRecord>>;
    save_delivery(delivery: &DeliveryRecord) -> MetaResult<()>;
    delivery(webhook_id: &str, event_id: &str) -> MetaResult<Option<DeliveryRecord>>;
    deliveries(webhook_id: &str, limit: usize) -> MetaResult<Vec<DeliveryRecord>>;
    event(id: &str) -> MetaResult<Option<Event>>;
    events_after(after: &str, limit: usize) -> MetaResult<Vec<Event>>;
    newest_event_id() -> MetaResult<String>;
    prune_events(before_ms: i64) -> MetaResult<u64>;
}
