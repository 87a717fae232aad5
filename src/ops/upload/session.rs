//! Uploads that outlive a request (tus, direct-to-bucket): one life cycle for both.
//!
//! - [`open`]: every check the single-request upload makes, before any byte: permission,
//!   names, size, duplicates, quota. A publishing upload reserves its version as pending
//!   until the session expires (so a second upload of it gets 409 `version_pending`), and
//!   its quota reservation lasts as long. Then the session record is stored.
//! - [`commit`]: the finished, verified file goes into its version (published) or draft,
//!   with the same events as `POST /product/upload`; the quota reservation is released
//!   and the session marked completed.
//! - [`end`]: removes everything an unfinished session stored (blob parts, pending
//!   version, quota reservation, record). Termination, failed verification and the
//!   janitor's expiry all end here.

use crate::app::AppState;
use crate::auth::Caller;
use crate::blob::new_blob_key;
use crate::domain::assets::check_file_name;
use crate::domain::names::{validate_new_version, validate_product};
use crate::domain::permissions::ProductOp;
use crate::domain::version::{kind_of, sort_key};
use crate::dto::UploadResult;
use crate::error::{ApiError, ApiResult, MetaError};
use crate::meta::{
    FileRecord, UploadKind, UploadSession, VersionRecord, VersionState, check_can_add, now_ms,
};
use crate::ops::Ctx;
use crate::ops::upload::{new_draft, version_exists, version_pending};
use axum::http::StatusCode;

/// Unfinished sessions one token may hold at once.
pub const MAX_OPEN_PER_TOKEN: usize = 100;

/// What a client asks to upload.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub kind: UploadKind,
    pub product: String,
    pub version: String,
    pub file_name: String,
    pub length: u64,
    /// Lowercase hex.
    pub checksum: Option<String>,
    pub draft: bool,
}

/// Whether `caller` may see and use `session`: its creator, or an admin. Everyone else
/// gets the answer an unknown id gets.
pub fn visible_to(caller: &Caller, session: &UploadSession) -> bool {
    caller.is_admin() || caller.token.id == session.created_by
}

pub fn not_found() -> ApiError {
    ApiError::not_found("upload_not_found", "no such upload")
}

pub fn expired() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "upload_expired",
        "this upload expired; nothing of it is kept, start a new one",
    )
}

/// The session `id` as `caller` may see it: 404 for unknown or someone else's, 410 when
/// it expired (and is not completed).
pub async fn find(app: &AppState, caller: &Caller, id: &str) -> ApiResult<UploadSession> {
    if !is_session_id(id) {
        return Err(not_found());
    }
    let session = app
        .meta
        .upload_session(id)
        .await?
        .filter(|s| visible_to(caller, s))
        .ok_or_else(not_found)?;
    if !session.completed && session.expires_at < now_ms() {
        return Err(expired());
    }
    Ok(session)
}

/// 32 lowercase hex digits, the shape `open` makes.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks `new` and stores its session, valid for `ttl_seconds`.
pub async fn open(
    app: &AppState,
    caller: &Caller,
    new: NewUpload,
    ttl_seconds: u64,
) -> ApiResult<UploadSession> {
    validate_product(&new.product)?;
    validate_new_version(&new.version)?;
    check_file_name(&new.file_name)?;
    caller.authorize(&new.product, ProductOp::Upload)?;
    let limit = app.settings.max_upload_bytes;
    if new.length > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    if app.meta.product(&new.product).await?.is_none() {
        return Err(ApiError::product_not_found(&new.product));
    }
    let open_sessions = app
        .meta
        .upload_sessions(Some(&caller.token.id), usize::MAX)
        .await?
        .into_iter()
        .filter(|s| !s.completed && s.expires_at >= now_ms())
        .count();
    if open_sessions >= MAX_OPEN_PER_TOKEN {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
            format!(
                "this token has {MAX_OPEN_PER_TOKEN} unfinished uploads; finish or terminate some first"
            ),
        )
        .with_retry_after(crate::error::BUSY_RETRY_AFTER_SECONDS));
    }
    if let Some(existing) = app.meta.version(&new.product, &new.version).await? {
        match existing.state {
            VersionState::Committed => return Err(version_exists(&new.product, &new.version)),
            VersionState::Pending => return Err(version_pending()),
            VersionState::Draft if !new.draft => {
                return Err(version_exists(&new.product, &new.version));
            }
            VersionState::Draft => check_can_add(
                existing.files.iter().map(|f| f.name.as_str()),
                &new.file_name,
            )?,
        }
    }
    let now = now_ms();
    let expires_at = now.saturating_add(ttl_seconds as i64 * 1000);
    let blob_key = new_blob_key(Some(&new.product), Some(&new.version));
    let quota_reservation = crate::ops::quota::hold_until(
        app,
        (&new.product, &new.version, &blob_key),
        new.length,
        expires_at,
    )
    .await?;
    let session = UploadSession {
        id: hex::encode(rand::random::<[u8; 16]>()),
        kind: new.kind,
        product: new.product,
        version: new.version,
        file_name: new.file_name,
        draft: new.draft,
        length: new.length,
        checksum: new.checksum,
        blob_key,
        created_by: caller.token.id.clone(),
        created_at: now,
        expires_at,
        quota_reservation,
        offset: 0,
        hash_state: crate::digest::ResumableSha256::new().save(),
        stored: Default::default(),
        completed: false,
    };
    let stored = async {
        if !session.draft {
            let pending = VersionRecord {
                product: session.product.clone(),
                version: session.version.clone(),
                file_name: session.file_name.clone(),
                size: 0,
                checksum: String::new(),
                blob_key: session.blob_key.clone(),
                state: VersionState::Pending,
                uploaded_at: now,
                uploaded_by: caller.token.id.clone(),
                sort_key: sort_key(&session.version, now),
                kind: kind_of(&session.version),
                // Held for the session's whole life, with no process renewing it.
                lease_until: Some(expires_at),
                last_download_at: None,
                files: Vec::new(),
                labels: Vec::new(),
                updated_at: now,
            };
            crate::ops::upload::lease::reserve(app, &pending)
                .await
                .map_err(|err| match err {
                    MetaError::Conflict => version_exists(&session.product, &session.version),
                    MetaError::NotFound => ApiError::product_not_found(&session.product),
                    MetaError::Pending => version_pending(),
                    other => other.into(),
                })?;
        }
        app.meta.insert_upload_session(&session).await?;
        Ok::<_, ApiError>(())
    };
    if let Err(err) = stored.await {
        release_records(app, &session).await;
        return Err(err);
    }
    tracing::info!(upload = %session.id, kind = ?session.kind, product = %session.product, version = %session.version, length = session.length, by = %caller.token.id, "upload session opened");
    Ok(session)
}

