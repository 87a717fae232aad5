//! The metadata store: tokens, products, grants and versions. One trait, one file per
//! implementation (`embedded` on redb, `mongo` on MongoDB). Implementations keep every
//! change that must be atomic inside one transaction or one single-document write.

use crate::domain::assets::Label;
use crate::domain::events::{Event, EventFilter};
use crate::domain::permissions::Grant;
use crate::domain::version::VersionKind;
use crate::error::{AssetRefusal, MetaError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod embedded;
pub mod metered;
pub mod mongo;

pub type MetaResult<T> = Result<T, MetaError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public, non-secret id (`tok_...`): what listings and grant maps show.
    pub id: String,
    /// SHA-256 hex of the raw token: the lookup key. Never shown to clients.
    pub hash: String,
    pub admin: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    #[serde(default)]
    pub name: Option<String>,
    /// Unix milliseconds; `None` = never expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Public id of the token that minted this one over `PUT /register`; `None` for
    /// tokens created at start-up (`DEPOT_ADMIN_TOKEN`, the first admin) or by
    /// `depot token create`. Pruning a token prunes every token below it.
    #[serde(default)]
    pub parent: Option<String>,
    /// True for the token registered from `DEPOT_ADMIN_TOKEN`: when that setting changes,
    /// the next start revokes it.
    #[serde(default)]
    pub bootstrap: bool,
    /// True for a token issued by an OIDC exchange (trusted publishing): short-lived,
    /// and it may not mint other tokens.
    #[serde(default)]
    pub exchanged: bool,
}

impl TokenRecord {
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms)
    }
}

/// Every token minted below one of `roots` (children, grandchildren, ...), from one
/// listing. The roots are not included; a cycle (impossible through the API) cannot loop.
pub fn descendants(tokens: &[TokenRecord], roots: &[String]) -> Vec<TokenRecord> {
    let mut out: Vec<TokenRecord> = Vec::new();
    let mut seen: std::collections::HashSet<String> = roots.iter().cloned().collect();
    let mut frontier = roots.to_vec();
    while let Some(parent) = frontier.pop() {
        for t in tokens {
            if t.parent.as_deref() == Some(parent.as_str()) && seen.insert(t.id.clone()) {
                frontier.push(t.id.clone());
                out.push(t.clone());
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductRecord {
    pub name: String,
    pub created_at: i64,
    /// Its own retention and quota settings; `None`: the server's defaults apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<crate::domain::retention::ProductSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Reserved by an upload in flight: invisible to readers, blocks duplicates.
    Pending,
    /// Being filled file by file (`PUT /product/upload/{p}/{v}/{file}`); visible only to
    /// tokens that may upload, never `latest`, until published.
    Draft,
    /// Published: immutable. (Stored as `committed`, its name from before drafts.)
    Committed,
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub size: u64,
    /// SHA-256 hex.
    pub checksum: String,
    /// Where the blob store keeps the bytes; unique per upload attempt.
    pub blob_key: String,
    /// Unix milliseconds.
    pub uploaded_at: i64,
    /// Public id of the uploading token.
    pub uploaded_by: String,
}

/// A version. `file_name`, `size`, `checksum` and `blob_key` describe its *primary* file
/// (the one the seed's one-file download serves: its first committed file); `files` holds
/// every file in commit order. Records from before several files per version have no
/// `files`: [`VersionRecord::all_files`] reads them as their one primary file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub product: String,
    pub version: String,
    pub file_name: String,
    pub size: u64,
    /// SHA-256 hex of the artifact (empty while pending).
    pub checksum: String,
    /// Where the blob store keeps the bytes; unique per upload attempt. While pending: the
    /// reservation's key (its first file's), which commit and cleanup match on.
    pub blob_key: String,
    pub state: VersionState,
    /// Unix milliseconds.
    pub uploaded_at: i64,
    /// Public id of the uploading token.
    pub uploaded_by: String,
    /// `domain::version::sort_key`: listing order as plain byte order.
    #[serde(default)]
    pub sort_key: String,
    #[serde(default)]
    pub kind: VersionKind,
    /// While pending: Unix milliseconds until which the uploading process holds the
    /// reservation; it renews the lease while bytes arrive. Once it has passed, the
    /// upload counts as dead (on any replica): a new upload may take the version over and
    /// the janitor removes what it left. `None` (records written before leases, and
    /// committed ones) leaves a pending record to the janitor's grace.
    #[serde(default)]
    pub lease_until: Option<i64>,
    /// Unix milliseconds of the last download that was recorded (at most one write an
    /// hour per version, see `ops::retention::note_download`); `None`: never.
    #[serde(default)]
    pub last_download_at: Option<i64>,
    #[serde(default)]
    pub files: Vec<FileRecord>,
    /// Sorted by key.
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Unix milliseconds of the last change to a draft (its expiry counts from here).
    #[serde(default)]
    pub updated_at: i64,
}

impl VersionRecord {
    /// Every file, in commit order; a record from before `files` existed has its one.
    pub fn all_files(&self) -> std::borrow::Cow<'_, [FileRecord]> {
        if self.files.is_empty() && self.state == VersionState::Committed {
            std::borrow::Cow::Owned(vec![FileRecord {
                name: self.file_name.clone(),
                size: self.size,
                checksum: self.checksum.clone(),
                blob_key: self.blob_key.clone(),
                uploaded_at: self.uploaded_at,
                uploaded_by: self.uploaded_by.clone(),
            }])
        } else {
            std::borrow::Cow::Borrowed(&self.files)
        }
    }

    /// The file of that name.
    pub fn file(&self, name: &str) -> Option<FileRecord> {
        self.all_files().iter().find(|f| f.name == name).cloned()
    }

    /// The primary file: the only one, else the first committed.
    pub fn primary(&self) -> Option<FileRecord> {
        self.all_files().first().cloned()
    }

    /// Makes `file` the one the primary fields describe (on publish, and to serve one file
    /// of a version through the one-file download path).
    pub fn with_primary(mut self, file: &FileRecord) -> Self {
        self.file_name = file.name.clone();
        self.size = file.size;
        self.checksum = file.checksum.clone();
        self.blob_key = file.blob_key.clone();
        self
    }

    /// Every blob key the record points at (pending reservation, primary, files).
    pub fn blob_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.files.iter().map(|f| f.blob_key.clone()).collect();
        if !self.blob_key.is_empty() && !keys.contains(&self.blob_key) {
            keys.push(self.blob_key.clone());
        }
        keys
    }

    /// A pending record whose uploader stopped renewing its lease before `now_ms`.
    pub fn lease_lapsed(&self, now_ms: i64) -> bool {
        self.state == VersionState::Pending && self.lease_until.is_some_and(|until| until < now_ms)
    }
}

/// Bytes (and possibly a new version) an upload in flight holds against its product's
/// quota, from before its first byte is stored until it commits or fails. It counts only
/// while its lease is live: a crashed upload's reservation stops counting on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaReservation {
    /// `qr_` + random hex; the upload that holds it extends and releases it by this id.
    pub id: String,
    pub product: String,
    /// The version the upload goes into: a new one counts against `max_versions`.
    pub version: String,
    /// The blob key of the upload's (first) file: a file stored under it means the upload
    /// committed, and its bytes count as files from then on.
    pub blob_key: String,
    pub bytes: u64,
    /// Unix milliseconds.
    pub lease_until: i64,
}

