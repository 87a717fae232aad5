//! Health probes: no token needed, so load balancers and orchestrators can use them.

use crate::app::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One entry per backend; 200 when metadata and storage are fine (a cache outage only
/// degrades), 503 otherwise.
pub async fn health(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let (meta, blobs, cache) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, app.meta.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, app.blobs.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, app.tokens.cache.ping()),
    );
    let meta_ok = matches!(meta, Ok(Ok(())));
    let blobs_ok = matches!(blobs, Ok(Ok(())));
    let mut body = Map::new();
    let meta_key = app.meta.health_key();
    let meta_name = if meta_key == "mongo" {
        "Mongo"
    } else {
        "Embedded store"
    };
    body.insert(meta_key.into(), json!(sentence(meta_name, meta_ok)));
    let mut degraded = false;
    if let Some(key) = app.tokens.cache.health_key() {
        let cache_ok = matches!(cache, Ok(Ok(())));
        degraded = !cache_ok;
        body.insert(key.into(), json!(sentence("Redis", cache_ok)));
    }
    body.insert(
        "storage".into(),
        json!(sentence(app.blobs.describe(), blobs_ok)),
    );
    let (status, word) = match (meta_ok && blobs_ok, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "down"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ok"),
    };
    body.insert("status".into(), json!(word));
    (status, Json(Value::Object(body)))
}

fn sentence(name: &str, ok: bool) -> String {
    if ok {
        format!("{name} is fine")
    } else {
        format!("{name} is down")
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> ([(http::HeaderName, &'static str); 1], String) {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::observability::metrics_handle().render() + &crate::ops::quota::render_gauges(),
    )
}

pub async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(state: State<AppState>) -> (StatusCode, Json<Value>) {
    health(state).await
}
