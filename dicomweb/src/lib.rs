//! HTTP front-end of the PACS node: DICOMweb (PS3.18: QIDO-RS, WADO-RS, STOW-RS) for viewers
//! such as OHIF, plus health and statistics. It knows HTTP and PS3.18, not the archive: what it
//! needs from the archive goes through the [`Archive`] trait.

pub mod archive;
pub mod error;
pub mod media;
mod qido;
mod stow;
mod wado;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use archive::{Archive, ArchiveError};

/// Settings of the HTTP front-end.
#[derive(Debug, Clone)]
pub struct DicomWebConfig {
    /// Path under which DICOMweb is served (default `/dicom-web`).
    pub root: String,
    /// Origins allowed by CORS; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Largest instance accepted by STOW-RS.
    pub max_instance_bytes: u64,
    /// Largest STOW-RS request.
    pub max_request_bytes: u64,
    /// A static web application (an OHIF build) served at `/`, same origin as the API.
    pub static_dir: Option<PathBuf>,
    /// Public base URL (scheme://host[:port]) used in Retrieve URLs and BulkDataURIs; taken
    /// from the request's Host header when unset.
    pub public_url: Option<String>,
    /// The port the HTTP listener is bound to (completes a Host header that lacks a port).
    pub listen_port: u16,
    /// Requests with `Authorization: Bearer <this>` come from an AI worker.
    pub worker_token: Option<String>,
}

impl Default for DicomWebConfig {
    fn default() -> Self {
        DicomWebConfig {
            root: "/dicom-web".into(),
            cors_origins: vec!["*".into()],
            max_instance_bytes: 2 * 1024 * 1024 * 1024,
            max_request_bytes: 8 * 1024 * 1024 * 1024,
            static_dir: None,
            public_url: None,
            listen_port: 8080,
            worker_token: None,
        }
    }
}

pub(crate) struct AppState {
    pub archive: Arc<dyn Archive>,
    pub config: DicomWebConfig,
}

/// Who is making a request. Every request gets one (anonymous today); authentication will set
/// it in [`identify`], and handlers and the audit trail read it from the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    /// An AI worker (it presented the worker token): what it stores is AI output.
    AiWorker,
}

async fn identify(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // compare digests, so that the time taken says nothing about the token
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let identity = match (&state.config.worker_token, presented) {
        (Some(token), Some(p)) if digest(p).as_ref() == digest(token).as_ref() => {
            Identity::AiWorker
        }
        _ => Identity::Anonymous,
    };
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The URL of the DICOMweb root as clients reach it.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let origin = match &state.config.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let header_str = |name: &str| headers.get(name).and_then(|h| h.to_str().ok());
            let scheme = header_str("x-forwarded-proto").unwrap_or("http");
            match header_str("x-forwarded-host") {
                Some(host) => format!("{scheme}://{host}"),
                None => {
                    let host = header_str("host").unwrap_or("localhost");
                    // Some clients (the Python dicomweb-client among them) send Host without
                    // the port they connected to; complete it with ours. Behind a proxy, set
                    // the public URL or X-Forwarded-Host instead.
                    let has_port = host
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
                        && !host.ends_with(']');
                    let port = state.config.listen_port;
                    if has_port || port == 80 || port == 443 {
                        format!("{scheme}://{host}")
                    } else {
                        format!("{scheme}://{host}:{port}")
                    }
                }
            }
        }
    };
    format!("{origin}{}", state.config.root)
}