/// How an [`UploadSession`] receives its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    /// tus 1.0: over many `PATCH` requests to Depot.
    Resumable,
    /// One `PUT` straight to the bucket (or to Depot's signed URL on the filesystem).
    Direct,
}

/// An upload that outlives a request: created with every check done, then fed (tus) or
/// put (direct), then committed into its version or draft. Removed when it is terminated,
/// failed verification, or expired; a committed one is kept, `completed`, until it
/// expires, so a client that missed the last answer can still ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadSession {
    /// 32 random lowercase hex digits: the only handle on the upload, so unguessable.
    pub id: String,
    pub kind: UploadKind,
    pub product: String,
    pub version: String,
    pub file_name: String,
    /// Into the version's draft (else: publishes the version, reserved as pending).
    pub draft: bool,
    /// The file's declared length.
    pub length: u64,
    /// The declared SHA-256 (lowercase hex), if any (always, for a direct upload).
    pub checksum: Option<String>,
    pub blob_key: String,
    /// The token that created it: the only one (besides admins) that sees it.
    pub created_by: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub expires_at: i64,
    /// The quota reservation it holds until it ends, when a quota applies.
    pub quota_reservation: Option<String>,
    /// Bytes durably stored (tus).
    pub offset: u64,
    /// SHA-256 state over the first `offset` bytes ([`crate::digest::ResumableSha256::save`]).
    pub hash_state: String,
    /// Where the blob store's resumable write stands (tus).
    pub stored: crate::blob::ResumePoint,
    /// The file is committed.
    pub completed: bool,
}

