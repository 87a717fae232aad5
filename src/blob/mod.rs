//! The blob store: where artifact bytes live. One trait, one file per implementation
//! (`fs` for the local filesystem, `s3` for S3-compatible stores).
//!
//! Writes go through a `BlobWriter` that makes the object visible only on `finish`;
//! dropping an unfinished writer discards what it wrote. Reads return a byte stream,
//! optionally of one range. A store that can presign returns a URL for direct download.

use crate::error::BlobError;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::time::{Duration, SystemTime};

pub mod fs;
pub mod s3;

pub type BlobResult<T> = Result<T, BlobError>;
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// An inclusive byte range `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()>;
    /// Makes the object visible under its key, recording its SHA-256 (hex) with it where
    /// the store can. On error nothing is left behind.
    async fn finish(self: Box<Self>, sha256_hex: &str) -> BlobResult<()>;
    /// Discards everything written so far.
    async fn abort(self: Box<Self>);
}

/// Where a resumable write stands, as Depot records it between requests: enough for
/// the store to continue it, in this process or another, and to remove it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    /// S3: the multipart upload's id (empty before its first part).
    #[serde(default)]
    pub session: String,
    /// S3: the parts stored, in order.
    #[serde(default)]
    pub parts: Vec<StoredPart>,
    /// S3: bytes past the last part (fewer than a part needs), kept as a plain object
    /// under the upload's key until more arrive.
    #[serde(default)]
    pub tail: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPart {
    pub number: i32,
    pub size: u64,
    pub etag: String,
    pub crc32c: String,
}

/// Appends to an object over many requests. Bytes become durable in steps: `room` says
/// how many more bytes complete the current step, and `durable` hands out each step
/// reached (in order) with the offset it covers, to be recorded; `checkpoint` makes
/// everything written durable. Dropped, it leaves what is durable and nothing else.
#[async_trait]
pub trait ResumableWriter: Send {
    /// Bytes until the next durable step (writes are cut there by the caller, so a
    /// step's offset is known exactly).
    fn room(&self) -> u64;
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()>;
    /// The durable steps reached since the last call: (offset, point), oldest first.
    async fn durable(&mut self) -> BlobResult<Vec<(u64, ResumePoint)>>;
    /// Makes everything written durable; the point (and offset) to record.
    async fn checkpoint(&mut self) -> BlobResult<(u64, ResumePoint)>;
    /// Everything is written: makes the object visible under its key.
    async fn finish(self: Box<Self>, sha256_hex: &str) -> BlobResult<()>;
}

/// What a store knows about a finished object: its size, and its SHA-256 (hex) when the
/// store keeps one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub sha256_hex: Option<String>,
}

/// A URL a client uploads one object to, and the headers it must send.
#[derive(Debug, Clone)]
pub struct UploadUrl {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Human name for `/health` ("Filesystem", "S3").
    fn describe(&self) -> &'static str;
    async fn ping(&self) -> BlobResult<()>;
    /// A writer for a fresh key that nobody else writes to.
    async fn writer(&self, key: &str) -> BlobResult<Box<dyn BlobWriter>>;
    async fn read(&self, key: &str, range: Option<ByteRange>) -> BlobResult<ByteStream>;
    /// A URL that downloads the object directly, or `None` if this store cannot presign.
    async fn presign(
        &self,
        key: &str,
        file_name: &str,
        ttl: Duration,
    ) -> BlobResult<Option<String>>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> BlobResult<()>;
    /// Keys of finished objects last modified before `before`.
    async fn list_keys_before(&self, before: SystemTime) -> BlobResult<Vec<String>>;
    /// Removes unfinished writes (partial files, incomplete multipart uploads) started
    /// before `before`, except those of the keys in `keep` (resumable uploads still
    /// open); returns how many it removed.
    async fn remove_partials_before(
        &self,
        before: SystemTime,
        keep: &std::collections::HashSet<String>,
    ) -> BlobResult<usize>;
    /// Removes everything stored under `key`: the object and any unfinished write of it
    /// (partial file, multipart upload). What a dead upload left; missing is not an error.
    async fn discard(&self, key: &str) -> BlobResult<()>;

