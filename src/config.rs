//! Node configuration: command-line options, `PACS_*` environment variables and an optional
//! TOML file, in that order of precedence, over built-in defaults that make `pacs` with no
//! arguments a working node (SQLite index and objects under `./data`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ingest::DuplicatePolicy;
use crate::storage::StorageConfig;

/// Options of `pacs serve`. Every option can also be given in the TOML file (same name with
/// underscores) or as an environment variable (`PACS_` + upper-case name).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (see conf/pacs.toml).
    #[arg(long, env = "PACS_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's AE title.
    #[arg(long, env = "PACS_AET")]
    pub aet: Option<String>,
    /// DIMSE port.
    #[arg(long, env = "PACS_DIMSE_PORT")]
    pub dimse_port: Option<u16>,
    /// HTTP port (DICOMweb and the admin API).
    #[arg(long, env = "PACS_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Address the DIMSE and HTTP listeners bind to.
    #[arg(long, env = "PACS_BIND")]
    pub bind: Option<IpAddr>,
    /// Directory for the embedded index, local objects and temporary files.
    #[arg(long, env = "PACS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Index database: a postgres:// URL, or a SQLite file path (default <data-dir>/index.sqlite).
    #[arg(long, env = "PACS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Object store: file:///path or s3://bucket (default file://<data-dir>/objects).
    #[arg(long, env = "PACS_STORAGE")]
    pub storage: Option<String>,
    /// S3 endpoint URL (MinIO and other S3-compatible stores).
    #[arg(long, env = "PACS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "PACS_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id (AWS_ACCESS_KEY_ID is also read).
    #[arg(long, env = "PACS_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (AWS_SECRET_ACCESS_KEY is also read).
    #[arg(long, env = "PACS_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-HTTP S3 endpoints.
    #[arg(long, env = "PACS_S3_ALLOW_HTTP")]
    pub s3_allow_http: Option<bool>,
    /// A different object under a stored SOP Instance UID: keep (warning status) or overwrite.
    #[arg(long, env = "PACS_DUPLICATE_POLICY")]
    pub duplicate_policy: Option<DuplicatePolicy>,
    /// Refuse associations from calling AE titles that are not configured.
    #[arg(long, env = "PACS_REQUIRE_KNOWN_AE")]
    pub require_known_ae: Option<bool>,
    /// Largest PDU this node receives, in bytes.
    #[arg(long, env = "PACS_MAX_PDU")]
    pub max_pdu: Option<u32>,
    /// Associations served at once.
    #[arg(long, env = "PACS_MAX_ASSOCIATIONS")]
    pub max_associations: Option<usize>,
    /// Seconds an association may stay silent before it is aborted.
    #[arg(long, env = "PACS_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// ARTIM timeout: seconds between TCP connect and the association request.
    #[arg(long, env = "PACS_ARTIM_TIMEOUT_SECS")]
    pub artim_timeout_secs: Option<u64>,
    /// Seconds in-flight associations get to finish on shutdown.
    #[arg(long, env = "PACS_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// URL path under which DICOMweb is served.
    #[arg(long, env = "PACS_DICOMWEB_ROOT")]
    pub dicomweb_root: Option<String>,
    /// Origins allowed by CORS, comma-separated; `*` for any.
    #[arg(long, env = "PACS_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Public base URL (scheme://host:port) for Retrieve URLs and BulkDataURIs, when clients
    /// reach the node through a proxy; default: the request's Host.
    #[arg(long, env = "PACS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A static web viewer (an OHIF build directory) served at / on the HTTP port.
    #[arg(long, env = "PACS_VIEWER_DIR")]
    pub viewer_dir: Option<PathBuf>,
    /// Most results a QIDO-RS search returns.
    #[arg(long, env = "PACS_QIDO_MAX_RESULTS")]
    pub qido_max_results: Option<usize>,
    /// Largest instance STOW-RS accepts, in MiB.
    #[arg(long, env = "PACS_STOW_MAX_INSTANCE_MB")]
    pub stow_max_instance_mb: Option<u64>,
    /// Largest STOW-RS request, in MiB.
    #[arg(long, env = "PACS_STOW_MAX_REQUEST_MB")]
    pub stow_max_request_mb: Option<u64>,
    /// Token the admin API (/api/aes...) requires as `Authorization: Bearer`; without one,
    /// the admin API answers loopback clients only.
    #[arg(long, env = "PACS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Associations a C-MOVE opens to its destination at once.
    #[arg(long, env = "PACS_MOVE_ASSOCIATIONS")]
    pub move_associations: Option<usize>,
    /// Enables the AI job queue: AI workers authenticate with this token.
    #[arg(long, env = "PACS_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// A series is complete (and analysed) when no instance arrived for this many seconds.
    #[arg(long, env = "PACS_SERIES_QUIET_SECS")]
    pub series_quiet_secs: Option<f64>,
    /// Folder of AI models (one sub-folder per model with its model.toml); default
    /// ai-worker/models when it exists.
    #[arg(long, env = "PACS_AI_MODELS_DIR")]
    pub ai_models_dir: Option<PathBuf>,
    /// Attempts of an AI job before it is dead.
    #[arg(long, env = "PACS_AI_MAX_ATTEMPTS")]
    pub ai_max_attempts: Option<i64>,
}