/// The pending version (matched by the session's blob key, so never another upload's)
/// and the quota reservation.
async fn release_records(app: &AppState, session: &UploadSession) {
    if let Some(id) = &session.quota_reservation {
        crate::ops::quota::release_held(app, id).await;
    }
    if !session.draft
        && let Err(err) = app
            .meta
            .remove_pending_version(&session.product, &session.version, &session.blob_key, &[])
            .await
    {
        tracing::warn!(upload = %session.id, error = %err, "could not remove an upload's pending version; left for the janitor");
    }
}

/// Removes the record of a completed session (its file is committed and stays).
pub async fn forget_completed(app: &AppState, session: &UploadSession) -> ApiResult<()> {
    app.meta.delete_upload_session(&session.id).await?;
    Ok(())
}

/// Removes everything an unfinished session stored, then its record.
pub async fn end(app: &AppState, session: &UploadSession) -> ApiResult<()> {
    // Blob first, records last: a record without its blob is harmless, the reverse is not.
    match session.kind {
        UploadKind::Resumable => {
            app.blobs
                .discard_resumable(&session.blob_key, &session.stored)
                .await?
        }
        UploadKind::Direct => app.blobs.discard(&session.blob_key).await?,
    }
    release_records(app, session).await;
    app.meta.delete_upload_session(&session.id).await?;
    tracing::info!(upload = %session.id, product = %session.product, version = %session.version, "upload session ended");
    Ok(())
}

/// [`end`] in the background (the caller answers with an error anyway).
pub fn end_in_background(app: &AppState, session: &UploadSession) {
    let (app, session) = (app.clone(), session.clone());
    crate::cleanup::spawn(async move {
        if let Err(err) = end(&app, &session).await {
            tracing::warn!(upload = %session.id, error = %err.message, "could not end an upload session; the janitor retries at its expiry");
        }
    });
}

