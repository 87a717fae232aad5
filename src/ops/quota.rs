//! Quotas: what a product holds, and the reservations that keep uploads within its
//! `max_bytes` and `max_versions`.
//!
//! An upload to a product with a quota takes a reservation before it stores a byte: its
//! declared length when it has one (refused at once with 413 `quota_exceeded` when that
//! would pass the limit), nothing otherwise. As bytes arrive past what it reserved, it
//! takes more, in growing steps, and is aborted when the store refuses: the store checks
//! each reservation against everything the product holds plus every live reservation in
//! one atomic step, so concurrent uploads, on any replica, can never both squeeze past a
//! limit. The reservation is released once the upload committed (its bytes are then in
//! its files) or failed; a crashed upload's reservation stops counting when its lease
//! lapses, and the janitor removes it.

use crate::app::AppState;
use crate::domain::retention::{QuotaExceeded, QuotaPolicy};
use crate::error::{ApiError, ApiResult, MetaError};
use crate::meta::{ProductUsage, QuotaReservation, now_ms};
use crate::ops::upload::lease::{LeaseKeeper, Progress, lease_until};
use axum::http::StatusCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

/// The smallest and largest step by which a stream without a declared length grows its
/// reservation (each step is one store call; the step doubles with what is reserved).
const MIN_STEP: u64 = 1 << 20;
const MAX_STEP: u64 = 256 << 20;

/// `GET /product/usage/{product}`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub product: String,
    #[serde(flatten)]
    pub usage: ProductUsage,
    pub quota: QuotaPolicy,
}

/// The 413 an upload past a quota gets: the message, and the figures as fields.
pub fn quota_exceeded(refused: &QuotaExceeded) -> ApiError {
    metrics::counter!("depot_quota_refusals_total", "quota" => refused.quota).increment(1);
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "quota_exceeded",
        refused.to_string(),
    )
    .with_details(serde_json::json!({
        "quota": refused.quota,
        "usage": refused.usage,
        "limit": refused.limit,
    }))
}

/// Whether a quota applies at all: without one, uploads take no reservation.
fn is_set(quota: &QuotaPolicy) -> bool {
    quota.max_bytes.is_some() || quota.max_versions.is_some()
}

/// The quota a product follows (its own settings, else the server's defaults).
pub async fn quota_of(app: &AppState, product: &str) -> ApiResult<QuotaPolicy> {
    Ok(crate::ops::retention::effective_settings(app, product)
        .await?
        .quota)
}

/// What `product` holds now, with the quota it follows.
pub async fn usage(app: &AppState, product: &str) -> ApiResult<UsageReport> {
    let quota = quota_of(app, product).await?;
    let usage = app
        .meta
        .product_usage(product, now_ms())
        .await?
        .ok_or_else(|| ApiError::product_not_found(product))?;
    record_gauge(product, &usage);
    Ok(UsageReport {
        product: product.to_string(),
        usage,
        quota,
    })
}

/// How `GET /usage` orders products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageOrder {
    /// Largest first (then by name).
    #[default]
    Bytes,
    Versions,
    Name,
}

/// Every product's usage (`GET /usage`), in `order`; at most `limit` of them. One product
/// at a time, so memory holds the reports, not the versions.
pub async fn usage_of_all(
    app: &AppState,
    order: UsageOrder,
    limit: usize,
) -> ApiResult<Vec<UsageReport>> {
    let mut reports = Vec::new();
    for product in app.meta.list_products().await? {
        match usage(app, &product).await {
            Ok(report) => reports.push(report),
            // Deleted while we went through the list.
            Err(err) if err.status == StatusCode::NOT_FOUND => {}
            Err(err) => return Err(err),
        }
    }
    match order {
        UsageOrder::Bytes => reports.sort_by(|a, b| {
            b.usage
                .bytes
                .cmp(&a.usage.bytes)
                .then_with(|| a.product.cmp(&b.product))
        }),
        UsageOrder::Versions => reports.sort_by(|a, b| {
            b.usage
                .versions
                .cmp(&a.usage.versions)
                .then_with(|| a.product.cmp(&b.product))
        }),
        UsageOrder::Name => reports.sort_by(|a, b| a.product.cmp(&b.product)),
    }
    reports.truncate(limit);
    Ok(reports)
}