/// The TOML file's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub aet: Option<String>,
    pub dimse_port: Option<u16>,
    pub http_port: Option<u16>,
    pub bind: Option<IpAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub storage: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_allow_http: Option<bool>,
    pub duplicate_policy: Option<DuplicatePolicy>,
    pub require_known_ae: Option<bool>,
    pub max_pdu: Option<u32>,
    pub max_associations: Option<usize>,
    pub idle_timeout_secs: Option<u64>,
    pub artim_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub dicomweb_root: Option<String>,
    pub cors_origins: Option<Vec<String>>,
    pub public_url: Option<String>,
    pub viewer_dir: Option<PathBuf>,
    pub qido_max_results: Option<usize>,
    pub stow_max_instance_mb: Option<u64>,
    pub stow_max_request_mb: Option<u64>,
    pub admin_token: Option<String>,
    pub move_associations: Option<usize>,
    pub worker_token: Option<String>,
    pub series_quiet_secs: Option<f64>,
    pub ai_models_dir: Option<PathBuf>,
    pub ai_max_attempts: Option<i64>,
    #[serde(default)]
    pub ae: Vec<RemoteAe>,
    /// AI routing rules; none: the shipped models' defaults.
    #[serde(default)]
    pub ai_route: Vec<crate::ai::routing::Route>,
}

/// A remote application entity this node knows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAe {
    pub title: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    #[serde(default)]
    pub description: String,
    /// Operations it may perform: echo, store, find, move, get.
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
    #[serde(default)]
    pub move_destination: bool,
    /// Accept associations from this AE title only from `host`.
    #[serde(default)]
    pub check_host: bool,
}

