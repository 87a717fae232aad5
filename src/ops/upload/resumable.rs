//! tus 1.0 uploads: the bytes of one file arrive over many `PATCH` requests, each of which
//! may be cut off, on any replica, across restarts.
//!
//! A `PATCH` holds the upload's lock ([`SessionLock`]), continues the blob store's
//! resumable write from the recorded point, and hashes as the bytes arrive (the SHA-256
//! state is recorded with each durable step, so the data is never read back). Writes are
//! cut at the store's durable steps (S3: each part; filesystem: every 8 MiB fsync), and
//! each step reached is recorded at once (compare-and-set on the offset): the offset a
//! `HEAD` reports is only ever bytes the store holds durably. A request that ends (or
//! breaks off) makes what it sent durable and records it. With `Upload-Checksum`, nothing
//! of the request is recorded before its checksum is verified; a mismatch keeps none of it.
//! The last byte finishes the blob, checks the declared SHA-256 and commits (see
//! [`session::commit`]).

use super::session::{self, SessionLock};
use crate::app::AppState;
use crate::auth::Caller;
use crate::blob::{ResumableWriter, ResumePoint};
use crate::digest::ResumableSha256;
use crate::dto::UploadResult;
use crate::error::{ApiError, ApiResult, BlobError};
use crate::meta::UploadSession;
use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use futures::StreamExt;
use sha1::Digest as _;
use std::collections::VecDeque;
use std::time::Duration;

/// A chunk checksum (`Upload-Checksum`): the algorithm, and the expected raw digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkChecksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

/// Parses `Upload-Checksum: <algorithm> <base64>`.
pub fn parse_chunk_checksum(raw: &str) -> ApiResult<ChunkChecksum> {
    use base64::Engine;
    let (algorithm, encoded) = raw.trim().split_once(' ').ok_or_else(|| {
        ApiError::bad_request(
            "invalid_checksum",
            "Upload-Checksum must be '<algorithm> <base64 digest>'",
        )
    })?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| {
            ApiError::bad_request("invalid_checksum", "Upload-Checksum's digest is not base64")
        })?;
    let (checksum, len) = match algorithm {
        "sha1" => (ChunkChecksum::Sha1(digest.clone()), 20),
        "sha256" => (ChunkChecksum::Sha256(digest.clone()), 32),
        _ => {
            return Err(ApiError::bad_request(
                "unsupported_checksum_algorithm",
                "Upload-Checksum supports sha1 and sha256",
            ));
        }
    };
    if digest.len() != len {
        return Err(ApiError::bad_request(
            "invalid_checksum",
            format!("a {algorithm} digest is {len} bytes"),
        ));
    }
    Ok(checksum)
}

enum ChunkHasher {
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(sha2::Sha256, Vec<u8>),
}

impl ChunkHasher {
    fn new(checksum: ChunkChecksum) -> Self {
        match checksum {
            ChunkChecksum::Sha1(expected) => Self::Sha1(sha1::Sha1::new(), expected),
            ChunkChecksum::Sha256(expected) => Self::Sha256(sha2::Sha256::new(), expected),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h, _) => h.update(data),
            Self::Sha256(h, _) => h.update(data),
        }
    }

    fn matches(self) -> bool {
        match self {
            Self::Sha1(h, expected) => h.finalize().as_slice() == expected.as_slice(),
            Self::Sha256(h, expected) => h.finalize().as_slice() == expected.as_slice(),
        }
    }
}

fn chunk_checksum_mismatch() -> ApiError {
    ApiError::new(
        StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
        "chunk_checksum_mismatch",
        "this request's body does not match its Upload-Checksum; none of it was kept, send it again",
    )
}

/// What a `PATCH` request brings.
pub struct Patch {
    pub offset: u64,
    pub checksum: Option<ChunkChecksum>,
}

/// Where an upload stands after a `PATCH`.
pub struct Patched {
    pub session: UploadSession,
    /// Set when this request completed the upload.
    pub committed: Option<UploadResult>,
}

fn offset_mismatch(stored: u64) -> ApiError {
    ApiError::conflict(
        "offset_mismatch",
        format!("Upload-Offset must be the upload's current offset, {stored} (ask with HEAD)"),
    )
}

