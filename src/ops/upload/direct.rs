//! Direct uploads: the client `PUT`s the file itself, to a presigned bucket URL (whose
//! signature binds the size and SHA-256, so the bucket refuses other bytes) or, on the
//! filesystem store, to a Depot-signed URL that Depot serves. Then `complete` checks the
//! object's size and SHA-256 and commits it like any upload; a mismatch deletes it.

use super::session::{self, NewUpload, SessionLock};
use super::staging::BackgroundHasher;
use crate::app::AppState;
use crate::auth::Caller;
use crate::blob::UploadUrl;
use crate::dto::UploadResult;
use crate::error::{ApiError, ApiResult, BlobError};
use crate::meta::{UploadKind, UploadSession};
use axum::body::Body;
use axum::http::StatusCode;
use futures::StreamExt;
use std::time::Duration;

/// S3's largest single PUT.
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// A direct upload handed out: the session, and the URL unless Depot serves it itself.
pub struct DirectUpload {
    pub session: UploadSession,
    /// `None`: the store cannot presign; the client PUTs to Depot's signed URL.
    pub url: Option<UploadUrl>,
}

/// `POST /product/upload-url`.
pub async fn create(app: &AppState, caller: &Caller, new: NewUpload) -> ApiResult<DirectUpload> {
    let limit = app.settings.max_upload_bytes;
    if new.length > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    if new.length > MAX_SINGLE_PUT {
        return Err(ApiError::bad_request(
            "use_resumable_upload",
            "a direct upload is one PUT, at most 5 GiB; upload larger files with tus (POST /uploads)",
        ));
    }
    let digest = new.checksum.clone().ok_or_else(|| {
        ApiError::bad_request(
            "invalid_checksum",
            "a direct upload needs the file's checksum (sha256:<hex>)",
        )
    })?;
    let ttl = app.settings.upload_url_ttl_seconds;
    let session = session::open(app, caller, new, ttl).await?;
    let url = match app
        .blobs
        .presign_put(
            &session.blob_key,
            session.length,
            &digest,
            Duration::from_secs(ttl),
        )
        .await
    {
        Ok(url) => url,
        Err(err) => {
            session::end_in_background(app, &session);
            return Err(err.into());
        }
    };
    Ok(DirectUpload { session, url })
}

/// What Depot's signed upload URL signs: the session, its blob key, its token and expiry.
pub fn signed_target(session: &UploadSession, expires: i64) -> crate::signing::SignedTarget<'_> {
    crate::signing::SignedTarget {
        product: "direct-upload",
        version: &session.id,
        blob_key: &session.blob_key,
        token_id: &session.created_by,
        expires,
    }
}

/// `PUT /direct/{id}`: the body of a direct upload on a store that cannot presign,
/// checked for its size and SHA-256 before it is stored under the session's key.
pub async fn receive(
    app: &AppState,
    id: &str,
    (expires, signature): (i64, &str),
    body: Body,
) -> ApiResult<()> {
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "the upload URL is invalid or expired; ask for a new one",
        )
    };
    if !session::is_session_id(id) {
        return Err(forbidden());
    }
    let session = app
        .meta
        .upload_session(id)
        .await?
        .filter(|s| s.kind == UploadKind::Direct)
        .ok_or_else(forbidden)?;
    let now = crate::meta::now_ms() / 1000;
    if !app
        .signer
        .verify(&signed_target(&session, expires), signature, now)
    {
        return Err(forbidden());
    }
    if session.completed {
        return Err(ApiError::conflict(
            "upload_completed",
            "this upload is already completed",
        ));
    }
    // The URL dies with its token, like a Depot-signed download link.
    let token = app.meta.token_by_id(&session.created_by).await?;
    if token.is_none_or(|t| t.is_expired(crate::meta::now_ms())) {
        return Err(forbidden());
    }
    let _slot = app.uploads.admit()?;
    let expected = session.checksum.clone().unwrap_or_default();
    let idle = Duration::from_secs(app.settings.upload_idle_timeout_seconds);
    let mut body = body.into_data_stream();
    let mut writer = app.blobs.writer(&session.blob_key).await?;
    let hasher = BackgroundHasher::new();
    let mut size = 0u64;
    let streamed = async {
        while let Some(chunk) =
            super::next_body_chunk(&mut body, idle, "nothing was stored").await?
        {
            size += chunk.len() as u64;
            if size > session.length {
                return Err(size_mismatch(session.length, size));
            }
            hasher.update(chunk.clone()).await?;
            writer.write(chunk).await?;
        }
        Ok(())
    }
    .await;
    if let Err(err) = streamed {
        writer.abort().await;
        if err.status != StatusCode::REQUEST_TIMEOUT {
            crate::ops::upload::drain_body(&mut body).await;
        }
        return Err(err);
    }
    let digest = hasher.finish().await?;
    if size != session.length {
        writer.abort().await;
        return Err(size_mismatch(session.length, size));
    }
    if digest != expected {
        writer.abort().await;
        return Err(checksum_mismatch(&digest, &expected));
    }
    writer.finish(&digest).await?;
    Ok(())
}

