//! Leases on pending reservations, so a crashed or stalled upload cannot hold its version.
//!
//! A reservation is written with `lease_until` = now + `DEPOT_UPLOAD_LEASE_SECONDS`. While
//! the upload runs, its `LeaseKeeper` extends the lease every third of that time, but only
//! when bytes arrived since the last renewal (or the body is complete and the server is
//! finishing it): a stalled client, like a dead process on any replica, stops renewing.
//! Once the lease has lapsed, a new upload of the version takes the record over
//! (`MetaStore::reserve_version` replaces it atomically) and discards what the old one
//! left; the janitor's lease sweep does the same for versions nobody retries. The old
//! upload, should it still be alive, fails at commit (its blob key no longer matches) with
//! 503 `upload_expired`, and its cleanup, matched by its own blob key, leaves the new
//! owner's record alone.

use crate::app::AppState;
use crate::meta::{MetaResult, VersionRecord, now_ms};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Renewals per lease period: a lease survives two missed renewals.
const RENEWALS_PER_LEASE: u32 = 3;

/// How far an upload has come: bytes received, and whether the body is complete.
/// Cheap to clone; the streaming loop bumps it, the keeper reads it.
#[derive(Clone, Default)]
pub struct Progress(Arc<ProgressInner>);

#[derive(Default)]
struct ProgressInner {
    bytes: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    /// `n` more bytes arrived.
    pub fn bump(&self, n: usize) {
        self.0.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The whole body is in: what is left (verify, finish, commit) is the server's work,
    /// so the lease is renewed without further bytes.
    pub fn done(&self) {
        self.0.done.store(true, Ordering::Relaxed);
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> (u64, bool) {
        (
            self.0.bytes.load(Ordering::Relaxed),
            self.0.done.load(Ordering::Relaxed),
        )
    }
}

fn lease(app: &AppState) -> Duration {
    Duration::from_secs(app.settings.upload_lease_seconds)
}

/// The `lease_until` of a reservation written now.
pub fn lease_until(app: &AppState) -> i64 {
    now_ms().saturating_add(lease(app).as_millis() as i64)
}

/// `MetaStore::reserve_version`, discarding (in the background) what the upload whose
/// lapsed reservation it took over left behind.
pub async fn reserve(app: &AppState, record: &VersionRecord) -> MetaResult<()> {
    if let Some(old) = app.meta.reserve_version(record).await? {
        tracing::info!(
            product = %old.product,
            version = %old.version,
            "took over a pending version whose upload stopped renewing its lease"
        );
        let app = app.clone();
        crate::cleanup::spawn(async move {
            if let Err(err) = app.blobs.discard(&old.blob_key).await {
                tracing::warn!(key = %old.blob_key, error = %err, "could not discard what a lapsed upload left; left for the janitor");
            }
        });
    }
    Ok(())
}

/// Renews one reservation's lease while its upload makes progress; stops when dropped.
pub struct LeaseKeeper {
    stop: CancellationToken,
}

impl LeaseKeeper {
    /// Renews the pending record (matched by blob key) of an upload of `version`.
    pub fn start(
        app: &AppState,
        product: &str,
        version: &str,
        blob_key: &str,
        progress: Progress,
    ) -> LeaseKeeper {
        let (product, version, key) = (
            product.to_string(),
            version.to_string(),
            blob_key.to_string(),
        );
        let what = format!("{product}/{version}");
        Self::renewing(app, progress, what, move |app, until| {
            let (product, version, key) = (product.clone(), version.clone(), key.clone());
            Box::pin(async move { app.meta.renew_lease(&product, &version, &key, until).await })
        })
    }

    /// Calls `renew(app, lease_until)` every third of a lease while the upload makes
    /// progress; stops when `renew` says the leased thing is gone, or when dropped.
    pub fn renewing<F>(app: &AppState, progress: Progress, what: String, renew: F) -> LeaseKeeper
    where
        F: Fn(AppState, i64) -> futures::future::BoxFuture<'static, MetaResult<bool>>
            + Send
            + 'static,
    {
        let stop = CancellationToken::new();
        let period = lease(app) / RENEWALS_PER_LEASE;
        let app = app.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let (mut seen, _) = progress.snapshot();
            loop {
                // A renewal once started runs to completion (a MongoDB call dropped
                // mid-flight costs its connection); stopping happens between renewals.
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let (bytes, done) = progress.snapshot();
                if bytes == seen && !done {
                    // Stalled: no renewal, so the lease runs out if no byte comes.
                    continue;
                }
                seen = bytes;
                match renew(app.clone(), lease_until(&app)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(upload = %what, "lease gone; lease keeper stops");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(upload = %what, error = %err, "could not renew an upload's lease; retrying");
                    }
                }
            }
        });
        LeaseKeeper { stop }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
