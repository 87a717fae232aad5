//! The upload commit protocol, the same for every backend:
//!
//! 0. admission: a slot among `DEPOT_MAX_CONCURRENT_UPLOADS` (else 503 `too_busy`);
//! 1. authorize, then reserve (product, version) as *pending*: the unique record decides
//!    races, so exactly one concurrent upload of a version proceeds;
//! 2. stream the multipart `file` field into a blob writer under a fresh key, counting
//!    bytes against the limit and hashing with SHA-256 on the way;
//! 3. verify the client's expected digest, finish the blob, flip the record to committed.
//!
//! The form is read by [`multipart::FormReader`], which bounds everything outside the
//! file (64 KiB, 16 fields, each of `product`/`version`/`checksum` once) and times out a
//! body that stops sending. Fields may come in any order: when `file` arrives before
//! `product`/`version`, it is streamed first (only for a token that may upload somewhere,
//! and only a few such streams per token at once) and step 1 happens afterwards. Any
//! error, or the request future being dropped (client gone), runs `UploadGuard::drop`,
//! which aborts the blob and removes the pending record; the janitor handles what a
//! crash leaves.

pub mod direct;
pub mod lease;
mod multipart;
pub mod resumable;
pub mod session;
mod staging;

use crate::app::AppState;
use crate::auth::Caller;
use crate::blob::{BlobWriter, new_blob_key};
use crate::domain::assets::{AssetError, CHECKSUMS_FILE, MAX_FILES, check_file_name, new_labels};
use crate::domain::names::{sanitize_file_name, validate_new_version, validate_product};
use crate::domain::permissions::ProductOp;
use crate::domain::version::{kind_of, sort_key};
use crate::error::AssetRefusal;
use crate::error::{ApiError, ApiResult, BUSY_RETRY_AFTER_SECONDS, BlobError, MetaError};
use crate::meta::{FileRecord, VersionRecord, VersionState, check_can_add, now_ms};
use crate::ops::quota::QuotaTicket;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use multipart::{ENVELOPE_LIMIT, FormError, FormReader};
use staging::{BackgroundHasher, Staging, pass_on};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One text field's longest value.
const MAX_TEXT_FIELD: usize = 1024;

/// How many uploads run at once, and how many per token stream a file before their
/// product is known (such a stream cannot be authorized until the form names it).
#[derive(Clone)]
pub struct UploadLimits {
    slots: Arc<Semaphore>,
    early_per_token: usize,
    early: Arc<Mutex<HashMap<String, usize>>>,
}

impl UploadLimits {
    pub fn new(max_uploads: usize, early_per_token: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_uploads)),
            early_per_token,
            early: Arc::default(),
        }
    }

    fn admit(&self) -> ApiResult<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::too_busy(
                "the server is running as many uploads as it allows (DEPOT_MAX_CONCURRENT_UPLOADS); retry later",
                BUSY_RETRY_AFTER_SECONDS,
            )
        })
    }

    fn early_file(&self, token_id: &str) -> ApiResult<EarlyFileSlot> {
        let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
        let running = early.entry(token_id.to_string()).or_default();
        if *running >= self.early_per_token {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                "this token already streams as many files before naming their product as allowed \
                 (DEPOT_MAX_EARLY_FILE_UPLOADS_PER_TOKEN); send product and version before the file, or retry later",
            )
            .with_retry_after(BUSY_RETRY_AFTER_SECONDS));
        }
        *running += 1;
        Ok(EarlyFileSlot {
            limits: self.clone(),
            token_id: token_id.to_string(),
        })
    }
}

/// One of a token's early-file streams; released on drop.
struct EarlyFileSlot {
    limits: UploadLimits,
    token_id: String,
}

impl Drop for EarlyFileSlot {
    fn drop(&mut self) {
        let mut early = self.limits.early.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = early.get_mut(&self.token_id) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                early.remove(&self.token_id);
            }
        }
    }
}

pub use crate::dto::UploadResult;

/// Reads and drops what is left of a refused request's body (bounded: see
/// `multipart::drain`), so the client reads the error response.
pub(crate) async fn drain_body(body: &mut axum::body::BodyDataStream) {
    multipart::drain(body).await
}

