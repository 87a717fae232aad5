//! S3-compatible blob store (aws-sdk-s3): AWS S3, MinIO, SeaweedFS, Garage...
//!
//! Uploads stream into the bucket in bounded memory: bytes collect in one part-sized
//! buffer; a full buffer goes out as a multipart part while the next one fills, with a
//! fixed number of parts in flight per upload and a process-wide budget of part buffers
//! (so many concurrent uploads cannot exhaust memory). An upload that fits in one part is
//! a single PUT carrying its SHA-256 for the store to verify; multipart parts carry a
//! CRC32C (hardware-fast, so the upload's one SHA-256 pass stays the only hash), and the
//! finished object gets its SHA-256 as a `sha256` tag. No aws-chunked encoding is used
//! (many S3-compatible stores reject it). Request bodies are sent as `UNSIGNED-PAYLOAD`:
//! SigV4 would otherwise hash every byte a second time, and the CRC32C / SHA-256
//! checksum headers already let the store reject a damaged body. Part buffers are reused
//! (a small process-wide pool), so a long upload does not fault in fresh pages per part.
//! Anything that does not reach `finish` aborts its multipart upload.

use super::*;
use crate::config::S3Settings;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Tag, Tagging};
use base64::Engine;
use bytes::BytesMut;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Part buffers all uploads of this process may hold at once, in bytes.
const BUFFER_BUDGET_BYTES: u64 = 128 * 1024 * 1024;
/// Emptied part buffers kept for reuse, in bytes (what an idle process keeps resident).
const SPARE_BUFFER_BYTES: usize = 32 * 1024 * 1024;

struct Inner {
    client: Client,
    /// Signs presigned URLs for the endpoint clients use (may differ from `client`'s).
    public_client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    parts_in_flight: usize,
    buffers: Arc<Semaphore>,
    /// How long an upload waits for a part buffer before it gets 503 too_busy.
    buffer_wait: std::time::Duration,
    spare_buffers: std::sync::Mutex<Vec<BytesMut>>,
}

impl Inner {
    /// Starts a multipart upload of `key` (parts carry CRC32C checksums): its upload id.
    async fn create_multipart(&self, key: &str) -> BlobResult<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(sdk_err)?;
        created
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| BlobError::Unavailable("store returned no upload id".into()))
    }

    /// An empty buffer with room for one part: a spare one when there is one.
    fn take_buffer(&self) -> BytesMut {
        let spare = self
            .spare_buffers
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop());
        spare.unwrap_or_else(|| BytesMut::with_capacity(self.part_size))
    }

    /// Keeps a sent part's buffer for reuse if nothing else still holds it.
    fn return_buffer(&self, data: Bytes) {
        let Ok(mut buffer) = data.try_into_mut() else {
            return;
        };
        buffer.clear();
        if buffer.capacity() < self.part_size {
            return;
        }
        if let Ok(mut spare) = self.spare_buffers.lock()
            && (spare.len() + 1) * self.part_size <= SPARE_BUFFER_BYTES.max(self.part_size)
        {
            spare.push(buffer);
        }
    }
}

pub struct S3BlobStore {
    inner: Arc<Inner>,
}

fn sdk_err<E: std::fmt::Debug>(err: E) -> BlobError {
    BlobError::Unavailable(format!("{err:?}"))
}