fn too_long(length: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_long",
        format!(
            "the body goes past the upload's declared length of {length} bytes; nothing past the last stored byte was kept"
        ),
    )
}

/// Appends the request `body` to upload `id` (`PATCH /uploads/{id}`, and the body of a
/// `POST` with creation-with-upload).
pub async fn patch(
    app: &AppState,
    caller: &Caller,
    id: &str,
    patch: Patch,
    body: Body,
) -> ApiResult<Patched> {
    let session = session::find(app, caller, id).await?;
    if session.kind != crate::meta::UploadKind::Resumable {
        return Err(session::not_found());
    }
    let mut body = body.into_data_stream();
    if session.completed {
        // The last answer may have been lost: the same request again is answered the same.
        return match (patch.offset == session.length, body.next().await) {
            (true, None) => Ok(Patched {
                session,
                committed: None,
            }),
            _ => Err(offset_mismatch(session.offset)),
        };
    }
    if patch.offset != session.offset {
        return Err(offset_mismatch(session.offset));
    }
    let _slot = app.uploads.admit()?;
    SessionLock::holding(app, id, patch_locked(app, caller, id, patch, body)).await
}

/// [`patch`] under the upload's lock.
async fn patch_locked(
    app: &AppState,
    caller: &Caller,
    id: &str,
    patch: Patch,
    mut body: axum::body::BodyDataStream,
) -> ApiResult<Patched> {
    // Read again under the lock: another request may have moved it on meanwhile.
    let session = session::find(app, caller, id).await?;
    if session.completed || patch.offset != session.offset {
        return Err(offset_mismatch(session.offset));
    }
    let mut hasher = ResumableSha256::restore(&session.hash_state)
        .ok_or_else(|| ApiError::internal("upload's hash state is damaged"))?;
    let mut writer = app
        .blobs
        .resume(&session.blob_key, &session.stored, session.offset)
        .await
        .map_err(|err| match err {
            BlobError::NotFound => {
                // What it stored is gone (removed by hand, or a lost write): start again.
                session::end_in_background(app, &session);
                session::expired()
            }
            other => other.into(),
        })?;
    let mut run = Run {
        app,
        session,
        hasher: &mut hasher,
        writer: writer.as_mut(),
        chunk: patch.checksum.clone().map(ChunkHasher::new),
        snapshots: VecDeque::new(),
        written: patch.offset,
        recorded_at: std::time::Instant::now(),
    };
    let idle = Duration::from_secs(app.settings.upload_idle_timeout_seconds);
    let received = run.receive(&mut body, idle).await;
    let verified = run.chunk.take().is_none_or(ChunkHasher::matches);
    if let Err(err) = received {
        // Keep what arrived (a client cut off resumes after it), unless unverifiable.
        if verified && patch.checksum.is_none() {
            let _ = run.save_checkpoint().await;
        }
        if err.status != StatusCode::REQUEST_TIMEOUT {
            crate::ops::upload::drain_body(&mut body).await;
        }
        return Err(err);
    }
    if !verified {
        return Err(chunk_checksum_mismatch());
    }
    if run.written < run.session.length {
        run.save_checkpoint().await?;
        return Ok(Patched {
            session: run.session,
            committed: None,
        });
    }
    // The last byte is in: verify, finish, commit.
    let session = run.session.clone();
    drop(run);
    let digest = hasher.finish_hex();
    if let Some(expected) = session.checksum.as_deref().filter(|e| **e != digest) {
        session::end_in_background(app, &session);
        return Err(ApiError::bad_request(
            "checksum_mismatch",
            format!(
                "the upload's SHA-256 is {digest} but {expected} was declared; nothing was kept"
            ),
        ));
    }
    if let Err(err) = writer.finish(&digest).await {
        session::end_in_background(app, &session);
        return Err(err.into());
    }
    let committed = session::commit(app, caller, &session, session.length, &digest).await?;
    let session = UploadSession {
        completed: true,
        offset: session.length,
        ..session
    };
    Ok(Patched {
        session,
        committed: Some(committed),
    })
}