/// The body's next chunk, waiting at most `idle` for it; a 408 says what became of what
/// arrived before (`kept`).
pub(super) async fn next_body_chunk(
    body: &mut axum::body::BodyDataStream,
    idle: Duration,
    kept: &str,
) -> ApiResult<Option<Bytes>> {
    match tokio::time::timeout(idle, body.next()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "upload_timeout",
            format!("no data arrived for too long (DEPOT_UPLOAD_IDLE_TIMEOUT_SECONDS); {kept}"),
        )),
        Ok(None) => Ok(None),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(e))) => Err(ApiError::bad_request(
            "invalid_body",
            format!("reading the request body failed: {e}"),
        )),
    }
}

/// An empty draft of `product`/`version`, made by `by` at `now` (the first file of a draft
/// creates it).
pub(super) fn new_draft(product: &str, version: &str, by: &str, now: i64) -> VersionRecord {
    VersionRecord {
        product: product.to_string(),
        version: version.to_string(),
        file_name: String::new(),
        size: 0,
        checksum: String::new(),
        blob_key: String::new(),
        state: VersionState::Draft,
        uploaded_at: now,
        uploaded_by: by.to_string(),
        sort_key: sort_key(version, now),
        kind: kind_of(version),
        lease_until: None,
        last_download_at: None,
        files: Vec::new(),
        labels: Vec::new(),
        updated_at: now,
    }
}

/// Parses `hex` or `sha256:hex` into lowercase hex.
pub fn parse_expected_digest(raw: &str) -> ApiResult<String> {
    let hex_part = raw.trim();
    let hex_part = hex_part
        .strip_prefix("sha256:")
        .or_else(|| hex_part.strip_prefix("sha256="))
        .unwrap_or(hex_part);
    if hex_part.len() == 64 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex_part.to_ascii_lowercase())
    } else {
        Err(ApiError::bad_request(
            "invalid_checksum",
            "checksum must be a SHA-256 digest: 64 hex characters, optionally prefixed with 'sha256:'",
        ))
    }
}

struct Reservation {
    product: String,
    version: String,
    /// The pending record's blob key (its first file's).
    key: String,
    /// The insert of the pending record while it runs: a cleanup waits for it, so its
    /// removal cannot come first and leave the record behind.
    insert: Option<tokio::task::JoinHandle<crate::meta::MetaResult<()>>>,
}

impl Reservation {
    /// The insert's outcome, waiting for it if it still runs (the first call only).
    async fn wait_insert(&mut self) -> Result<crate::meta::MetaResult<()>, tokio::task::JoinError> {
        let Some(insert) = self.insert.as_mut() else {
            return Ok(Ok(()));
        };
        let outcome = insert.await;
        self.insert = None;
        outcome
    }
}

/// One file's blob: being written, or finished (stored, not yet committed).
struct StoredBlob {
    key: String,
    writer: Option<Box<dyn BlobWriter>>,
    finished: bool,
}

/// Owns everything an unfinished upload has created and removes it unless disarmed.
struct UploadGuard {
    app: AppState,
    blobs: Vec<StoredBlob>,
    reservation: Option<Reservation>,
    progress: crate::ops::upload::lease::Progress,
    lease: Option<crate::ops::upload::lease::LeaseKeeper>,
    /// The upload's hold on its product's quota, if one applies.
    quota: Option<QuotaTicket>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        // The request future was dropped (client gone): clean up in the background.
        if let Some(cleanup) = self.take_cleanup() {
            crate::cleanup::spawn(cleanup);
        }
    }
}

impl UploadGuard {
    /// The work that removes what this upload created, or `None` when there is nothing
    /// to remove (nothing created yet, or handed over to the commit). Disarms the guard.
    fn take_cleanup(&mut self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let blobs = std::mem::take(&mut self.blobs);
        let reservation = self.reservation.take();
        let quota = self.quota.take();
        if blobs.is_empty() && reservation.is_none() && quota.is_none() {
            return None;
        }
        let app = self.app.clone();
        Some(async move {
            if let Some(quota) = quota {
                quota.release().await;
            }
            for blob in blobs {
                if let Some(writer) = blob.writer {
                    writer.abort().await;
                }
                if blob.finished
                    && let Err(err) = app.blobs.delete(&blob.key).await
                {
                    tracing::warn!(key = %blob.key, error = %err, "could not delete blob of failed upload; left for the janitor");
                }
            }
            // The record goes last, so the janitor can still see a blob that failed to delete.
            if let Some(mut r) = reservation {
                // A still-running insert finishes first, or the removal could precede it.
                let _ = r.wait_insert().await;
                if let Err(err) = app
                    .meta
                    .remove_pending_version(&r.product, &r.version, &r.key, &[])
                    .await
                {
                    tracing::warn!(product = %r.product, version = %r.version, error = %err, "could not remove pending record; left for the janitor");
                }
            }
        })
    }

