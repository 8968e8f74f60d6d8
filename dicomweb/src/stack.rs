//! The one HTTP stack: every route of the node (DICOMweb, health, statistics, the admin and
//! worker APIs, the viewer) under the same layers, applied once on the outermost router.
//!
//! From the outside in: request id, tracing span, CORS, compression, error bodies, the cap on
//! requests in flight, identity, body limit (every route but DICOMweb, see [`crate::limits`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::archive::Archive;
use crate::error::HttpError;
use crate::identity::{authorize, client_address, identify, Security};
use crate::limits::{self, limit_api_body, InFlight};
use crate::{AppState, DicomWebConfig};

/// The request id header: taken from the request when the client (or a proxy) sent a usable
/// one, generated otherwise; always echoed in the response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub use crate::limits::API_BODY_LIMIT;

/// The node's whole HTTP application: DICOMweb under `config.root`, health and statistics, the
/// node's other `routes` (admin, worker, login APIs), the static viewer as the fallback; every
/// route behind the permission check of `config.security` (see [`crate::identity`]); and
/// around all of it, once, the layers of the stack.
pub fn app(archive: Arc<dyn Archive>, config: DicomWebConfig, routes: Vec<Router>) -> Router {
    let security = Arc::new(config.security.clone());
    let cors = cors_layer(&config.cors_origins);
    let static_dir = config.static_dir.clone();
    let in_flight = InFlight::new(config.max_in_flight);
    let hsts = config.hsts;
    let root: Arc<str> = Arc::from(config.root.as_str());
    let (dicomweb, mut api) = crate::routes(Arc::new(AppState { archive, config }));
    for group in routes {
        api = api.merge(group);
    }
    // Every route but DICOMweb (whose STOW-RS streams with its own limits) has its body cut at
    // API_BODY_LIMIT, whatever the handler reads it with.
    let mut app = dicomweb.merge(api.layer(middleware::from_fn(limit_api_body)));
    // A route layer: it runs after routing, so the matched route is known; fallbacks (the
    // viewer's files, unknown DICOMweb resources) are not routes and stay public.
    app = app.route_layer(middleware::from_fn_with_state(security.clone(), authorize));
    // outside the check, so that refusals are timed under their route too
    app = app.route_layer(middleware::from_fn(crate::metrics::tag_route));
    if let Some(dir) = static_dir {
        // a single-page application: unknown paths get index.html
        let index = dir.join("index.html");
        app = app.fallback_service(
            tower_http::services::ServeDir::new(&dir)
                .fallback(tower_http::services::ServeFile::new(index)),
        );
    }
    let app = layers(app, security, cors, in_flight, root);
    if hsts {
        // one year; browsers then refuse plain HTTP to this host (RFC 6797 6.1)
        app.layer(middleware::map_response(
            |mut response: Response| async move {
                response.headers_mut().insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static("max-age=31536000"),
                );
                response
            },
        ))
    } else {
        app
    }
}

fn layers(
    app: Router,
    security: Arc<Security>,
    cors: CorsLayer,
    in_flight: InFlight,
    root: Arc<str>,
) -> Router {
    // Compress JSON, not DICOM, pixels or images (already dense, and costly to deflate).
    let compress = SizeAbove::new(1024)
        .and(NotForContentType::new("multipart/related"))
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::new("application/octet-stream"))
        // already compressed
        .and(NotForContentType::new("application/zip"))
        .and(NotForContentType::new("application/pdf"));
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let client = client_address(request.extensions());
            tracing::info_span!(
                "http",
                request_id = %id,
                method = %request.method(),
                path = %request.uri().path(),
                client = ?client,
                principal = tracing::field::Empty,
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            )
        })
        .on_response(|response: &Response, latency: Duration, span: &Span| {
            span.record("status", response.status().as_u16());
            span.record("latency_ms", latency.as_secs_f64() * 1000.0);
            tracing::debug!(
                status = response.status().as_u16(),
                latency_ms = latency.as_secs_f64() * 1000.0,
                "answered"
            );
        });
    // Router::layer wraps what is already there: the last one added is the outermost.
    app.layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(security, identify))
        .layer(middleware::from_fn_with_state(in_flight, limits::in_flight))
        .layer(middleware::map_response(error_body))
        .layer(CompressionLayer::new().compress_when(compress))
        .layer(cors)
        .layer(middleware::from_fn_with_state(root, timed))
        .layer(trace)
        .layer(middleware::from_fn(request_id))
}

