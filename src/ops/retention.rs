//! Retention: a product's settings, the preview of what a run would delete, the run itself
//! (on demand or every `DEPOT_RETENTION_INTERVAL_SECONDS`), and the last-download times
//! the `not_downloaded_days` rule reads.
//!
//! A run walks the product's published versions in listing order one page at a time, so
//! memory stays bounded whatever the number of versions, and judges each with
//! `domain::retention::judge`. Deletion is metadata first (with its `version.expired`
//! event), blobs after; a blob left by a crash is the janitor's. One run per product at a
//! time across replicas (a lease in the store); each deletion is also conditional on the
//! judged upload, so a version is deleted once even if two runs overlapped.

use super::{Changed, Ctx};
use crate::app::AppState;
use crate::domain::events::{EventType, SystemActor};
use crate::domain::retention::{ProductSettings, Rule, Verdict, VersionFacts, judge};
use crate::error::{ApiError, ApiResult};
use crate::meta::{VersionRecord, now_ms};
use serde::Serialize;
use serde_json::json;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Versions read per page of a run.
const PAGE: usize = 500;
/// A download is recorded at most this often per version.
const DOWNLOAD_NOTE_INTERVAL_MS: i64 = 3_600_000;
/// Download notes written at once; more are skipped (a note is a hint, not a count).
static DOWNLOAD_NOTES: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(16));
/// How long a run's lease lasts before another replica may take the product over.
const RUN_LEASE: Duration = Duration::from_secs(600);

/// What the next run would do (`GET /product/retention/{product}`).
#[derive(Debug, Default, Serialize)]
pub struct Preview {
    pub delete: Vec<Doomed>,
    pub keep: Vec<Kept>,
}

#[derive(Debug, Serialize)]
pub struct Doomed {
    pub version: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Kept {
    pub version: String,
    pub rules: Vec<Rule>,
}

/// What a run did (`POST /product/retention/{product}/run`).
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub deleted: Vec<Doomed>,
    pub bytes_reclaimed: u64,
}

/// The settings a product follows: its own, else the server's defaults.
pub async fn effective_settings(app: &AppState, product: &str) -> ApiResult<ProductSettings> {
    let record = app
        .meta
        .product(product)
        .await?
        .ok_or_else(|| ApiError::product_not_found(product))?;
    Ok(record
        .settings
        .unwrap_or_else(|| app.settings.default_product_settings.clone()))
}

/// Replaces a product's own settings (`None`: back to the server's defaults); the
/// `settings.changed` event carries the old and the new values.
pub async fn set_settings(
    app: &AppState,
    ctx: &Ctx,
    product: &str,
    settings: Option<ProductSettings>,
) -> ApiResult<Changed<Option<ProductSettings>>> {
    let event = ctx.event(
        EventType::SettingsChanged,
        Some(product),
        None,
        json!({ "new": settings }),
    );
    app.meta
        .set_product_settings(product, settings.as_ref(), event.clone())
        .await
        .map_err(|err| match err {
            crate::error::MetaError::NotFound => ApiError::product_not_found(product),
            other => other.into(),
        })?;
    Ok(Changed::new(settings, vec![event]))
}

/// Every published version of `product` with its verdict, newest first, page by page.
async fn judge_all(
    app: &AppState,
    product: &str,
    settings: &ProductSettings,
    mut visit: impl AsyncVisit,
) -> ApiResult<()> {
    let policy = &settings.retention;
    // `latest` with and without pre-releases, resolved once at the start.
    let mut latest = Vec::new();
    for prerelease in [false, true] {
        if let Some(v) = super::versions::latest(app, product, prerelease, None).await? {
            latest.push(v.version);
        }
    }
    let now = now_ms();
    let mut after: Option<String> = None;
    let mut position = 0u64;
    loop {
        let page = app
            .meta
            .versions_page(product, after.as_deref(), PAGE, false, None)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.sort_key.clone());
        let full = page.len() == PAGE;
        for record in page {
            if record.state != crate::meta::VersionState::Committed {
                continue;
            }
            let facts = VersionFacts {
                version: &record.version,
                kind: record.kind,
                uploaded_at_ms: record.uploaded_at,
                last_download_ms: record.last_download_at,
                labels: &record.labels,
                is_latest: latest.contains(&record.version),
            };
            let verdict = judge(policy, position, &facts, now);
            position += 1;
            visit.visit(record, verdict).await?;
        }
        if !full {
            break;
        }
    }
    Ok(())
}

/// A visitor of `judge_all` that may await (a run deletes as it goes).
trait AsyncVisit {
    async fn visit(&mut self, record: VersionRecord, verdict: Verdict) -> ApiResult<()>;
}

struct Collect<'a>(&'a mut Preview);

impl AsyncVisit for Collect<'_> {
    async fn visit(&mut self, record: VersionRecord, verdict: Verdict) -> ApiResult<()> {
        match verdict {
            Verdict::Keep(rules) => self.0.keep.push(Kept {
                version: record.version,
                rules,
            }),
            Verdict::Delete(reason) => self.0.delete.push(Doomed {
                version: record.version,
                reason: reason.to_string(),
            }),
        }
        Ok(())
    }
}

