//! Start-up: connect the configured backends, bootstrap the admin token, clean what a
//! crash left, serve until SIGTERM/SIGINT with a grace period for running transfers.

use crate::app::AppState;
use crate::auth::hash_token;
use crate::blob::BlobStore;
use crate::blob::fs::FsBlobStore;
use crate::cache::TokenCache;
use crate::cache::none::NoCache;
use crate::config::{LogFormat, Settings};
use crate::connections::ConnectionLimits;
use crate::domain::events::SystemActor;
use crate::meta::embedded::EmbeddedMetaStore;
use crate::meta::metered::MeteredMetaStore;
use crate::meta::{MetaStore, TokenRecord};
use crate::ops::{self, Ctx};
use crate::router::router;
use crate::signing::UrlSigner;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEPOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Opens the metadata store the settings select.
pub async fn open_meta(settings: &Settings) -> anyhow::Result<Arc<dyn MetaStore>> {
    if let Some(url) = &settings.mongo_url {
        let store = crate::meta::mongo::MongoMetaStore::connect(url, &settings.mongo_db)
            .await
            .context("MongoDB (DEPOT_MONGO_URL) is unreachable or misconfigured")?;
        return Ok(Arc::new(store));
    }
    private_dir(&settings.data_dir)?;
    let path = settings.data_dir.join("depot.redb");
    let store = tokio::task::spawn_blocking(move || {
        let store = EmbeddedMetaStore::open(&path).context(
            "cannot open the embedded database (is another Depot using this DEPOT_DATA_DIR?)",
        )?;
        private_file(&path)?;
        anyhow::Ok(store)
    })
    .await??;
    Ok(Arc::new(store))
}

pub async fn open_blobs(settings: &Settings) -> anyhow::Result<Arc<dyn BlobStore>> {
    if let Some(s3) = &settings.s3 {
        let store = crate::blob::s3::S3BlobStore::connect(s3)
            .await
            .context("S3 (DEPOT_S3_*) is unreachable or misconfigured")?;
        return Ok(Arc::new(store));
    }
    private_dir(&settings.data_dir)?;
    Ok(Arc::new(
        FsBlobStore::open(&settings.data_dir)
            .await
            .with_context(|| format!("cannot use {} for blobs", settings.data_dir.display()))?,
    ))
}

/// Opens the token cache the settings select. `signing_key` is the resolved
/// `DEPOT_SIGNING_KEY`: Redis entries are authenticated with a key derived from it.
pub async fn open_cache(
    settings: &Settings,
    signing_key: &[u8],
) -> anyhow::Result<Arc<dyn TokenCache>> {
    if let Some(url) = &settings.redis_url {
        // rediss:// needs a rustls crypto provider; more than one is compiled in, so pick
        // one (an error only means one is installed already).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cache = crate::cache::redis::RedisCache::connect(
            url,
            Duration::from_secs(settings.cache_ttl_seconds),
            Duration::from_secs(settings.redis_outage_cache_seconds),
            signing_key,
        )
        .await
        .context("Redis (DEPOT_REDIS_URL) is unreachable or misconfigured")?;
        return Ok(Arc::new(cache));
    }
    if settings.mongo_url.is_none() {
        // One process owns the embedded store, so an in-process cache stays exact.
        let ttl = Duration::from_secs(settings.cache_ttl_seconds);
        return Ok(Arc::new(crate::cache::local::LocalCache::new(ttl)));
    }
    // Replicas sharing MongoDB without Redis: no cache, so revocation is immediate everywhere.
    Ok(Arc::new(NoCache))
}

/// Creates the data directory if needed and makes it private (0700), whatever the umask.
pub fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))
}

/// Sets a secret file's mode to 0600 (owner read/write only).
pub fn private_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private (mode 0600)", path.display()))
}

/// The HMAC key for Depot-signed URLs: configured, or generated once into the data dir
/// (mode 0600). `Settings::resolve` already refused a configured key under 32 bytes.
async fn signing_key(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(key) = &settings.signing_key {
        anyhow::ensure!(
            key.len() >= crate::config::MIN_SIGNING_KEY_BYTES,
            "DEPOT_SIGNING_KEY is too short"
        );
        return Ok(key.as_bytes().to_vec());
    }
    let dir = settings.data_dir.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        private_dir(&dir)?;
        let path = dir.join("signing.key");
        if let Ok(existing) = std::fs::read(&path)
            && existing.len() >= crate::config::MIN_SIGNING_KEY_BYTES
        {
            private_file(&path)?;
            return Ok(existing);
        }
        let key: [u8; 32] = rand::random();
        let encoded = hex::encode(key);
        // A fresh file next to it, created 0600, then renamed over any short leftover.
        let tmp = dir.join("signing.key.new");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(encoded.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        private_file(&path)?;
        Ok(encoded.into_bytes())
    })
    .await?
}