fn default_allow() -> Vec<String> {
    vec!["echo".into(), "store".into()]
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub aet: String,
    pub dimse_port: u16,
    pub http_port: u16,
    pub bind: IpAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub storage: StorageConfig,
    pub duplicate_policy: DuplicatePolicy,
    pub require_known_ae: bool,
    pub max_pdu: u32,
    pub max_associations: usize,
    pub idle_timeout: Duration,
    pub artim_timeout: Duration,
    pub shutdown_grace: Duration,
    pub dicomweb_root: String,
    pub cors_origins: Vec<String>,
    pub public_url: Option<String>,
    pub viewer_dir: Option<PathBuf>,
    pub qido_max_results: usize,
    pub stow_max_instance_bytes: u64,
    pub stow_max_request_bytes: u64,
    pub remote_aes: Vec<RemoteAe>,
    pub admin_token: Option<String>,
    pub move_associations: usize,
    /// The AI job queue, when a worker token is set.
    pub ai: Option<crate::ai::AiSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Settings {
    pub fn resolve(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        fn pick<T: Clone>(cli: &Option<T>, file: &Option<T>, default: T) -> T {
            cli.clone().or_else(|| file.clone()).unwrap_or(default)
        }
        let data_dir = pick(&args.data_dir, &file.data_dir, PathBuf::from("./data"));
        let database_url = args
            .database_url
            .clone()
            .or(file.database_url.clone())
            .unwrap_or_else(|| data_dir.join("index.sqlite").to_string_lossy().into_owned());
        let storage_url = args
            .storage
            .clone()
            .or(file.storage.clone())
            .unwrap_or_else(|| format!("file://{}", data_dir.join("objects").display()));
        let storage = parse_storage(
            &storage_url,
            args.s3_endpoint.clone().or(file.s3_endpoint.clone()),
            pick(&args.s3_region, &file.s3_region, "us-east-1".to_string()),
            args.s3_access_key_id
                .clone()
                .or(file.s3_access_key_id.clone()),
            args.s3_secret_access_key
                .clone()
                .or(file.s3_secret_access_key.clone()),
            pick(&args.s3_allow_http, &file.s3_allow_http, false),
        )?;
        let aet = pick(&args.aet, &file.aet, "PACS".to_string());
        validate_ae_title(&aet).map_err(ConfigError::Invalid)?;
        for ae in &file.ae {
            validate_ae_title(&ae.title).map_err(ConfigError::Invalid)?;
            for op in &ae.allow {
                if !matches!(op.as_str(), "echo" | "store" | "find" | "move" | "get") {
                    return Err(ConfigError::Invalid(format!(
                        "AE {}: unknown operation {op:?} in allow",
                        ae.title
                    )));
                }
            }
        }
        Ok(Settings {
            aet,
            dimse_port: pick(&args.dimse_port, &file.dimse_port, 11112),
            http_port: pick(&args.http_port, &file.http_port, 8080),
            bind: pick(&args.bind, &file.bind, IpAddr::from([0, 0, 0, 0])),
            data_dir,
            database_url,
            storage,
            duplicate_policy: pick(
                &args.duplicate_policy,
                &file.duplicate_policy,
                DuplicatePolicy::Keep,
            ),
            require_known_ae: pick(&args.require_known_ae, &file.require_known_ae, false),
            max_pdu: pick(&args.max_pdu, &file.max_pdu, 262_144).clamp(4096, 16 * 1024 * 1024),
            max_associations: pick(&args.max_associations, &file.max_associations, 64).max(1),
            idle_timeout: Duration::from_secs(pick(
                &args.idle_timeout_secs,
                &file.idle_timeout_secs,
                300,
            )),
            artim_timeout: Duration::from_secs(pick(
                &args.artim_timeout_secs,
                &file.artim_timeout_secs,
                30,
            )),
            shutdown_grace: Duration::from_secs(pick(
                &args.shutdown_grace_secs,
                &file.shutdown_grace_secs,
                30,
            )),
            dicomweb_root: {
                let root = pick(
                    &args.dicomweb_root,
                    &file.dicomweb_root,
                    "/dicom-web".to_string(),
                );
                let root = format!("/{}", root.trim_matches('/'));
                if root == "/" {
                    return Err(ConfigError::Invalid("dicomweb_root must not be /".into()));
                }
                root
            },
            cors_origins: pick(
                &args.cors_origins,
                &file.cors_origins,
                vec!["*".to_string()],
            ),
            public_url: args.public_url.clone().or(file.public_url.clone()),
            viewer_dir: args.viewer_dir.clone().or(file.viewer_dir.clone()),
            qido_max_results: pick(&args.qido_max_results, &file.qido_max_results, 1000).max(1),
            stow_max_instance_bytes: pick(
                &args.stow_max_instance_mb,
                &file.stow_max_instance_mb,
                2048,
            ) * 1024
                * 1024,
            stow_max_request_bytes: pick(
                &args.stow_max_request_mb,
                &file.stow_max_request_mb,
                8192,
            ) * 1024
                * 1024,
            remote_aes: file.ae,
            admin_token: args
                .admin_token
                .clone()
                .or(file.admin_token.clone())
                .filter(|t| !t.is_empty()),
            move_associations: pick(&args.move_associations, &file.move_associations, 1)
                .clamp(1, 16),
            ai: match args
                .worker_token
                .clone()
                .or(file.worker_token.clone())
                .filter(|t| !t.is_empty())
            {
                None => None,
                Some(worker_token) => {
                    let quiet = pick(&args.series_quiet_secs, &file.series_quiet_secs, 30.0);
                    if !(0.0..=86_400.0).contains(&quiet) {
                        return Err(ConfigError::Invalid(
                            "series_quiet_secs must be 0 to 86400".into(),
                        ));
                    }
                    let models_dir = args
                        .ai_models_dir
                        .clone()
                        .or(file.ai_models_dir.clone())
                        .unwrap_or_else(|| PathBuf::from("ai-worker/models"));
                    Some(crate::ai::AiSettings {
                        worker_token,
                        quiet: Duration::from_secs_f64(quiet),
                        routes: (!file.ai_route.is_empty()).then(|| file.ai_route.clone()),
                        model_versions: crate::ai::read_model_versions(&models_dir),
                        max_attempts: pick(&args.ai_max_attempts, &file.ai_max_attempts, 3)
                            .clamp(1, 100),
                    })
                }
            },
        })
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn parse_storage(
    url: &str,
    endpoint: Option<String>,
    region: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    allow_http: bool,
) -> Result<StorageConfig, ConfigError> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(StorageConfig::Local {
            root: PathBuf::from(path),
        });
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = rest.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(ConfigError::Invalid(format!(
                "storage {url:?}: expected s3://bucket"
            )));
        }
        return Ok(StorageConfig::S3 {
            bucket: bucket.to_string(),
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            allow_http,
        });
    }
    Err(ConfigError::Invalid(format!(
        "storage {url:?}: expected file:///path or s3://bucket"
    )))
}