/// Exactly what a run now would do.
pub async fn preview(app: &AppState, product: &str) -> ApiResult<Preview> {
    let settings = effective_settings(app, product).await?;
    let mut preview = Preview::default();
    if settings.retention.is_active() {
        judge_all(app, product, &settings, Collect(&mut preview)).await?;
    } else {
        // No rule set: nothing is a candidate; everything is listed as kept.
        judge_all(
            app,
            product,
            &ProductSettings::default(),
            Collect(&mut preview),
        )
        .await?;
    }
    Ok(preview)
}

struct Expire<'a> {
    app: &'a AppState,
    ctx: Ctx,
    report: RunReport,
}

impl AsyncVisit for Expire<'_> {
    async fn visit(&mut self, record: VersionRecord, verdict: Verdict) -> ApiResult<()> {
        let Verdict::Delete(reason) = verdict else {
            return Ok(());
        };
        let event = self.ctx.event(
            EventType::VersionExpired,
            Some(&record.product),
            Some(&record.version),
            json!({ "reason": reason.as_str() }),
        );
        let Some(deleted) = self
            .app
            .meta
            .expire_version(&record.product, &record.version, &record.blob_key, event)
            .await?
        else {
            return Ok(());
        };
        let bytes: u64 = deleted.all_files().iter().map(|f| f.size).sum();
        super::versions::delete_blobs(self.app, deleted.blob_keys()).await;
        metrics::counter!("depot_retention_versions_deleted_total").increment(1);
        metrics::counter!("depot_retention_bytes_reclaimed_total").increment(bytes);
        tracing::info!(product = %deleted.product, version = %deleted.version, reason = %reason, "retention deleted a version");
        self.report.bytes_reclaimed += bytes;
        self.report.deleted.push(Doomed {
            version: deleted.version,
            reason: reason.to_string(),
        });
        Ok(())
    }
}

/// Applies the product's policy now (under its lease; 409 `retention_running` while
/// another run holds it). Deletions are by `system: retention`.
pub async fn run(app: &AppState, product: &str) -> ApiResult<RunReport> {
    let settings = effective_settings(app, product).await?;
    if !settings.retention.is_active() {
        return Ok(RunReport::default());
    }
    let lease = format!("retention:{product}");
    let owner = uuid::Uuid::new_v4().simple().to_string();
    let now = now_ms();
    if !app
        .meta
        .take_lease(&lease, &owner, now, now + RUN_LEASE.as_millis() as i64)
        .await?
    {
        return Err(ApiError::conflict(
            "retention_running",
            format!("a retention run of '{product}' is in progress; try again when it ends"),
        ));
    }
    let mut expire = Expire {
        app,
        ctx: Ctx::system(SystemActor::Retention),
        report: RunReport::default(),
    };
    let outcome = judge_all(app, product, &settings, &mut expire).await;
    // Free the lease for the next run (if this fails, it lapses with its time).
    let _ = app.meta.release_lease(&lease, &owner).await;
    outcome.map(|()| expire.report)
}

impl<T: AsyncVisit> AsyncVisit for &mut T {
    async fn visit(&mut self, record: VersionRecord, verdict: Verdict) -> ApiResult<()> {
        (**self).visit(record, verdict).await
    }
}

/// Runs retention over every product every `DEPOT_RETENTION_INTERVAL_SECONDS`.
pub fn spawn(app: AppState) {
    let interval = Duration::from_secs(app.settings.retention_interval_seconds);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // The bytes-per-product gauge is filled soon after start, not an interval later.
        tokio::time::sleep(Duration::from_secs(5).min(interval)).await;
        if let Err(err) = crate::ops::quota::refresh_gauges(&app).await {
            tracing::warn!(error = %err.message, "could not fill the bytes-per-product gauge");
        }
        loop {
            ticker.tick().await;
            let products = match app.meta.list_products().await {
                Ok(products) => products,
                Err(err) => {
                    tracing::warn!(error = %err, "retention: cannot list products");
                    continue;
                }
            };
            for product in products {
                match run(&app, &product).await {
                    Ok(report) if !report.deleted.is_empty() => {
                        tracing::info!(product = %product, deleted = report.deleted.len(), bytes = report.bytes_reclaimed, "retention run")
                    }
                    Ok(_) => {}
                    Err(err) if err.code == "retention_running" => {}
                    Err(err) => {
                        tracing::warn!(product = %product, error = %err.message, "retention run failed")
                    }
                }
            }
            if let Err(err) = crate::ops::quota::refresh_gauges(&app).await {
                tracing::warn!(error = %err.message, "could not refresh the bytes-per-product gauge");
            }
        }
    });
}

/// Records that `record` was downloaded, at most once an hour per version, in the
/// background: a download never waits for it, and a flood of them writes little.
pub fn note_download(app: &AppState, record: &VersionRecord) {
    let now = now_ms();
    let stale_before = now - DOWNLOAD_NOTE_INTERVAL_MS;
    if record.state != crate::meta::VersionState::Committed
        || record.last_download_at.is_some_and(|at| at >= stale_before)
    {
        return;
    }
    let Ok(permit) = DOWNLOAD_NOTES.try_acquire() else {
        return;
    };
    let (app, product, version) = (app.clone(), record.product.clone(), record.version.clone());
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(err) = app
            .meta
            .note_download(&product, &version, now, stale_before)
            .await
        {
            tracing::debug!(error = %err, "could not record a download time");
        }
    });
}