    /// Cleans up before the error response goes out, so a client that sees the error
    /// can retry the same version at once and finds nothing left behind.
    async fn cleanup(mut self) {
        if let Some(cleanup) = self.take_cleanup() {
            cleanup.await;
        }
    }
}

impl UploadGuard {
    fn new(app: &AppState) -> Self {
        UploadGuard {
            app: app.clone(),
            blobs: Vec::new(),
            reservation: None,
            progress: Default::default(),
            lease: None,
            quota: None,
        }
    }

    /// Opens a writer for a new blob under `key`; the guard owns it from here on. Its
    /// index in `blobs`.
    async fn open_blob(&mut self, key: String) -> ApiResult<usize> {
        let writer = self.app.blobs.writer(&key).await?;
        self.blobs.push(StoredBlob {
            key,
            writer: Some(writer),
            finished: false,
        });
        Ok(self.blobs.len() - 1)
    }

    /// Streams one file from `source` into the blob at `index`, within the quota.
    async fn stream(
        &mut self,
        index: usize,
        source: &mut impl ChunkSource,
        limit: u64,
    ) -> ApiResult<(u64, String)> {
        let blob = self
            .blobs
            .get_mut(index)
            .ok_or_else(|| ApiError::internal("upload blob missing"))?;
        stream_file(source, blob, limit, &self.progress, self.quota.as_mut()).await
    }

    /// Takes the upload's hold on the quota of `product` (see `ops::quota`): `bytes`
    /// reserved now, more as they arrive.
    async fn hold_quota(
        &mut self,
        target: (&str, &str, &str),
        bytes: u64,
        ceiling: Option<u64>,
    ) -> ApiResult<()> {
        self.quota = QuotaTicket::open(&self.app, target, bytes, ceiling).await?;
        Ok(())
    }

    async fn reserve(
        &mut self,
        caller: &Caller,
        product: &str,
        version: &str,
        file_name: &str,
        key: &str,
        (quota_bytes, ceiling): (u64, Option<u64>),
    ) -> ApiResult<()> {
        caller.authorize(product, ProductOp::Upload)?;
        // The quota first: a refused upload leaves no pending record.
        let held = async {
            self.hold_quota((product, version, key), quota_bytes, ceiling)
                .await?;
            if let Some(quota) = self.quota.as_mut() {
                // Bytes streamed before the form named the product.
                quota.add(self.progress.bytes()).await?;
            }
            Ok::<_, ApiError>(())
        };
        if let Err(refused) = held.await {
            // A version that exists is the clearer answer than a full quota.
            if refused.code == "quota_exceeded"
                && self.app.meta.version(product, version).await?.is_some()
            {
                return Err(version_exists(product, version));
            }
            return Err(refused);
        }
        let now = now_ms();
        let record = VersionRecord {
            product: product.to_string(),
            version: version.to_string(),
            file_name: file_name.to_string(),
            size: 0,
            checksum: String::new(),
            blob_key: key.to_string(),
            state: VersionState::Pending,
            uploaded_at: now,
            uploaded_by: caller.token.id.clone(),
            sort_key: sort_key(version, now),
            kind: kind_of(version),
            lease_until: Some(crate::ops::upload::lease::lease_until(&self.app)),
            last_download_at: None,
            files: Vec::new(),
            labels: Vec::new(),
            updated_at: now,
        };
        // The insert runs to completion even if the client hangs up meanwhile (a MongoDB
        // operation dropped mid-flight costs its connection, see `api::run_to_completion`);
        // the guard holds it, so a cleanup waits for it and then removes the record (by our
        // blob key, so never another upload's).
        let app = self.app.clone();
        let insert = crate::cleanup::spawn_tracked(async move {
            crate::ops::upload::lease::reserve(&app, &record).await
        });
        let reservation = self.reservation.insert(Reservation {
            product: product.into(),
            version: version.into(),
            key: key.into(),
            insert: Some(insert),
        });
        if let Err(err) = reservation
            .wait_insert()
            .await
            .map_err(ApiError::internal)?
        {
            self.reservation = None;
            return Err(match err {
                MetaError::Conflict => version_exists(product, version),
                MetaError::NotFound => ApiError::product_not_found(product),
                MetaError::Pending => version_pending(),
                other => other.into(),
            });
        }
        let keeper = crate::ops::upload::lease::LeaseKeeper::start(
            &self.app,
            product,
            version,
            key,
            self.progress.clone(),
        );
        self.lease = Some(keeper);
        Ok(())
    }
}

