//! Cleans what failed or crashed uploads leave behind: pending version records, blob
//! objects no record points at, and unfinished writes (partial files, multipart uploads);
//! and deletes drafts left untouched for `DEPOT_DRAFT_TTL_SECONDS`.
//!
//! Two loops: a short one for pending records whose lease lapsed (their upload died or
//! stalled, see `ops::upload::lease`), so their version is free again within a minute or two,
//! and the full sweep every `DEPOT_JANITOR_INTERVAL_SECONDS` for everything older than
//! the grace. Only keys of Depot's own shape (`blob::is_depot_key`) under its prefix are
//! ever listed or removed: a bucket or data directory shared with other tools keeps
//! their objects, files and multipart uploads.

use crate::app::AppState;
use crate::blob::is_depot_key;
use crate::domain::events::SystemActor;
use crate::ops::Ctx;
use crate::ops::versions::abandoned_event;
use std::time::{Duration, SystemTime};

/// The lease sweep runs at least this often (more often with a shorter janitor interval).
const LEASE_SWEEP_MAX_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub pending_removed: usize,
    pub orphans_removed: usize,
    pub partials_removed: usize,
    /// Drafts untouched for `DEPOT_DRAFT_TTL_SECONDS`.
    pub drafts_expired: usize,
    /// Audit events older than `DEPOT_AUDIT_RETENTION_DAYS`.
    pub events_pruned: u64,
    /// Upload sessions (tus, direct) past their expiry.
    pub uploads_expired: usize,
}

/// Expired upload sessions per sweep (the next sweep takes the rest).
const EXPIRED_UPLOADS_PER_SWEEP: usize = 1000;

/// Ends upload sessions past their expiry: an unfinished one loses everything it stored
/// (parts, object, pending version, quota reservation); a completed one only its record.
pub async fn sweep_upload_sessions(app: &AppState) -> anyhow::Result<usize> {
    let expired = app
        .meta
        .expired_upload_sessions(crate::meta::now_ms(), EXPIRED_UPLOADS_PER_SWEEP)
        .await?;
    let mut ended = 0;
    for session in expired {
        if session.completed {
            app.meta.delete_upload_session(&session.id).await?;
        } else {
            // A request still writing to it fails at its next step (the upload expired)
            // and gives the lock back; the next sweep ends it then.
            let ended_now = crate::ops::upload::session::SessionLock::holding(
                app,
                &session.id,
                crate::ops::upload::session::end(app, &session),
            )
            .await;
            match ended_now {
                Ok(()) => {}
                Err(err) if err.code == "upload_locked" => continue,
                Err(err) => anyhow::bail!("{}", err.message),
            }
        }
        ended += 1;
    }
    Ok(ended)
}

