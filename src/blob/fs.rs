//! Blobs as files under `<data_dir>/blobs/<key>`. A write goes to `<key>.partial` and is
//! renamed into place by `finish`, so a crash never leaves a half file under a real key.

use super::*;
use futures::StreamExt;
use std::io::SeekFrom;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::fs::{self, File};
use tokio::io::AsyncSeekExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

const PARTIAL_SUFFIX: &str = ".partial";
const READ_CHUNK: usize = 256 * 1024;
/// One write to disk, and the unit of an upload's buffers.
const WRITE_BLOCK: usize = 2 * 1024 * 1024;
/// Buffers per upload: one filling while the others wait for or go through `write`.
const BLOCKS_PER_UPLOAD: usize = 3;
pub struct FsBlobStore {
    root: PathBuf,
}

fn io_err(err: std::io::Error) -> BlobError {
    if err.kind() == std::io::ErrorKind::NotFound {
        BlobError::NotFound
    } else {
        BlobError::Unavailable(err.to_string())
    }
}

impl FsBlobStore {
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let root = data_dir.join("blobs");
        // Private like the data dir (0700); files inside are created 0600.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .await?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> BlobResult<PathBuf> {
        // Keys are built from validated names; refuse anything else outright.
        let safe = !key.is_empty() && key.split('/').all(crate::domain::names::is_valid_name);
        if !safe {
            return Err(BlobError::Unavailable(format!(
                "refusing unsafe blob key {key:?}"
            )));
        }
        Ok(self.root.join(key))
    }
}

/// The file being written, from a blocking thread. Whole blocks go through an `O_DIRECT`
/// handle when the filesystem allows one: no page-cache copy of a large artifact (that
/// copy cost more CPU than hashing it), and little left for the final `fsync`. The tail
/// and any filesystem without `O_DIRECT` use the ordinary handle. Writes are positional,
/// so a block retried on the other handle lands in the same place.
struct DiskFile {
    plain: std::fs::File,
    direct: Option<std::fs::File>,
    offset: u64,
}