/// The form's failures as API errors.
fn form_error(err: FormError, limit: u64) -> ApiError {
    match err {
        FormError::BodyTooLarge => ApiError::payload_too_large(limit),
        FormError::EnvelopeTooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "form_too_large",
            err.to_string(),
        ),
        FormError::TooManyParts => ApiError::bad_request("too_many_fields", err.to_string()),
        FormError::Idle => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "upload_timeout",
            "no data arrived for too long (DEPOT_UPLOAD_IDLE_TIMEOUT_SECONDS); nothing was stored",
        ),
        FormError::NotMultipart(_) | FormError::Malformed(_) | FormError::Read(_) => {
            ApiError::bad_request("invalid_body", err.to_string())
        }
    }
}

fn duplicate(field: &str) -> ApiError {
    ApiError::bad_request(
        "duplicate_field",
        format!("the multipart form has more than one '{field}' field"),
    )
}

async fn read_text<S, E>(form: &mut FormReader<S>, name: &str, limit: u64) -> ApiResult<String>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buf = Vec::new();
    while let Some(chunk) = form.chunk().await.map_err(|e| form_error(e, limit))? {
        if buf.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("field '{name}' is too long"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf)
        .map(|s| s.trim().to_string())
        .map_err(|_| ApiError::bad_request("invalid_body", format!("field '{name}' is not UTF-8")))
}

struct Streamed {
    size: u64,
    digest: String,
    file_name: String,
    key: String,
}

/// Form fields `label.<key>` set the new version's labels.
const LABEL_FIELD_PREFIX: &str = "label.";

/// Where a file's bytes come from: a multipart part, or a raw request body.
trait ChunkSource: Send {
    /// The next piece of the file; `None` at its end.
    fn next_chunk(&mut self) -> impl Future<Output = ApiResult<Option<Bytes>>> + Send;
}

/// The current part of a multipart form.
struct FormPart<'a, S> {
    form: &'a mut FormReader<S>,
    limit: u64,
}

impl<S, E> ChunkSource for FormPart<'_, S>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    async fn next_chunk(&mut self) -> ApiResult<Option<Bytes>> {
        let limit = self.limit;
        self.form.chunk().await.map_err(|e| form_error(e, limit))
    }
}

/// A raw request body, with the idle timeout a form read has.
struct RawBody<'a> {
    body: &'a mut axum::body::BodyDataStream,
    idle: Duration,
}

impl ChunkSource for RawBody<'_> {
    async fn next_chunk(&mut self) -> ApiResult<Option<Bytes>> {
        next_body_chunk(self.body, self.idle, "nothing was stored").await
    }
}