/// What a product holds, counted from its records: every file of its published versions
/// and drafts, plus the bytes reserved by uploads in flight (`in_flight_bytes`, also in
/// `bytes`). `versions` counts published versions, drafts, and versions being uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUsage {
    pub bytes: u64,
    pub versions: u64,
    pub files: u64,
    pub drafts: u64,
    pub in_flight_bytes: u64,
}

impl ProductUsage {
    /// The figures a quota is checked against.
    pub fn quota_usage(&self) -> crate::domain::retention::Usage {
        crate::domain::retention::Usage {
            bytes: self.bytes,
            versions: self.versions,
        }
    }
}

/// What a reservation request is judged as: `wanted.bytes` is the total the upload wants
/// to hold, so what it adds is that less what its reservation holds while live. A
/// reservation that lapsed or was removed (it no longer counts) is taken whole again.
pub fn judged_reservation(
    held: &[QuotaReservation],
    wanted: &QuotaReservation,
    now_ms: i64,
) -> QuotaReservation {
    let mut judged = wanted.clone();
    if let Some(live) = held
        .iter()
        .find(|r| r.id == wanted.id && r.lease_until >= now_ms)
    {
        judged.bytes = judged.bytes.saturating_sub(live.bytes);
    }
    judged
}

/// Adds up a product's usage over one scan of its version records, in memory bounded by
/// the live reservations (not by the number of versions).
///
/// A reservation counts until the upload holding it is committed: once the scan finds a
/// file stored under the reservation's blob key, its bytes are in the files (all of an
/// upload's files commit together), so it counts nothing more even before its upload
/// releases it. A reservation's version counts once, unless the scan finds a record of it.
pub struct UsageTally {
    usage: ProductUsage,
    now_ms: i64,
    /// Live reservations, and whether the scan found their upload committed.
    live: Vec<(QuotaReservation, bool)>,
    /// Versions named by live reservations and not (yet) seen among the records.
    reserved_versions: std::collections::BTreeSet<String>,
    /// The version a reservation being judged goes into, and whether the product holds it.
    watched: Option<(String, bool)>,
}

impl UsageTally {
    /// Starts from the product's reservations; lapsed ones do not count.
    pub fn new<'a>(
        reservations: impl IntoIterator<Item = &'a QuotaReservation>,
        now_ms: i64,
    ) -> Self {
        let live: Vec<(QuotaReservation, bool)> = reservations
            .into_iter()
            .filter(|r| r.lease_until >= now_ms)
            .map(|r| (r.clone(), false))
            .collect();
        let reserved_versions = live.iter().map(|(r, _)| r.version.clone()).collect();
        UsageTally {
            usage: ProductUsage::default(),
            now_ms,
            live,
            reserved_versions,
            watched: None,
        }
    }

    /// Starts the tally that judges `reservation` (see [`UsageTally::judge`]).
    pub fn for_reservation<'a>(
        reservations: impl IntoIterator<Item = &'a QuotaReservation>,
        reservation: &QuotaReservation,
        now_ms: i64,
    ) -> Self {
        let mut tally = UsageTally::new(reservations, now_ms);
        let held = tally.reserved_versions.contains(&reservation.version);
        tally.watched = Some((reservation.version.clone(), held));
        tally
    }

    /// Whether the product, as tallied, has room for `reservation`'s bytes and, when its
    /// version is new, for one more version.
    pub fn judge(
        self,
        reservation: &QuotaReservation,
        quota: &crate::domain::retention::QuotaPolicy,
    ) -> Result<(), crate::domain::retention::QuotaExceeded> {
        let holds_version = self.watched.as_ref().is_some_and(|(_, held)| *held);
        let usage = self.finish();
        crate::domain::retention::check_quota(
            quota,
            &usage.quota_usage(),
            reservation.bytes,
            !holds_version,
        )
    }

    /// One version record. A pending one counts as a version while its upload's lease
    /// is live (its bytes are in the upload's reservation).
    pub fn add(&mut self, record: &VersionRecord) {
        let files = record.all_files();
        self.add_parts(
            &record.version,
            record.state,
            record.lease_lapsed(self.now_ms),
            files.iter().map(|f| (f.size, f.blob_key.as_str())),
        );
    }

    /// [`UsageTally::add`] from the parts it reads (a store may fetch only these): the
    /// version, its state, whether it is a pending record whose lease lapsed, and the
    /// size and blob key of each file.
    pub fn add_parts<'a>(
        &mut self,
        version: &str,
        state: VersionState,
        lease_lapsed: bool,
        files: impl Iterator<Item = (u64, &'a str)>,
    ) {
        if lease_lapsed {
            return;
        }
        self.reserved_versions.remove(version);
        if let Some((watched, held)) = self.watched.as_mut()
            && watched == version
        {
            *held = true;
        }
        if state == VersionState::Draft {
            self.usage.drafts += 1;
        }
        if state != VersionState::Pending {
            for (size, blob_key) in files {
                self.usage.files += 1;
                self.usage.bytes = self.usage.bytes.saturating_add(size);
                for (reservation, committed) in self.live.iter_mut() {
                    if reservation.blob_key == blob_key {
                        *committed = true;
                    }
                }
            }
        }
        self.usage.versions += 1;
    }

    /// The time lapsed leases are judged at.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub fn finish(self) -> ProductUsage {
        let mut usage = self.usage;
        usage.versions += self.reserved_versions.len() as u64;
        usage.in_flight_bytes = self
            .live
            .iter()
            .filter(|(_, committed)| !committed)
            .fold(0u64, |sum, (r, _)| sum.saturating_add(r.bytes));
        usage.bytes = usage.bytes.saturating_add(usage.in_flight_bytes);
        usage
    }
}

