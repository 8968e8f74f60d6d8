//! HTTP front-end of the PACS node: DICOMweb (PS3.18: QIDO-RS, WADO-RS, STOW-RS) for viewers
//! such as OHIF, plus health and statistics. It knows HTTP and PS3.18, not the archive: what it
//! needs from the archive goes through the [`Archive`] trait.

pub mod archive;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod media;
mod qido;
mod stack;
mod stow;
mod wado;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dicom_dictionary_std::uids;

pub use archive::{Archive, ArchiveError};
pub use error::HttpError;
pub use identity::{
    token_matches, Authenticator, ClientCertificate, Credential, Identity, Need, Permission,
    Permissions, Principal, RoutePolicy, Security,
};
pub use stack::app;

/// Settings of the HTTP front-end.
#[derive(Debug, Clone)]
pub struct DicomWebConfig {
    /// Path under which DICOMweb is served (default `/dicom-web`).
    pub root: String,
    /// Origins allowed by CORS, exact (`scheme://host[:port]`); `*` allows any. Empty (the
    /// default): none, the node's own viewer being same-origin.
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
    /// How callers are identified and what each route needs.
    pub security: Security,
    /// Send `Strict-Transport-Security` (RFC 6797): the node serves HTTPS.
    pub hsts: bool,
}

impl Default for DicomWebConfig {
    fn default() -> Self {
        DicomWebConfig {
            root: "/dicom-web".into(),
            cors_origins: Vec::new(),
            max_instance_bytes: 2 * 1024 * 1024 * 1024,
            max_request_bytes: 8 * 1024 * 1024 * 1024,
            static_dir: None,
            public_url: None,
            listen_port: 8080,
            security: Security::default(),
            hsts: false,
        }
    }
}

pub(crate) struct AppState {
    pub archive: Arc<dyn Archive>,
    pub config: DicomWebConfig,
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

/// Media type of an encapsulated transfer syntax's frames for WADO-RS (PS3.18 Table 8.7.3-5).
/// The encapsulated but uncompressed or deflated frame syntaxes are application/octet-stream,
/// told apart by the `transfer-syntax` parameter. None for native (uncompressed) transfer
/// syntaxes and for unknown UIDs.
pub fn frame_media_type(transfer_syntax_uid: &str) -> Option<&'static str> {
    use uids::*;
    Some(match transfer_syntax_uid.trim_end_matches(['\0', ' ']) {
        JPEG_BASELINE8_BIT | JPEG_EXTENDED12_BIT | JPEG_LOSSLESS | JPEG_LOSSLESS_SV1 => {
            "image/jpeg"
        }
        JPEGLS_LOSSLESS | JPEGLS_NEAR_LOSSLESS => "image/jls",
        JPEG2000_LOSSLESS | JPEG2000 => "image/jp2",
        JPEG2000MC_LOSSLESS | JPEG2000MC => "image/jpx",
        HTJ2K_LOSSLESS | HTJ2K_LOSSLESS_RPCL | HTJ2K => "image/jphc",
        JPEGXL_LOSSLESS | JPEGXLJPEG_RECOMPRESSION | JPEGXL => "image/jxl",
        RLE_LOSSLESS => "image/dicom-rle",
        MPEG2MPML | MPEG2MPMLF | MPEG2MPHL | MPEG2MPHLF => "video/mpeg",
        MPEG4HP41 | MPEG4HP41F | MPEG4HP41BD | MPEG4HP41BDF | MPEG4HP422D | MPEG4HP422DF
        | MPEG4HP423D | MPEG4HP423DF | MPEG4HP42STEREO | MPEG4HP42STEREOF | HEVCMP51
        | HEVCM10P51 => "video/mp4",
        ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN | DEFLATED_IMAGE_FRAME_COMPRESSION => {
            "application/octet-stream"
        }
        _ => return None,
    })
}

/// The DICOMweb routes under `config.root`, health and statistics (no layers: [`app`] puts
/// them under the one HTTP stack with the node's other route groups).
pub(crate) fn routes(state: Arc<AppState>) -> Router {
    let root = state.config.root.trim_end_matches('/').to_string();
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
    Router::new()
        .nest(&root, dicomweb)
        .route("/healthz", get(healthz))
        .route("/api/statistics", get(statistics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn statistics(State(state): State<Arc<AppState>>, identity: Identity) -> Response {
    match state.archive.statistics(&identity).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error::HttpError::from(e).into_response(),
    }
}