impl DiskFile {
    fn create(partial: &Path) -> std::io::Result<Self> {
        // 0600 whatever the umask: artifacts are readable only through Depot.
        let plain = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(partial)?;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(partial)
            .ok();
        Ok(Self {
            plain,
            direct,
            offset: 0,
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let aligned = data.len().is_multiple_of(DIRECT_ALIGN)
            && self.offset.is_multiple_of(DIRECT_ALIGN as u64);
        let mut done = false;
        if let (true, Some(direct)) = (aligned, &self.direct) {
            match direct.write_all_at(data, self.offset) {
                Ok(()) => done = true,
                Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!("O_DIRECT write refused; using buffered writes");
                    self.direct = None;
                }
                Err(err) => return Err(err),
            }
        }
        if !done {
            self.plain.write_all_at(data, self.offset)?;
        }
        self.offset += data.len() as u64;
        Ok(())
    }
}

enum DiskCommand {
    Write(AlignedBuf),
    /// An aligned chunk written as it is (no copy); dropped once written.
    WriteShared(Bytes),
    /// Make the file durable and move it to `target`.
    Finish {
        target: PathBuf,
    },
}

/// Runs on a blocking thread until `Finish` (or until the writer is dropped).
fn write_to_disk(
    mut file: DiskFile,
    partial: PathBuf,
    mut commands: mpsc::Receiver<DiskCommand>,
    emptied: mpsc::UnboundedSender<AlignedBuf>,
) -> std::io::Result<()> {
    while let Some(command) = commands.blocking_recv() {
        match command {
            DiskCommand::Write(mut block) => {
                file.write(block.as_ref())?;
                block.clear();
                let _ = emptied.send(block);
            }
            DiskCommand::WriteShared(chunk) => file.write(&chunk)?,
            DiskCommand::Finish { target } => {
                file.plain.sync_all()?;
                drop(file);
                std::fs::rename(&partial, &target)?;
                // The rename itself must survive a crash too.
                if let Some(dir) = target.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Hands aligned chunks, or copies of unaligned ones gathered into aligned blocks, to the
/// disk thread, so the async side never blocks and never holds more than
/// `BLOCKS_PER_UPLOAD` blocks of its own.
struct FsWriter {
    filling: Option<AlignedBuf>,
    blocks_made: usize,
    to_disk: Option<mpsc::Sender<DiskCommand>>,
    emptied: mpsc::UnboundedReceiver<AlignedBuf>,
    disk: Option<JoinHandle<std::io::Result<()>>>,
    partial: PathBuf,
    target: PathBuf,
    closed: bool,
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // Dropped without finish (client gone, error): discard the partial file.
        if !self.closed {
            self.to_disk = None;
            let partial = self.partial.clone();
            crate::cleanup::spawn(async move {
                let _ = fs::remove_file(partial).await;
            });
        }
    }
}

impl FsWriter {
    /// Closes the command channel and waits for the disk thread's outcome.
    async fn disk_result(&mut self) -> BlobResult<()> {
        self.to_disk = None;
        match self.disk.take() {
            Some(handle) => match handle.await {
                Ok(result) => result.map_err(io_err),
                Err(err) => Err(BlobError::Unavailable(err.to_string())),
            },
            None => Err(BlobError::Unavailable("writer already closed".into())),
        }
    }

    /// Why the disk thread stopped before it was told to.
    async fn disk_failure(&mut self) -> BlobError {
        match self.disk_result().await {
            Err(err) => err,
            Ok(()) => BlobError::Unavailable("file writer stopped early".into()),
        }
    }

    async fn send(&mut self, command: DiskCommand) -> BlobResult<()> {
        let sent = match &self.to_disk {
            Some(to_disk) => to_disk.send(command).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.disk_failure().await)
        }
    }

    async fn empty_block(&mut self) -> BlobResult<AlignedBuf> {
        if self.blocks_made < BLOCKS_PER_UPLOAD {
            self.blocks_made += 1;
            return Ok(AlignedBuf::new(WRITE_BLOCK));
        }
        match self.emptied.recv().await {
            Some(block) => Ok(block),
            None => Err(self.disk_failure().await),
        }
    }
}

#[async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()> {
        // The upload's staging blocks arrive aligned and whole: they go to disk as they
        // are. Anything else (the tail, other callers) is copied into aligned blocks.
        if self.filling.is_none() && is_direct_aligned(&chunk) {
            return self.send(DiskCommand::WriteShared(chunk)).await;
        }
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let mut block = match self.filling.take() {
                Some(block) => block,
                None => self.empty_block().await?,
            };
            let taken = block.push(rest);
            rest = &rest[taken..];
            if block.is_full() {
                self.send(DiskCommand::Write(block)).await?;
            } else {
                self.filling = Some(block);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, _sha256_hex: &str) -> BlobResult<()> {
        let result = async {
            if let Some(block) = self.filling.take().filter(|b| !b.is_empty()) {
                self.send(DiskCommand::Write(block)).await?;
            }
            let target = self.target.clone();
            self.send(DiskCommand::Finish { target }).await?;
            self.disk_result().await
        }
        .await;
        self.closed = true;
        if result.is_err() {
            let _ = fs::remove_file(&self.partial).await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.closed = true;
        self.to_disk = None;
        let _ = fs::remove_file(&self.partial).await;
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    fn describe(&self) -> &'static str {
        "Filesystem"
    }

    async fn ping(&self) -> BlobResult<()> {
        let meta = fs::metadata(&self.root).await.map_err(io_err)?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(BlobError::Unavailable(
                "blob root is not a directory".into(),
            ))
        }
    }

    async fn writer(&self, key: &str) -> BlobResult<Box<dyn BlobWriter>> {
        let target = self.path(key)?;
        let partial = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", target.display()));
        // A `delete` tidying the same (then empty) version directory may remove it between
        // our create_dir_all and create: once more then.
        let mut attempts = 0;
        let file = loop {
            attempts += 1;
            if let Some(parent) = target.parent() {
                // Private: blob directories are 0700, like the data dir.
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .await
                    .map_err(io_err)?;
            }
            let partial = partial.clone();
            match tokio::task::spawn_blocking(move || DiskFile::create(&partial))
                .await
                .map_err(|e| BlobError::Unavailable(e.to_string()))?
            {
                Ok(file) => break file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => continue,
                Err(e) => return Err(io_err(e)),
            }
        };
        let (to_disk, commands) = mpsc::channel(BLOCKS_PER_UPLOAD);
        let (emptied_tx, emptied) = mpsc::unbounded_channel();
        let disk = {
            let partial = partial.clone();
            tokio::task::spawn_blocking(move || write_to_disk(file, partial, commands, emptied_tx))
        };
        Ok(Box::new(FsWriter {
            filling: None,
            blocks_made: 0,
            to_disk: Some(to_disk),
            emptied,
            disk: Some(disk),
            partial,
            target,
            closed: false,
        }))
    }

    async fn read(&self, key: &str, range: Option<ByteRange>) -> BlobResult<ByteStream> {
        let mut file = File::open(self.path(key)?).await.map_err(io_err)?;
        match range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start)).await.map_err(io_err)?;
                let limited = tokio::io::AsyncReadExt::take(file, r.len());
                Ok(ReaderStream::with_capacity(limited, READ_CHUNK).boxed())
            }
            None => Ok(ReaderStream::with_capacity(file, READ_CHUNK).boxed()),
        }
    }

    async fn presign(
        &self,
        _key: &str,
        _file_name: &str,
        _ttl: Duration,
    ) -> BlobResult<Option<String>> {
        Ok(None)
    }

    async fn delete(&self, key: &str) -> BlobResult<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // Tidy empty parent directories (version, then product); errors just mean "not empty".
        let mut dir = path.parent();
        for _ in 0..2 {
            match dir {
                Some(d) if d != self.root => {
                    if fs::remove_dir(d).await.is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                _ => break,
            }
        }
        Ok(())
    }

    async fn list_keys_before(&self, before: SystemTime) -> BlobResult<Vec<String>> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(&root, before, false))
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?
    }

    async fn remove_partials_before(
        &self,
        before: SystemTime,
        // Resumable writes are `.resumable` files, which this never lists.
        _keep: &std::collections::HashSet<String>,
    ) -> BlobResult<usize> {
        let root = self.root.clone();
        let partials = tokio::task::spawn_blocking(move || walk(&root, before, true))
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))??;
        for key in &partials {
            let _ = fs::remove_file(self.root.join(key)).await;
        }
        Ok(partials.len())
    }

    async fn discard(&self, key: &str) -> BlobResult<()> {
        let partial = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", self.path(key)?.display()));
        for path in [partial, self.resumable_path(key)?] {
            match fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        self.delete(key).await
    }

    async fn resume(
        &self,
        key: &str,
        _point: &ResumePoint,
        offset: u64,
    ) -> BlobResult<Box<dyn ResumableWriter>> {
        self.resume_writer(key, offset).await
    }

    async fn discard_resumable(&self, key: &str, _point: &ResumePoint) -> BlobResult<()> {
        self.discard(key).await
    }

    async fn presign_put(
        &self,
        _key: &str,
        _size: u64,
        _sha256_hex: &str,
        _ttl: Duration,
    ) -> BlobResult<Option<UploadUrl>> {
        Ok(None)
    }

    async fn stat(&self, key: &str) -> BlobResult<ObjectInfo> {
        let meta = fs::metadata(self.path(key)?).await.map_err(io_err)?;
        if !meta.is_file() {
            return Err(BlobError::NotFound);
        }
        Ok(ObjectInfo {
            size: meta.len(),
            sha256_hex: None,
        })
    }
}