/// A product with its grants and committed versions, as `GET /product/fetch` shows it.
pub struct ProductView {
    pub record: ProductRecord,
    pub grants: Vec<(String, Grant)>,
    pub versions: Vec<VersionRecord>,
}

/// A webhook: where to POST which events, and how far its delivery has got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// `wh_` + 16 hex.
    pub id: String,
    pub url: String,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    /// Only this product's events; `None` = every event (admins only).
    pub product: Option<String>,
    /// The HMAC key of `X-Depot-Signature-256`. Never returned by the API, never in an
    /// event or a log line.
    pub secret: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Public id of the token that created it.
    pub created_by: String,
    /// Id of the last event already queued (or skipped) for this webhook; delivery goes on
    /// after it. A new webhook starts at the newest event of its creation time.
    pub cursor: String,
    /// The replica delivering for this webhook, and until when (Unix ms): one at a time.
    #[serde(default)]
    pub lease_owner: Option<String>,
    #[serde(default)]
    pub lease_until: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Unix milliseconds; the retry window runs from the first attempt.
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub next_attempt_at: i64,
}

/// One page of `GET /audit`, newest first.
#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where the next page starts (an event id), when more may follow: after a full page,
    /// or when a scan stopped at its bound before filling one.
    pub next_before: Option<String>,
}

/// What a product deletion removed, so the caller can delete blobs and invalidate caches.
#[derive(Debug, Default)]
pub struct DeletedProduct {
    pub versions: Vec<VersionRecord>,
    pub token_ids: Vec<String>,
}