pub async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    let meta: Arc<dyn MetaStore> = Arc::new(MeteredMetaStore::new(open_meta(&settings).await?));
    let blobs = open_blobs(&settings).await?;
    let key = signing_key(&settings).await?;
    let cache = open_cache(&settings, &key).await?;
    let signer = UrlSigner::new(key);
    Ok(AppState::new(settings, meta, blobs, cache, signer))
}

/// Creates a token directly in the store and returns the raw value. Such tokens have no
/// parent; `bootstrap` marks the one registered from `DEPOT_ADMIN_TOKEN`.
pub async fn create_token(
    meta: &dyn MetaStore,
    system: SystemActor,
    admin: bool,
    raw: Option<&str>,
) -> anyhow::Result<String> {
    let created = ops::tokens::create(meta, &Ctx::system(system), admin, raw, false).await?;
    Ok(created.value.0)
}

/// `DEPOT_ADMIN_TOKEN` exists as an admin token, marked as the bootstrapped one; any
/// other token bootstrapped from an earlier value is revoked (store and cache). With none
/// configured and no admin at all, one is created and printed once on stdout (never logged).
async fn bootstrap_admin(state: &AppState) -> anyhow::Result<()> {
    if let Some(raw) = &state.settings.admin_token {
        let current = match state.meta.token_by_hash(&hash_token(raw)).await? {
            Some(t) if t.admin => {
                if !t.bootstrap {
                    ops::tokens::mark_bootstrap(state, &t).await?;
                }
                t.id
            }
            Some(_) => anyhow::bail!("DEPOT_ADMIN_TOKEN names an existing non-admin token"),
            None => {
                let bootstrap = Ctx::system(SystemActor::Bootstrap);
                let created =
                    ops::tokens::create(state.meta.as_ref(), &bootstrap, true, Some(raw), true)
                        .await?;
                let record = created.value.1;
                tracing::info!(token_id = %record.id, "admin token from DEPOT_ADMIN_TOKEN registered");
                record.id
            }
        };
        let stale: Vec<TokenRecord> = state
            .meta
            .list_tokens()
            .await?
            .into_iter()
            .filter(|t| t.bootstrap && t.id != current)
            .collect();
        // Only the old bootstrap token goes: the tokens it minted (CI tokens, say) keep
        // working; `GET /tokens` lists them with their parent, for an admin to prune.
        for old in &stale {
            ops::tokens::revoke_rotated(state, &Ctx::system(SystemActor::Bootstrap), old).await?;
            tracing::warn!(token_id = %old.id, "DEPOT_ADMIN_TOKEN changed: the previous bootstrap admin token is revoked");
        }
        return Ok(());
    }
    if !state.meta.has_admin_token().await? {
        let raw = create_token(state.meta.as_ref(), SystemActor::Bootstrap, true, None).await?;
        println!("Depot created the first admin token (shown once, store it now):\n{raw}");
        tracing::info!("first admin token created and printed to stdout");
    }
    Ok(())
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.listen;
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    let embedded = settings.mongo_url.is_none();
    crate::observability::metrics_handle();
    let state = build_state(settings).await?;
    bootstrap_admin(&state).await?;
    if embedded {
        // This process owns the embedded database: every pending upload is a crash leftover.
        let report = crate::ops::janitor::sweep(&state, Duration::ZERO).await?;
        tracing::info!(?report, "start-up cleanup");
    }
    crate::ops::janitor::spawn(state.clone());
    crate::ops::retention::spawn(state.clone());
    crate::ops::delivery::spawn(state.clone())?;
    let limits = ConnectionLimits::fit(&state.settings)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        max_connections = limits.max_connections,
        open_files = limits.open_files,
        "depot listening"
    );
    let shutdown = state.shutdown.clone();
    let app = router(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = crate::connections::serve(listener, app, limits, stop_rx);
    tokio::select! {
        () = server => {}
        () = async {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("shutdown grace period over; aborting remaining transfers");
        }
    }
    shutdown.abort.cancel();
    shutdown.transfers.close();
    if tokio::time::timeout(Duration::from_secs(10), shutdown.transfers.wait())
        .await
        .is_err()
    {
        tracing::warn!("some transfers did not stop in time");
    }
    // Aborted transfers clean up from Drop; let that finish before the runtime goes.
    crate::cleanup::drain(Duration::from_secs(10)).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing running requests");
}
