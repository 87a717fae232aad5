//! Cleans what failed or crashed uploads leave behind: pending version records, blob
//! objects no record points at, and unfinished writes (partial files, multipart uploads).

use crate::app::AppState;
use std::time::{Duration, SystemTime};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub pending_removed: usize,
    pub orphans_removed: usize,
    pub partials_removed: usize,
}

/// One sweep over everything older than `grace`.
pub async fn sweep(app: &AppState, grace: Duration) -> anyhow::Result<SweepReport> {
    let mut report = SweepReport::default();
    let cutoff = SystemTime::now() - grace;
    let cutoff_ms = crate::meta::now_ms() - grace.as_millis() as i64;

    for record in app.meta.stale_pending_versions(cutoff_ms).await? {
        // Blob first, record last: a record without its blob is harmless, the reverse is not.
        app.blobs.delete(&record.blob_key).await?;
        app.meta
            .remove_pending_version(&record.product, &record.version, &record.blob_key)
            .await?;
        report.pending_removed += 1;
    }
    for key in app.blobs.list_keys_before(cutoff).await? {
        if !app.meta.blob_key_in_use(&key).await? {
            app.blobs.delete(&key).await?;
            report.orphans_removed += 1;
        }
    }
    report.partials_removed = app.blobs.remove_partials_before(cutoff).await?;
    Ok(report)
}

/// Runs `sweep` every `interval` until the process ends.
pub fn spawn(app: AppState) {
    let interval = Duration::from_secs(app.settings.janitor_interval_seconds);
    let grace = Duration::from_secs(app.settings.janitor_grace_seconds);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match sweep(&app, grace).await {
                Ok(r) if r != SweepReport::default() => tracing::info!(?r, "janitor sweep"),
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "janitor sweep failed"),
            }
        }
    });
}
