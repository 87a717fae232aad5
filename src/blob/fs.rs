//! Blobs as files under `<data_dir>/blobs/<key>`. A write goes to `<key>.partial` and is
//! renamed into place by `finish`, so a crash never leaves a half file under a real key.

use super::*;
use futures::StreamExt;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use tokio::fs::{self, File};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

const PARTIAL_SUFFIX: &str = ".partial";
const WRITE_BUFFER: usize = 1024 * 1024;
const READ_CHUNK: usize = 256 * 1024;

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
        fs::create_dir_all(&root).await?;
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

struct FsWriter {
    file: Option<BufWriter<File>>,
    partial: PathBuf,
    target: PathBuf,
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // Dropped without finish (client gone, error): discard the partial file.
        if self.file.is_some() {
            let partial = self.partial.clone();
            crate::cleanup::spawn(async move {
                let _ = fs::remove_file(partial).await;
            });
        }
    }
}

#[async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| BlobError::Unavailable("writer already closed".into()))?;
        file.write_all(&chunk).await.map_err(io_err)
    }

    async fn finish(mut self: Box<Self>, _sha256_hex: &str) -> BlobResult<()> {
        let Some(mut file) = self.file.take() else {
            return Err(BlobError::Unavailable("writer already closed".into()));
        };
        let result = async {
            file.flush().await?;
            file.get_mut().sync_all().await?;
            drop(file);
            fs::rename(&self.partial, &self.target).await
        }
        .await;
        if let Err(err) = result {
            let _ = fs::remove_file(&self.partial).await;
            return Err(io_err(err));
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.partial).await;
        }
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
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).await.map_err(io_err)?;
        }
        let partial = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", target.display()));
        let file = File::create_new(&partial).await.map_err(io_err)?;
        Ok(Box::new(FsWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            partial,
            target,
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

    async fn remove_partials_before(&self, before: SystemTime) -> BlobResult<usize> {
        let root = self.root.clone();
        let partials = tokio::task::spawn_blocking(move || walk(&root, before, true))
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))??;
        for key in &partials {
            let _ = fs::remove_file(self.root.join(key)).await;
        }
        Ok(partials.len())
    }
}

/// Relative paths of files (finished ones, or `.partial` ones) modified before `before`.
fn walk(root: &Path, before: SystemTime, partials: bool) -> BlobResult<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err)?;
            let meta = entry.metadata().map_err(io_err)?;
            let path = entry.path();
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let is_partial = path.to_string_lossy().ends_with(PARTIAL_SUFFIX);
            let old = meta.modified().map(|m| m < before).unwrap_or(false);
            if is_partial == partials
                && old
                && let Ok(rel) = path.strip_prefix(root)
            {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}
