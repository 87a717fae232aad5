//! The upload's staging blocks and its SHA-256 hasher: the body is copied into a few
//! reused, aligned blocks that the hasher (on its own thread) and the blob writer share.

use crate::blob::{AlignedBuf, BlobWriter};
use crate::error::{ApiError, ApiResult};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// SHA-256 on a blocking-pool thread, so hashing runs on one core while parsing and
/// writing run on another. It reads whole staging blocks.
pub struct BackgroundHasher {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<String>,
}

impl BackgroundHasher {
    pub fn new() -> Self {
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

    pub async fn update(&self, block: Bytes) -> ApiResult<()> {
        self.tx.send(block).await.map_err(ApiError::internal)
    }

    pub async fn finish(self) -> ApiResult<String> {
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
pub struct Staging {
    filling: Option<AlignedBuf>,
    made: usize,
    returned: tokio::sync::mpsc::UnboundedReceiver<AlignedBuf>,
    home: tokio::sync::mpsc::UnboundedSender<AlignedBuf>,
}

impl Staging {
    pub fn new() -> Self {
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
    pub async fn fill(&mut self, data: &[u8]) -> ApiResult<(usize, Option<Bytes>)> {
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
    pub fn rest(&mut self) -> Option<Bytes> {
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
pub async fn pass_on(
    block: Bytes,
    hasher: &BackgroundHasher,
    writer: &mut dyn BlobWriter,
) -> ApiResult<()> {
    hasher.update(block.clone()).await?;
    writer.write(block).await?;
    Ok(())
}