/// Streams one file from `source` into the blob's writer, hashing on the way, and finishes
/// the blob: its size and SHA-256 hex.
async fn stream_file(
    source: &mut impl ChunkSource,
    blob: &mut StoredBlob,
    limit: u64,
    progress: &crate::ops::upload::lease::Progress,
    mut quota: Option<&mut QuotaTicket>,
) -> ApiResult<(u64, String)> {
    let writer = blob
        .writer
        .as_mut()
        .ok_or_else(|| ApiError::internal("upload writer missing"))?
        .as_mut();
    let hasher = BackgroundHasher::new();
    let mut staging = Staging::new();
    let mut size: u64 = 0;
    while let Some(chunk) = source.next_chunk().await? {
        size += chunk.len() as u64;
        progress.bump(chunk.len());
        if size > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        if let Some(quota) = quota.as_deref_mut() {
            quota.add(chunk.len() as u64).await?;
        }
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let (taken, full) = staging.fill(rest).await?;
            rest = &rest[taken..];
            if let Some(block) = full {
                pass_on(block, &hasher, writer).await?;
            }
        }
    }
    progress.done();
    if let Some(block) = staging.rest() {
        pass_on(block, &hasher, writer).await?;
    }
    let digest = hasher.finish().await?;
    let writer = blob
        .writer
        .take()
        .ok_or_else(|| ApiError::internal("upload writer missing"))?;
    writer.finish(&digest).await.map_err(|err| match err {
        // The janitor removed the unfinished write (a partial file).
        BlobError::NotFound => upload_expired(),
        other => other.into(),
    })?;
    blob.finished = true;
    Ok((size, digest))
}

/// The janitor treats a pending version older than its grace as left by a crash and
/// removes it; an upload still running by then cannot be committed.
fn upload_expired() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "upload_expired",
        "the upload took longer than the server keeps a pending version \
         (DEPOT_JANITOR_GRACE_SECONDS); nothing was stored, upload again",
    )
}