/// Records each request's time in `pacs_http_request_duration_seconds` (see
/// [`crate::metrics`]): from here, outside everything but the tracing span and the request id,
/// to the response head.
async fn timed(State(root): State<Arc<str>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    crate::metrics::record_request(&root, &method, &response, started.elapsed());
    response
}

/// Gives the errors this crate did not write (axum's extractor rejections, an unknown method's
/// 405, the static files' errors) the body of every other error: plain text or an empty body
/// becomes [`HttpError`]'s `{"error": ...}`, its other headers (`Allow`, ...) kept.
async fn error_body(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        t => t.to_string(),
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut error = HttpError::new(status, message);
    error.headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    error.into_response()
}

/// Sets the request id (see [`REQUEST_ID`]) before anything else sees the request, and echoes
/// it in the response.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| usable_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// A client's request id is kept when it is short and plain (it ends up in logs).
fn usable_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// 128 random bits, hex.
fn new_request_id() -> HeaderValue {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // no randomness: a process-wide counter still tells requests apart in the logs
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[8..].copy_from_slice(&n.to_be_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&hex).expect("hex is a header value")
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
            REQUEST_ID,
        ])
        .max_age(Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        tracing::warn!("CORS allows any origin (cors_origins = *): any web page may call this node with its visitors' credentials stripped");
        layer.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{Request as HttpRequest, StatusCode};
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;
    use crate::archive::*;
    use crate::identity::*;

    /// An archive that holds nothing and remembers who asked.
    #[derive(Default)]
    struct Empty {
        callers: Mutex<Vec<Identity>>,
    }

    impl Empty {
        fn saw(&self, identity: &Identity) {
            self.callers.lock().unwrap().push(identity.clone());
        }
    }

    fn none(what: &str) -> ArchiveError {
        ArchiveError::NotFound(format!("no {what}"))
    }

    #[async_trait::async_trait]
    impl Archive for Empty {
        async fn statistics(&self, identity: &Identity) -> Result<serde_json::Value, ArchiveError> {
            self.saw(identity);
            Ok(serde_json::json!({ "instances": 0 }))
        }
        async fn search(
            &self,
            _: SearchRequest,
            identity: &Identity,
        ) -> Result<SearchResponse, ArchiveError> {
            self.saw(identity);
            Ok(SearchResponse {
                datasets: vec![],
                truncated: false,
                limit: 100,
            })
        }
        async fn instances(
            &self,
            _: &Scope,
            identity: &Identity,
        ) -> Result<Vec<InstanceInfo>, ArchiveError> {
            self.saw(identity);
            Err(none("study"))
        }
        async fn read_instance(
            &self,
            _: &InstanceInfo,
            _: &Identity,
        ) -> Result<ByteStream, ArchiveError> {
            Err(none("instance"))
        }
        fn can_transcode(&self, _: &str) -> bool {
            false
        }
        async fn read_instance_explicit_le(
            &self,
            _: &InstanceInfo,
            _: &Identity,
        ) -> Result<bytes::Bytes, ArchiveError> {
            Err(none("instance"))
        }
        async fn metadata(
            &self,
            _: &Scope,
            _: &str,
            identity: &Identity,
        ) -> Result<Metadata, ArchiveError> {
            self.saw(identity);
            Err(none("study"))
        }
        async fn frames(
            &self,
            _: &Scope,
            _: &[u32],
            _: &Identity,
        ) -> Result<StoredFrames, ArchiveError> {
            Err(none("instance"))
        }
        async fn decoded_frames(
            &self,
            _: &Scope,
            _: &[u32],
            _: &Identity,
        ) -> Result<Vec<bytes::Bytes>, ArchiveError> {
            Err(none("instance"))
        }
        async fn bulkdata(
            &self,
            _: &Scope,
            _: &str,
            _: Option<std::ops::Range<u64>>,
            _: &Identity,
        ) -> Result<BulkData, ArchiveError> {
            Err(none("instance"))
        }
        async fn render(
            &self,
            _: &Scope,
            _: &RenderRequest,
            _: &Identity,
        ) -> Result<crate::archive::Rendered, ArchiveError> {
            Err(none("instance"))
        }
        async fn store(
            &self,
            _: ReceivedPart,
            _: Option<&str>,
            identity: &Identity,
        ) -> StoreResult {
            self.saw(identity);
            StoreResult::Failed {
                sop_class_uid: None,
                sop_instance_uid: None,
                reason: 0xC000,
                message: "refused".into(),
            }
        }
    }

    const PEER: &str = "192.0.2.9:5555";

    /// Two tokens: one administers, one is an AI worker; anonymous callers may read.
    struct Tokens;

    #[async_trait::async_trait]
    impl Authenticator for Tokens {
        async fn identify(&self, credential: Credential, peer: Option<SocketAddr>) -> Identity {
            match credential {
                Credential::None => Identity::anonymous(peer, Permissions::of(&[Permission::Read])),
                Credential::Bearer(t) if t == "admin-secret" => Identity::new(
                    Principal::AdminToken,
                    peer,
                    Permissions::of(&[Permission::Admin]),
                ),
                Credential::Bearer(t) if t == "worker-secret" => Identity::new(
                    Principal::WorkerToken,
                    peer,
                    Permissions::of(&[Permission::AiWorker, Permission::Read]),
                ),
                _ => Identity::refused(peer, "unknown token"),
            }
        }
    }

    /// The stack with an admin route (`/api/admin`) and a worker route (`/api/work`), called
    /// from [`PEER`].
    fn stack() -> (Router, Arc<Empty>) {
        let archive = Arc::new(Empty::default());
        let routes: RoutePolicy = Arc::new(|method, route| {
            Some(match (method.as_str(), route) {
                (_, "/api/admin") => Need::Permission(Permission::Admin),
                (_, "/api/work") => Need::Permission(Permission::AiWorker),
                (_, "/api/raw") => Need::Public,
                ("GET", "/api/statistics") => Need::Public,
                ("GET", _) | (_, "/healthz") => Need::Permission(Permission::Read),
                ("POST", "/dicom-web/studies") => Need::Public,
                _ => return None,
            })
        });
        let config = DicomWebConfig {
            cors_origins: vec!["*".into()],
            security: Security {
                authenticator: Arc::new(Tokens),
                routes,
                ..Security::default()
            },
            ..DicomWebConfig::default()
        };
        let admin = Router::new().route(
            "/api/admin",
            get(|identity: Identity| async move { identity.principal.name() })
                .post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
        let work = Router::new().route("/api/work", post(|| async { "leased" }));
        // a handler that reads the body itself, without an extractor's limit
        let raw = Router::new().route(
            "/api/raw",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, usize::MAX).await {
                    Ok(b) => (StatusCode::OK, b.len().to_string()),
                    Err(e) => (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
                }
            }),
        );
        let app = app(archive.clone(), config, vec![admin, work, raw])
            .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
        (app, archive)
    }

    async fn call(
        app: &Router,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut request = HttpRequest::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    async fn get_path(
        app: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        call(app, Method::GET, uri, headers, vec![]).await
    }

    fn error_message(body: &[u8]) -> String {
        let v: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
        v["error"].as_str().expect("an error message").to_string()
    }

    #[tokio::test]
    async fn request_id_is_generated_or_kept_and_echoed_everywhere() {
        let (app, _) = stack();
        let auth = [("authorization", "Bearer admin-secret")];
        for (uri, headers) in [
            ("/dicom-web/studies", &[][..]),
            ("/dicom-web/studies/1.2.3/metadata", &[][..]),
            ("/api/statistics", &[][..]),
            ("/api/admin", &auth[..]),
            ("/api/admin", &[][..]),
            ("/healthz", &[][..]),
        ] {
            let (_, h, _) = get_path(&app, uri, headers).await;
            let id = h[&REQUEST_ID].to_str().unwrap();
            assert_eq!(id.len(), 32, "{uri}: {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{uri}: {id}");
            let mut with_id = headers.to_vec();
            with_id.push(("x-request-id", "client-42"));
            let (_, h, _) = get_path(&app, uri, &with_id).await;
            assert_eq!(h[&REQUEST_ID], "client-42", "{uri}");
        }
        let (_, a, _) = get_path(&app, "/healthz", &[]).await;
        let (_, b, _) = get_path(&app, "/healthz", &[]).await;
        assert_ne!(a[&REQUEST_ID], b[&REQUEST_ID]);
        // an id that would garble the logs is replaced
        let (_, h, _) = get_path(&app, "/healthz", &[("x-request-id", "a b\"c")]).await;
        assert_ne!(h[&REQUEST_ID], "a b\"c");
    }

    #[tokio::test]
    async fn cors_on_api_and_dicomweb() {
        let (app, _) = stack();
        let origin = [("origin", "https://viewer.example")];
        for uri in ["/api/admin", "/api/statistics", "/dicom-web/studies"] {
            let (_, h, _) = get_path(&app, uri, &origin).await;
            assert_eq!(h["access-control-allow-origin"], "*", "{uri}");
            let exposed = h["access-control-expose-headers"].to_str().unwrap();
            assert!(exposed.contains("x-request-id"), "{uri}: {exposed}");
        }
        // a preflight is answered by the stack, before any access check
        let (status, h, _) = call(
            &app,
            Method::OPTIONS,
            "/api/admin",
            &[
                ("origin", "https://viewer.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization"),
            ],
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(h.contains_key(&REQUEST_ID));
    }

    #[tokio::test]
    async fn every_error_is_one_json_format() {
        let (app, _) = stack();
        // DICOMweb: unknown resource, archive error, bad query, not acceptable
        let (status, h, body) = get_path(&app, "/dicom-web/nothing-here", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        assert_eq!(error_message(&body), "no such DICOMweb resource");
        let (status, _, body) = get_path(&app, "/dicom-web/studies/1.2.3/metadata", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_message(&body), "no study");
        let (status, _, body) = get_path(&app, "/dicom-web/studies?limit=x", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_message(&body).contains("limit"));
        let (status, _, body) = get_path(
            &app,
            "/dicom-web/studies",
            &[("accept", "application/dicom+xml")],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        error_message(&body);
        // the admin route: refused without a credential, with WWW-Authenticate
        let (status, h, body) = get_path(&app, "/api/admin", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer realm=\"pacs\"");
        assert_eq!(error_message(&body), "authentication required");
        // a refused token says so in the challenge
        let (status, h, body) =
            get_path(&app, "/api/admin", &[("authorization", "Bearer nope")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(h[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\""));
        assert_eq!(error_message(&body), "authentication failed: unknown token");
        // the worker route: the admin token is not the worker token
        let (status, _, body) = call(
            &app,
            Method::POST,
            "/api/work",
            &[("authorization", "Bearer admin-secret")],
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            error_message(&body),
            "admin-token lacks the ai-worker permission"
        );
        // a method the table does not list for a route is refused before any handler
        let (status, h, _) = call(
            &app,
            Method::DELETE,
            "/dicom-web/studies/1.2.3",
            &[("authorization", "Bearer admin-secret")],
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(h[header::ALLOW], "GET");
        // axum's own answers: a method the route does not have, with its Allow header
        let (status, h, body) = call(&app, Method::DELETE, "/api/statistics", &[], vec![]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(h.contains_key(header::ALLOW));
        assert_eq!(error_message(&body), "Method Not Allowed");
    }

    #[tokio::test]
    async fn identity_decides_access_and_reaches_the_archive() {
        let (app, archive) = stack();
        let (status, _, body) = get_path(
            &app,
            "/api/admin",
            &[("authorization", "Bearer admin-secret")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"admin-token");
        let (status, _, body) = call(
            &app,
            Method::POST,
            "/api/work",
            &[("authorization", "Bearer worker-secret")],
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        get_path(
            &app,
            "/api/statistics",
            &[("authorization", "Bearer worker-secret")],
        )
        .await;
        get_path(&app, "/dicom-web/studies", &[]).await;
        get_path(
            &app,
            "/dicom-web/studies/1.2.3",
            &[("authorization", "Bearer wrong")],
        )
        .await;
        let seen = archive.callers.lock().unwrap().clone();
        let peer = Some(PEER.parse().unwrap());
        // the wrong token never reached the archive (401 before the handler)
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].principal, Principal::WorkerToken);
        assert!(seen[0].is_ai_worker());
        assert_eq!(seen[0].peer, peer);
        assert_eq!(
            seen[1],
            Identity::anonymous(peer, Permissions::of(&[Permission::Read]))
        );
    }

    #[tokio::test]
    async fn api_bodies_are_limited_stow_is_not() {
        let (app, archive) = stack();
        let auth = [("authorization", "Bearer admin-secret")];
        let (status, _, body) =
            call(&app, Method::POST, "/api/admin", &auth, vec![b'x'; 1000]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"1000");
        let (status, _, body) = call(
            &app,
            Method::POST,
            "/api/admin",
            &auth,
            vec![b'x'; API_BODY_LIMIT + 1],
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        error_message(&body);
        // a STOW-RS part larger than the API limit still reaches the archive
        let mut stow = b"--b\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        stow.extend(std::iter::repeat_n(0u8, API_BODY_LIMIT + 10));
        stow.extend_from_slice(b"\r\n--b--\r\n");
        let (status, _, _) = call(
            &app,
            Method::POST,
            "/dicom-web/studies",
            &[(
                "content-type",
                "multipart/related; type=\"application/dicom\"; boundary=b",
            )],
            stow,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(archive.callers.lock().unwrap().len(), 1);
    }

    /// A body of unknown length (chunked), as a stream of `n` bytes.
    fn streamed(n: usize) -> Body {
        let chunks = (0..n.div_ceil(64 * 1024)).map(move |i| {
            let len = (n - i * 64 * 1024).min(64 * 1024);
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; len]))
        });
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn every_api_body_is_cut_at_the_limit_whatever_reads_it() {
        let (app, _) = stack();
        let send = |uri: &'static str, body: Body, length: Option<usize>| {
            let app = app.clone();
            async move {
                let mut request = HttpRequest::builder()
                    .method(Method::POST)
                    .uri(uri)
                    .header("authorization", "Bearer admin-secret");
                if let Some(n) = length {
                    request = request.header(header::CONTENT_LENGTH, n);
                }
                let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, body)
            }
        };
        for uri in ["/api/admin", "/api/raw"] {
            // declared too large: refused before the handler
            let (status, body) = send(uri, Body::empty(), Some(API_BODY_LIMIT + 1)).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
            assert!(error_message(&body).contains("limit"), "{uri}");
        }
        for uri in ["/api/admin", "/api/raw"] {
            // chunked, no length: cut at the limit, even for a handler reading the raw body
            let (status, body) = send(uri, streamed(API_BODY_LIMIT + 1), None).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
            error_message(&body);
            let (status, body) = send(uri, streamed(API_BODY_LIMIT), None).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(body, API_BODY_LIMIT.to_string(), "{uri}");
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_in_flight_cap_are_503_with_retry_after() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let waiting = gate.clone();
        let routes: RoutePolicy = Arc::new(|_, _| Some(Need::Public));
        let config = DicomWebConfig {
            max_in_flight: 2,
            security: Security {
                authenticator: Arc::new(Tokens),
                routes,
                ..Security::default()
            },
            ..DicomWebConfig::default()
        };
        // a handler that waits for the gate, and a response body that waits for it too
        let slow = Router::new()
            .route(
                "/api/slow",
                get(move || {
                    let gate = waiting.clone();
                    async move {
                        gate.notified().await;
                        "done"
                    }
                }),
            )
            .route(
                "/api/stream",
                get(|| async {
                    let (tx, rx) =
                        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let _ = tx.send(Ok(bytes::Bytes::from_static(b"late"))).await;
                    });
                    Body::from_stream(tokio_stream_from(rx))
                }),
            );
        let app = app(Arc::new(Empty::default()), config, vec![slow])
            .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
        let one = tokio::spawn(get_owned(app.clone(), "/api/slow"));
        // the second is in flight while its body streams
        let response = app
            .clone()
            .oneshot(
                HttpRequest::builder()
                    .uri("/api/stream")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let stream_body = response.into_body();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (status, h, body) = get_path(&app, "/healthz", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h[header::RETRY_AFTER], "1");
        assert!(error_message(&body).contains("in flight"));
        // the stream ends: its place is free
        let streamed = axum::body::to_bytes(stream_body, 1024).await.unwrap();
        assert_eq!(&streamed[..], b"late");
        let (status, _, _) = get_path(&app, "/healthz", &[]).await;
        assert_eq!(status, StatusCode::OK);
        gate.notify_waiters();
        let (status, _) = one.await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    async fn get_owned(app: Router, uri: &'static str) -> (StatusCode, Vec<u8>) {
        let (status, _, body) = get_path(&app, uri, &[]).await;
        (status, body)
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