fn size_mismatch(declared: u64, got: u64) -> ApiError {
    ApiError::bad_request(
        "size_mismatch",
        format!("the upload was declared as {declared} bytes but {got} arrived; nothing was kept"),
    )
}

fn checksum_mismatch(actual: &str, expected: &str) -> ApiError {
    ApiError::bad_request(
        "checksum_mismatch",
        format!("the object's SHA-256 is {actual} but {expected} was declared; nothing was kept"),
    )
}

/// `POST /product/upload-url/{id}/complete`: verifies the object and commits it.
pub async fn complete(app: &AppState, caller: &Caller, id: &str) -> ApiResult<UploadResult> {
    let session = session::find(app, caller, id).await?;
    if session.kind != UploadKind::Direct {
        return Err(session::not_found());
    }
    if session.completed {
        return Err(ApiError::conflict(
            "upload_completed",
            "this upload is already completed",
        ));
    }
    SessionLock::holding(app, id, complete_locked(app, caller, id)).await
}

async fn complete_locked(app: &AppState, caller: &Caller, id: &str) -> ApiResult<UploadResult> {
    let session = session::find(app, caller, id).await?;
    if session.completed {
        return Err(ApiError::conflict(
            "upload_completed",
            "this upload is already completed",
        ));
    }
    let info = match app.blobs.stat(&session.blob_key).await {
        Ok(info) => info,
        Err(BlobError::NotFound) => {
            return Err(ApiError::conflict(
                "upload_not_received",
                "nothing was uploaded to this upload's URL yet; PUT the file, then complete again",
            ));
        }
        Err(err) => return Err(err.into()),
    };
    let expected = session.checksum.clone().unwrap_or_default();
    if info.size != session.length {
        session::end(app, &session).await?;
        return Err(size_mismatch(session.length, info.size));
    }
    let digest = match info.sha256_hex {
        Some(digest) => digest,
        // The store keeps no SHA-256 of it: read it once.
        None => hash_object(app, &session.blob_key).await?,
    };
    if digest != expected {
        session::end(app, &session).await?;
        return Err(checksum_mismatch(&digest, &expected));
    }
    session::commit(app, caller, &session, info.size, &digest).await
}

/// `DELETE /product/upload-url/{id}`: ends a direct upload that is not completed.
pub async fn cancel(app: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    let session = session::find(app, caller, id).await?;
    if session.kind != UploadKind::Direct {
        return Err(session::not_found());
    }
    if session.completed {
        return Err(ApiError::conflict(
            "upload_completed",
            "this upload is already completed; delete the version or file instead",
        ));
    }
    SessionLock::holding(app, id, async {
        let session = session::find(app, caller, id).await?;
        if session.completed {
            return Err(ApiError::conflict(
                "upload_completed",
                "this upload is already completed; delete the version or file instead",
            ));
        }
        session::end(app, &session).await
    })
    .await
}

async fn hash_object(app: &AppState, key: &str) -> ApiResult<String> {
    let mut stream = app.blobs.read(key, None).await?;
    let hasher = BackgroundHasher::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::from(BlobError::Unavailable(e.to_string())))?;
        hasher.update(chunk).await?;
    }
    hasher.finish().await
}
