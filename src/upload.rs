//! The upload commit protocol, the same for every backend:
//!
//! 1. authorize, then reserve (product, version) as *pending*: the unique record decides
//!    races, so exactly one concurrent upload of a version proceeds;
//! 2. stream the multipart `file` field into a blob writer under a fresh key, counting
//!    bytes against the limit and hashing with SHA-256 on the way;
//! 3. verify the client's expected digest, finish the blob, flip the record to committed.
//!
//! Fields may come in any order: when `file` arrives before `product`/`version`, it is
//! streamed first and step 1 happens afterwards. Any error, or the request future being
//! dropped (client gone), runs `UploadGuard::drop`, which aborts the blob and removes
//! the pending record; the janitor handles what a crash leaves.

use crate::app::AppState;
use crate::auth::Caller;
use crate::blob::{AlignedBuf, BlobWriter, new_blob_key};
use crate::domain::names::{sanitize_file_name, validate_new_version, validate_product};
use crate::domain::permissions::ProductOp;
use crate::domain::version::{kind_of, sort_key};
use crate::error::{ApiError, ApiResult, BlobError, MetaError};
use crate::meta::{VersionRecord, VersionState, now_ms};
use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Multipart framing and the small text fields on top of the artifact itself.
const ENVELOPE_ALLOWANCE: u64 = 64 * 1024;
const MAX_TEXT_FIELD: usize = 1024;

#[derive(Debug, Serialize)]
pub struct UploadResult {
    pub product: String,
    pub version: String,
    pub file_name: String,
    pub size: u64,
    pub checksum: String,
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

/// Owns everything an unfinished upload has created and removes it unless disarmed.
struct UploadGuard {
    app: AppState,
    blob_key: String,
    writer: Option<Box<dyn BlobWriter>>,
    blob_finished: bool,
    reservation: Option<Reservation>,
    progress: crate::upload_lease::Progress,
    lease: Option<crate::upload_lease::LeaseKeeper>,
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
        let writer = self.writer.take();
        let reservation = self.reservation.take();
        let finished = std::mem::take(&mut self.blob_finished);
        if writer.is_none() && reservation.is_none() && !finished {
            return None;
        }
        let app = self.app.clone();
        let key = self.blob_key.clone();
        Some(async move {
            if let Some(writer) = writer {
                writer.abort().await;
            }
            if finished && let Err(err) = app.blobs.delete(&key).await {
                tracing::warn!(key = %key, error = %err, "could not delete blob of failed upload; left for the janitor");
            }
            // The record goes last, so the janitor can still see a blob that failed to delete.
            if let Some(mut r) = reservation {
                // A still-running insert finishes first, or the removal could precede it.
                let _ = r.wait_insert().await;
                if let Err(err) = app
                    .meta
                    .remove_pending_version(&r.product, &r.version, &key)
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
    async fn reserve(
        &mut self,
        caller: &Caller,
        product: &str,
        version: &str,
        file_name: &str,
    ) -> ApiResult<()> {
        caller.authorize(product, ProductOp::Upload)?;
        let now = now_ms();
        let record = VersionRecord {
            product: product.to_string(),
            version: version.to_string(),
            file_name: file_name.to_string(),
            size: 0,
            checksum: String::new(),
            blob_key: self.blob_key.clone(),
            state: VersionState::Pending,
            uploaded_at: now,
            uploaded_by: caller.token.id.clone(),
            sort_key: sort_key(version, now),
            kind: kind_of(version),
            lease_until: Some(crate::upload_lease::lease_until(&self.app)),
        };
        // The insert runs to completion even if the client hangs up meanwhile (a MongoDB
        // operation dropped mid-flight costs its connection, see `api::run_to_completion`);
        // the guard holds it, so a cleanup waits for it and then removes the record (by our
        // blob key, so never another upload's).
        let app = self.app.clone();
        let insert = crate::cleanup::spawn_tracked(async move {
            crate::upload_lease::reserve(&app, &record).await
        });
        let reservation = self.reservation.insert(Reservation {
            product: product.into(),
            version: version.into(),
            insert: Some(insert),
        });
        if let Err(err) = reservation
            .wait_insert()
            .await
            .map_err(ApiError::internal)?
        {
            self.reservation = None;
            return Err(match err {
                MetaError::Conflict => ApiError::conflict(
                    "version_exists",
                    format!(
                        "product '{product}' already has a version '{version}'; versions are immutable"
                    ),
                ),
                MetaError::NotFound => ApiError::product_not_found(product),
                MetaError::Pending => ApiError::conflict(
                    "version_pending",
                    "another upload of this version is in progress; retry when it has finished",
                ),
                other => other.into(),
            });
        }
        let (key, progress) = (&self.blob_key, self.progress.clone());
        let keeper =
            crate::upload_lease::LeaseKeeper::start(&self.app, product, version, key, progress);
        self.lease = Some(keeper);
        Ok(())
    }
}

fn multipart_error(err: MultipartError) -> ApiError {
    let status = err.status();
    if status == http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "payload_too_large", err.body_text());
    }
    ApiError::bad_request(
        "invalid_body",
        format!("malformed multipart body: {}", err.body_text()),
    )
}

async fn read_text_field(mut field: Field<'_>, name: &str) -> ApiResult<String> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
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
}

/// SHA-256 on a blocking-pool thread, so hashing runs on one core while parsing and
/// writing run on another. It reads whole staging blocks.
struct BackgroundHasher {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<String>,
}

impl BackgroundHasher {
    fn new() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(block) = rx.blocking_recv() {
                hasher.update(&block);
            }
            hex::encode(hasher.finalize())
        });
        Self { tx, task }
    }

    async fn update(&self, block: Bytes) -> ApiResult<()> {
        self.tx.send(block).await.map_err(ApiError::internal)
    }

    async fn finish(self) -> ApiResult<String> {
        drop(self.tx);
        self.task.await.map_err(ApiError::internal)
    }
}