/// One sweep over everything older than `grace`, and over lapsed leases.
pub async fn sweep(app: &AppState, grace: Duration) -> anyhow::Result<SweepReport> {
    let mut report = SweepReport {
        pending_removed: sweep_leases(app).await?,
        ..SweepReport::default()
    };
    let janitor = Ctx::system(SystemActor::Janitor);
    let cutoff = SystemTime::now() - grace;
    let cutoff_ms = crate::meta::now_ms() - grace.as_millis() as i64;
    report.uploads_expired = sweep_upload_sessions(app).await?;
    // What open uploads (tus, direct) stored is theirs until they end, however old.
    let open_uploads: std::collections::HashSet<String> = app
        .meta
        .upload_sessions(None, usize::MAX)
        .await?
        .into_iter()
        .filter(|s| !s.completed)
        .map(|s| s.blob_key)
        .collect();

    for record in app.meta.stale_pending_versions(cutoff_ms).await? {
        if open_uploads.contains(&record.blob_key) {
            continue;
        }
        // Blob first, record last: a record without its blob is harmless, the reverse is not.
        app.blobs.discard(&record.blob_key).await?;
        let event = abandoned_event(&janitor, &record, "older_than_grace");
        app.meta
            .remove_pending_version(
                &record.product,
                &record.version,
                &record.blob_key,
                std::slice::from_ref(&event),
            )
            .await?;
        report.pending_removed += 1;
    }
    for key in app.blobs.list_keys_before(cutoff).await? {
        if is_depot_key(&key)
            && !open_uploads.contains(&key)
            && !app.meta.blob_key_in_use(&key).await?
        {
            app.blobs.delete(&key).await?;
            report.orphans_removed += 1;
        }
    }
    report.partials_removed = app
        .blobs
        .remove_partials_before(cutoff, &open_uploads)
        .await?;
    let idle_before = crate::meta::now_ms() - app.settings.draft_ttl_seconds as i64 * 1000;
    for draft in app.meta.idle_drafts(idle_before).await? {
        let expired = crate::ops::versions::delete(
            app,
            &janitor,
            &draft.product,
            &draft.version,
            Some(idle_before),
            Some("draft_expired"),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        if expired.is_some() {
            report.drafts_expired += 1;
        }
    }
    // Exchanged OIDC token ids past their token's expiry can no longer be replayed.
    app.meta.prune_used_tokens(crate::meta::now_ms()).await?;
    let retention_ms = app.settings.audit_retention_days as i64 * 86_400_000;
    report.events_pruned = app
        .meta
        .prune_events(crate::meta::now_ms() - retention_ms)
        .await?;
    Ok(report)
}

/// Removes pending records whose lease lapsed, with what their upload left (partial file,
/// multipart upload, unfinished object); returns how many.
///
/// Record first, conditionally on the lease still being lapsed: that one write decides
/// against an upload renewing at the same moment. A blob whose discard then fails is an
/// orphan, which the full sweep removes after the grace.
pub async fn sweep_leases(app: &AppState) -> anyhow::Result<usize> {
    let now = crate::meta::now_ms();
    let janitor = Ctx::system(SystemActor::Janitor);
    let mut removed = 0;
    let lapsed = app.meta.lapsed_pending_versions(now).await?;
    // An open upload session's pending version is ended with its session (under its
    // lock, see `sweep_upload_sessions`), never here.
    let open_uploads: std::collections::HashSet<String> = if lapsed.is_empty() {
        Default::default()
    } else {
        app.meta
            .upload_sessions(None, usize::MAX)
            .await?
            .into_iter()
            .filter(|s| !s.completed)
            .map(|s| s.blob_key)
            .collect()
    };
    for record in lapsed {
        if open_uploads.contains(&record.blob_key) {
            continue;
        }
        let (product, version, key) = (&record.product, &record.version, &record.blob_key);
        let event = abandoned_event(&janitor, &record, "lease_lapsed");
        if !app
            .meta
            .remove_lapsed_version(product, version, key, now, std::slice::from_ref(&event))
            .await?
        {
            continue;
        }
        removed += 1;
        tracing::info!(product = %product, version = %version, "removed a pending version whose upload stopped renewing its lease");
        if let Err(err) = app.blobs.discard(key).await {
            tracing::warn!(key = %key, error = %err, "could not discard what a lapsed upload left; left for the full sweep");
        }
    }
    // Quota reservations of uploads that died: they stopped counting when their lease
    // lapsed; this removes the records.
    app.meta.prune_quota_reservations(now).await?;
    Ok(removed)
}

/// Runs `sweep` every `interval`, and `sweep_leases` in between, until the process ends.
pub fn spawn(app: AppState) {
    let interval = Duration::from_secs(app.settings.janitor_interval_seconds);
    let grace = Duration::from_secs(app.settings.janitor_grace_seconds);
    let lease_interval = interval.min(LEASE_SWEEP_MAX_INTERVAL);
    let leases = app.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(lease_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(err) = sweep_leases(&leases).await {
                tracing::warn!(error = %err, "janitor lease sweep failed");
            }
            match sweep_upload_sessions(&leases).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "janitor ended expired uploads"),
                Err(err) => tracing::warn!(error = %err, "janitor upload sweep failed"),
            }
        }
    });
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