fn crc32c_b64(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

fn hex_to_b64(hex_digest: &str) -> BlobResult<String> {
    let raw = hex::decode(hex_digest).map_err(|e| BlobError::Unavailable(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

async fn build_client(settings: &S3Settings, endpoint: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .build(),
    );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(settings.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if shared.region().is_none() {
        config = config.region(Region::new("us-east-1"));
    }
    if let Some(endpoint) = endpoint {
        config = config.endpoint_url(endpoint);
    }
    Client::from_conf(config.build())
}

impl S3BlobStore {
    pub async fn connect(settings: &S3Settings) -> anyhow::Result<Self> {
        let client = build_client(settings, settings.endpoint.as_deref()).await;
        let public_endpoint = settings
            .public_endpoint
            .as_deref()
            .or(settings.endpoint.as_deref());
        let public_client = build_client(settings, public_endpoint).await;
        let part_size = usize::try_from(settings.part_size)?;
        let budget =
            (BUFFER_BUDGET_BYTES / settings.part_size).max(settings.parts_in_flight as u64 + 1);
        let store = S3BlobStore {
            inner: Arc::new(Inner {
                client,
                public_client,
                bucket: settings.bucket.clone(),
                prefix: settings.prefix.clone(),
                part_size,
                parts_in_flight: settings.parts_in_flight,
                buffers: Arc::new(Semaphore::new(budget as usize)),
                buffer_wait: std::time::Duration::from_secs(settings.buffer_wait_seconds),
                spare_buffers: std::sync::Mutex::new(Vec::new()),
            }),
        };
        store.ensure_bucket(settings.create_bucket).await?;
        Ok(store)
    }

    async fn ensure_bucket(&self, create: bool) -> anyhow::Result<()> {
        let inner = &self.inner;
        match inner
            .client
            .head_bucket()
            .bucket(&inner.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let not_found = err.as_service_error().is_some_and(|e| e.is_not_found());
                if not_found && create {
                    match inner
                        .client
                        .create_bucket()
                        .bucket(&inner.bucket)
                        .send()
                        .await
                    {
                        Ok(_) => tracing::info!(bucket = %inner.bucket, "bucket created"),
                        // Another replica created it a moment ago: that is what we wanted.
                        Err(e)
                            if e.as_service_error()
                                .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
                        Err(e) => anyhow::bail!(
                            "cannot create bucket '{}': {}",
                            inner.bucket,
                            describe_sdk_error(&e)
                        ),
                    }
                    Ok(())
                } else if not_found {
                    anyhow::bail!(
                        "bucket '{}' does not exist (set DEPOT_S3_CREATE_BUCKET=true to create it)",
                        inner.bucket
                    )
                } else {
                    anyhow::bail!(
                        "cannot reach bucket '{}': {}",
                        inner.bucket,
                        describe_sdk_error(&err)
                    )
                }
            }
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }
}

/// A GetObject failure: `NotFound` for a missing key.
fn get_object_err(
    err: aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::get_object::GetObjectError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
) -> BlobError {
    if err.as_service_error().is_some_and(|e| e.is_no_such_key()) {
        BlobError::NotFound
    } else {
        BlobError::Unavailable(describe_sdk_error(&err))
    }
}

fn describe_sdk_error<E: std::fmt::Debug, R: std::fmt::Debug>(
    err: &aws_sdk_s3::error::SdkError<E, R>,
) -> String {
    use aws_sdk_s3::error::SdkError;
    match err {
        SdkError::DispatchFailure(_) => {
            "connection failed (is the endpoint right and the server up?)".into()
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::ServiceError(e) => format!("{:?}", e.err()),
        other => format!("{other:?}"),
    }
}

struct S3Writer {
    inner: Arc<Inner>,
    key: String,
    buffer: BytesMut,
    buffer_permit: Option<OwnedSemaphorePermit>,
    upload_id: Option<String>,
    next_part: i32,
    in_flight: JoinSet<BlobResult<CompletedPart>>,
    done: Vec<CompletedPart>,
    closed: bool,
}

impl S3Writer {
    /// Waits for one in-flight part and records it.
    async fn collect_one(&mut self) -> BlobResult<()> {
        if let Some(joined) = self.in_flight.join_next().await {
            let part = joined.map_err(|e| BlobError::Unavailable(e.to_string()))??;
            self.done.push(part);
        }
        Ok(())
    }

    async fn send_part(&mut self) -> BlobResult<()> {
        if self.upload_id.is_none() {
            self.upload_id = Some(self.inner.create_multipart(&self.key).await?);
        }
        while self.in_flight.len() >= self.inner.parts_in_flight {
            self.collect_one().await?;
        }
        let data = std::mem::take(&mut self.buffer).freeze();
        let permit = self.buffer_permit.take();
        let part_number = self.next_part;
        self.next_part += 1;
        let inner = self.inner.clone();
        let key = self.key.clone();
        let upload_id = self.upload_id.clone().unwrap_or_default();
        self.in_flight.spawn(async move {
            let checksum = crc32c_b64(&data);
            let out = inner
                .client
                .upload_part()
                .bucket(&inner.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(part_number)
                .content_length(data.len() as i64)
                .checksum_crc32_c(&checksum)
                .body(SdkStream::from(data.clone()))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(sdk_err)?;
            inner.return_buffer(data);
            drop(permit);
            Ok(CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .checksum_crc32_c(out.checksum_crc32_c().unwrap_or(&checksum))
                .build())
        });
        Ok(())
    }

    async fn put_single(&mut self, sha256_hex: &str) -> BlobResult<()> {
        let data = std::mem::take(&mut self.buffer).freeze();
        let checksum = hex_to_b64(sha256_hex)?;
        self.inner
            .client
            .put_object()
            .bucket(&self.inner.bucket)
            .key(&self.key)
            .content_length(data.len() as i64)
            .checksum_sha256(&checksum)
            .metadata("sha256", sha256_hex)
            .body(SdkStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(sdk_err)?;
        self.buffer_permit = None;
        Ok(())
    }

    async fn complete(&mut self, sha256_hex: &str) -> BlobResult<()> {
        if !self.buffer.is_empty() {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        self.inner
            .client
            .complete_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.as_deref().unwrap_or_default())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_err)?;
        // The digest is known only now; a tag keeps it with the object.
        tag_sha256(&self.inner, &self.key, sha256_hex).await;
        Ok(())
    }

    fn abort_in_background(&mut self) {
        self.in_flight.abort_all();
        if let Some(upload_id) = self.upload_id.take() {
            let inner = self.inner.clone();
            let key = self.key.clone();
            crate::cleanup::spawn(async move { abort_upload(&inner, &key, &upload_id).await });
        }
    }
}

async fn abort_upload(inner: &Inner, key: &str, upload_id: &str) {
    if let Err(err) = inner
        .client
        .abort_multipart_upload()
        .bucket(&inner.bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        tracing::warn!(key = %key, error = %describe_sdk_error(&err), "abort of multipart upload failed; the janitor retries");
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if !self.closed {
            self.abort_in_background();
        }
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, mut chunk: Bytes) -> BlobResult<()> {
        while !chunk.is_empty() {
            if self.buffer_permit.is_none() {
                self.buffer_permit = Some(take_buffer_permit(&self.inner).await?);
                self.buffer = self.inner.take_buffer();
            }
            let take = (self.inner.part_size - self.buffer.len()).min(chunk.len());
            self.buffer.extend_from_slice(&chunk.split_to(take));
            if self.buffer.len() == self.inner.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, sha256_hex: &str) -> BlobResult<()> {
        let result = if self.upload_id.is_none() {
            self.put_single(sha256_hex).await
        } else {
            self.complete(sha256_hex).await
        };
        match result {
            Ok(()) => {
                self.closed = true;
                Ok(())
            }
            Err(err) => {
                self.closed = true;
                self.in_flight.abort_all();
                if let Some(id) = self.upload_id.take() {
                    abort_upload(&self.inner, &self.key, &id).await;
                }
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        self.closed = true;
        self.in_flight.abort_all();
        if let Some(id) = self.upload_id.take() {
            abort_upload(&self.inner, &self.key, &id).await;
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn describe(&self) -> &'static str {
        "S3"
    }

    async fn ping(&self) -> BlobResult<()> {
        self.inner
            .client
            .head_bucket()
            .bucket(&self.inner.bucket)
            .send()
            .await
            .map_err(|e| BlobError::Unavailable(describe_sdk_error(&e)))?;
        Ok(())
    }

    async fn writer(&self, key: &str) -> BlobResult<Box<dyn BlobWriter>> {
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            key: self.full_key(key),
            buffer: BytesMut::new(),
            buffer_permit: None,
            upload_id: None,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            closed: false,
        }))
    }

    async fn read(&self, key: &str, range: Option<ByteRange>) -> BlobResult<ByteStream> {
        let mut request = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(self.full_key(key));
        if let Some(r) = range {
            request = request.range(format!("bytes={}-{}", r.start, r.end));
        }
        let output = request.send().await.map_err(get_object_err)?;
        let body = output.body;
        let stream = futures::stream::unfold(body, |mut body| async move {
            body.next()
                .await
                .map(|item| (item.map_err(std::io::Error::other), body))
        });
        Ok(stream.boxed())
    }

    async fn presign(
        &self,
        key: &str,
        file_name: &str,
        ttl: Duration,
    ) -> BlobResult<Option<String>> {
        let config = PresigningConfig::expires_in(ttl).map_err(sdk_err)?;
        let request = self
            .inner
            .public_client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(self.full_key(key))
            .response_content_disposition(crate::domain::names::content_disposition(file_name))
            .presigned(config)
            .await
            .map_err(sdk_err)?;
        Ok(Some(request.uri().to_string()))
    }

    async fn delete(&self, key: &str) -> BlobResult<()> {
        self.inner
            .client
            .delete_object()
            .bucket(&self.inner.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| BlobError::Unavailable(describe_sdk_error(&e)))?;
        Ok(())
    }

    async fn list_keys_before(&self, before: SystemTime) -> BlobResult<Vec<String>> {
        let inner = &self.inner;
        let mut pages = inner
            .client
            .list_objects_v2()
            .bucket(&inner.bucket)
            .prefix(&inner.prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| BlobError::Unavailable(describe_sdk_error(&e)))?;
            for object in page.contents() {
                let old = object
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .is_some_and(|t| t < before);
                // Only keys of Depot's own shape: the bucket (and an empty prefix) may
                // hold other tools' objects.
                if let (true, Some(key)) = (old, object.key())
                    && let Some(rel) = key.strip_prefix(inner.prefix.as_str())
                    && is_depot_key(rel)
                {
                    keys.push(rel.to_string());
                }
            }
        }
        Ok(keys)
    }

    async fn remove_partials_before(
        &self,
        before: SystemTime,
        keep: &std::collections::HashSet<String>,
    ) -> BlobResult<usize> {
        let inner = &self.inner;
        let mut removed = 0;
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = inner
                .client
                .list_multipart_uploads()
                .bucket(&inner.bucket)
                .prefix(&inner.prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| BlobError::Unavailable(describe_sdk_error(&e)))?;
            for upload in page.uploads() {
                let old = upload
                    .initiated()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .is_some_and(|t| t < before);
                let ours = upload
                    .key()
                    .and_then(|key| key.strip_prefix(inner.prefix.as_str()))
                    .is_some_and(|rel| is_depot_key(rel) && !keep.contains(rel));
                if let (true, true, Some(key), Some(id)) =
                    (old, ours, upload.key(), upload.upload_id())
                {
                    abort_upload(inner, key, id).await;
                    removed += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(removed)
    }

    async fn discard(&self, key: &str) -> BlobResult<()> {
        let inner = &self.inner;
        let full = self.full_key(key);
        // The key is unique per upload attempt, so its multipart uploads are few: one page.
        let page = inner
            .client
            .list_multipart_uploads()
            .bucket(&inner.bucket)
            .prefix(&full)
            .send()
            .await
            .map_err(|e| BlobError::Unavailable(describe_sdk_error(&e)))?;
        for upload in page.uploads() {
            if let (Some(k), Some(id)) = (upload.key(), upload.upload_id())
                && k == full
            {
                abort_upload(inner, k, id).await;
            }
        }
        self.delete(key).await
    }

    async fn resume(
        &self,
        key: &str,
        point: &ResumePoint,
        offset: u64,
    ) -> BlobResult<Box<dyn ResumableWriter>> {
        self.resume_writer(key, point, offset).await
    }

    async fn discard_resumable(&self, key: &str, point: &ResumePoint) -> BlobResult<()> {
        if !point.session.is_empty() {
            abort_upload(&self.inner, &self.full_key(key), &point.session).await;
        }
        self.discard(key).await
    }

    async fn presign_put(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
        ttl: Duration,
    ) -> BlobResult<Option<UploadUrl>> {
        let config = PresigningConfig::expires_in(ttl).map_err(sdk_err)?;
        let request = self
            .inner
            .public_client
            .put_object()
            .bucket(&self.inner.bucket)
            .key(self.full_key(key))
            .content_length(size as i64)
            .checksum_sha256(hex_to_b64(sha256_hex)?)
            .presigned(config)
            .await
            .map_err(sdk_err)?;
        let headers = request
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Ok(Some(UploadUrl {
            url: request.uri().to_string(),
            headers,
        }))
    }

    async fn stat(&self, key: &str) -> BlobResult<ObjectInfo> {
        let head = self
            .inner
            .client
            .head_object()
            .bucket(&self.inner.bucket)
            .key(self.full_key(key))
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|err| {
                if err.as_service_error().is_some_and(|e| e.is_not_found()) {
                    BlobError::NotFound
                } else {
                    BlobError::Unavailable(describe_sdk_error(&err))
                }
            })?;
        // A multipart object's checksum is a checksum of checksums ("...-N"): not the file's.
        let sha256_hex = head
            .checksum_sha256()
            .filter(|c| !c.contains('-'))
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .filter(|raw| raw.len() == 32)
            .map(hex::encode);
        Ok(ObjectInfo {
            size: head.content_length().unwrap_or(0).max(0) as u64,
            sha256_hex,
        })
    }
}

/// S3's smallest part but the last.
const MIN_PART: usize = 5 * 1024 * 1024;

/// A resumable write: a multipart upload whose parts are recorded (in the
/// [`ResumePoint`]) as they complete; bytes that do not fill a part when a request ends
/// are kept as a plain object under the key itself (read back on resume, replaced by the
/// finished object).
struct S3Resumable {
    inner: Arc<Inner>,
    key: String,
    point: ResumePoint,
    /// Where the buffer starts in the object.
    buffer_start: u64,
    buffer: BytesMut,
    /// The buffer's share of the process-wide part-buffer budget; a part in flight takes
    /// it along, and the next buffer waits for one of its own.
    permit: Option<OwnedSemaphorePermit>,
    in_flight: std::collections::VecDeque<(u64, tokio::task::JoinHandle<BlobResult<StoredPart>>)>,
    reached: Vec<(u64, ResumePoint)>,
}

impl S3Resumable {
    fn written(&self) -> u64 {
        self.buffer_start + self.buffer.len() as u64
    }

    async fn ensure_session(&mut self) -> BlobResult<()> {
        if self.point.session.is_empty() {
            self.point.session = self.inner.create_multipart(&self.key).await?;
        }
        Ok(())
    }

    /// Sends the buffer as the next part (in the background).
    async fn send_part(&mut self) -> BlobResult<()> {
        self.ensure_session().await?;
        while self.in_flight.len() >= self.inner.parts_in_flight {
            self.settle_front().await?;
        }
        let data = std::mem::replace(&mut self.buffer, self.inner.take_buffer()).freeze();
        let number = (self.point.parts.len() + self.in_flight.len() + 1) as i32;
        let size = data.len() as u64;
        let permit = self.permit.take();
        self.buffer_start += size;
        let (inner, key, upload_id) = (
            self.inner.clone(),
            self.key.clone(),
            self.point.session.clone(),
        );
        let task = tokio::spawn(async move {
            let checksum = crc32c_b64(&data);
            let out = inner
                .client
                .upload_part()
                .bucket(&inner.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(size as i64)
                .checksum_crc32_c(&checksum)
                .body(SdkStream::from(data.clone()))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(sdk_err)?;
            inner.return_buffer(data);
            drop(permit);
            Ok(StoredPart {
                number,
                size,
                etag: out.e_tag().unwrap_or_default().to_string(),
                crc32c: out.checksum_crc32_c().unwrap_or(&checksum).to_string(),
            })
        });
        self.in_flight.push_back((self.buffer_start, task));
        Ok(())
    }

    /// Waits for the oldest part in flight and records it.
    async fn settle_front(&mut self) -> BlobResult<()> {
        if let Some((end, task)) = self.in_flight.pop_front() {
            let part = task
                .await
                .map_err(|e| BlobError::Unavailable(e.to_string()))??;
            self.point.parts.push(part);
            self.point.tail = 0;
            self.reached.push((end, self.point.clone()));
        }
        Ok(())
    }

    async fn settle_all(&mut self) -> BlobResult<()> {
        while !self.in_flight.is_empty() {
            self.settle_front().await?;
        }
        Ok(())
    }
}

impl Drop for S3Resumable {
    fn drop(&mut self) {
        // Parts still in flight are not recorded: a resume sends them again.
        for (_, task) in &self.in_flight {
            task.abort();
        }
    }
}

#[async_trait]
impl ResumableWriter for S3Resumable {
    fn room(&self) -> u64 {
        (self.inner.part_size - self.buffer.len()) as u64
    }

    async fn write(&mut self, mut chunk: Bytes) -> BlobResult<()> {
        while !chunk.is_empty() {
            if self.permit.is_none() {
                self.permit = Some(take_buffer_permit(&self.inner).await?);
            }
            let take = (self.inner.part_size - self.buffer.len()).min(chunk.len());
            self.buffer.extend_from_slice(&chunk.split_to(take));
            if self.buffer.len() == self.inner.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn durable(&mut self) -> BlobResult<Vec<(u64, ResumePoint)>> {
        while self
            .in_flight
            .front()
            .is_some_and(|(_, task)| task.is_finished())
        {
            self.settle_front().await?;
        }
        Ok(std::mem::take(&mut self.reached))
    }

    async fn checkpoint(&mut self) -> BlobResult<(u64, ResumePoint)> {
        self.settle_all().await?;
        if self.buffer.len() >= MIN_PART {
            self.send_part().await?;
            self.settle_all().await?;
        } else if !self.buffer.is_empty() {
            // Too short for a part: kept as the object under the key until more comes.
            let data = Bytes::copy_from_slice(&self.buffer);
            self.inner
                .client
                .put_object()
                .bucket(&self.inner.bucket)
                .key(&self.key)
                .content_length(data.len() as i64)
                .checksum_crc32_c(crc32c_b64(&data))
                .body(SdkStream::from(data))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(sdk_err)?;
            self.point.tail = self.buffer.len() as u64;
        }
        self.reached.clear();
        Ok((self.written(), self.point.clone()))
    }

    async fn finish(mut self: Box<Self>, sha256_hex: &str) -> BlobResult<()> {
        self.settle_all().await?;
        if self.point.parts.is_empty() && self.buffer_start == 0 {
            // Small enough for one PUT: the store verifies its SHA-256.
            let data = std::mem::take(&mut self.buffer).freeze();
            self.inner
                .client
                .put_object()
                .bucket(&self.inner.bucket)
                .key(&self.key)
                .content_length(data.len() as i64)
                .checksum_sha256(hex_to_b64(sha256_hex)?)
                .metadata("sha256", sha256_hex)
                .body(SdkStream::from(data))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(sdk_err)?;
            // The object is one PUT: no multipart upload of the key is needed any more.
            abort_others(&self.inner, &self.key, "").await;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            self.send_part().await?;
            self.settle_all().await?;
        }
        let parts: Vec<CompletedPart> = self
            .point
            .parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .checksum_crc32_c(&p.crc32c)
                    .build()
            })
            .collect();
        self.inner
            .client
            .complete_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(&self.key)
            .upload_id(&self.point.session)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_err)?;
        tag_sha256(&self.inner, &self.key, sha256_hex).await;
        abort_others(&self.inner, &self.key, &self.point.session).await;
        Ok(())
    }
}

/// Aborts the multipart uploads of `key` other than `keep`: ones a request that died
/// before recording its upload id started (the key is unique to one upload).
async fn abort_others(inner: &Inner, key: &str, keep: &str) {
    let Ok(page) = inner
        .client
        .list_multipart_uploads()
        .bucket(&inner.bucket)
        .prefix(key)
        .send()
        .await
    else {
        return;
    };
    for upload in page.uploads() {
        if let (Some(k), Some(id)) = (upload.key(), upload.upload_id())
            && k == key
            && id != keep
        {
            abort_upload(inner, k, id).await;
        }
    }
}

/// One part buffer's share of the budget, waited for at most `buffer_wait` (stalled
/// uploads holding every buffer must not freeze the rest).
async fn take_buffer_permit(inner: &Arc<Inner>) -> BlobResult<OwnedSemaphorePermit> {
    tokio::time::timeout(inner.buffer_wait, inner.buffers.clone().acquire_owned())
        .await
        .map_err(|_| BlobError::Busy)?
        .map_err(|e| BlobError::Unavailable(e.to_string()))
}

/// Keeps the digest with the object as a `sha256` tag (best effort: the metadata store
/// has it either way).
async fn tag_sha256(inner: &Inner, key: &str, sha256_hex: &str) {
    let tagging = Tag::builder()
        .key("sha256")
        .value(sha256_hex)
        .build()
        .and_then(|tag| Tagging::builder().tag_set(tag).build());
    let Ok(tagging) = tagging else {
        return;
    };
    if let Err(err) = inner
        .client
        .put_object_tagging()
        .bucket(&inner.bucket)
        .key(key)
        .tagging(tagging)
        .send()
        .await
    {
        tracing::warn!(key = %key, error = %describe_sdk_error(&err), "could not tag object with its sha256");
    }
}

impl S3BlobStore {
    async fn resume_writer(
        &self,
        key: &str,
        point: &ResumePoint,
        offset: u64,
    ) -> BlobResult<Box<dyn ResumableWriter>> {
        let inner = &self.inner;
        let permit = take_buffer_permit(inner).await?;
        let key = self.full_key(key);
        let mut buffer = inner.take_buffer();
        if point.tail > 0 {
            let object = inner
                .client
                .get_object()
                .bucket(&inner.bucket)
                .key(&key)
                .send()
                .await
                .map_err(get_object_err)?;
            let mut body = object.body;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(sdk_err)?;
                if buffer.len() + chunk.len() > inner.part_size {
                    return Err(BlobError::Unavailable(
                        "the stored tail of a resumable upload is longer than recorded".into(),
                    ));
                }
                buffer.extend_from_slice(&chunk);
            }
            if buffer.len() as u64 != point.tail {
                return Err(BlobError::NotFound);
            }
        }
        let stored: u64 = point.parts.iter().map(|p| p.size).sum::<u64>() + point.tail;
        if stored != offset {
            return Err(BlobError::Unavailable(format!(
                "resumable upload records {offset} bytes but its parts hold {stored}"
            )));
        }
        Ok(Box::new(S3Resumable {
            inner: inner.clone(),
            key,
            point: point.clone(),
            buffer_start: offset - point.tail,
            buffer,
            permit: Some(permit),
            in_flight: Default::default(),
            reached: Vec::new(),
        }))
    }
}