/// AE titles: 1 to 16 characters of the default repertoire, no backslash, no control
/// characters, not only spaces (PS3.5 6.2, AE value representation).
pub fn validate_ae_title(title: &str) -> Result<(), String> {
    if title.is_empty() || title.len() > 16 {
        return Err(format!("AE title {title:?} must have 1 to 16 characters"));
    }
    if title.trim().is_empty() {
        return Err("AE title must not be only spaces".into());
    }
    if !title
        .chars()
        .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\')
    {
        return Err(format!(
            "AE title {title:?} may only hold printable ASCII characters other than backslash"
        ));
    }
    Ok(())
}

impl ServeArgs {
    /// The options as `pacs serve` with no arguments would see them (environment only).
    pub fn default_from_env() -> ServeArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        <Wrapper as clap::Parser>::parse_from(["pacs"]).args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_an_embedded_node() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.aet, "PACS");
        assert_eq!(s.dimse_port, 11112);
        assert_eq!(s.http_port, 8080);
        assert!(s.database_url.ends_with("index.sqlite"));
        assert!(matches!(s.storage, StorageConfig::Local { .. }));
    }

    #[test]
    fn file_values_apply_and_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacs.toml");
        std::fs::write(
            &path,
            r#"
            aet = "FROMFILE"
            dimse_port = 104
            storage = "s3://bucket"
            s3_endpoint = "http://127.0.0.1:9000"
            [[ae]]
            title = "CT1"
            host = "10.0.0.1"
            port = 104
            allow = ["echo", "store"]
            check_host = true
            "#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            dimse_port: Some(4242),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.aet, "FROMFILE");
        assert_eq!(s.dimse_port, 4242);
        assert!(matches!(s.storage, StorageConfig::S3 { ref bucket, .. } if bucket == "bucket"));
        assert_eq!(s.remote_aes.len(), 1);
        assert!(s.remote_aes[0].check_host);
    }

    #[test]
    fn ae_titles_are_validated() {
        assert!(validate_ae_title("CT_SCANNER_01").is_ok());
        for bad in ["", "                ", "A\\B", "SEVENTEEN_CHARS_X"] {
            assert!(validate_ae_title(bad).is_err(), "{bad:?}");
        }
    }
}
