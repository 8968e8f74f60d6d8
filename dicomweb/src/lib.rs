//! HTTP front-end of the PACS node: DICOMweb (PS3.18: QIDO-RS, WADO-RS, STOW-RS) for viewers
//! such as OHIF, plus health and statistics. It knows HTTP and PS3.18, not the archive: what it
//! needs from the archive goes through the [`Archive`] trait.

pub mod archive;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod limits;
pub mod media;
pub mod metrics;
mod qido;
mod stack;
mod stow;
mod wado;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dicom_dictionary_std::uids;

pub use archive::{Archive, ArchiveError};
pub use error::HttpError;
pub use identity::{
    session_cookie, token_matches, Authenticator, ClientCertificate, CookieSession, Credential,
    Identity, Need, Permission, Permissions, Principal, RefusalObserver, RoutePolicy, Security,
    CONSOLE_HEADER, SESSION_COOKIE,
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
    /// Requests served at once; beyond it, 503 with `Retry-After` (see [`limits`]).
    pub max_in_flight: usize,
    /// STOW-RS parts larger than this are written to a temporary file while they arrive.
    pub spill_threshold: usize,
    /// Where those temporary files go (default: the system's temporary directory).
    pub spill_dir: Option<PathBuf>,
    /// Free space a temporary file must leave on its file system: a part that would eat into
    /// it fails alone (A700), like one over `max_instance_bytes`. 0: no reserve.
    pub spill_min_free_bytes: u64,
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
            max_in_flight: 256,
            spill_threshold: 32 * 1024 * 1024,
            spill_dir: None,
            spill_min_free_bytes: 0,
            hsts: false,
        }
    }
}

pub(crate) struct AppState {
    pub archive: Arc<dyn Archive>,
    pub config: DicomWebConfig,
}

/// The URL of the DICOMweb root as clients reach it (see [`origin`]).
pub(crate) fn base_url(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<String, HttpError> {
    Ok(format!(
        "{}{}",
        origin(&state.config, headers, uri)?,
        state.config.root
    ))
}

/// `scheme://host[:port]` of this node as the client reached it: the configured public URL;
/// else what a trusted proxy forwarded (`X-Forwarded-Host`/`-Proto`; the identity layer drops
/// them from anyone else); else the request's Host (or HTTP/2 authority and scheme; an
/// HTTP/1.1 request over TLS does not say it is one, so set the public URL), completed with the
/// listening port when the client left it out; else, with neither, `127.0.0.1:<port>`.
/// (The node's TLS listener gives HTTP/1.1 requests over TLS the `https` scheme.) A host
/// that is not `host[:port]` (a DNS name, IPv4 or bracketed IPv6, a port 1-65535) is refused
/// (400, RFC 9112 3.2): it would otherwise be written into every URL the node answers with.
pub(crate) fn origin(
    config: &DicomWebConfig,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<String, HttpError> {
    if let Some(u) = &config.public_url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let header = |name: &str| -> Result<Option<&str>, HttpError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::trim)
                    .map_err(|_| HttpError::bad_request(format!("malformed {name} header")))
            })
            .transpose()
    };
    // an HTTP/2 request names its scheme (`:scheme`); an HTTP/1.1 one does not
    let own_scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let scheme = match header("x-forwarded-proto")? {
        None => own_scheme,
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        Some(_) => return Err(HttpError::bad_request("malformed X-Forwarded-Proto header")),
    };
    let well_formed = |name: &str, authority: &str| -> Result<(), HttpError> {
        if authority_is_well_formed(authority) {
            Ok(())
        } else {
            Err(HttpError::bad_request(format!(
                "malformed {name}: expected host[:port]"
            )))
        }
    };
    if let Some(forwarded) = header("x-forwarded-host")? {
        // a chain of proxies lists the first host first
        let host = forwarded.split(',').next().unwrap_or_default().trim();
        well_formed("X-Forwarded-Host header", host)?;
        return Ok(format!("{scheme}://{host}"));
    }
    let port = config.listen_port;
    let host = match header("host")? {
        Some(host) => host,
        None => match uri.authority() {
            Some(authority) => authority.as_str(),
            None => return Ok(format!("{scheme}://127.0.0.1:{port}")),
        },
    };
    well_formed("Host header", host)?;
    // Some clients (the Python dicomweb-client among them) send Host without the port they
    // connected to; complete it with ours. Behind a proxy, set the public URL or
    // X-Forwarded-Host instead.
    let has_port = split_port(host).is_some_and(|(_, p)| p.is_some());
    if has_port || port == 80 || port == 443 {
        Ok(format!("{scheme}://{host}"))
    } else {
        Ok(format!("{scheme}://{host}:{port}"))
    }
}

