//! Wiring: opens the index and the object store, starts the DIMSE and HTTP front-ends, and
//! shuts them down in order on SIGTERM or Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Settings;
use crate::dimse_service::{AePolicy, NodeDimseService};
use crate::ingest::Ingest;
use crate::storage::Storage;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("index: {0}")]
    Index(#[from] crate::index::IndexError),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("AI jobs: {0}")]
    Ai(String),
    #[error("AE registry: {0}")]
    Registry(String),
    #[error("{0}")]
    Insecure(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("audit syslog forwarding: {0}")]
    Syslog(#[from] crate::audit::syslog::SyslogError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// DIMSE over TLS (PS3.15 Annex B): the TLS listener, when the node has a certificate (`cert`,
/// the one HTTPS presents too, reloaded with it), peers required to present one signed by the
/// client CA when one is set (mutual TLS); and what the node trusts and presents when it
/// connects to an AE over TLS.
pub fn dimse_tls(
    settings: &Settings,
    cert: Option<&Arc<crate::tls::ReloadingCert>>,
) -> Result<
    (
        Option<pacs_dimse::TlsListener>,
        Arc<tokio_rustls::rustls::ClientConfig>,
    ),
    NodeError,
> {
    let tls = settings.tls.as_ref();
    let listener = match (tls, cert) {
        (Some(tls), Some(cert)) => {
            let auth = match tls.client_ca {
                Some(_) => crate::tls::ClientAuth::Required,
                None => crate::tls::ClientAuth::None,
            };
            Some(pacs_dimse::TlsListener {
                listen: SocketAddr::new(settings.dimse_bind, settings.dimse_tls_port),
                // no ALPN: DICOM defines no protocol name, and peers offer none
                config: crate::tls::server_config(
                    cert.clone(),
                    tls.client_ca.as_deref(),
                    auth,
                    &[],
                )?,
            })
        }
        _ => None,
    };
    let client = crate::tls::dimse_client_config(tls.and_then(|t| t.ca.as_deref()), cert.cloned())?;
    if !settings.plain_dimse {
        info!("plain DIMSE listener off: DIMSE over TLS only");
    }
    Ok((listener, client))
}

/// Settings of the HTTP front-end, from the node's settings: identities from `auth`, access
/// from the one permission table (`crate::auth::permissions`).
pub fn http_config(
    settings: &Settings,
    auth: Arc<crate::auth::NodeAuth>,
    audit: &crate::audit::Audit,
) -> pacs_dicomweb::DicomWebConfig {
    let root = settings.dicomweb_root.clone();
    let routes: pacs_dicomweb::RoutePolicy = Arc::new(move |method, route| {
        crate::auth::permissions::http_need(&root, method.as_str(), route)
    });
    pacs_dicomweb::DicomWebConfig {
        root: settings.dicomweb_root.clone(),
        cors_origins: settings.cors_origins.clone(),
        max_instance_bytes: settings.max_instance_bytes,
        max_request_bytes: settings.stow_max_request_bytes,
        static_dir: settings.viewer_dir.clone(),
        public_url: settings.public_url.clone(),
        listen_port: settings.http_port,
        security: pacs_dicomweb::Security {
            authenticator: auth,
            routes,
            trusted_proxies: settings.trusted_proxies.clone(),
            realm: "pacs".into(),
            observer: audit.enabled().then(|| {
                Arc::new(crate::audit::api::AuditRefusals(audit.clone()))
                    as Arc<dyn pacs_dicomweb::RefusalObserver>
            }),
            metrics_token: settings.metrics_token.clone(),
        },
        max_in_flight: settings.http_max_in_flight,
        // as C-STORE's: parts beyond 32 MiB are received into <data-dir>/tmp
        spill_threshold: 32 * 1024 * 1024,
        spill_dir: Some(settings.data_dir.join("tmp")),
        spill_min_free_bytes: settings.min_free_disk_bytes,
        hsts: settings.tls.is_some(),
    }
}

/// The node's HTTP application: DICOMweb, health and statistics, the admin API (with the AI
/// jobs' administration, users, keys and login), the worker API, readiness and metrics
/// (`ops`), the console and the nodes' table, all under the one HTTP stack of
/// [`pacs_dicomweb::app`].
#[allow(clippy::too_many_arguments)]
pub fn http_app(
    config: pacs_dicomweb::DicomWebConfig,
    archive: Arc<dyn pacs_dicomweb::Archive>,
    admin: Arc<crate::admin_api::AdminState>,
    ai: Option<Arc<crate::ai::AiService>>,
    exporter: Option<Arc<crate::export::Exporter>>,
    ops: Option<Arc<crate::ops::Ops>>,
    console: crate::console::ConsoleSettings,
    nodes: Option<Arc<crate::nodes::Nodes>>,
) -> axum::Router {
    let audit = admin.audit.clone();
    let measurements =
        crate::measurements::router(Arc::new(crate::measurements::MeasurementsState {
            index: admin.index.clone(),
            audit: audit.clone(),
        }));
    let mut routes = vec![
        measurements,
        crate::console::router(admin.clone(), console),
        crate::admin_api::router(
            admin,
            ai.clone().map(|ai| crate::ai::api::admin_router(ai, audit)),
        ),
    ];
    if let Some(ops) = ops {
        routes.push(crate::ops::router(ops));
    }
    if let Some(nodes) = nodes {
        routes.push(crate::nodes::router(nodes));
    }
    if let Some(ai) = ai {
        routes.push(crate::ai::api::worker_router(ai));
    }
    if let Some(exporter) = exporter {
        routes.push(crate::export::api::router(exporter));
    }
    pacs_dicomweb::app(archive, config, routes)
}

/// Where HTTP listens: as configured, else loopback until authentication is configured. Err
/// when HTTP would serve beyond loopback with nothing to authenticate callers (unless the
/// administrator insisted with `--insecure-allow-anonymous`).
pub fn http_bind(settings: &Settings, auth_configured: bool) -> Result<IpAddr, NodeError> {
    let insecure = settings.auth.insecure_allow_anonymous;
    let ip = settings.http_bind.unwrap_or(if auth_configured {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([127, 0, 0, 1])
    });
    if insecure {
        warn!("--insecure-allow-anonymous: anonymous HTTP callers may read, write and export patient data");
    }
    if !auth_configured && !ip.is_loopback() && !insecure {
        return Err(NodeError::Insecure(format!(
            "refusing to serve HTTP on {ip} with no authentication configured. Add an administrator first \
             (`pacs user add NAME --roles admin --password-stdin`, with the same --data-dir or --database-url), \
             or an API key (`pacs key create`), or an identity provider (--oidc-issuer); or bind HTTP to 127.0.0.1; \
             or accept anonymous access with --insecure-allow-anonymous"
        )));
    }
    if !auth_configured {
        info!(http = %ip, "no authentication configured: anonymous callers on this machine may do everything; add a user or an identity provider to open the node to the network");
    }
    Ok(ip)
}

/// Deletes what a previous run left in the spill folder (data sets being received when it was
/// killed): nothing in it is ever acknowledged, so nothing of value is lost. A file changed in
/// the last ten minutes is left alone, in case another process shares the data directory.
fn remove_stale_spill_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    let (mut removed, mut bytes) = (0u64, 0u64);
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta.modified().is_ok_and(|m| m < stale);
        if meta.is_file() && old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
            bytes += meta.len();
        }
    }
    if removed > 0 {
        info!(dir = %dir.display(), files = removed, bytes, "removed stale spill files");
    }
}