#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Name used as the `/health` key for this store.
    fn health_key(&self) -> &'static str;
    async fn ping(&self) -> MetaResult<()>;

    // Every change takes the events that describe it and stores them atomically with it
    // (one transaction): a change whose events cannot be stored does not happen, and a
    // change that does not happen (not found, conflict) stores none.

    // Tokens.
    /// Inserts a token and, atomically with it, its initial grants.
    async fn insert_token(
        &self,
        token: &TokenRecord,
        grants: &[(String, Grant)],
        events: &[Event],
    ) -> MetaResult<()>;
    async fn token_by_hash(&self, hash: &str) -> MetaResult<Option<TokenRecord>>;
    async fn token_by_id(&self, id: &str) -> MetaResult<Option<TokenRecord>>;
    async fn list_tokens(&self) -> MetaResult<Vec<TokenRecord>>;
    async fn has_admin_token(&self) -> MetaResult<bool>;
    /// Deletes the token and every grant it had. False (and no event) when it did not exist.
    async fn delete_token(&self, id: &str, events: &[Event]) -> MetaResult<bool>;
    /// Marks (or unmarks) a token as the one registered from `DEPOT_ADMIN_TOKEN`.
    /// False when it does not exist.
    async fn set_token_bootstrap(&self, id: &str, bootstrap: bool) -> MetaResult<bool>;

    // Grants.
    async fn grants_of_token(&self, token_id: &str) -> MetaResult<Vec<(String, Grant)>>;
    async fn grants_of_product(&self, product: &str) -> MetaResult<Vec<(String, Grant)>>;
    /// Creates or replaces a grant. `NotFound` when the product does not exist.
    async fn set_grant(
        &self,
        product: &str,
        token_id: &str,
        grant: Grant,
        events: &[Event],
    ) -> MetaResult<()>;
    /// False (and no event) when there was no such grant.
    async fn remove_grant(
        &self,
        product: &str,
        token_id: &str,
        events: &[Event],
    ) -> MetaResult<bool>;

    // Products.
    /// Creates the product with an all-flags grant for its creator. `Conflict` on duplicates.
    async fn create_product(
        &self,
        product: &ProductRecord,
        creator_id: &str,
        events: &[Event],
    ) -> MetaResult<()>;
    async fn product(&self, name: &str) -> MetaResult<Option<ProductRecord>>;
    async fn list_products(&self) -> MetaResult<Vec<String>>;
    /// The product, its grants and its committed versions; `None` when it does not exist.
    /// Stores that can read all three at once override this.
    async fn product_view(&self, name: &str) -> MetaResult<Option<ProductView>> {
        let (record, grants, versions) = tokio::try_join!(
            self.product(name),
            self.grants_of_product(name),
            self.list_versions(name),
        )?;
        Ok(record.map(|record| ProductView {
            record,
            grants,
            versions,
        }))
    }
    /// Removes the product with its grants and version records. `None` when missing.
    /// The store completes `event.details` with what it removed
    /// ([`product_deleted_details`]).
    async fn delete_product(&self, name: &str, event: Event) -> MetaResult<Option<DeletedProduct>>;

    // Versions.
    /// Reserves (product, version) as pending. A pending record whose lease has lapsed
    /// is replaced atomically and returned, so the caller can discard what its dead
    /// upload left. `Conflict` when the version is committed, `Pending` when another
    /// upload of it holds a live reservation, `NotFound` when the product does not exist.
    async fn reserve_version(&self, record: &VersionRecord) -> MetaResult<Option<VersionRecord>>;
    /// Flips a pending reservation (matched by blob key) to published with its files
    /// (the first is the primary) and labels.
    async fn commit_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        files: &[FileRecord],
        labels: &[Label],
        events: &[Event],
    ) -> MetaResult<()>;
    /// Adds a committed file to the draft `draft.version`, creating the draft from `draft`
    /// when the version does not exist (then `created_events` are stored too). True when
    /// it created the draft. `Conflict` when the version is published, `Pending` while a
    /// one-request upload of it runs, `Asset(FileExists | TooManyFiles)`, `NotFound` when
    /// the product does not exist.
    async fn add_draft_file(
        &self,
        draft: &VersionRecord,
        file: &FileRecord,
        created_events: &[Event],
        events: &[Event],
    ) -> MetaResult<bool>;
    /// Removes a file from a draft and returns it. `Asset(Published)` on a published
    /// version, `Asset(FileNotFound)`, `NotFound` without such a draft.
    async fn remove_draft_file(
        &self,
        product: &str,
        version: &str,
        name: &str,
        events: &[Event],
    ) -> MetaResult<FileRecord>;
    /// Seals a draft: published, with `labels`, its primary file set and `sort_key`
    /// recomputed for `now_ms`. `files`, when given, must name exactly the draft's files
    /// (`Asset(FilesMismatch)`); a draft without files is `Asset(EmptyVersion)`;
    /// `Conflict` when already published; `NotFound` without a draft. The store completes
    /// `event.details` ([`published_details`]).
    async fn publish_draft(
        &self,
        product: &str,
        version: &str,
        files: Option<&[String]>,
        labels: &[Label],
        now_ms: i64,
        event: Event,
    ) -> MetaResult<VersionRecord>;
    /// Applies label changes (`None` removes) to a draft or published version and returns
    /// the new labels. The event (completed with [`labels_details`]) is stored only when
    /// something changed. `NotFound` without such a version.
    async fn set_labels(
        &self,
        product: &str,
        version: &str,
        changes: &std::collections::BTreeMap<String, Option<String>>,
        event: Event,
    ) -> MetaResult<Vec<Label>>;
    /// Drops a pending reservation (matched by blob key); committed records are untouched.
    /// The events are stored only when a record was removed.
    async fn remove_pending_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        events: &[Event],
    ) -> MetaResult<()>;
    /// A published version or a draft (never a pending reservation).
    async fn version(&self, product: &str, version: &str) -> MetaResult<Option<VersionRecord>>;
    /// All published versions and drafts of a product, in no particular order.
    async fn list_versions(&self, product: &str) -> MetaResult<Vec<VersionRecord>>;
    /// Up to `limit` versions in listing order (ascending `sort_key`), starting after the
    /// sort key `after`: published ones, drafts too when `drafts`, and only those
    /// carrying `label` when one is given.
    async fn versions_page(
        &self,
        product: &str,
        after: Option<&str>,
        limit: usize,
        drafts: bool,
        label: Option<&Label>,
    ) -> MetaResult<Vec<VersionRecord>>;
    /// The first published version in listing order whose kind is one of `kinds` (and
    /// that carries `label`, when given).
    async fn first_version_of_kind(
        &self,
        product: &str,
        kinds: &[VersionKind],
        label: Option<&Label>,
    ) -> MetaResult<Option<VersionRecord>>;
    /// Deletes a published version or a draft and returns its record; with `idle_before`,
    /// only a draft last changed before then (the janitor's expiry). The store completes
    /// `event.details` from the record ([`version_details`]).
    async fn delete_version(
        &self,
        product: &str,
        version: &str,
        idle_before: Option<i64>,
        event: Event,
    ) -> MetaResult<Option<VersionRecord>>;
    /// Deletes the published version that retention judged (matched by its blob key, so
    /// a version deleted and uploaded again meanwhile is left alone) with its event.
    async fn expire_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        event: Event,
    ) -> MetaResult<Option<VersionRecord>>;
    /// Replaces a product's settings (`None`: back to the server's defaults) with its
    /// event, whose details gain `old`; returns the settings it replaced.
    async fn set_product_settings(
        &self,
        product: &str,
        settings: Option<&crate::domain::retention::ProductSettings>,
        event: Event,
    ) -> MetaResult<Option<crate::domain::retention::ProductSettings>>;
    /// Records a download at `now_ms` unless one after `stale_before_ms` is recorded.
    async fn note_download(
        &self,
        product: &str,
        version: &str,
        now_ms: i64,
        stale_before_ms: i64,
    ) -> MetaResult<()>;
    /// Takes (or renews) the named lease for `owner` until `until_ms`; false while another
    /// owner holds it unlapsed at `now_ms`. One retention run at a time across replicas.
    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> MetaResult<bool>;
    /// Gives the named lease back if `owner` holds it (lapsed or not), leaving no record of
    /// it: leases named after one upload are not taken again once it has ended.
    async fn release_lease(&self, name: &str, owner: &str) -> MetaResult<()>;
    /// What the product holds now ([`ProductUsage`]); `None` when it does not exist.
    async fn product_usage(&self, product: &str, now_ms: i64) -> MetaResult<Option<ProductUsage>>;
    /// Holds `reservation.bytes` in all against the product's `quota`, atomically with the
    /// check against everything the product holds and every live reservation (two
    /// uploads can never both pass a limit): a new reservation, or a larger one and a new
    /// lease for the one with that id (what it adds is judged: [`judged_reservation`]).
    /// `Ok(Err(_))`: refused, nothing written.
    /// `NotFound` when the product does not exist.
    async fn reserve_quota(
        &self,
        reservation: &QuotaReservation,
        quota: &crate::domain::retention::QuotaPolicy,
        now_ms: i64,
    ) -> MetaResult<Result<(), crate::domain::retention::QuotaExceeded>>;
    /// Extends a reservation's lease; false when it is gone.
    async fn renew_quota_reservation(&self, id: &str, lease_until: i64) -> MetaResult<bool>;
    /// Drops a reservation (its upload committed or failed); nothing when it is gone.
    async fn release_quota_reservation(&self, id: &str) -> MetaResult<()>;
    /// Removes reservations whose lease lapsed before `now_ms`; how many.
    async fn prune_quota_reservations(&self, now_ms: i64) -> MetaResult<u64>;
    /// Drafts last changed before `before_ms`.
    async fn idle_drafts(&self, before_ms: i64) -> MetaResult<Vec<VersionRecord>>;
    /// Pending reservations older than `before_ms` (left by crashes).
    async fn stale_pending_versions(&self, before_ms: i64) -> MetaResult<Vec<VersionRecord>>;
    /// Whether any version record (pending or committed) points at this blob key.
    async fn blob_key_in_use(&self, key: &str) -> MetaResult<bool>;
    /// Extends the lease of the pending record (matched by blob key) to `lease_until`.
    /// False when that reservation is gone (committed, removed or taken over).
    async fn renew_lease(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        lease_until: i64,
    ) -> MetaResult<bool>;
    /// Pending records whose lease lapsed before `now_ms`.
    async fn lapsed_pending_versions(&self, now_ms: i64) -> MetaResult<Vec<VersionRecord>>;
    /// Removes the pending record (matched by blob key) if its lease still lapsed before
    /// `now_ms` (not renewed meanwhile). True when it removed it.
    async fn remove_lapsed_version(
        &self,
        product: &str,
        version: &str,
        blob_key: &str,
        now_ms: i64,
        events: &[Event],
    ) -> MetaResult<bool>;

    // Upload sessions (tus and direct uploads).
    /// Stores a new session; `Conflict` if its id exists.
    async fn insert_upload_session(&self, session: &UploadSession) -> MetaResult<()>;
    async fn upload_session(&self, id: &str) -> MetaResult<Option<UploadSession>>;
    /// Replaces the session if its stored `offset` and `completed` are still `from`
    /// (compare and set: a stale writer cannot roll progress back); false otherwise.
    async fn save_upload_session(
        &self,
        session: &UploadSession,
        from: (u64, bool),
    ) -> MetaResult<bool>;
    /// Removes a session; false when it was gone.
    async fn delete_upload_session(&self, id: &str) -> MetaResult<bool>;
    /// Sessions created by `created_by` (every session when `None`), oldest first, at
    /// most `limit`.
    async fn upload_sessions(
        &self,
        created_by: Option<&str>,
        limit: usize,
    ) -> MetaResult<Vec<UploadSession>>;
    /// Sessions that expired before `now_ms`, at most `limit`.
    async fn expired_upload_sessions(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> MetaResult<Vec<UploadSession>>;

    // Trusted publishing.
    /// Stores a trust policy with its event. `NotFound` when its product does not exist,
    /// `Conflict` when the product holds `max_per_product` policies already (checked in
    /// the same transaction).
    async fn insert_trust_policy(
        &self,
        policy: &crate::domain::trust::TrustPolicy,
        max_per_product: usize,
        events: &[Event],
    ) -> MetaResult<()>;
    /// A product's trust policies, oldest first.
    async fn trust_policies(
        &self,
        product: &str,
    ) -> MetaResult<Vec<crate::domain::trust::TrustPolicy>>;
    /// Every trust policy naming `issuer` (of any product): what an exchange matches.
    async fn trust_policies_of_issuer(
        &self,
        issuer: &str,
    ) -> MetaResult<Vec<crate::domain::trust::TrustPolicy>>;
    /// Deletes a product's policy with its event; false (and no event) when there is none.
    async fn delete_trust_policy(
        &self,
        product: &str,
        id: &str,
        events: &[Event],
    ) -> MetaResult<bool>;
    /// Records that the OIDC token `jti` of `issuer` was exchanged, until `until_ms`;
    /// false when it already was (a replay, on any replica).
    async fn use_token_once(&self, issuer: &str, jti: &str, until_ms: i64) -> MetaResult<bool>;
    /// Forgets used token ids whose tokens expired before `now_ms`; how many.
    async fn prune_used_tokens(&self, now_ms: i64) -> MetaResult<u64>;

    // Webhooks.
    async fn insert_webhook(&self, webhook: &WebhookRecord, events: &[Event]) -> MetaResult<()>;
    async fn list_webhooks(&self) -> MetaResult<Vec<WebhookRecord>>;
    async fn webhook(&self, id: &str) -> MetaResult<Option<WebhookRecord>>;
    /// Deletes the webhook with its deliveries. False (and no event) when it did not exist.
    async fn delete_webhook(&self, id: &str, events: &[Event]) -> MetaResult<bool>;
    /// Takes (or renews) the webhook's delivery lease for `owner` until `until_ms`; false
    /// when another owner holds a lease that has not lapsed at `now_ms`.
    async fn lease_webhook(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> MetaResult<bool>;
    /// Queues `deliveries` (ones already there are kept as they are) and moves the
    /// webhook's cursor to `cursor`, if `owner` still holds its lease. False otherwise.
    async fn queue_deliveries(
        &self,
        webhook_id: &str,
        owner: &str,
        deliveries: &[DeliveryRecord],
        cursor: &str,
    ) -> MetaResult<bool>;
    /// The pending delivery with the lowest event id: deliveries go out in event order.
    async fn next_delivery(&self, webhook_id: &str) -> MetaResult<Option<DeliveryRecord>>;
    /// Stores a delivery's new state (creating it if needed).
    async fn save_delivery(&self, delivery: &DeliveryRecord) -> MetaResult<()>;
    async fn delivery(
        &self,
        webhook_id: &str,
        event_id: &str,
    ) -> MetaResult<Option<DeliveryRecord>>;
    /// Up to `limit` deliveries of a webhook, newest event first.
    async fn deliveries(&self, webhook_id: &str, limit: usize) -> MetaResult<Vec<DeliveryRecord>>;

    // Events.
    /// One event by id.
    async fn event(&self, id: &str) -> MetaResult<Option<Event>>;
    /// Up to `limit` events with an id above `after`, oldest first: what a webhook's
    /// delivery reads next.
    async fn events_after(&self, after: &str, limit: usize) -> MetaResult<Vec<Event>>;
    /// The newest event id (`""` when there is none).
    async fn newest_event_id(&self) -> MetaResult<String>;
    /// Up to `limit` events matching `filter`, newest first.
    async fn events_page(&self, filter: &EventFilter, limit: usize) -> MetaResult<EventPage>;
    /// Removes events older than `before_ms` (audit retention); returns how many.
    async fn prune_events(&self, before_ms: i64) -> MetaResult<u64>;
}

/// `details` of `version.deleted`: the primary file as stored, the state and the file count.
pub fn version_details(r: &VersionRecord) -> serde_json::Value {
    serde_json::json!({
        "file_name": r.file_name,
        "size": r.size,
        "checksum": r.checksum,
        "uploaded_by": r.uploaded_by,
        "state": if r.state == VersionState::Draft { "draft" } else { "published" },
        "files": r.all_files().len(),
    })
}

/// `details` of `version.deleted` as stored: [`version_details`] plus what the caller
/// already put there (the janitor's `reason`).
pub fn deleted_details(r: &VersionRecord, given: &serde_json::Value) -> serde_json::Value {
    let mut details = version_details(r);
    if let (Some(out), Some(given)) = (details.as_object_mut(), given.as_object()) {
        out.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    details
}

/// `details` of `version.published`: the primary file, every file and the labels.
pub fn published_details(r: &VersionRecord) -> serde_json::Value {
    let files: Vec<serde_json::Value> = r
        .all_files()
        .iter()
        .map(|f| serde_json::json!({"name": f.name, "size": f.size, "checksum": f.checksum}))
        .collect();
    serde_json::json!({
        "file_name": r.file_name,
        "size": r.size,
        "checksum": r.checksum,
        "uploaded_by": r.uploaded_by,
        "files": files,
        "labels": crate::domain::assets::labels_map(&r.labels),
    })
}

/// `details` of `version.labeled`: what was set and what removed.
pub fn labels_details(change: &crate::domain::assets::LabelChange) -> serde_json::Value {
    serde_json::json!({ "set": change.set, "removed": change.removed })
}

/// `details` of `product.deleted`: how much went with it.
pub fn product_deleted_details(d: &DeletedProduct) -> serde_json::Value {
    serde_json::json!({
        "versions": d.versions.len(),
        "grants": d.token_ids.len(),
    })
}

/// Whether a draft holding `existing` files may take one more named `name`.
pub fn check_can_add<'a>(
    mut existing: impl ExactSizeIterator<Item = &'a str>,
    name: &str,
) -> Result<(), AssetRefusal> {
    if existing.len() >= crate::domain::assets::MAX_FILES {
        return Err(AssetRefusal::TooManyFiles);
    }
    if existing.any(|n| n == name) {
        return Err(AssetRefusal::FileExists);
    }
    Ok(())
}

/// A draft sealed into a published version at `now_ms`: its files checked against the
/// publish's list, its first file the primary, `labels` merged over its own, its listing
/// position that of a version published now.
pub fn seal(
    draft: VersionRecord,
    files: Option<&[String]>,
    labels: Vec<Label>,
    now_ms: i64,
) -> Result<VersionRecord, AssetRefusal> {
    if let Some(listed) = files
        && !crate::domain::assets::same_files(listed, draft.files.iter().map(|f| f.name.as_str()))
    {
        return Err(AssetRefusal::FilesMismatch);
    }
    let Some(primary) = draft.files.first().cloned() else {
        return Err(AssetRefusal::EmptyVersion);
    };
    let changes = labels.into_iter().map(|l| (l.key, Some(l.value))).collect();
    let (labels, _) = crate::domain::assets::apply_label_changes(&draft.labels, &changes)
        .map_err(|e| AssetRefusal::InvalidLabel(e.to_string()))?;
    let mut record = draft.with_primary(&primary);
    record.state = VersionState::Committed;
    record.labels = labels;
    record.uploaded_at = now_ms;
    record.updated_at = now_ms;
    record.sort_key = crate::domain::version::sort_key(&record.version, now_ms);
    Ok(record)
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The key under which a used OIDC token id is remembered: a digest of issuer and `jti`
/// (fixed length whatever the claim holds).
pub fn used_token_key(issuer: &str, jti: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(issuer.as_bytes());
    hasher.update([0u8]);
    hasher.update(jti.as_bytes());
    hex::encode(hasher.finalize())
}