    /// Continues (or, from `ResumePoint::default()`, starts) a resumable write of `key`
    /// whose first `offset` bytes are durable at `point`.
    async fn resume(
        &self,
        key: &str,
        point: &ResumePoint,
        offset: u64,
    ) -> BlobResult<Box<dyn ResumableWriter>>;
    /// Removes an unfinished resumable write of `key` and everything it stored.
    async fn discard_resumable(&self, key: &str, point: &ResumePoint) -> BlobResult<()>;
    /// A presigned `PUT` of exactly `size` bytes whose SHA-256 is `sha256_hex` to `key`,
    /// or `None` if this store cannot presign (Depot then serves the upload itself).
    async fn presign_put(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
        ttl: Duration,
    ) -> BlobResult<Option<UploadUrl>>;
    /// The finished object's size and stored SHA-256; `NotFound` when absent.
    async fn stat(&self, key: &str) -> BlobResult<ObjectInfo>;
}

/// Whether `key` (relative to the store's root or prefix) has the shape of a key
/// `new_blob_key` makes: `<product>/<version>/<uuid>` or `unsorted/<uuid>`, where the
/// names pass `domain::names` validation and `<uuid>` is 32 lowercase hex digits.
/// The janitor lists and removes only such keys, so another tool's objects, files or
/// multipart uploads sharing the bucket, prefix or directory are never touched.
pub fn is_depot_key(key: &str) -> bool {
    let is_id =
        |s: &str| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["unsorted", id] => is_id(id),
        [product, version, id] => {
            crate::domain::names::is_valid_name(product)
                && crate::domain::names::is_valid_name(version)
                && is_id(id)
        }
        _ => false,
    }
}

/// `O_DIRECT` wants buffer addresses, lengths and file offsets aligned to the device's
/// logical block size; 4096 covers the devices in use.
pub const DIRECT_ALIGN: usize = 4096;

/// A fixed-size buffer, filled from the front, whose start is `DIRECT_ALIGN`ed, so the
/// filesystem store can hand its filled part to an `O_DIRECT` write as it is.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    capacity: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(capacity: usize) -> Self {
        // Zeroed allocation: the pages are only touched (faulted in) once, on first fill.
        let raw = vec![0u8; capacity + DIRECT_ALIGN];
        // If the address cannot be aligned, direct writes fail with EINVAL and the
        // writer falls back to buffered ones; the data is right either way.
        let start = match raw.as_ptr().align_offset(DIRECT_ALIGN) {
            offset if offset < DIRECT_ALIGN => offset,
            _ => 0,
        };
        Self {
            raw,
            start,
            capacity,
            len: 0,
        }
    }

    /// Copies as much of `data` as fits; returns how much.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let take = (self.capacity - self.len).min(data.len());
        let at = self.start + self.len;
        self.raw[at..at + take].copy_from_slice(&data[..take]);
        self.len += take;
        take
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// The filled part.
impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// Whether `bytes` can go to an `O_DIRECT` write without being copied first.
pub fn is_direct_aligned(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && (bytes.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
        && bytes.len().is_multiple_of(DIRECT_ALIGN)
}

/// The key of a new upload attempt: unique, and readable in a bucket listing when the
/// product and version are known before the file arrives.
pub fn new_blob_key(product: Option<&str>, version: Option<&str>) -> String {
    let id = uuid::Uuid::new_v4().simple();
    match (product, version) {
        (Some(p), Some(v)) => format!("{p}/{v}/{id}"),
        _ => format!("unsorted/{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blob_keys_have_the_depot_shape_and_foreign_keys_do_not() {
        assert!(is_depot_key(&new_blob_key(Some("my-lib"), Some("v1.0.0"))));
        assert!(is_depot_key(&new_blob_key(None, None)));
        let id = uuid::Uuid::new_v4().simple().to_string();
        for foreign in [
            "backup.tar".to_string(),
            "other-tool/data.bin".to_string(),
            format!("unsorted/{id}.bak"),
            format!("unsorted/{}", id.to_uppercase()),
            format!("unsorted/{}", &id[..31]),
            format!("p/v/{id}/x"),
            format!("team/p/v/{id}"),
            format!(".hidden/v/{id}"),
            format!("p/../{id}"),
            format!("p/v/{id}.partial"),
            format!("/p/v/{id}"),
            String::new(),
        ] {
            assert!(!is_depot_key(&foreign), "{foreign:?}");
        }
    }
}