/// Bytes per product for `/metrics`: replaced as a whole by each periodic refresh (so a
/// deleted product's series goes), updated whenever a product's usage is computed.
static PRODUCT_BYTES: LazyLock<Mutex<BTreeMap<String, u64>>> = LazyLock::new(Mutex::default);

fn record_gauge(product: &str, usage: &ProductUsage) {
    let mut gauges = PRODUCT_BYTES.lock().unwrap_or_else(|e| e.into_inner());
    gauges.insert(product.to_string(), usage.bytes);
}

/// Recomputes every product's usage for the gauge; products gone since drop out.
pub async fn refresh_gauges(app: &AppState) -> ApiResult<()> {
    let mut fresh = BTreeMap::new();
    for product in app.meta.list_products().await? {
        if let Some(usage) = app.meta.product_usage(&product, now_ms()).await? {
            fresh.insert(product, usage.bytes);
        }
    }
    *PRODUCT_BYTES.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
    Ok(())
}

/// The gauge in Prometheus text format, for `GET /metrics` (one series per product).
pub fn render_gauges() -> String {
    let gauges = PRODUCT_BYTES.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::from(
        "# HELP depot_product_bytes Bytes a product holds (published versions, drafts, uploads in flight)\n\
         # TYPE depot_product_bytes gauge\n",
    );
    for (product, bytes) in gauges.iter() {
        // Product names are [A-Za-z0-9._+-]: nothing to escape in a label value.
        out.push_str(&format!(
            "depot_product_bytes{{product=\"{product}\"}} {bytes}\n"
        ));
    }
    out
}

/// An upload's hold on its product's quota. Dropped without [`QuotaTicket::release`],
/// its reservation is released in the background.
pub struct QuotaTicket {
    app: AppState,
    quota: QuotaPolicy,
    /// What the store holds for this upload (`bytes`: reserved so far).
    reservation: QuotaReservation,
    /// Bytes received so far.
    used: u64,
    /// The most the upload can bring (its declared length), when known: growth steps
    /// never reserve past it.
    ceiling: Option<u64>,
    _keeper: LeaseKeeper,
    released: bool,
}

impl QuotaTicket {
    /// Reserves `bytes` (and the version, if new) for an upload into `product`/`version`
    /// whose (first) file is stored under `blob_key`, before any byte is stored; `None`
    /// when no quota applies. `ceiling`: the most the upload can bring, when its length
    /// is declared: that is reserved when it fits (one store call covers the whole
    /// upload), else `bytes`, the least it brings. A refusal is 413 `quota_exceeded`.
    pub async fn open(
        app: &AppState,
        (product, version, blob_key): (&str, &str, &str),
        bytes: u64,
        ceiling: Option<u64>,
    ) -> ApiResult<Option<QuotaTicket>> {
        let quota = quota_of(app, product).await?;
        if !is_set(&quota) {
            return Ok(None);
        }
        let mut reservation = QuotaReservation {
            id: format!("qr_{}", hex::encode(rand::random::<[u8; 16]>())),
            product: product.to_string(),
            version: version.to_string(),
            blob_key: blob_key.to_string(),
            bytes: ceiling.unwrap_or(bytes).max(bytes),
            lease_until: lease_until(app),
        };
        if let Err(refused) = try_take(app, &reservation, &quota).await? {
            if reservation.bytes == bytes {
                return Err(quota_exceeded(&refused));
            }
            reservation.bytes = bytes;
            take(app, &reservation, &quota).await?;
        }
        let id = reservation.id.clone();
        // Renewed while this process runs the upload, stalled or not (a stall ends at the
        // idle timeout, which releases it): only a dead process's reservation lapses.
        let alive = Progress::default();
        alive.done();
        let keeper = LeaseKeeper::renewing(app, alive, id.clone(), move |app, until| {
            let id = id.clone();
            Box::pin(async move { app.meta.renew_quota_reservation(&id, until).await })
        });
        Ok(Some(QuotaTicket {
            app: app.clone(),
            quota,
            reservation,
            used: 0,
            ceiling,
            _keeper: keeper,
            released: false,
        }))
    }

