//! `/api/exports` (the `deidentify` permission) and `/api/reidentification` (admin). What each
//! route needs is in `crate::auth::permissions`, checked before these handlers run. A caller
//! without the admin permission sees only its own exports.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pacs_dicomweb::{HttpError, Identity, Permission};
use serde::Deserialize;
use serde_json::json;

use super::{ExportError, ExportRequest, Exporter};
use crate::index::exports::ExportRow;

pub fn router(exporter: Arc<Exporter>) -> Router {
    Router::new()
        .route("/api/exports", get(list).post(create))
        .route("/api/exports/{id}", get(show).delete(cancel))
        .route("/api/exports/{id}/archive", get(archive))
        .route("/api/reidentification", get(reidentification))
        .with_state(exporter)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    HttpError::new(status, message).into_response()
}

fn index_error(e: crate::index::IndexError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

fn visible(identity: &Identity, row: &ExportRow) -> bool {
    identity.permissions.contains(Permission::Admin)
        || row.requested_by == identity.principal.name()
}

async fn create(
    State(exporter): State<Arc<Exporter>>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let request: ExportRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid export: {e}")),
    };
    let roles: Vec<String> = identity
        .permissions
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    let address = identity
        .peer
        .map(|p| p.ip().to_string())
        .unwrap_or_default();
    match exporter
        .submit(request, &identity.principal.name(), &roles, &address)
        .await
    {
        Ok(id) => match exporter.index.export(id).await {
            Ok(Some(row)) => (StatusCode::CREATED, Json(row)).into_response(),
            Ok(None) => error(StatusCode::INTERNAL_SERVER_ERROR, "the export disappeared"),
            Err(e) => index_error(e),
        },
        Err(ExportError::NoSecret) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ExportError::NoSecret.to_string(),
        ),
        Err(ExportError::Invalid(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(ExportError::Index(e)) => index_error(e),
    }
}

async fn list(State(exporter): State<Arc<Exporter>>, identity: Identity) -> Response {
    match exporter.index.exports(1000).await {
        Ok(rows) => Json(
            rows.into_iter()
                .filter(|r| visible(&identity, r))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => index_error(e),
    }
}

async fn find(exporter: &Exporter, identity: &Identity, id: &str) -> Result<ExportRow, Response> {
    let id: i64 = id
        .parse()
        .map_err(|_| error(StatusCode::NOT_FOUND, format!("no export {id}")))?;
    match exporter.index.export(id).await {
        Ok(Some(row)) if visible(identity, &row) => Ok(row),
        Ok(_) => Err(error(StatusCode::NOT_FOUND, format!("no export {id}"))),
        Err(e) => Err(index_error(e)),
    }
}

async fn show(
    State(exporter): State<Arc<Exporter>>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    match find(&exporter, &identity, &id).await {
        Ok(row) => Json(row).into_response(),
        Err(r) => r,
    }
}

async fn cancel(
    State(exporter): State<Arc<Exporter>>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let row = match find(&exporter, &identity, &id).await {
        Ok(row) => row,
        Err(r) => return r,
    };
    match exporter.index.cancel_export(row.id, super::now_ms()).await {
        Ok(true) => match exporter.index.export(row.id).await {
            Ok(Some(row)) => Json(row).into_response(),
            _ => StatusCode::NO_CONTENT.into_response(),
        },
        Ok(false) => error(
            StatusCode::CONFLICT,
            format!("export {} is {}: it cannot be cancelled", row.id, row.state),
        ),
        Err(e) => index_error(e),
    }
}

async fn archive(
    State(exporter): State<Arc<Exporter>>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let row = match find(&exporter, &identity, &id).await {
        Ok(row) => row,
        Err(r) => return r,
    };
    if row.destination != "zip" {
        return error(StatusCode::NOT_FOUND, "this export has no archive");
    }
    // a finished export with refused instances keeps its archive (the refusals are listed)
    if row.archive_path.is_empty() {
        return error(
            StatusCode::CONFLICT,
            format!("export {} is {}: no archive to download", row.id, row.state),
        );
    }
    let file = match tokio::fs::File::open(&row.archive_path).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::GONE, format!("the archive is gone: {e}")),
    };
    let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = axum::body::Body::from_stream(tokio_util_stream(file));
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"export-{}.zip\"", row.id),
            ),
        ],
        body,
    )
        .into_response()
}

/// A file as a stream of 1 MiB chunks, fused: the compression layer polls once more after the
/// end, which an unfused `unfold` answers with a panic (seen as a cut-off gzip download).
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    use futures::StreamExt;
    futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1024 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
    .fuse()
}

#[derive(Deserialize)]
struct ReidQuery {
    pseudonym: Option<String>,
}

/// `GET /api/reidentification[?pseudonym=...]`: original ↔ pseudonym (admin only).
async fn reidentification(
    State(exporter): State<Arc<Exporter>>,
    Query(q): Query<ReidQuery>,
) -> Response {
    match exporter
        .index
        .reidentifications(q.pseudonym.as_deref())
        .await
    {
        Ok(rows) => Json(json!(rows)).into_response(),
        Err(e) => index_error(e),
    }
}