/// `host` and the port after it, if any (`[v6]:port`, `name:port`); None when something else
/// follows a bracketed host.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.rfind(']')?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?))),
        };
    }
    Some(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// `host[:port]` (RFC 3986 3.2.2, 3.2.3), strictly: a DNS name or IPv4 address (labels of
/// letters, digits, `-` and `_`, up to 63 characters each and 253 in all), or an IPv6 address
/// in brackets; a port of 1 to 65535.
pub(crate) fn authority_is_well_formed(authority: &str) -> bool {
    let Some((host, port)) = split_port(authority) else {
        return false;
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            (1..=253).contains(&host.len())
                && host.split('.').all(|label| {
                    (1..=63).contains(&label.len())
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        }
    };
    port_ok && host_ok
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

/// The DICOMweb routes under `config.root`, and beside them health and statistics (no
/// layers: [`app`] puts them under the one HTTP stack with the node's other route groups).
pub(crate) fn routes(state: Arc<AppState>) -> (Router, Router) {
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
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/statistics", get(statistics))
        .with_state(state.clone());
    (Router::new().nest(&root, dicomweb).with_state(state), api)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn config(port: u16) -> DicomWebConfig {
        DicomWebConfig {
            listen_port: port,
            ..DicomWebConfig::default()
        }
    }

    #[test]
    fn authorities_are_host_and_port() {
        for good in [
            "localhost",
            "pacs.example.org",
            "pacs-1.example.org:8443",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]:443",
            "internal_host:1",
        ] {
            assert!(authority_is_well_formed(good), "{good}");
        }
        for bad in [
            "",
            ":8080",
            "host:",
            "host:0",
            "host:65536",
            "host:80a",
            "host:+80",
            "::1",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "[fe80::1%25eth0]",
            "a..b",
            "evil.example/path",
            "user@host",
            "host\"><script>",
            "host name",
            "ho%73t",
            &"a".repeat(64),
            &format!("{}.org", "a.".repeat(130)),
        ] {
            assert!(!authority_is_well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn the_origin_comes_from_a_well_formed_host_or_nowhere() {
        let uri = Uri::from_static("/dicom-web/studies");
        let c = config(8042);
        // the port is completed when the client left it out
        let h = headers(&[("host", b"pacs.example.org")]);
        assert_eq!(
            origin(&c, &h, &uri).unwrap(),
            "http://pacs.example.org:8042"
        );
        let h = headers(&[("host", b"pacs.example.org:9000")]);
        assert_eq!(
            origin(&c, &h, &uri).unwrap(),
            "http://pacs.example.org:9000"
        );
        let h = headers(&[("host", b"[::1]")]);
        assert_eq!(origin(&c, &h, &uri).unwrap(), "http://[::1]:8042");
        // no Host: the HTTP/2 authority, else loopback
        let h2 = Uri::from_static("https://viewer.example:8042/dicom-web/studies");
        assert_eq!(
            origin(&c, &HeaderMap::new(), &h2).unwrap(),
            "https://viewer.example:8042"
        );
        assert_eq!(
            origin(&c, &HeaderMap::new(), &uri).unwrap(),
            "http://127.0.0.1:8042"
        );
        // malformed: 400, never written into a URL
        for bad in [&b"evil.example/x?"[..], b"a b", b"h\xc3\xa9te", b"x:99999"] {
            let e = origin(&c, &headers(&[("host", bad)]), &uri).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
        // what a trusted proxy forwarded (the identity layer drops it from anyone else)
        let h = headers(&[
            ("host", b"10.0.0.5:8042"),
            ("x-forwarded-host", b"pacs.example.org, 10.0.0.1"),
            ("x-forwarded-proto", b"https"),
        ]);
        assert_eq!(origin(&c, &h, &uri).unwrap(), "https://pacs.example.org");
        let h = headers(&[("host", b"ok"), ("x-forwarded-host", b"bad host")]);
        assert!(origin(&c, &h, &uri).is_err());
        let h = headers(&[("host", b"ok"), ("x-forwarded-proto", b"javascript")]);
        assert!(origin(&c, &h, &uri).is_err());
        // a public URL wins over everything, even a malformed Host
        let c = DicomWebConfig {
            public_url: Some("https://pacs.example.org/".into()),
            ..config(8042)
        };
        let h = headers(&[("host", b"a b")]);
        assert_eq!(origin(&c, &h, &uri).unwrap(), "https://pacs.example.org");
    }
}