/// One `PATCH` in progress.
struct Run<'a> {
    app: &'a AppState,
    /// As last recorded.
    session: UploadSession,
    hasher: &'a mut ResumableSha256,
    writer: &'a mut dyn ResumableWriter,
    chunk: Option<ChunkHasher>,
    /// The hash state at each durable step written but not yet recorded.
    snapshots: VecDeque<(u64, ResumableSha256)>,
    written: u64,
    recorded_at: std::time::Instant,
}

/// A durable step is recorded once this many bytes or this much time passed since the
/// last record.
const RECORD_EVERY_BYTES: u64 = 64 * 1024 * 1024;
const RECORD_EVERY: Duration = Duration::from_secs(10);

impl Run<'_> {
    async fn receive(
        &mut self,
        body: &mut axum::body::BodyDataStream,
        idle: Duration,
    ) -> ApiResult<()> {
        while let Some(chunk) =
            super::next_body_chunk(body, idle, "what arrived before is kept").await?
        {
            self.take(chunk).await?;
        }
        Ok(())
    }

    /// Writes `chunk`, cut at the writer's durable steps, and records the steps reached.
    async fn take(&mut self, mut chunk: Bytes) -> ApiResult<()> {
        if self.written + chunk.len() as u64 > self.session.length {
            return Err(too_long(self.session.length));
        }
        while !chunk.is_empty() {
            let room = self.writer.room();
            let piece = chunk.split_to((room.min(chunk.len() as u64)) as usize);
            let at_step = piece.len() as u64 == room;
            self.hasher.update(&piece);
            if let Some(chunk_hasher) = self.chunk.as_mut() {
                chunk_hasher.update(&piece);
            }
            self.written += piece.len() as u64;
            self.writer.write(piece).await?;
            if at_step && self.chunk.is_none() {
                self.snapshots
                    .push_back((self.written, self.hasher.clone()));
            }
        }
        if self.chunk.is_none() {
            for (offset, point) in self.writer.durable().await? {
                while self.snapshots.front().is_some_and(|(o, _)| *o < offset) {
                    self.snapshots.pop_front();
                }
                let Some((_, state)) = self.snapshots.pop_front().filter(|(o, _)| *o == offset)
                else {
                    continue;
                };
                // Each record is a store write: not for every step, but often enough
                // that a request cut off loses little (the end of a request records
                // anyway).
                // A store session not recorded yet (S3: a new multipart upload) is
                // recorded at once, so a resume continues it instead of starting another.
                let due = offset - self.session.offset >= RECORD_EVERY_BYTES
                    || self.recorded_at.elapsed() >= RECORD_EVERY
                    || point.session != self.session.stored.session;
                if due {
                    self.record(offset, &state, point).await?;
                }
            }
        }
        Ok(())
    }

    /// Makes everything received durable and records it.
    async fn save_checkpoint(&mut self) -> ApiResult<()> {
        let (offset, point) = self.writer.checkpoint().await?;
        if offset != self.written {
            return Err(ApiError::internal(
                "the store's checkpoint does not cover what was written",
            ));
        }
        let state = self.hasher.clone();
        self.record(offset, &state, point).await
    }

    async fn record(
        &mut self,
        offset: u64,
        state: &ResumableSha256,
        point: ResumePoint,
    ) -> ApiResult<()> {
        if offset == self.session.offset && point == self.session.stored {
            return Ok(());
        }
        // An upload ends at its expiry, whatever request is running then.
        if crate::meta::now_ms() > self.session.expires_at {
            return Err(session::expired());
        }
        let next = UploadSession {
            offset,
            hash_state: state.save(),
            stored: point,
            ..self.session.clone()
        };
        if !self
            .app
            .meta
            .save_upload_session(&next, (self.session.offset, false))
            .await?
        {
            let now = self.app.meta.upload_session(&self.session.id).await?;
            return Err(match now {
                None => session::expired(),
                Some(s) if s.expires_at < crate::meta::now_ms() => session::expired(),
                Some(_) => ApiError::conflict(
                    "offset_mismatch",
                    "the upload was changed by another request meanwhile",
                ),
            });
        }
        self.session = next;
        self.recorded_at = std::time::Instant::now();
        Ok(())
    }
}