/// Size of the blocks the upload body is copied into.
const STAGING_BLOCK: usize = 1024 * 1024;
/// Blocks waiting for the hasher; hashing outruns every store, so a short queue is enough.
const HASH_QUEUE: usize = 2;
/// Blocks per upload: the one filling, the hasher's queue and the one being hashed; the
/// filesystem store writes these very blocks to disk, and its queue of them runs
/// alongside the hasher's (a block is in both at once).
const STAGING_BLOCKS: usize = 6;

/// A filled staging block shared by the hasher and the blob writer; when the last of
/// them drops it, its buffer goes back to the upload's pool.
struct PooledBlock {
    buf: Option<AlignedBuf>,
    home: tokio::sync::mpsc::UnboundedSender<AlignedBuf>,
}

impl AsRef<[u8]> for PooledBlock {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |buf| buf.as_ref())
    }
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        if let Some(mut buf) = self.buf.take() {
            buf.clear();
            // The upload is over when its pool is gone: the buffer is simply freed.
            let _ = self.home.send(buf);
        }
    }
}

/// Copies the body out of the multipart parser's buffer into a few reused, aligned
/// blocks. The parser's chunks are dropped at once, so its buffer is reused in place:
/// holding them until hashed made it allocate (and fault in) fresh memory for every
/// megabyte. Aligned blocks let the filesystem store write them without another copy.
struct Staging {
    filling: Option<AlignedBuf>,
    made: usize,
    returned: tokio::sync::mpsc::UnboundedReceiver<AlignedBuf>,
    home: tokio::sync::mpsc::UnboundedSender<AlignedBuf>,
}

impl Staging {
    fn new() -> Self {
        let (home, returned) = tokio::sync::mpsc::unbounded_channel();
        Self {
            filling: None,
            made: 0,
            returned,
            home,
        }
    }

    async fn empty_block(&mut self) -> ApiResult<AlignedBuf> {
        if let Ok(buf) = self.returned.try_recv() {
            return Ok(buf);
        }
        if self.made < STAGING_BLOCKS {
            self.made += 1;
            return Ok(AlignedBuf::new(STAGING_BLOCK));
        }
        // `self.home` keeps the channel open, so this waits for a block to come back.
        self.returned
            .recv()
            .await
            .ok_or_else(|| ApiError::internal("staging pool closed"))
    }

    /// Copies as much of `data` as fits into the block being filled; returns how much,
    /// and the block once it is full.
    async fn fill(&mut self, data: &[u8]) -> ApiResult<(usize, Option<Bytes>)> {
        let mut buf = match self.filling.take() {
            Some(buf) => buf,
            None => self.empty_block().await?,
        };
        let taken = buf.push(data);
        if buf.is_full() {
            Ok((taken, Some(self.share(buf))))
        } else {
            self.filling = Some(buf);
            Ok((taken, None))
        }
    }

    /// The partly filled last block, if any.
    fn rest(&mut self) -> Option<Bytes> {
        let buf = self.filling.take().filter(|buf| !buf.is_empty())?;
        Some(self.share(buf))
    }

    fn share(&self, buf: AlignedBuf) -> Bytes {
        Bytes::from_owner(PooledBlock {
            buf: Some(buf),
            home: self.home.clone(),
        })
    }
}

/// Hands a full (or final) block to the hasher and the blob writer.
async fn pass_on(
    block: Bytes,
    hasher: &BackgroundHasher,
    writer: &mut dyn BlobWriter,
) -> ApiResult<()> {
    hasher.update(block.clone()).await?;
    writer.write(block).await?;
    Ok(())
}

async fn stream_file(
    field: &mut Field<'_>,
    writer: &mut dyn BlobWriter,
    limit: u64,
    progress: &crate::upload_lease::Progress,
) -> ApiResult<(u64, String)> {
    let hasher = BackgroundHasher::new();
    let mut staging = Staging::new();
    let mut size: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        size += chunk.len() as u64;
        progress.bump(chunk.len());
        if size > limit {
            return Err(ApiError::payload_too_large(limit));
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
    Ok((size, hasher.finish().await?))
}

/// The janitor treats a pending version older than its grace as left by a crash and
/// removes it; an upload still running by then cannot be committed.
fn upload_expired() -> ApiError {
    ApiError::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "upload_expired",
        "the upload took longer than the server keeps a pending version \
         (DEPOT_JANITOR_GRACE_SECONDS); nothing was stored, upload again",
    )
}