/// Relative paths of files (finished ones, or `.partial` ones) modified before `before`
/// whose key has Depot's shape (`is_depot_key`). Only directories that can hold such keys
/// are entered (valid names, at most two levels), and only regular files count, so
/// whatever else lives in the directory is never listed, let alone removed.
fn walk(root: &Path, before: SystemTime, partials: bool) -> BlobResult<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err)?;
            // Not followed: a symlink is neither a directory to enter nor a blob.
            let kind = entry.file_type().map_err(io_err)?;
            let path = entry.path();
            if kind.is_dir() {
                let name = entry.file_name();
                if depth < 2
                    && name
                        .to_str()
                        .is_some_and(crate::domain::names::is_valid_name)
                {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str) else {
                continue;
            };
            let key = match (partials, rel.strip_suffix(PARTIAL_SUFFIX)) {
                (true, Some(key)) => key,
                (false, None) => rel,
                _ => continue,
            };
            if !is_depot_key(key) {
                continue;
            }
            let meta = entry.metadata().map_err(io_err)?;
            if meta.modified().map(|m| m < before).unwrap_or(false) {
                out.push(rel.to_string());
            }
        }
    }
    Ok(out)
}

/// A resumable write's file: `<key>.resumable`, never touched by the janitor's sweeps of
/// partial files (an upload may rest for hours between requests).
const RESUMABLE_SUFFIX: &str = ".resumable";
/// A resumable write is fsynced (made durable) at every multiple of this offset, and at
/// each checkpoint.
const RESUMABLE_STEP: u64 = 8 * 1024 * 1024;
/// Bytes collected before one write to the file.
const RESUMABLE_WRITE: usize = 1024 * 1024;

