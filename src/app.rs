//! Application state: the settings, the stores and the shared limits every handler uses.

use crate::auth::TokenService;
use crate::blob::BlobStore;
use crate::cache::TokenCache;
use crate::config::Settings;
use crate::meta::MetaStore;
use crate::signing::UrlSigner;
use std::sync::Arc;

/// Lets shutdown abort running uploads cleanly once the grace period is over, and wait
/// until they have let go of what they created.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub abort: tokio_util::sync::CancellationToken,
    pub transfers: tokio_util::task::TaskTracker,
}

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub tokens: TokenService,
    pub signer: UrlSigner,
    pub shutdown: Shutdown,
    pub uploads: crate::ops::upload::UploadLimits,
    /// Verifies OIDC tokens for trusted publishing (caches issuers' keys).
    pub oidc: Arc<crate::oidc::OidcVerifier>,
}

impl AppState {
    pub fn new(
        settings: Settings,
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        cache: Arc<dyn TokenCache>,
        signer: UrlSigner,
    ) -> Self {
        let uploads = crate::ops::upload::UploadLimits::new(
            settings.max_concurrent_uploads,
            settings.max_early_file_uploads_per_token,
        );
        let oidc = Arc::new(crate::oidc::OidcVerifier::new(
            settings.oidc_issuers.clone(),
            settings.oidc_audience.clone(),
        ));
        Self {
            uploads,
            oidc,
            settings: Arc::new(settings),
            tokens: TokenService {
                meta: meta.clone(),
                cache,
            },
            meta,
            blobs,
            signer,
            shutdown: Shutdown::default(),
        }
    }
}

/// Lets extractors (the `Caller`) take just the token service from the state.
impl axum::extract::FromRef<AppState> for TokenService {
    fn from_ref(state: &AppState) -> TokenService {
        state.tokens.clone()
    }
}