pub async fn receive(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    multipart: Multipart,
) -> ApiResult<UploadResult> {
    let mut multipart = multipart;
    let mut guard = None;
    let result = receive_into(app, caller, headers, &mut multipart, &mut guard).await;
    if result.is_err() {
        if let Some(guard) = guard.take() {
            guard.cleanup().await;
        }
        drain_small_rest(&mut multipart).await;
    }
    result
}

/// Reads what is left of a refused upload's body, up to a small cap and time, so a client
/// still sending a small form sees the error response instead of a reset connection.
async fn drain_small_rest(multipart: &mut Multipart) {
    const CAP: usize = 1024 * 1024;
    let drain = async {
        let mut seen = 0usize;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                seen += chunk.len();
                if seen > CAP {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}

async fn receive_into(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    multipart: &mut Multipart,
    guard: &mut Option<UploadGuard>,
) -> ApiResult<UploadResult> {
    let limit = app.settings.max_upload_bytes;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit.saturating_add(ENVELOPE_ALLOWANCE)) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut expected: Vec<String> = Vec::new();
    if let Some(v) = headers.get("x-checksum-sha256") {
        let raw = v.to_str().map_err(|_| {
            ApiError::bad_request("invalid_checksum", "X-Checksum-Sha256 is not ASCII")
        })?;
        expected.push(parse_expected_digest(raw)?);
    }

    let mut product: Option<String> = None;
    let mut version: Option<String> = None;
    let mut streamed: Option<Streamed> = None;

    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "product" => {
                let value = read_text_field(field, "product").await?;
                validate_product(&value).map_err(crate::api::name_error)?;
                product = Some(value);
            }
            "version" => {
                let value = read_text_field(field, "version").await?;
                validate_new_version(&value).map_err(crate::api::name_error)?;
                version = Some(value);
            }
            "checksum" => {
                let value = read_text_field(field, "checksum").await?;
                expected.push(parse_expected_digest(&value)?);
            }
            "file" => {
                if streamed.is_some() {
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        "only one 'file' field is allowed",
                    ));
                }
                let file_name = field
                    .file_name()
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
                let blob_key = new_blob_key(product.as_deref(), version.as_deref());
                let g = guard.insert(UploadGuard {
                    app: app.clone(),
                    blob_key,
                    writer: None,
                    blob_finished: false,
                    reservation: None,
                    progress: Default::default(),
                    lease: None,
                });
                // Fail fast (permission, duplicate) before reading the body when we can.
                if let (Some(p), Some(v)) = (&product, &version) {
                    g.reserve(caller, p, v, &file_name).await?;
                }
                let writer = g.writer.insert(app.blobs.writer(&g.blob_key).await?);
                let progress = &g.progress;
                let (size, digest) =
                    stream_file(&mut field, writer.as_mut(), limit, progress).await?;
                streamed = Some(Streamed {
                    size,
                    digest,
                    file_name,
                });
            }
            _ => {
                // Unknown fields are drained and ignored, as form handlers usually do.
                let _ = read_text_field(field, &name).await;
            }
        }
    }

    let product = product.ok_or_else(|| missing("product"))?;
    let version = version.ok_or_else(|| missing("version"))?;
    let (Some(guard), Some(streamed)) = (guard.as_mut(), streamed) else {
        return Err(missing("file"));
    };
    if guard.reservation.is_none() {
        guard
            .reserve(caller, &product, &version, &streamed.file_name)
            .await?;
    }
    if let Some(bad) = expected.iter().find(|e| **e != streamed.digest) {
        return Err(ApiError::bad_request(
            "checksum_mismatch",
            format!(
                "the upload's SHA-256 is {} but {bad} was expected; nothing was stored",
                streamed.digest
            ),
        ));
    }
    let writer = guard
        .writer
        .take()
        .ok_or_else(|| ApiError::internal("upload writer missing"))?;
    writer
        .finish(&streamed.digest)
        .await
        .map_err(|err| match err {
            // The janitor removed the unfinished write (a partial file).
            BlobError::NotFound => upload_expired(),
            other => other.into(),
        })?;
    guard.blob_finished = true;
    // The commit, too, runs to completion if the client hangs up; it takes the guard's
    // cleanup along for the case where it fails (a cleanup racing a commit that went
    // through would delete a committed version's blob).
    let cleanup = guard.take_cleanup();
    let commit = {
        let (app, product, version) = (app.clone(), product.clone(), version.clone());
        let (key, size, digest) = (
            guard.blob_key.clone(),
            streamed.size,
            streamed.digest.clone(),
        );
        crate::cleanup::spawn_tracked(async move {
            let committed = app
                .meta
                .commit_version(&product, &version, &key, size, &digest)
                .await;
            if committed.is_err()
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
    tracing::info!(product = %product, version = %version, size = streamed.size, by = %caller.token.id, "version uploaded");
    Ok(UploadResult {
        product,
        version,
        file_name: streamed.file_name,
        size: streamed.size,
        checksum: format!("sha256:{}", streamed.digest),
    })
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