/// `POST /product/upload`: admission, then the form, then the commit protocol above.
pub async fn receive(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<UploadResult> {
    let _slot = app.uploads.admit()?;
    let limit = app.settings.max_upload_bytes;
    let body_limit = limit.saturating_add(ENVELOPE_LIMIT as u64);
    let declared = content_length(headers);
    if declared.is_some_and(|len| len > body_limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multipart::boundary(content_type).map_err(|e| form_error(e, limit))?;
    let idle = Duration::from_secs(app.settings.upload_idle_timeout_seconds);
    let mut form = FormReader::new(body.into_data_stream(), &boundary, "file", body_limit, idle);
    let mut guard = None;
    let result = receive_into(app, caller, headers, &mut form, &mut guard).await;
    if let Err(err) = &result {
        if let Some(guard) = guard.take() {
            guard.cleanup().await;
        }
        if err.status != StatusCode::REQUEST_TIMEOUT {
            form.drain_rest().await;
        }
    }
    result
}

async fn receive_into<S, E>(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    form: &mut FormReader<S>,
    guard: &mut Option<UploadGuard>,
) -> ApiResult<UploadResult>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let limit = app.settings.max_upload_bytes;
    let expected = expected_digest(headers)?;
    // The least the files of a form of this declared length can hold: what a quota
    // reserves up front (and refuses at once when even that does not fit).
    let declared = content_length(headers);
    let declared_files = declared.unwrap_or(0).saturating_sub(ENVELOPE_LIMIT as u64);
    let mut field_checksum: Option<String> = None;
    let mut product: Option<String> = None;
    let mut version: Option<String> = None;
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut streamed: Vec<Streamed> = Vec::new();
    // Held while files that came before the name fields stream without a reservation.
    let mut early_slot: Option<EarlyFileSlot> = None;

    while let Some(part) = form.next_part().await.map_err(|e| form_error(e, limit))? {
        match part.name.as_str() {
            "product" => {
                if product.is_some() {
                    return Err(duplicate("product"));
                }
                let value = read_text(form, "product", limit).await?;
                validate_product(&value)?;
                product = Some(value);
            }
            "version" => {
                if version.is_some() {
                    return Err(duplicate("version"));
                }
                let value = read_text(form, "version", limit).await?;
                validate_new_version(&value)?;
                version = Some(value);
            }
            "checksum" => {
                if field_checksum.is_some() {
                    return Err(duplicate("checksum"));
                }
                let value = read_text(form, "checksum", limit).await?;
                field_checksum = Some(parse_expected_digest(&value)?);
            }
            name if name.starts_with(LABEL_FIELD_PREFIX) => {
                let key = name[LABEL_FIELD_PREFIX.len()..].to_string();
                if labels.contains_key(&key) {
                    return Err(duplicate(name));
                }
                let value = read_text(form, name, limit).await?;
                labels.insert(key, value);
            }
            "file" => {
                if streamed.len() >= MAX_FILES {
                    return Err(AssetRefusal::TooManyFiles.into());
                }
                let file_name = part
                    .file_name
                    .as_deref()
                    .map(|raw| {
                        sanitize_file_name(raw).ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_name",
                                "the uploaded file name is not a safe base name",
                            )
                        })
                    })
                    .transpose()?
                    .unwrap_or_else(|| "artifact".to_string());
                if file_name.eq_ignore_ascii_case(CHECKSUMS_FILE) {
                    return Err(AssetError::ReservedName.into());
                }
                if streamed.iter().any(|f| f.file_name == file_name) {
                    return Err(AssetRefusal::FileExists.into());
                }
                let key = new_blob_key(product.as_deref(), version.as_deref());
                let g = guard.get_or_insert_with(|| UploadGuard::new(app));
                if g.reservation.is_none() {
                    if let (Some(p), Some(v)) = (&product, &version) {
                        // Fail fast (permission, duplicate) before reading the body.
                        g.reserve(caller, p, v, &file_name, &key, (declared_files, declared))
                            .await?;
                    } else if early_slot.is_none() {
                        // Not a byte stored for a token that can upload nowhere; the
                        // streams whose product is not known yet are few per token.
                        if !caller.may_upload_somewhere() {
                            return Err(ApiError::forbidden(
                                "your token may not upload to any product",
                            ));
                        }
                        early_slot = Some(app.uploads.early_file(&caller.token.id)?);
                    }
                }
                let blob = g.open_blob(key.clone()).await?;
                let mut source = FormPart { form, limit };
                let (size, digest) = g.stream(blob, &mut source, limit).await?;
                streamed.push(Streamed {
                    size,
                    digest,
                    file_name,
                    key,
                });
            }
            // Unknown fields are skipped (within the form's budget), as form handlers do.
            _ => {}
        }
    }

    let product = product.ok_or_else(|| missing("product"))?;
    let version = version.ok_or_else(|| missing("version"))?;
    let (Some(guard), Some(first)) = (guard.as_mut(), streamed.first()) else {
        return Err(missing("file"));
    };
    let labels = new_labels(&labels)?;
    if guard.reservation.is_none() {
        let key = first.key.clone();
        guard
            .reserve(
                caller,
                &product,
                &version,
                &first.file_name,
                &key,
                (0, declared),
            )
            .await?;
    }
    drop(early_slot);
    let expected: Vec<String> = [expected, field_checksum].into_iter().flatten().collect();
    if !expected.is_empty() && streamed.len() > 1 {
        return Err(ApiError::bad_request(
            "invalid_checksum",
            "a checksum field or X-Checksum-Sha256 header applies to a one-file upload; \
             upload several files with PUT /product/upload/{product}/{version}/{file}, one checksum each",
        ));
    }
    if let Some(bad) = expected.iter().find(|e| **e != first.digest) {
        return Err(checksum_mismatch(&first.digest, bad));
    }
    let now = now_ms();
    let files: Vec<FileRecord> = streamed
        .into_iter()
        .map(|f| FileRecord {
            name: f.file_name,
            size: f.size,
            checksum: f.digest,
            blob_key: f.key,
            uploaded_at: now,
            uploaded_by: caller.token.id.clone(),
        })
        .collect();
    let reservation_key = guard
        .reservation
        .as_ref()
        .map(|r| r.key.clone())
        .unwrap_or_default();
    let published = crate::ops::versions::published_event(
        &crate::ops::Ctx::of(caller),
        &VersionRecord {
            product: product.clone(),
            version: version.clone(),
            file_name: String::new(),
            size: 0,
            checksum: String::new(),
            blob_key: String::new(),
            state: VersionState::Committed,
            uploaded_at: now,
            uploaded_by: caller.token.id.clone(),
            sort_key: String::new(),
            kind: kind_of(&version),
            lease_until: None,
            last_download_at: None,
            files: files.clone(),
            labels: labels.clone(),
            updated_at: now,
        }
        .with_primary(&files[0]),
    );
    // The commit, too, runs to completion if the client hangs up; it takes the guard's
    // cleanup along for the case where it fails (a cleanup racing a commit that went
    // through would delete a committed version's blobs).
    let quota = guard.quota.take();
    let cleanup = guard.take_cleanup();
    let commit = {
        let (app, product, version) = (app.clone(), product.clone(), version.clone());
        let files = files.clone();
        crate::cleanup::spawn_tracked(async move {
            let committed = app
                .meta
                .commit_version(
                    &product,
                    &version,
                    &reservation_key,
                    &files,
                    &labels,
                    std::slice::from_ref(&published),
                )
                .await;
            // Committed or not, the bytes no longer need holding: they are in the files.
            if let Some(quota) = quota {
                quota.release().await;
            }
            // Only a refusal is cleaned up now; after an unknown outcome the janitor
            // decides from what the store holds.
            if committed.as_ref().is_err_and(MetaError::is_refusal)
                && let Some(cleanup) = cleanup
            {
                cleanup.await;
            }
            committed
        })
    };
    commit
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| match err {
            // The janitor removed the reservation.
            MetaError::NotFound => upload_expired(),
            other => other.into(),
        })?;
    let size: u64 = files.iter().map(|f| f.size).sum();
    tracing::info!(product = %product, version = %version, files = files.len(), size, by = %caller.token.id, "version uploaded");
    let primary = &files[0];
    Ok(UploadResult {
        product: product.clone(),
        version: version.clone(),
        file_name: primary.name.clone(),
        size: primary.size,
        checksum: format!("sha256:{}", primary.checksum),
        state: "published".into(),
        files: files.iter().map(crate::dto::file_info).collect(),
    })
}

