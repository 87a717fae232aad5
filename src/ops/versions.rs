//! Versions: the events of an upload's commit (stored with its record), publishing a
//! draft, labels, removing a draft's file, and deleting a version.

use super::{Changed, Ctx};
use crate::app::AppState;
use crate::domain::assets::Label;
use crate::domain::events::{Event, EventType};
use crate::error::ApiResult;
use crate::meta::{FileRecord, VersionRecord, now_ms};
use serde_json::json;
use std::collections::BTreeMap;

/// The `version.published` event a one-request upload's commit stores with the record.
pub fn published_event(ctx: &Ctx, record: &VersionRecord) -> Event {
    ctx.event(
        EventType::VersionPublished,
        Some(&record.product),
        Some(&record.version),
        crate::meta::published_details(record),
    )
}

/// `details` of `file.uploaded` / `file.deleted`.
fn file_details(file: &FileRecord) -> serde_json::Value {
    json!({
        "file_name": file.name,
        "size": file.size,
        "checksum": file.checksum,
        "uploaded_by": file.uploaded_by,
    })
}

/// The events of one file added to a draft: `draft.created` (stored only if this file
/// creates the draft) and `file.uploaded`.
pub fn draft_file_events(
    ctx: &Ctx,
    product: &str,
    version: &str,
    file: &FileRecord,
) -> (Event, Event) {
    let created = ctx.event(
        EventType::DraftCreated,
        Some(product),
        Some(version),
        json!({ "uploaded_by": file.uploaded_by }),
    );
    let uploaded = ctx.event(
        EventType::FileUploaded,
        Some(product),
        Some(version),
        file_details(file),
    );
    (created, uploaded)
}

/// Seals a draft into a published version with `labels`.
pub async fn publish(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    version: &str,
    files: Option<&[String]>,
    labels: &[Label],
) -> ApiResult<Changed<VersionRecord>> {
    let event = ctx.event(
        EventType::VersionPublished,
        Some(product),
        Some(version),
        json!({}),
    );
    let record = app
        .meta
        .publish_draft(product, version, files, labels, now_ms(), event.clone())
        .await?;
    let mut event = event;
    event.details = crate::meta::published_details(&record);
    Ok(Changed::new(record, vec![event]))
}

/// Changes a version's labels (`None` removes a key); returns the labels after.
pub async fn set_labels(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    version: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> ApiResult<Vec<Label>> {
    let event = ctx.event(
        EventType::VersionLabeled,
        Some(product),
        Some(version),
        json!({}),
    );
    Ok(app
        .meta
        .set_labels(product, version, changes, event)
        .await?)
}

/// Removes a file from a draft: the record (with its event) first, then the blob.
pub async fn remove_file(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    version: &str,
    name: &str,
) -> ApiResult<Changed<FileRecord>> {
    let event = ctx.event(
        EventType::FileDeleted,
        Some(product),
        Some(version),
        json!({ "file_name": name }),
    );
    let removed = app
        .meta
        .remove_draft_file(product, version, name, std::slice::from_ref(&event))
        .await?;
    delete_blobs(app, [removed.blob_key.clone()]).await;
    Ok(Changed::new(removed, vec![event]))
}

/// Deletes a version (published or draft): its record (with the event) first, then its
/// blobs (one left behind is the janitor's). With `idle_before`, only a draft untouched
/// since then (the janitor's expiry). `None` when there is no such version.
pub async fn delete(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    version: &str,
    idle_before: Option<i64>,
    reason: Option<&str>,
) -> ApiResult<Option<Changed<VersionRecord>>> {
    let event = ctx.event(
        EventType::VersionDeleted,
        Some(product),
        Some(version),
        json!({}),
    );
    let mut stored = event.clone();
    if let Some(reason) = reason {
        stored.details = json!({ "reason": reason });
    }
    let Some(record) = app
        .meta
        .delete_version(product, version, idle_before, stored.clone())
        .await?
    else {
        return Ok(None);
    };
    delete_blobs(app, record.blob_keys()).await;
    let mut event = event;
    event.details = crate::meta::deleted_details(&record, &stored.details);
    Ok(Some(Changed::new(record, vec![event])))
}

/// Deletes blobs whose records are gone; a failure leaves the blob to the janitor.
pub async fn delete_blobs(app: &AppState, keys: impl IntoIterator<Item = String>) {
    for key in keys {
        if let Err(err) = app.blobs.delete(&key).await {
            tracing::warn!(key = %key, error = %err, "blob delete failed; left for the janitor");
        }
    }
}

/// The `upload.abandoned` event of a dead upload the janitor cleans up.
pub fn abandoned_event(ctx: &Ctx, record: &VersionRecord, why: &str) -> Event {
    ctx.event(
        EventType::UploadAbandoned,
        Some(&record.product),
        Some(&record.version),
        json!({ "reason": why, "uploaded_by": record.uploaded_by }),
    )
}

/// The highest semver release (pre-releases too when asked); the newest upload when no
/// version is semver at all; nothing when only pre-releases exist and they were not asked for.
pub async fn latest(
    app: &AppState,
    product: &str,
    prerelease: bool,
    label: Option<&Label>,
) -> ApiResult<Option<VersionRecord>> {
    use crate::domain::version::VersionKind;
    let wanted: &[VersionKind] = if prerelease {
        &[VersionKind::Release, VersionKind::PreRelease]
    } else {
        &[VersionKind::Release]
    };
    if let Some(found) = app
        .meta
        .first_version_of_kind(product, wanted, label)
        .await?
    {
        return Ok(Some(found));
    }
    if !prerelease
        && app
            .meta
            .first_version_of_kind(product, &[VersionKind::PreRelease], label)
            .await?
            .is_some()
    {
        return Ok(None);
    }
    Ok(app
        .meta
        .first_version_of_kind(product, &[VersionKind::Other], label)
        .await?)
}

/// Serializes this process's writes to one draft. Twenty CI jobs adding files to one
/// version at once would otherwise all meet in one MongoDB document and retry on write
/// conflicts until some gave up; in turn they cost one short wait each. Other replicas
/// still conflict, and the store's retries handle those.
pub async fn draft_write_lock(product: &str, version: &str) -> tokio::sync::OwnedMutexGuard<()> {
    super::take_turn(format!("draft\0{product}\0{version}")).await
}
