//! HTTP front-end of the PACS node. Today it answers health checks and archive statistics;
//! DICOMweb (PS3.18: QIDO-RS, WADO-RS, STOW-RS) lands here next. It knows HTTP, not the archive:
//! what it needs from the archive goes through the [`Archive`] trait.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// What the HTTP front-end needs from the archive.
#[async_trait::async_trait]
pub trait Archive: Send + Sync + 'static {
    /// Counts of what the archive holds, as JSON.
    async fn statistics(&self) -> Result<serde_json::Value, String>;
}

/// The router: cross-cutting layers (CORS, limits, authentication) are added around it.
pub fn router(archive: Arc<dyn Archive>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/statistics", get(statistics))
        .with_state(archive)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn statistics(State(archive): State<Arc<dyn Archive>>) -> Response {
    match archive.statistics().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}