/// Runs the node until a shutdown signal.
pub async fn serve(settings: Settings) -> Result<(), NodeError> {
    let signal = ShutdownSignal::install();
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| NodeError::Storage(crate::storage::StorageError::Io(e)))?;
    remove_stale_spill_files(&settings.data_dir.join("tmp"));
    // the recorder first: handles made before it are no-ops
    crate::metrics::install();
    crate::metrics::spawn_upkeep();
    let index = crate::metrics::index::metered(
        crate::index::open_with(&settings.database_url, settings.database_timeout).await?,
    );
    let storage = Storage::open(&settings.storage)?;
    info!(
        index = index.backend(),
        storage = storage.describe(),
        "archive opened"
    );
    // what a crash may have left (staging files, unindexed objects): docs/faults.md
    crate::fsck::spawn_startup_pass(index.clone(), storage.clone(), settings.startup_fsck);
    // the syslog forwarder (docs/audit-syslog.md) reads the trail from the index, woken by
    // every batch the audit writer appends
    let syslog = match (&settings.audit_syslog, settings.audit) {
        (Some(syslog), true) => Some(crate::audit::syslog::start_forwarder(
            syslog.clone(),
            Arc::new(crate::audit::syslog::IndexSpool(index.clone())),
        )?),
        (Some(_), false) => {
            warn!("--audit false: --audit-syslog has nothing to forward");
            None
        }
        (None, _) => None,
    };
    let audit = if settings.audit {
        crate::audit::Audit::start(
            index.clone(),
            &settings.aet,
            syslog.as_ref().map(|s| s.waker()),
        )
    } else {
        warn!("--audit false: nothing is recorded in the audit trail");
        crate::audit::Audit::disabled(&settings.aet)
    };
    audit
        .record(crate::audit::application_activity(&settings.aet, true))
        .await;
    // the start alone in the first batch: first in the chain whatever the wall clock does
    audit.flush().await;
    crate::audit::record_configuration(&audit, &index, &settings.configuration).await;
    let ingest = Arc::new(
        Ingest::new(index.clone(), storage.clone(), settings.duplicate_policy)
            .with_max_instance_bytes(settings.max_instance_bytes),
    );
    let auth = crate::auth::NodeAuth::open(index.clone(), settings.auth.clone()).await?;
    let http_ip = http_bind(&settings, auth.configured().await)?;
    auth.prefetch_provider_keys().await;

    let registry = crate::ae_registry::AeRegistry::open(index.clone(), &settings.remote_aes)
        .await
        .map_err(|e| NodeError::Registry(e.to_string()))?;
    // other nodes sharing the index may change the registry
    registry.follow_changes();
    let source: Arc<dyn pacs_dimse::InstanceSource> =
        crate::retrieve::ArchiveSource::new(storage.clone());
    let service = Arc::new(NodeDimseService {
        ingest: ingest.clone(),
        policy: AePolicy {
            require_known_ae: settings.require_known_ae,
            registry: registry.clone(),
        },
        // local users and JWT come with their own issue; until then offers are ignored
        users: auth.clone(),
        find_limit: settings.qido_max_results,
        source: source.clone(),
        audit: audit.clone(),
        user_access: Default::default(),
    });
    let dimse_addr = SocketAddr::new(settings.dimse_bind, settings.dimse_port);
    // the node's certificate, for HTTPS and DIMSE alike, reloaded when its files change
    let cert = match &settings.tls {
        Some(tls) => {
            let cert = crate::tls::ReloadingCert::open(tls.cert.clone())?;
            cert.spawn_watch(std::time::Duration::from_secs(2));
            Some(cert)
        }
        None => None,
    };
    let (dimse_tls_listener, tls_client) = dimse_tls(&settings, cert.as_ref())?;
    let dimse_tls_addr = dimse_tls_listener.as_ref().map(|t| t.listen);
    let dimse = pacs_dimse::DimseServer::bind(
        pacs_dimse::DimseConfig {
            ae_title: settings.aet.clone(),
            listen: dimse_addr,
            max_pdu_length: settings.max_pdu,
            max_associations: settings.max_associations,
            idle_timeout: settings.idle_timeout,
            artim_timeout: settings.artim_timeout,
            spill_threshold: 32 * 1024 * 1024,
            spill_dir: settings.data_dir.join("tmp"),
            spill_min_free_bytes: settings.min_free_disk_bytes,
            move_associations: settings.move_associations,
            plain: settings.plain_dimse,
            tls: dimse_tls_listener,
            tls_client: Some(tls_client.clone()),
            max_associations_per_host: settings.max_associations_per_host,
            max_instance_bytes: settings.max_instance_bytes,
        },
        service,
    )
    .await
    .map_err(|source| NodeError::Listen {
        addr: dimse_tls_addr
            .filter(|_| !settings.plain_dimse)
            .unwrap_or(dimse_addr),
        source,
    })?;

    let http_addr = SocketAddr::new(http_ip, settings.http_port);
    let http_listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| NodeError::Listen {
            addr: http_addr,
            source,
        })?;
    let archive = Arc::new(crate::dicomweb_service::DicomWebArchive {
        ingest: ingest.clone(),
        config: crate::dicomweb_service::DicomWebArchiveConfig {
            max_results: settings.qido_max_results,
        },
        audit: audit.clone(),
    });
    let ai = match &settings.ai {
        Some(ai_settings) => {
            let ai = crate::ai::AiService::open(index.clone(), ai_settings.clone())
                .await
                .map_err(NodeError::Ai)?;
            ai.spawn_scanner();
            ai.follow_changes();
            Some(ai)
        }
        None => None,
    };
    // de-identified export (issue 13): refused until a secret is configured
    let mut exporter = crate::export::Exporter::new(
        index.clone(),
        storage.clone(),
        settings
            .deid_secret
            .as_ref()
            .map(|s| Arc::new(crate::deid::Pseudonymizer::new(s))),
        settings.data_dir.join("exports"),
        registry.clone(),
        settings.aet.clone(),
        Some(tls_client.clone()),
    );
    // each finished export is a Data Export message per patient in the audit trail
    let export_audit = audit.clone();
    exporter.on_finished = Some(Arc::new(move |report: &crate::export::ExportReport| {
        for event in crate::audit::export_events(&export_audit.node_ae, report) {
            export_audit.record_now(event);
        }
    }));
    let exporter = Arc::new(exporter);
    if let Err(e) = exporter.recover().await {
        warn!(error = %e, "cannot recover the export jobs");
    }
    let admin = Arc::new(crate::admin_api::AdminState {
        auth: auth.clone(),
        registry,
        index: index.clone(),
        source,
        ae_title: settings.aet.clone(),
        scu_timeout: std::time::Duration::from_secs(30),
        tls_client: Some(tls_client),
        audit: audit.clone(),
    });
    let https = match (&settings.tls, cert) {
        (Some(tls), Some(cert)) => Some(crate::tls::server_config(
            cert,
            tls.client_ca.as_deref(),
            crate::tls::ClientAuth::Optional,
            &[b"h2", b"http/1.1"],
        )?),
        _ => None,
    };
    let ops = crate::ops::Ops::new(index.clone(), storage.clone(), settings.ai.is_some());
    // this node in the table of the nodes sharing the index (GET /api/nodes)
    let nodes = crate::nodes::Nodes::new(
        index.clone(),
        &settings.aet,
        http_listener.local_addr().unwrap_or(http_addr),
        settings.public_url.as_deref(),
        Some(ops.clone()),
    );
    nodes.spawn_heartbeat();
    let router = http_app(
        http_config(&settings, auth, &audit),
        archive,
        admin,
        ai,
        Some(exporter),
        Some(ops),
        crate::console::ConsoleSettings::from_settings(&settings),
        Some(nodes),
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dimse_task = tokio::spawn(dimse.serve(shutdown_rx.clone(), settings.shutdown_grace));
    let http_settings = crate::http_server::HttpServerSettings {
        tls: https,
        plain: settings.plain_http,
        header_timeout: settings.http_header_timeout,
        handshake_timeout: std::time::Duration::from_secs(10),
        max_connections: settings.http_max_connections,
    };
    let http_task = tokio::spawn(crate::http_server::serve(
        http_listener,
        router,
        http_settings,
        shutdown_rx.clone(),
        settings.shutdown_grace,
    ));
    let scheme = match (&settings.tls, settings.plain_http) {
        (Some(_), true) => "https+http",
        (Some(_), false) => "https",
        (None, _) => "http",
    };
    let dimse_plain = settings.plain_dimse.then_some(dimse_addr);
    info!(aet = %settings.aet, dimse = ?dimse_plain, dimse_tls = ?dimse_tls_addr, http = %http_addr, %scheme, "node ready");

    signal.wait().await;
    info!("shutting down: no new associations or requests");
    let _ = shutdown_tx.send(true);
    let grace = settings.shutdown_grace + std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async {
        let _ = dimse_task.await;
        let _ = http_task.await;
    })
    .await;
    // what the front-ends recorded, then Application Activity stop, last
    audit.shutdown().await;
    if let Some(syslog) = syslog {
        // the collector gets what is left, within the grace period
        syslog.shutdown(grace).await;
    }
    info!("stopped");
    Ok(())
}