/// Commits the session's finished blob (`size` bytes, SHA-256 `digest`) into its version
/// or draft, and marks the session completed. A refusal (the draft got a file of that name
/// meanwhile, the product is gone) ends the session.
pub async fn commit(
    app: &AppState,
    caller: &Caller,
    session: &UploadSession,
    size: u64,
    digest: &str,
) -> ApiResult<UploadResult> {
    let now = now_ms();
    let file = FileRecord {
        name: session.file_name.clone(),
        size,
        checksum: digest.to_string(),
        blob_key: session.blob_key.clone(),
        uploaded_at: now,
        uploaded_by: session.created_by.clone(),
    };
    let ctx = Ctx::of(caller);
    let (product, version) = (session.product.as_str(), session.version.as_str());
    let committed = if session.draft {
        let draft = new_draft(product, version, &session.created_by, now);
        let (created, uploaded) =
            crate::ops::versions::draft_file_events(&ctx, product, version, &file);
        let _turn = crate::ops::versions::draft_write_lock(product, version).await;
        app.meta
            .add_draft_file(
                &draft,
                &file,
                std::slice::from_ref(&created),
                std::slice::from_ref(&uploaded),
            )
            .await
            .map(|_| ())
    } else {
        let published = crate::ops::versions::published_event(
            &ctx,
            &VersionRecord {
                product: product.to_string(),
                version: version.to_string(),
                file_name: String::new(),
                size: 0,
                checksum: String::new(),
                blob_key: String::new(),
                state: VersionState::Committed,
                uploaded_at: now,
                uploaded_by: session.created_by.clone(),
                sort_key: String::new(),
                kind: kind_of(version),
                lease_until: None,
                last_download_at: None,
                files: vec![file.clone()],
                labels: Vec::new(),
                updated_at: now,
            }
            .with_primary(&file),
        );
        app.meta
            .commit_version(
                product,
                version,
                &session.blob_key,
                std::slice::from_ref(&file),
                &[],
                std::slice::from_ref(&published),
            )
            .await
    };
    if let Err(err) = committed {
        if err.is_refusal() {
            end_in_background(app, session);
        }
        return Err(match err {
            MetaError::Conflict => version_exists(product, version),
            MetaError::NotFound if session.draft => ApiError::product_not_found(product),
            // The janitor removed the pending version (the session expired meanwhile).
            MetaError::NotFound => expired(),
            MetaError::Pending => version_pending(),
            other => other.into(),
        });
    }
    if let Some(id) = &session.quota_reservation {
        crate::ops::quota::release_held(app, id).await;
    }
    let done = UploadSession {
        completed: true,
        offset: size,
        ..session.clone()
    };
    if let Err(err) = app
        .meta
        .save_upload_session(&done, (session.offset, false))
        .await
    {
        tracing::warn!(upload = %session.id, error = %err, "could not mark an upload session completed; it expires anyway");
    }
    tracing::info!(upload = %session.id, product = %product, version = %version, file = %file.name, size, by = %caller.token.id, "upload session committed");
    Ok(UploadResult {
        product: product.to_string(),
        version: version.to_string(),
        file_name: file.name.clone(),
        size,
        checksum: format!("sha256:{digest}"),
        state: if session.draft { "draft" } else { "published" }.into(),
        files: if session.draft {
            Vec::new()
        } else {
            vec![crate::dto::file_info(&file)]
        },
    })
}

/// One upload's exclusive hold (a `PATCH`, a completion, a termination), on every
/// replica: a lease in the metadata store, renewed while held, given back when dropped.
pub struct SessionLock {
    app: AppState,
    name: String,
    owner: String,
    _keeper: crate::ops::upload::lease::LeaseKeeper,
    released: bool,
}

impl SessionLock {
    /// Runs `work` holding upload `id`'s lock, and gives the lock back before returning,
    /// so the client's next request (sent as soon as it reads this answer) finds it free.
    pub async fn holding<T>(
        app: &AppState,
        id: &str,
        work: impl Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        // Renewed while the request runs, stalled or not (a stall ends at the idle
        // timeout): only a dead process's lock lapses, so two requests never write the
        // same upload at once.
        let alive = crate::ops::upload::lease::Progress::default();
        alive.done();
        let lock = SessionLock::take(app, id, alive).await?;
        let outcome = work.await;
        lock.release().await;
        outcome
    }

    async fn release(mut self) {
        self.released = true;
        // Free at once: the next request need not wait for the lease.
        if let Err(err) = self.app.meta.release_lease(&self.name, &self.owner).await {
            tracing::debug!(error = %err, "could not give back an upload lock; it lapses with its lease");
        }
    }

    /// 423 `upload_locked` while another request holds it.
    pub async fn take(
        app: &AppState,
        id: &str,
        progress: crate::ops::upload::lease::Progress,
    ) -> ApiResult<SessionLock> {
        let name = format!("upload:{id}");
        let owner = hex::encode(rand::random::<[u8; 16]>());
        let now = now_ms();
        let until = crate::ops::upload::lease::lease_until(app);
        if !app.meta.take_lease(&name, &owner, now, until).await? {
            return Err(ApiError::new(
                StatusCode::LOCKED,
                "upload_locked",
                "another request is writing to this upload; retry when it has finished",
            ));
        }
        let keeper = {
            let (name, owner) = (name.clone(), owner.clone());
            crate::ops::upload::lease::LeaseKeeper::renewing(
                app,
                progress,
                format!("upload {id}"),
                move |app, until| {
                    let (name, owner) = (name.clone(), owner.clone());
                    Box::pin(
                        async move { app.meta.take_lease(&name, &owner, now_ms(), until).await },
                    )
                },
            )
        };
        Ok(SessionLock {
            app: app.clone(),
            name,
            owner,
            _keeper: keeper,
            released: false,
        })
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Dropped mid-request (the client went away): given back in the background.
        let (app, name, owner) = (self.app.clone(), self.name.clone(), self.owner.clone());
        crate::cleanup::spawn(async move {
            // Free at once: the next request need not wait for the lease.
            if let Err(err) = app.meta.release_lease(&name, &owner).await {
                tracing::debug!(error = %err, "could not give back an upload lock; it lapses with its lease");
            }
        });
    }
}
