//! Application state, backend selection and the router.

use crate::api;
use crate::auth::TokenService;
use crate::blob::BlobStore;
use crate::cache::TokenCache;
use crate::config::Settings;
use crate::meta::MetaStore;
use crate::observability::{self, REQUEST_ID};
use crate::signing::UrlSigner;
use axum::Router;
use std::sync::Arc;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

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
    pub uploads: crate::upload::UploadLimits,
}

impl AppState {
    pub fn new(
        settings: Settings,
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        cache: Arc<dyn TokenCache>,
        signer: UrlSigner,
    ) -> Self {
        let uploads = crate::upload::UploadLimits::new(
            settings.max_concurrent_uploads,
            settings.max_early_file_uploads_per_token,
        );
        Self {
            uploads,
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

/// The API routes, mounted at `/` and again under `/api` (where the original service
/// served them).
pub fn router(state: AppState) -> Router {
    let routes = api::routes();
    let request_span = |req: &axum::http::Request<axum::body::Body>| {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        // Deliberately no URI here: paths can carry raw tokens.
        tracing::info_span!("request", request_id = %id)
    };
    Router::new()
        .merge(routes.clone())
        .nest("/api", routes)
        .layer(axum::middleware::from_fn(observability::track))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}
