//! Application state, backend selection and the router.

use crate::api;
use crate::auth::TokenService;
use crate::blob::BlobStore;
use crate::cache::TokenCache;
use crate::config::Settings;
use crate::meta::MetaStore;
use crate::signing::UrlSigner;
use axum::Router;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub tokens: TokenService,
    pub signer: UrlSigner,
}

impl AppState {
    pub fn new(
        settings: Settings,
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        cache: Arc<dyn TokenCache>,
        signer: UrlSigner,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            tokens: TokenService { meta: meta.clone(), cache },
            meta,
            blobs,
            signer,
        }
    }
}

/// The API routes, mounted at `/` and again under `/api` (where the original service
/// served them).
pub fn router(state: AppState) -> Router {
    let routes = api::routes();
    Router::new()
        .merge(routes.clone())
        .nest("/api", routes)
        .with_state(state)
}