/// Media type of an encapsulated transfer syntax's frames for WADO-RS (PS3.18 Table 8.7.3-5):
/// image/jpeg (.50 .51 .57 .70), image/jls (.80 .81), image/jp2 (.90 .91), image/jpx (.92 .93),
/// image/jphc (HTJ2K .201 .202 .203), image/dicom-rle (RLE), image/jxl (.110 .111 .112),
/// video/mpeg (MPEG-2), video/mp4 (H.264, HEVC); application/octet-stream for the encapsulated
/// but uncompressed/deflated frame syntaxes (1.2.840.10008.1.2.1.98, 1.2.840.10008.1.2.8.1),
/// which are told apart by the `transfer-syntax` parameter. None for native (uncompressed)
/// transfer syntaxes and for unknown UIDs.
pub fn frame_media_type(transfer_syntax_uid: &str) -> Option<&'static str> {
    let uid = transfer_syntax_uid.trim_end_matches(['\0', ' ']);
    let suffix = uid.strip_prefix("1.2.840.10008.1.2.")?;
    Some(match suffix {
        "4.50" | "4.51" | "4.57" | "4.70" => "image/jpeg",
        "4.80" | "4.81" => "image/jls",
        "4.90" | "4.91" => "image/jp2",
        "4.92" | "4.93" => "image/jpx",
        "4.201" | "4.202" | "4.203" => "image/jphc",
        "4.110" | "4.111" | "4.112" => "image/jxl",
        "5" => "image/dicom-rle",
        "4.100" | "4.100.1" | "4.101" | "4.101.1" => "video/mpeg",
        "4.102" | "4.102.1" | "4.103" | "4.103.1" | "4.104" | "4.104.1" | "4.105" | "4.105.1"
        | "4.106" | "4.106.1" | "4.107" | "4.108" => "video/mp4",
        "1.98" | "8.1" => "application/octet-stream",
        _ => return None,
    })
}

/// The router: DICOMweb under `config.root`, health and statistics, the static viewer; CORS,
/// compression, tracing and the identity hook as layers around it.
pub fn router(archive: Arc<dyn Archive>, config: DicomWebConfig) -> Router {
    let root = config.root.trim_end_matches('/').to_string();
    let cors = cors_layer(&config.cors_origins);
    let static_dir = config.static_dir.clone();
    let state = Arc::new(AppState { archive, config });
    let dicomweb = Router::new()
        .route("/studies", get(qido::studies).post(stow::store_studies))
        .route("/series", get(qido::all_series))
        .route("/instances", get(qido::all_instances))
        .route(
            "/studies/{study}",
            get(wado::retrieve_study).post(stow::store_study),
        )
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/rendered", get(wado::study_rendered))
        .route("/studies/{study}/thumbnail", get(wado::study_thumbnail))
        .route("/studies/{study}/series", get(qido::study_series))
        .route("/studies/{study}/instances", get(qido::study_instances))
        .route(
            "/studies/{study}/series/{series}",
            get(wado::retrieve_series),
        )
        .route(
            "/studies/{study}/series/{series}/metadata",
            get(wado::series_metadata),
        )
        .route(
            "/studies/{study}/series/{series}/rendered",
            get(wado::series_rendered),
        )
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(wado::series_thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            get(qido::series_instances),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}",
            get(wado::retrieve_instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(wado::instance_metadata),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(wado::instance_rendered),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            get(wado::instance_thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(wado::frames),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            get(wado::frame_rendered),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
            get(wado::frame_thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{*path}",
            get(wado::bulkdata),
        )
        // unknown DICOMweb resources are 404, never the viewer's index.html
        .fallback(|| async {
            error::HttpError::new(
                axum::http::StatusCode::NOT_FOUND,
                "no such DICOMweb resource",
            )
        })
        // no request body limit here: STOW-RS enforces its own limits while streaming
        .layer(axum::extract::DefaultBodyLimit::disable());
    let mut app = Router::new()
        .nest(&root, dicomweb)
        .route("/healthz", get(healthz))
        .route("/api/statistics", get(statistics));
    if let Some(dir) = static_dir {
        // a single-page application: unknown paths get index.html
        let index = dir.join("index.html");
        app = app.fallback_service(
            tower_http::services::ServeDir::new(&dir)
                .fallback(tower_http::services::ServeFile::new(index)),
        );
    }
    // Compress JSON, not DICOM, pixels or images (already dense, and costly to deflate).
    let compress = SizeAbove::new(1024)
        .and(NotForContentType::new("multipart/related"))
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::new("application/octet-stream"));
    app.with_state(state.clone())
        .layer(middleware::from_fn_with_state(state, identify))
        .layer(CompressionLayer::new().compress_when(compress))
        .layer(cors)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers([
            header::WARNING,
            header::CONTENT_RANGE,
            header::ETAG,
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
        ])
        .max_age(std::time::Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn statistics(State(state): State<Arc<AppState>>) -> Response {
    match state.archive.statistics().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error::HttpError::from(e).into_response(),
    }
}