/// The request's `Content-Length`, if it has a valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The digest `X-Checksum-Sha256` announces, if any.
fn expected_digest(headers: &HeaderMap) -> ApiResult<Option<String>> {
    headers
        .get("x-checksum-sha256")
        .map(|v| {
            let raw = v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_checksum", "X-Checksum-Sha256 is not ASCII")
            })?;
            parse_expected_digest(raw)
        })
        .transpose()
}

fn checksum_mismatch(actual: &str, expected: &str) -> ApiError {
    ApiError::bad_request(
        "checksum_mismatch",
        format!("the upload's SHA-256 is {actual} but {expected} was expected; nothing was stored"),
    )
}

/// `PUT /product/upload/{product}/{version}/{file}`: one file, the raw request body, into
/// a draft (created with its first file). No reservation: files of one draft upload side
/// by side, and the commit decides (a name taken meanwhile is 409 `file_exists`, a
/// version published meanwhile 409 `version_exists`); the guard removes the blob of a
/// refused or failed upload.
pub async fn receive_draft_file(
    app: &AppState,
    caller: &Caller,
    (product, version, file_name): (&str, &str, &str),
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<UploadResult> {
    let _slot = app.uploads.admit()?;
    validate_product(product)?;
    validate_new_version(version)?;
    check_file_name(file_name)?;
    caller.authorize(product, ProductOp::Upload)?;
    let limit = app.settings.max_upload_bytes;
    let declared = content_length(headers);
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let expected = expected_digest(headers)?;
    // Fail fast, before a byte is stored; the commit checks all of it again.
    if app.meta.product(product).await?.is_none() {
        return Err(ApiError::product_not_found(product));
    }
    if let Some(existing) = app.meta.version(product, version).await? {
        if existing.state == VersionState::Committed {
            return Err(version_exists(product, version));
        }
        check_can_add(existing.files.iter().map(|f| f.name.as_str()), file_name)?;
    }
    let idle = Duration::from_secs(app.settings.upload_idle_timeout_seconds);
    let mut body = body.into_data_stream();
    let mut guard = UploadGuard::new(app);
    let result = async {
        let key = new_blob_key(Some(product), Some(version));
        // The declared length is exactly the file's: a quota refuses it before any byte.
        guard
            .hold_quota((product, version, &key), declared.unwrap_or(0), declared)
            .await?;
        let blob = guard.open_blob(key.clone()).await?;
        let mut source = RawBody {
            body: &mut body,
            idle,
        };
        let (size, digest) = guard.stream(blob, &mut source, limit).await?;
        if let Some(bad) = expected.as_deref().filter(|e| *e != digest) {
            return Err(checksum_mismatch(&digest, bad));
        }
        let now = now_ms();
        let file = FileRecord {
            name: file_name.to_string(),
            size,
            checksum: digest,
            blob_key: key,
            uploaded_at: now,
            uploaded_by: caller.token.id.clone(),
        };
        let draft = new_draft(product, version, &caller.token.id, now);
        let ctx = crate::ops::Ctx::of(caller);
        let (created, uploaded) =
            crate::ops::versions::draft_file_events(&ctx, product, version, &file);
        let quota = guard.quota.take();
        let cleanup = guard.take_cleanup();
        let commit = {
            let (app, file) = (app.clone(), file.clone());
            crate::cleanup::spawn_tracked(async move {
                let _turn =
                    crate::ops::versions::draft_write_lock(&draft.product, &draft.version).await;
                let added = app
                    .meta
                    .add_draft_file(
                        &draft,
                        &file,
                        std::slice::from_ref(&created),
                        std::slice::from_ref(&uploaded),
                    )
                    .await;
                // Committed or not, the bytes no longer need holding: they are in the file.
                if let Some(quota) = quota {
                    quota.release().await;
                }
                // Only a refusal is cleaned up now; after an unknown outcome the janitor
                // decides from what the store holds.
                if added.as_ref().is_err_and(MetaError::is_refusal)
                    && let Some(cleanup) = cleanup
                {
                    cleanup.await;
                }
                added
            })
        };
        commit
            .await
            .map_err(ApiError::internal)?
            .map_err(|err| match err {
                MetaError::Conflict => version_exists(product, version),
                MetaError::NotFound => ApiError::product_not_found(product),
                MetaError::Pending => version_pending(),
                other => other.into(),
            })?;
        tracing::info!(product = %product, version = %version, file = %file.name, size = file.size, by = %caller.token.id, "draft file uploaded");
        Ok(UploadResult {
            product: product.to_string(),
            version: version.to_string(),
            file_name: file.name,
            size: file.size,
            checksum: format!("sha256:{}", file.checksum),
            state: "draft".into(),
            files: Vec::new(),
        })
    }
    .await;
    if let Err(err) = &result {
        guard.cleanup().await;
        if err.status != StatusCode::REQUEST_TIMEOUT {
            multipart::drain(&mut body).await;
        }
    }
    result
}

pub(super) fn version_exists(product: &str, version: &str) -> ApiError {
    ApiError::conflict(
        "version_exists",
        format!("product '{product}' already has a version '{version}'; versions are immutable"),
    )
}

pub(super) fn version_pending() -> ApiError {
    ApiError::conflict(
        "version_pending",
        "another upload of this version is in progress; retry when it has finished",
    )
}

fn missing(field: &str) -> ApiError {
    ApiError::bad_request(
        "missing_field",
        format!("the multipart form has no '{field}' field"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_digest_accepts_hex_and_prefixed_forms() {
        let hex = "a".repeat(64);
        assert_eq!(parse_expected_digest(&hex).unwrap(), hex);
        assert_eq!(
            parse_expected_digest(&format!("sha256:{}", "AB".repeat(32))).unwrap(),
            "ab".repeat(32)
        );
        assert!(parse_expected_digest("sha256:xyz").is_err());
        assert!(parse_expected_digest(&"a".repeat(63)).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_digest_text_parses_without_panic_to_lowercase_hex_or_an_error(raw in any::<String>()) {
                if let Ok(hex) = parse_expected_digest(&raw) {
                    prop_assert_eq!(hex.len(), 64);
                    prop_assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
                }
            }

            #[test]
            fn digest_like_text_parses_without_panic(
                raw in "[ \t]?(sha256[:=]|SHA256:|sha-256:)?[0-9a-fA-Fg ]{60,68}[ \t]?",
            ) {
                if let Ok(hex) = parse_expected_digest(&raw) {
                    prop_assert_eq!(hex.len(), 64);
                }
            }

            #[test]
            fn a_digest_in_any_accepted_form_round_trips_to_its_lowercase_hex(
                digest in any::<[u8; 32]>(),
                upper in any::<bool>(),
                prefix in prop_oneof![Just(""), Just("sha256:"), Just("sha256=")],
                pad in prop_oneof![Just(""), Just(" "), Just("\t")],
            ) {
                let hex = hex::encode(digest);
                let shown = if upper { hex.to_ascii_uppercase() } else { hex.clone() };
                let raw = format!("{pad}{prefix}{shown}{pad}");
                prop_assert_eq!(parse_expected_digest(&raw).ok(), Some(hex));
            }
        }
    }
}