    /// `n` more bytes arrived: reserves more when they pass what is reserved, and fails
    /// with 413 `quota_exceeded` when the product has no room left for them.
    pub async fn add(&mut self, n: u64) -> ApiResult<()> {
        self.used = self.used.saturating_add(n);
        let Some(deficit) = self
            .used
            .checked_sub(self.reservation.bytes)
            .filter(|&d| d > 0)
        else {
            return Ok(());
        };
        let headroom = self
            .ceiling
            .map_or(u64::MAX, |c| c.saturating_sub(self.reservation.bytes));
        let step = deficit.max(
            self.reservation
                .bytes
                .clamp(MIN_STEP, MAX_STEP)
                .min(headroom),
        );
        let extended = match self.extend(step).await {
            Err(err) if step > deficit && err.code == "quota_exceeded" => {
                self.extend(deficit).await
            }
            other => other,
        };
        extended.map(|granted| self.reservation.bytes += granted)
    }

    /// Takes `bytes` more for this reservation; how many it took. The store is asked for
    /// the new total, so a reservation lost meanwhile (an outage longer than its lease)
    /// is taken whole again rather than only its step.
    async fn extend(&self, bytes: u64) -> ApiResult<u64> {
        let more = QuotaReservation {
            bytes: self.reservation.bytes.saturating_add(bytes),
            lease_until: lease_until(&self.app),
            ..self.reservation.clone()
        };
        take(&self.app, &more, &self.quota).await?;
        Ok(bytes)
    }

    /// Gives the reservation back (the upload committed, or failed).
    pub async fn release(mut self) {
        self.released = true;
        release(&self.app, &self.reservation.id).await;
    }
}

impl Drop for QuotaTicket {
    fn drop(&mut self) {
        if !self.released {
            let (app, id) = (self.app.clone(), self.reservation.id.clone());
            crate::cleanup::spawn(async move { release(&app, &id).await });
        }
    }
}

async fn take(
    app: &AppState,
    reservation: &QuotaReservation,
    quota: &QuotaPolicy,
) -> ApiResult<()> {
    try_take(app, reservation, quota)
        .await?
        .map_err(|refused| quota_exceeded(&refused))
}

/// [`take`], with a refusal as a value (not yet counted as a refused upload).
async fn try_take(
    app: &AppState,
    reservation: &QuotaReservation,
    quota: &QuotaPolicy,
) -> ApiResult<Result<(), QuotaExceeded>> {
    // Each reservation writes the product's document on MongoDB: this process's take
    // turns rather than conflict.
    let _turn = crate::ops::take_turn(format!("quota\0{}", reservation.product)).await;
    match app.meta.reserve_quota(reservation, quota, now_ms()).await {
        Ok(outcome) => Ok(outcome),
        Err(MetaError::NotFound) => Err(ApiError::product_not_found(&reservation.product)),
        Err(err) => Err(err.into()),
    }
}

async fn release(app: &AppState, id: &str) {
    if let Err(err) = app.meta.release_quota_reservation(id).await {
        tracing::warn!(reservation = %id, error = %err, "could not release a quota reservation; it lapses with its lease");
    }
}

/// Reserves `bytes` (and the version) for an upload that outlives its request (tus, or a
/// direct upload), until `until` (Unix ms) with no process renewing it: the reservation
/// id, released when the upload commits or ends; `None` when no quota applies.
pub async fn hold_until(
    app: &AppState,
    (product, version, blob_key): (&str, &str, &str),
    bytes: u64,
    until: i64,
) -> ApiResult<Option<String>> {
    let quota = quota_of(app, product).await?;
    if !is_set(&quota) {
        return Ok(None);
    }
    let reservation = QuotaReservation {
        id: format!("qr_{}", hex::encode(rand::random::<[u8; 16]>())),
        product: product.to_string(),
        version: version.to_string(),
        blob_key: blob_key.to_string(),
        bytes,
        lease_until: until,
    };
    take(app, &reservation, &quota).await?;
    Ok(Some(reservation.id))
}

/// Gives back a reservation taken with [`hold_until`].
pub async fn release_held(app: &AppState, id: &str) {
    release(app, id).await
}