/// SIGTERM, installed when the node starts (before any listener is up, so that a SIGTERM
/// during startup is a graceful stop, not the default kill that would lose what the audit
/// trail has not written yet).
struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> ShutdownSignal {
        ShutdownSignal {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install SIGTERM handler"),
        }
    }

    /// Until SIGTERM or Ctrl-C.
    async fn wait(mut self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{HeaderMap, Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    const WORKER_TOKEN: &str = "worker-token";

    fn settings(args: &[&str]) -> Settings {
        let argv = std::iter::once("pacs").chain(args.iter().copied());
        Settings::resolve(&crate::config::ServeArgs::try_parse_from(argv).unwrap()).unwrap()
    }

    #[test]
    fn http_bind_is_loopback_until_authentication_is_configured() {
        let loopback: IpAddr = [127, 0, 0, 1].into();
        let any: IpAddr = [0, 0, 0, 0].into();
        assert_eq!(http_bind(&settings(&[]), false).unwrap(), loopback);
        assert_eq!(http_bind(&settings(&[]), true).unwrap(), any);
        assert_eq!(
            http_bind(&settings(&["--http-bind", "127.0.0.2"]), false).unwrap(),
            IpAddr::from([127, 0, 0, 2])
        );
        // --bind sets both listeners; --http-bind wins for HTTP
        let s = settings(&["--bind", "127.0.0.1", "--http-bind", "0.0.0.0"]);
        assert_eq!(s.dimse_bind, loopback);
        assert_eq!(http_bind(&s, true).unwrap(), any);
    }

    #[test]
    fn http_bind_beyond_loopback_needs_authentication_or_insistence() {
        let any: IpAddr = [0, 0, 0, 0].into();
        let refused = http_bind(&settings(&["--http-bind", "0.0.0.0"]), false).unwrap_err();
        let message = refused.to_string();
        assert!(message.contains("pacs user add"), "{message}");
        assert!(message.contains("--insecure-allow-anonymous"), "{message}");
        assert!(http_bind(&settings(&["--bind", "192.0.2.1"]), false).is_err());
        let insisted = settings(&["--http-bind", "0.0.0.0", "--insecure-allow-anonymous"]);
        assert_eq!(http_bind(&insisted, false).unwrap(), any);
    }

    /// The node's whole HTTP application over an empty SQLite index, called from `peer`.
    async fn app(dir: &std::path::Path, admin_token: Option<&str>, peer: &str) -> axum::Router {
        let index = crate::index::open(&dir.join("index.sqlite").to_string_lossy())
            .await
            .unwrap();
        let storage = Storage::open(&crate::storage::StorageConfig::Local {
            root: dir.join("objects"),
        })
        .unwrap();
        let ingest = Arc::new(Ingest::new(
            index.clone(),
            storage.clone(),
            crate::ingest::DuplicatePolicy::Keep,
        ));
        let registry = crate::ae_registry::AeRegistry::open(index.clone(), &[])
            .await
            .unwrap();
        let ai = crate::ai::AiService::open(
            index.clone(),
            crate::ai::AiSettings {
                worker_token: WORKER_TOKEN.into(),
                quiet: std::time::Duration::from_secs(60),
                routes: None,
                model_versions: Default::default(),
                max_attempts: 3,
            },
        )
        .await
        .unwrap();
        let archive = Arc::new(crate::dicomweb_service::DicomWebArchive {
            ingest,
            config: crate::dicomweb_service::DicomWebArchiveConfig { max_results: 100 },
            audit: crate::audit::Audit::disabled("PACS"),
        });
        let auth = crate::auth::NodeAuth::open(
            index.clone(),
            crate::auth::AuthSettings {
                admin_token: admin_token.map(str::to_string),
                worker_token: Some(WORKER_TOKEN.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let admin = Arc::new(crate::admin_api::AdminState {
            auth: auth.clone(),
            registry,
            index,
            source: crate::retrieve::ArchiveSource::new(storage),
            ae_title: "PACS".into(),
            scu_timeout: std::time::Duration::from_secs(5),
            tls_client: None,
            audit: crate::audit::Audit::disabled("PACS"),
        });
        let args = crate::config::ServeArgs {
            cors_origins: Some(vec!["*".into()]),
            ..Default::default()
        };
        let settings = crate::config::Settings::resolve(&args).unwrap();
        let config = http_config(&settings, auth, &crate::audit::Audit::disabled("PACS"));
        let console = crate::console::ConsoleSettings::from_settings(&settings);
        http_app(config, archive, admin, Some(ai), None, None, console, None)
            .layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    }

    async fn call(
        app: &axum::Router,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }

    /// The one error body: `{"error": "<message>"}`, as JSON.
    fn assert_error(what: &str, headers: &HeaderMap, body: &serde_json::Value) {
        assert_eq!(headers["content-type"], "application/json", "{what}");
        let object = body.as_object().unwrap_or_else(|| panic!("{what}: {body}"));
        assert_eq!(object.len(), 1, "{what}: {body}");
        assert!(
            !body["error"].as_str().unwrap_or_default().is_empty(),
            "{what}: {body}"
        );
    }

    #[tokio::test]
    async fn one_stack_for_dicomweb_admin_and_worker_routes() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), None, "127.0.0.1:50000").await;
        let origin = ("origin", "https://viewer.example");
        for uri in [
            "/api/aes",
            "/api/ai/jobs",
            "/api/statistics",
            "/dicom-web/studies",
            "/healthz",
        ] {
            let (status, h, _) = call(&app, Method::GET, uri, &[origin], "").await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(h["x-request-id"].len(), 32, "{uri}");
            assert_eq!(h["access-control-allow-origin"], "*", "{uri}");
            let (_, h, _) = call(
                &app,
                Method::GET,
                uri,
                &[("x-request-id", "trace-me-7")],
                "",
            )
            .await;
            assert_eq!(h["x-request-id"], "trace-me-7", "{uri}");
        }
        // the worker API too, refusal included
        let (status, h, body) =
            call(&app, Method::POST, "/api/worker/lease", &[origin], "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(h.contains_key("x-request-id"));
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_error("worker refusal", &h, &body);
    }

    /// What is asked (router, method, path, headers, body) and the status expected.
    type Case<'a> = (
        &'a str,
        Method,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        StatusCode,
    );

    #[tokio::test]
    async fn every_router_answers_errors_in_one_format() {
        let dir = tempfile::tempdir().unwrap();
        let local = app(dir.path(), None, "127.0.0.1:50000").await;
        let worker = [("authorization", "Bearer worker-token")];
        let cases: [Case; 8] = [
            (
                "DICOMweb",
                Method::GET,
                "/dicom-web/studies/1.2.3/metadata",
                &[],
                "",
                StatusCode::NOT_FOUND,
            ),
            (
                "DICOMweb",
                Method::GET,
                "/dicom-web/studies/not-a-uid/series",
                &[("accept", "text/html")],
                "",
                StatusCode::NOT_ACCEPTABLE,
            ),
            (
                "admin",
                Method::GET,
                "/api/aes/NOSUCHAE",
                &[],
                "",
                StatusCode::NOT_FOUND,
            ),
            (
                "admin",
                Method::POST,
                "/api/aes",
                &[],
                "{not json",
                StatusCode::BAD_REQUEST,
            ),
            (
                "AI admin",
                Method::GET,
                "/api/ai/jobs/12345",
                &[],
                "",
                StatusCode::NOT_FOUND,
            ),
            (
                "worker",
                Method::POST,
                "/api/worker/lease",
                &worker,
                "[]",
                StatusCode::BAD_REQUEST,
            ),
            (
                "worker",
                Method::POST,
                "/api/worker/jobs/abc/heartbeat",
                &worker,
                "{}",
                StatusCode::BAD_REQUEST,
            ),
            (
                "worker",
                Method::POST,
                "/api/worker/jobs/1/heartbeat",
                &worker,
                r#"{"worker": "w"}"#,
                StatusCode::CONFLICT,
            ),
        ];
        for (what, method, uri, headers, body, expected) in cases {
            let (status, h, json) = call(&local, method, uri, headers, body).await;
            assert_eq!(status, expected, "{what} {uri}: {json}");
            assert_error(&format!("{what} {uri}"), &h, &json);
        }
        // refusals: anonymous from outside, even with nothing configured; with an admin
        // token, a missing one
        let outside = app(dir.path(), None, "192.0.2.1:50000").await;
        let (status, h, json) = call(&outside, Method::GET, "/api/aes", &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error("admin from outside", &h, &json);
        let dir2 = tempfile::tempdir().unwrap();
        let guarded = app(dir2.path(), Some("adm"), "127.0.0.1:50000").await;
        let (status, h, json) = call(&guarded, Method::GET, "/api/ai/jobs", &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(h["www-authenticate"], "Bearer realm=\"pacs\"");
        assert_error("admin without token", &h, &json);
        let (status, _, _) = call(
            &guarded,
            Method::GET,
            "/api/ai/jobs",
            &[("authorization", "Bearer adm")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        // the worker token is not the admin token, nor the other way round
        let (status, ..) = call(&guarded, Method::GET, "/api/aes", &worker, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, ..) = call(
            &guarded,
            Method::POST,
            "/api/worker/lease",
            &[("authorization", "Bearer adm")],
            r#"{"worker": "w"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