struct FsResumable {
    file: Arc<std::fs::File>,
    path: PathBuf,
    target: PathBuf,
    /// Bytes in the file (written, not necessarily synced).
    flushed: u64,
    buffer: Vec<u8>,
    reached: Vec<(u64, ResumePoint)>,
}

impl FsResumable {
    fn written(&self) -> u64 {
        self.flushed + self.buffer.len() as u64
    }

    /// Writes the buffer at the end of the file; `sync` then makes the file durable.
    async fn flush(&mut self, sync: bool) -> BlobResult<()> {
        let data = std::mem::take(&mut self.buffer);
        let (file, at) = (self.file.clone(), self.flushed);
        let len = data.len() as u64;
        let data = tokio::task::spawn_blocking(move || {
            file.write_all_at(&data, at)?;
            if sync {
                file.sync_data()?;
            }
            Ok::<_, std::io::Error>(data)
        })
        .await
        .map_err(|e| BlobError::Unavailable(e.to_string()))?
        .map_err(io_err)?;
        self.flushed += len;
        self.buffer = data;
        self.buffer.clear();
        Ok(())
    }
}

#[async_trait]
impl ResumableWriter for FsResumable {
    fn room(&self) -> u64 {
        RESUMABLE_STEP - self.written() % RESUMABLE_STEP
    }

    async fn write(&mut self, mut chunk: Bytes) -> BlobResult<()> {
        while !chunk.is_empty() {
            let take = (self.room() as usize).min(chunk.len());
            self.buffer.extend_from_slice(&chunk.split_to(take));
            if self.written().is_multiple_of(RESUMABLE_STEP) {
                self.flush(true).await?;
                self.reached.push((self.flushed, ResumePoint::default()));
            } else if self.buffer.len() >= RESUMABLE_WRITE {
                self.flush(false).await?;
            }
        }
        Ok(())
    }

    async fn durable(&mut self) -> BlobResult<Vec<(u64, ResumePoint)>> {
        Ok(std::mem::take(&mut self.reached))
    }

    async fn checkpoint(&mut self) -> BlobResult<(u64, ResumePoint)> {
        self.flush(true).await?;
        self.reached.clear();
        Ok((self.flushed, ResumePoint::default()))
    }

    async fn finish(mut self: Box<Self>, _sha256_hex: &str) -> BlobResult<()> {
        self.flush(true).await?;
        let (path, target) = (self.path.clone(), self.target.clone());
        fs::rename(&path, &target).await.map_err(io_err)
    }
}

impl FsBlobStore {
    fn resumable_path(&self, key: &str) -> BlobResult<PathBuf> {
        Ok(PathBuf::from(format!(
            "{}{RESUMABLE_SUFFIX}",
            self.path(key)?.display()
        )))
    }

