//! Versions: the event of a publish (the upload commits it with its record), and delete.

use super::{Changed, Ctx};
use crate::app::AppState;
use crate::domain::events::{Event, EventType};
use crate::error::ApiResult;
use crate::meta::VersionRecord;
use serde_json::json;

/// The `version.published` event an upload's commit stores with the record.
pub fn published_event(
    ctx: &Ctx,
    product: &str,
    version: &str,
    file_name: &str,
    size: u64,
    checksum: &str,
    uploaded_by: &str,
) -> Event {
    ctx.event(
        EventType::VersionPublished,
        Some(product),
        Some(version),
        json!({
            "file_name": file_name,
            "size": size,
            "checksum": checksum,
            "uploaded_by": uploaded_by,
        }),
    )
}

/// Deletes a committed version: its record (with the event) first, then its blob (a blob
/// left behind is the janitor's). `None` when there is no such committed version.
pub async fn delete(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    version: &str,
) -> ApiResult<Option<Changed<VersionRecord>>> {
    let event = ctx.event(
        EventType::VersionDeleted,
        Some(product),
        Some(version),
        json!({}),
    );
    let Some(record) = app
        .meta
        .delete_version(product, version, event.clone())
        .await?
    else {
        return Ok(None);
    };
    if let Err(err) = app.blobs.delete(&record.blob_key).await {
        tracing::warn!(key = %record.blob_key, error = %err, "blob delete failed; left for the janitor");
    }
    let mut event = event;
    event.details = crate::meta::version_details(&record);
    Ok(Some(Changed::new(record, vec![event])))
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