    async fn resume_writer(&self, key: &str, offset: u64) -> BlobResult<Box<dyn ResumableWriter>> {
        let target = self.path(key)?;
        let path = self.resumable_path(key)?;
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .await
                .map_err(io_err)?;
        }
        let opened = path.clone();
        let file = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&opened)?;
            let len = file.metadata()?.len();
            if len < offset {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "resumable upload's file is shorter than its recorded offset",
                ));
            }
            // Bytes past the durable offset came from a request that did not finish.
            file.set_len(offset)?;
            Ok(file)
        })
        .await
        .map_err(|e| BlobError::Unavailable(e.to_string()))?
        .map_err(io_err)?;
        Ok(Box::new(FsResumable {
            file: Arc::new(file),
            path,
            target,
            flushed: offset,
            buffer: Vec::with_capacity(RESUMABLE_WRITE),
            reached: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes whose value depends on their offset, so a misplaced block shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Writes `len` bytes in uneven chunks, finishes, and reads the file back.
    async fn round_trip(root: &Path, len: usize) -> Vec<u8> {
        let store = FsBlobStore::open(root).await.unwrap();
        let data = pattern(len);
        let mut writer = store.writer("p/v/blob").await.unwrap();
        for chunk in data.chunks(300_001) {
            writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        writer.finish("unused").await.unwrap();
        let mut read = store.read("p/v/blob", None).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = read.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        assert!(!root.join("blobs/p/v/blob.partial").exists());
        store.delete("p/v/blob").await.unwrap();
        out
    }

    #[tokio::test]
    async fn written_blob_reads_back_exactly_for_aligned_and_unaligned_sizes() {
        for len in [
            0,
            1,
            4096,
            WRITE_BLOCK,
            WRITE_BLOCK + 1,
            3 * WRITE_BLOCK + 12_345,
        ] {
            let dir = tempfile::tempdir().unwrap();
            assert_eq!(round_trip(dir.path(), len).await, pattern(len), "len {len}");
        }
    }

    /// An aligned buffer holding `data`, as the upload's staging blocks arrive.
    fn aligned_chunk(data: &[u8]) -> Bytes {
        let mut buf = AlignedBuf::new(data.len());
        buf.push(data);
        Bytes::from_owner(buf)
    }

    #[tokio::test]
    async fn aligned_chunks_written_as_they_are_and_copied_chunks_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        let data = pattern(6 * 1024 * 1024 + 5000);
        let mb = 1024 * 1024;
        let mut writer = store.writer("p/v/blob").await.unwrap();
        // aligned, aligned, an odd piece (copied), then aligned chunks that must wait
        // behind the copied block, and an unaligned tail.
        let pieces = [
            0..mb,
            mb..2 * mb,
            2 * mb..2 * mb + 100,
            2 * mb + 100..3 * mb + 100,
        ];
        for piece in pieces {
            let chunk = &data[piece];
            if is_direct_aligned(chunk) {
                writer.write(aligned_chunk(chunk)).await.unwrap();
            } else {
                writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
        }
        writer
            .write(aligned_chunk(&data[3 * mb + 100..5 * mb + 100]))
            .await
            .unwrap();
        writer
            .write(Bytes::copy_from_slice(&data[5 * mb + 100..]))
            .await
            .unwrap();
        writer.finish("unused").await.unwrap();
        let written = std::fs::read(dir.path().join("blobs/p/v/blob")).unwrap();
        assert_eq!(written.len(), data.len());
        assert!(
            written == data,
            "file content differs from what was written"
        );
    }

    /// tmpfs before Linux 6.6 refuses O_DIRECT; the writer must then fall back to ordinary
    /// writes (on newer kernels this is one more filesystem the direct path must handle).
    #[tokio::test]
    async fn written_blob_reads_back_on_a_filesystem_without_direct_io() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let len = 2 * WRITE_BLOCK + 777;
        assert_eq!(round_trip(dir.path(), len).await, pattern(len));
    }

    #[tokio::test]
    async fn dropped_writer_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        let mut writer = store.writer("p/v/blob").await.unwrap();
        writer
            .write(Bytes::from(pattern(WRITE_BLOCK + 10)))
            .await
            .unwrap();
        drop(writer);
        let partial = dir.path().join("blobs/p/v/blob.partial");
        for _ in 0..100 {
            if !partial.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!partial.exists());
        assert!(!dir.path().join("blobs/p/v/blob").exists());
    }
}
