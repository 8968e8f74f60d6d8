//! Node configuration: command-line options over `PACS_*` environment variables over an
//! optional TOML file over built-in defaults, which make `pacs` with no arguments a working node
//! (SQLite index and objects under `./data`).
//!
//! Each option is declared once, as a field of [`ServeArgs`]: its option (`--dimse-port`), its
//! environment variable (`PACS_DIMSE_PORT`) and its TOML key (`dimse_port`) all come from that
//! field, clap reading the first two and serde the file. The layers are merged by clap itself:
//! the file is read into a `ServeArgs`, then [`clap::FromArgMatches::update_from_arg_matches`]
//! overwrites exactly the fields the command line or the environment gave. [`Settings::resolve`]
//! then applies each default, once, where it turns the option into the setting the node reads.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, Args, FromArgMatches};
use serde::Deserialize;

use crate::ingest::DuplicatePolicy;
use crate::storage::StorageConfig;

/// Options of `pacs serve`, and the shape of its TOML file: every field is an option
/// `--<name-with-dashes>`, an environment variable `PACS_<NAME>` and a TOML key `<name>`,
/// except `config` (command line and environment only) and the `[[ae]]` / `[[ai_route]]`
/// tables (file only). `None`: not given in any layer, the default applies.
///
/// Booleans are flags: `--require-known-ae` alone means true, `--require-known-ae=false` (or
/// `--require-known-ae false`) false; their variables take `true` or `false`.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML configuration file (see conf/pacs.toml).
    #[arg(long, env = "PACS_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's AE title [default: PACS].
    #[arg(long, env = "PACS_AET")]
    pub aet: Option<String>,
    /// DIMSE port [default: 11112].
    #[arg(long, env = "PACS_DIMSE_PORT")]
    pub dimse_port: Option<u16>,
    /// HTTP port (DICOMweb and the admin API) [default: 8080].
    #[arg(long, env = "PACS_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Address both listeners bind to, unless --dimse-bind / --http-bind say otherwise.
    #[arg(long, env = "PACS_BIND")]
    pub bind: Option<IpAddr>,
    /// Address the DIMSE listener binds to (all addresses, as scanners expect) [default:
    /// 0.0.0.0].
    #[arg(long, env = "PACS_DIMSE_BIND")]
    pub dimse_bind: Option<IpAddr>,
    /// Address the HTTP listener binds to. Default: 0.0.0.0 once authentication is configured
    /// (an identity provider, a user, an API key or an admin token), 127.0.0.1 before.
    #[arg(long, env = "PACS_HTTP_BIND")]
    pub http_bind: Option<IpAddr>,
    /// Let anonymous HTTP callers read, write and export, and HTTP listen beyond loopback
    /// without authentication configured. Logs a warning at every start [default: false].
    #[arg(
        long,
        env = "PACS_INSECURE_ALLOW_ANONYMOUS",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub insecure_allow_anonymous: Option<bool>,
    /// OpenID Connect issuer URL (discovery at URL/.well-known/openid-configuration): bearer
    /// JWTs it signs are accepted. https://, or http:// on a loopback address.
    #[arg(long, env = "PACS_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The `aud` the identity provider's tokens must carry (required with --oidc-issuer).
    #[arg(long, env = "PACS_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// The claim holding the user's roles: a top-level name or a dotted path such as
    /// realm_access.roles [default: roles].
    #[arg(long, env = "PACS_OIDC_ROLES_CLAIM")]
    pub oidc_roles_claim: Option<String>,
    /// Reverse proxies (IP addresses, comma-separated) whose X-Forwarded-For/-Proto/-Host are
    /// believed; from anyone else these headers are ignored.
    #[arg(long, env = "PACS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// Lifetime of the login tokens of POST /api/login, in seconds [default: 1800].
    #[arg(long, env = "PACS_LOGIN_TOKEN_SECS")]
    pub login_token_secs: Option<u64>,
    /// The node's certificate chain (PEM): with --tls-key, turns on HTTPS on the HTTP port and
    /// the DIMSE TLS listener. Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "PACS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PACS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Port of the DIMSE TLS listener (PS3.15 Annex B) [default: 2762].
    #[arg(long, env = "PACS_DIMSE_TLS_PORT")]
    pub dimse_tls_port: Option<u16>,
    /// CA bundle (PEM): DIMSE TLS peers must present a certificate it signed, and HTTPS
    /// clients may authenticate with one.
    #[arg(long, env = "PACS_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// CA bundle (PEM) the node trusts when it connects out over TLS; default: the system's
    /// root certificates.
    #[arg(long, env = "PACS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Serve plain DIMSE on --dimse-port (false: TLS only) [default: true].
    #[arg(
        long,
        env = "PACS_PLAIN_DIMSE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub plain_dimse: Option<bool>,
    /// Answer plain HTTP on the HTTP port besides HTTPS (false: HTTPS only) [default: true].
    #[arg(
        long,
        env = "PACS_PLAIN_HTTP",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub plain_http: Option<bool>,
    /// HTTP connections served at once [default: 1024].
    #[arg(long, env = "PACS_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Seconds a client gets to send a request's headers, and to send its next request on a
    /// kept-alive connection [default: 30].
    #[arg(long, env = "PACS_HTTP_HEADER_TIMEOUT_SECS")]
    pub http_header_timeout_secs: Option<u64>,
    /// Directory for the embedded index, local objects and temporary files [default: ./data].
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
    /// S3 region [default: us-east-1].
    #[arg(long, env = "PACS_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id (AWS_ACCESS_KEY_ID is also read).
    #[arg(long, env = "PACS_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (AWS_SECRET_ACCESS_KEY is also read).
    #[arg(long, env = "PACS_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-HTTP S3 endpoints [default: false].
    #[arg(
        long,
        env = "PACS_S3_ALLOW_HTTP",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub s3_allow_http: Option<bool>,
    /// A different object under a stored SOP Instance UID: keep (warning status) or overwrite
    /// [default: keep].
    #[arg(long, env = "PACS_DUPLICATE_POLICY")]
    pub duplicate_policy: Option<DuplicatePolicy>,
    /// Refuse associations from calling AE titles that are not registered; without it, unknown
    /// AEs may C-ECHO and C-STORE only [default: false].
    #[arg(
        long,
        env = "PACS_REQUIRE_KNOWN_AE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub require_known_ae: Option<bool>,
    /// Largest PDU this node receives, in bytes, 4096 to 16 MiB [default: 262144].
    #[arg(long, env = "PACS_MAX_PDU")]
    pub max_pdu: Option<u32>,
    /// Associations served at once [default: 64].
    #[arg(long, env = "PACS_MAX_ASSOCIATIONS")]
    pub max_associations: Option<usize>,
    /// Seconds an association may stay silent before it is aborted [default: 300].
    #[arg(long, env = "PACS_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// ARTIM timeout: seconds between TCP connect and the association request [default: 30].
    #[arg(long, env = "PACS_ARTIM_TIMEOUT_SECS")]
    pub artim_timeout_secs: Option<u64>,
    /// Seconds in-flight associations get to finish on shutdown [default: 30].
    #[arg(long, env = "PACS_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// URL path under which DICOMweb is served [default: /dicom-web].
    #[arg(long, env = "PACS_DICOMWEB_ROOT")]
    pub dicomweb_root: Option<String>,
    /// Origins allowed by CORS, comma-separated, each exactly `scheme://host[:port]`; `*` for
    /// any (not advised). Default: none, the node's own viewer being same-origin.
    #[arg(long, env = "PACS_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Public base URL (scheme://host:port) for Retrieve URLs and BulkDataURIs, when clients
    /// reach the node through a proxy; default: the request's Host.
    #[arg(long, env = "PACS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A static web viewer (an OHIF build directory) served at / on the HTTP port.
    #[arg(long, env = "PACS_VIEWER_DIR")]
    pub viewer_dir: Option<PathBuf>,
    /// Most results a QIDO-RS search returns [default: 1000].
    #[arg(long, env = "PACS_QIDO_MAX_RESULTS")]
    pub qido_max_results: Option<usize>,
    /// Largest STOW-RS request, in MiB [default: 8192].
    #[arg(long, env = "PACS_STOW_MAX_REQUEST_MB")]
    pub stow_max_request_mb: Option<u64>,
    /// HTTP requests served at once; beyond it, 503 with Retry-After [default: 256].
    #[arg(long, env = "PACS_HTTP_MAX_IN_FLIGHT")]
    pub http_max_in_flight: Option<usize>,
    /// A bearer token with the admin role (`Authorization: Bearer`), for scripts on sites
    /// without users; setting it counts as configuring authentication.
    #[arg(long, env = "PACS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Associations a C-MOVE opens to its destination at once, 1 to 16 [default: 1].
    #[arg(long, env = "PACS_MOVE_ASSOCIATIONS")]
    pub move_associations: Option<usize>,
    /// Enables the AI job queue: a bearer token shared by AI workers (the ai-worker role);
    /// workers may instead have their own API keys.
    #[arg(long, env = "PACS_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// A series is complete (and analysed) when no instance arrived for this many seconds
    /// [default: 30].
    #[arg(long, env = "PACS_SERIES_QUIET_SECS")]
    pub series_quiet_secs: Option<f64>,
    /// Folder of AI models (one sub-folder per model with its model.toml) [default:
    /// ai-worker/models].
    #[arg(long, env = "PACS_AI_MODELS_DIR")]
    pub ai_models_dir: Option<PathBuf>,
    /// Attempts of an AI job before it is dead, 1 to 100 [default: 3].
    #[arg(long, env = "PACS_AI_MAX_ATTEMPTS")]
    pub ai_max_attempts: Option<i64>,
    // ---- DIMSE limits (issue 12: hostile input) ----
    /// Associations served at once for one peer address; more are rejected (transient, local
    /// limit exceeded) [default: 16].
    #[arg(long, env = "PACS_MAX_ASSOCIATIONS_PER_HOST")]
    pub max_associations_per_host: Option<usize>,
    /// Largest instance the node accepts, in MiB: a larger C-STORE is answered A700 (Out of
    /// Resources) and nothing of it kept, a larger STOW-RS part fails alone (A700 in its
    /// response); a deflated data set may not inflate past it either [default: 2048].
    #[arg(long, env = "PACS_MAX_INSTANCE_MB")]
    pub max_instance_mb: Option<u64>,
    /// Disk space, in MiB, that data sets being received (C-STORE and STOW-RS spill files in
    /// <data-dir>/tmp) must leave free; one that would eat into it is refused (A700); 0: no
    /// reserve [default: 1024].
    #[arg(long, env = "PACS_MIN_FREE_DISK_MB")]
    pub min_free_disk_mb: Option<u64>,
    // ---- audit trail forwarding to a syslog collector (issue 13, docs/audit-syslog.md) ----
    /// Forward the audit trail to a syslog collector: tls://host[:port] (RFC 5425, port 6514
    /// when none is given) or udp://host[:port] (RFC 5426, port 514).
    #[arg(long, env = "PACS_AUDIT_SYSLOG", value_name = "URL")]
    pub audit_syslog: Option<String>,
    /// CA bundle (PEM) the syslog collector's certificate must chain to; default: the system's
    /// root certificates.
    #[arg(long, env = "PACS_AUDIT_SYSLOG_CA")]
    pub audit_syslog_ca: Option<PathBuf>,
    /// Certificate chain (PEM) the node presents to the syslog collector (mutual TLS, as IHE
    /// ATNA requires); with --audit-syslog-key.
    #[arg(long, env = "PACS_AUDIT_SYSLOG_CERT")]
    pub audit_syslog_cert: Option<PathBuf>,
    /// The private key of --audit-syslog-cert (PEM).
    #[arg(long, env = "PACS_AUDIT_SYSLOG_KEY")]
    pub audit_syslog_key: Option<PathBuf>,
    /// APP-NAME of the syslog messages, 1 to 48 printable ASCII characters. Default: pacs.
    #[arg(long, env = "PACS_AUDIT_SYSLOG_APP_NAME")]
    pub audit_syslog_app_name: Option<String>,
    // ---- de-identified export (issue 13) ----
    /// The secret key of the de-identification pseudonyms (HMAC-SHA256): the same patient and
    /// UID get the same pseudonym in every export made with it. Exports are refused without
    /// it. Never logged.
    #[arg(long, env = "PACS_DEID_SECRET", hide_env_values = true)]
    pub deid_secret: Option<String>,
    /// Record the audit trail (docs/audit.md): DICOM audit messages of every access, chained
    /// in the index. Off only to measure what it costs (bench/audit.sh) [default: true].
    #[arg(
        long,
        env = "PACS_AUDIT",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub audit: Option<bool>,
    // ---- faults (issue 14, docs/faults.md) ----
    /// PostgreSQL: the connect timeout, the wait for a pooled connection and each statement's
    /// timeout, in milliseconds; an index operation as a whole is abandoned past twice it, so
    /// that a hung database turns into failures (A700, 503) rather than hung associations
    /// [default: 30000].
    #[arg(long, env = "PACS_DATABASE_TIMEOUT_MS")]
    pub database_timeout_ms: Option<u64>,
    /// S3: the timeout of each request, and the time its retries may take, in milliseconds
    /// [default: 30000].
    #[arg(long, env = "PACS_STORAGE_TIMEOUT_MS")]
    pub storage_timeout_ms: Option<u64>,
    /// Objects the start-up reconciliation pass (staging files, unindexed objects: see
    /// `pacs fsck`) looks at, at most; 0: no pass [default: 10000].
    #[arg(long, env = "PACS_STARTUP_FSCK_OBJECTS")]
    pub startup_fsck_objects: Option<u64>,
    /// Seconds the start-up reconciliation pass may take, at most [default: 30].
    #[arg(long, env = "PACS_STARTUP_FSCK_SECS")]
    pub startup_fsck_secs: Option<u64>,
    // ---- what the operator sees (issue 14, docs/operations.md) ----
    /// Log lines as text, or as one JSON object a line for log shippers (text, json)
    /// [default: text].
    #[arg(long, env = "PACS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// A bearer token that opens /metrics, /healthz and /readyz (and nothing else) to a
    /// scraper on another machine; without it they need the admin permission there. Never
    /// logged.
    #[arg(long, env = "PACS_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    // ---- the web console (issue 16, docs/console.md) ----
    /// The OAuth client id the console signs in with at the --oidc-issuer (authorization code
    /// with PKCE, a public client) [default: pacs-console].
    #[arg(long, env = "PACS_CONSOLE_OIDC_CLIENT_ID")]
    pub console_oidc_client_id: Option<String>,
    /// Remote AEs, the seed of the AE registry (`[[ae]]` tables; file only).
    #[arg(skip)]
    #[serde(default)]
    pub ae: Vec<RemoteAe>,
    /// AI routing rules (`[[ai_route]]` tables; file only); none: the shipped models' defaults.
    #[arg(skip)]
    #[serde(default)]
    pub ai_route: Vec<crate::ai::routing::Route>,
}

impl ServeArgs {
    /// The `pacs serve` command alone (its options and their environment variables).
    pub fn command() -> clap::Command {
        ServeArgs::augment_args(clap::Command::new("pacs"))
    }

    /// The layered options from the matches of `pacs serve`: what the command line or the
    /// environment gave (clap puts the command line over the environment) over the TOML file
    /// that `--config` / `PACS_CONFIG` names, if any.
    pub fn from_matches(matches: &ArgMatches) -> Result<ServeArgs, ConfigError> {
        let given = ServeArgs::from_arg_matches(matches).map_err(ConfigError::Cli)?;
        let mut layered = match &given.config {
            Some(path) => load_file(path)?,
            None => ServeArgs::default(),
        };
        layered
            .update_from_arg_matches(matches)
            .map_err(ConfigError::Cli)?;
        Ok(layered)
    }

    /// Parses a `pacs serve` command line (`argv[0]` first) with the process environment, then
    /// the file; errors name the option or key and the bad value.
    pub fn try_parse_from<I, T>(argv: I) -> Result<ServeArgs, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = ServeArgs::command()
            .try_get_matches_from(argv)
            .map_err(|e| ConfigError::Cli(name_the_variable(e)))?;
        ServeArgs::from_matches(&matches)
    }
}

/// clap's error for a bad value names the option and the value but not the environment
/// variable it may have come from; this adds a tip naming the variable when it holds that value.
pub fn name_the_variable(mut error: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error;
    };
    let long = arg.split_whitespace().next().unwrap_or_default();
    let long = long.trim_start_matches("--");
    let command = ServeArgs::command();
    let Some(variable) = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
    else {
        return error;
    };
    if std::env::var_os(variable).is_some_and(|v| v == value.as_str()) {
        let tip = format!("the value is {}'s", variable.to_string_lossy());
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    error
}

/// Where the index is, for the commands that work on it directly (`pacs user`, `pacs key`):
/// the same options, variables and file keys as `pacs serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct IndexArgs {
    /// TOML configuration file (its data_dir and database_url apply).
    #[arg(long, global = true, env = "PACS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded index [default: ./data].
    #[arg(long, global = true, env = "PACS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Index database: a postgres:// URL, or a SQLite file path (default <data-dir>/index.sqlite).
    #[arg(long, global = true, env = "PACS_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl IndexArgs {
    /// The index URL `pacs serve` with these options would open.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => ServeArgs::default(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        Ok(self
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| data_dir.join("index.sqlite").to_string_lossy().into_owned()))
    }
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line (tracing-subscriber's JSON format), with the fields of the
    /// request or association span the line was written in.
    Json,
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
    /// Roles (as users have, see src/auth/permissions.rs): the DIMSE operations their
    /// permissions cover are allowed in addition to `allow`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Accept associations from this AE only over TLS, and connect to it over TLS (its `host`
    /// is the name its certificate must carry).
    #[serde(default)]
    pub tls: bool,
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
    pub dimse_bind: IpAddr,
    /// None: decided at start (loopback until authentication is configured).
    pub http_bind: Option<IpAddr>,
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
    pub stow_max_request_bytes: u64,
    pub http_max_in_flight: usize,
    pub remote_aes: Vec<RemoteAe>,
    pub admin_token: Option<String>,
    pub auth: crate::auth::AuthSettings,
    pub trusted_proxies: Vec<IpAddr>,
    /// TLS, when a certificate is configured.
    pub tls: Option<TlsSettings>,
    pub dimse_tls_port: u16,
    pub plain_dimse: bool,
    pub plain_http: bool,
    pub http_max_connections: usize,
    pub http_header_timeout: Duration,
    pub move_associations: usize,
    /// The AI job queue, when a worker token is set.
    pub ai: Option<crate::ai::AiSettings>,
    // ---- DIMSE limits (issue 12) ----
    pub max_associations_per_host: usize,
    pub min_free_disk_bytes: u64,
    /// Largest instance accepted (C-STORE; deflated data sets inflated).
    pub max_instance_bytes: u64,
    /// Forwarding of the audit trail to a syslog collector, when `audit_syslog` is set.
    pub audit_syslog: Option<crate::audit::syslog::SyslogSettings>,
    /// The pseudonym key of de-identified exports (issue 13).
    pub deid_secret: Option<crate::deid::Secret>,
    /// The effective options as text, secrets replaced by `(set)` ([`configuration_text`]):
    /// what the audit trail records when it changes between starts.
    pub configuration: String,
    /// Record the audit trail.
    pub audit: bool,
    /// PostgreSQL's connect, pool-wait and statement timeout (issue 14).
    pub database_timeout: Duration,
    /// The bounded reconciliation pass at start-up (issue 14).
    pub startup_fsck: crate::fsck::StartupPass,
    /// Opens the operators' endpoints (`pacs_dicomweb::Need::Operator`) to its bearer.
    pub metrics_token: Option<String>,
    /// The console's OAuth client id at the identity provider.
    pub console_oidc_client_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad option or environment variable; clap's message names the option and the value.
    #[error("{}", .0.to_string().trim_end())]
    Cli(clap::Error),
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

/// The layered options (file, environment, command line) as text for the audit trail, with
/// every secret replaced by `(set)` and a password in the database URL by `***`.
pub fn configuration_text(args: &ServeArgs) -> String {
    let mut shown = args.clone();
    let set = |v: &mut Option<String>| {
        if v.is_some() {
            *v = Some("(set)".into());
        }
    };
    set(&mut shown.admin_token);
    set(&mut shown.worker_token);
    set(&mut shown.deid_secret);
    set(&mut shown.s3_secret_access_key);
    set(&mut shown.metrics_token);
    if let Some(url) = &mut shown.database_url {
        // postgres://user:password@host/db
        if let Some((scheme, rest)) = url.split_once("://") {
            if let Some((credentials, host)) = rest.split_once('@') {
                if let Some((user, _)) = credentials.split_once(':') {
                    *url = format!("{scheme}://{user}:***@{host}");
                }
            }
        }
    }
    format!("{shown:#?}")
}

impl Settings {
    /// The settings from layered options ([`ServeArgs::from_matches`]): each default applies
    /// here, where no layer gave the option.
    pub fn resolve(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database_url = args
            .database_url
            .clone()
            .unwrap_or_else(|| data_dir.join("index.sqlite").to_string_lossy().into_owned());
        let storage_url = args
            .storage
            .clone()
            .unwrap_or_else(|| format!("file://{}", data_dir.join("objects").display()));
        let storage = parse_storage(
            &storage_url,
            args.s3_endpoint.clone(),
            args.s3_region.clone().unwrap_or_else(|| "us-east-1".into()),
            args.s3_access_key_id.clone(),
            args.s3_secret_access_key.clone(),
            args.s3_allow_http.unwrap_or(false),
        )?;
        let storage = match storage {
            StorageConfig::S3 { .. } => storage.with_timeout(Duration::from_millis(
                args.storage_timeout_ms.unwrap_or(30_000).max(100),
            )),
            local => local,
        };
        let aet = args.aet.clone().unwrap_or_else(|| "PACS".into());
        validate_ae_title(&aet).map_err(ConfigError::Invalid)?;
        for ae in &args.ae {
            validate_ae_title(&ae.title).map_err(ConfigError::Invalid)?;
            crate::auth::permissions::parse_roles(&ae.roles.join(","))
                .map_err(|e| ConfigError::Invalid(format!("AE {}: {e}", ae.title)))?;
            for op in &ae.allow {
                if !matches!(op.as_str(), "echo" | "store" | "find" | "move" | "get") {
                    return Err(ConfigError::Invalid(format!(
                        "AE {}: unknown operation {op:?} in allow",
                        ae.title
                    )));
                }
            }
        }
        let dicomweb_root = format!(
            "/{}",
            args.dicomweb_root
                .as_deref()
                .unwrap_or("/dicom-web")
                .trim_matches('/')
        );
        if dicomweb_root == "/" {
            return Err(ConfigError::Invalid("dicomweb_root must not be /".into()));
        }
        const MIB: u64 = 1024 * 1024;
        let ai = match args.worker_token.clone().filter(|t| !t.is_empty()) {
            None => None,
            Some(worker_token) => {
                let quiet = args.series_quiet_secs.unwrap_or(30.0);
                if !(0.0..=86_400.0).contains(&quiet) {
                    return Err(ConfigError::Invalid(format!(
                        "series_quiet_secs must be 0 to 86400, not {quiet}"
                    )));
                }
                let models_dir = args
                    .ai_models_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("ai-worker/models"));
                Some(crate::ai::AiSettings {
                    worker_token,
                    quiet: Duration::from_secs_f64(quiet),
                    routes: (!args.ai_route.is_empty()).then(|| args.ai_route.clone()),
                    model_versions: crate::ai::read_model_versions(&models_dir),
                    max_attempts: args.ai_max_attempts.unwrap_or(3).clamp(1, 100),
                })
            }
        };
        Ok(Settings {
            aet,
            dimse_port: args.dimse_port.unwrap_or(11112),
            http_port: args.http_port.unwrap_or(8080),
            dimse_bind: args
                .dimse_bind
                .or(args.bind)
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            http_bind: args.http_bind.or(args.bind),
            data_dir,
            database_url,
            storage,
            duplicate_policy: args.duplicate_policy.unwrap_or(DuplicatePolicy::Keep),
            require_known_ae: args.require_known_ae.unwrap_or(false),
            max_pdu: args
                .max_pdu
                .unwrap_or(262_144)
                .clamp(4096, 16 * 1024 * 1024),
            max_associations: args.max_associations.unwrap_or(64).max(1),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs.unwrap_or(300)),
            artim_timeout: Duration::from_secs(args.artim_timeout_secs.unwrap_or(30)),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs.unwrap_or(30)),
            dicomweb_root,
            cors_origins: cors_origins(args.cors_origins.clone().unwrap_or_default())?,
            public_url: args.public_url.clone(),
            viewer_dir: args.viewer_dir.clone(),
            qido_max_results: args.qido_max_results.unwrap_or(1000).max(1),
            stow_max_request_bytes: args.stow_max_request_mb.unwrap_or(8192).saturating_mul(MIB),
            http_max_in_flight: args.http_max_in_flight.unwrap_or(256).max(1),
            remote_aes: args.ae.clone(),
            admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
            auth: crate::auth::AuthSettings {
                admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
                worker_token: args.worker_token.clone().filter(|t| !t.is_empty()),
                oidc: oidc_settings(args)?,
                insecure_allow_anonymous: args.insecure_allow_anonymous.unwrap_or(false),
                login_token_ttl: Duration::from_secs(
                    args.login_token_secs.unwrap_or(1800).clamp(60, 7 * 86_400),
                ),
            },
            trusted_proxies: args.trusted_proxies.clone().unwrap_or_default(),
            tls: tls_settings(args)?,
            dimse_tls_port: args.dimse_tls_port.unwrap_or(2762),
            plain_dimse: args.plain_dimse.unwrap_or(true),
            plain_http: args.plain_http.unwrap_or(true),
            http_max_connections: args.http_max_connections.unwrap_or(1024).max(1),
            http_header_timeout: Duration::from_secs(
                args.http_header_timeout_secs.unwrap_or(30).clamp(1, 3600),
            ),
            move_associations: args.move_associations.unwrap_or(1).clamp(1, 16),
            ai,
            max_associations_per_host: args.max_associations_per_host.unwrap_or(16).max(1),
            min_free_disk_bytes: args.min_free_disk_mb.unwrap_or(1024).saturating_mul(MIB),
            audit: args.audit.unwrap_or(true),
            max_instance_bytes: args
                .max_instance_mb
                .unwrap_or(2048)
                .max(1)
                .saturating_mul(MIB),
            audit_syslog: audit_syslog_settings(args)?,
            deid_secret: args.deid_secret.clone().and_then(crate::deid::Secret::new),
            configuration: configuration_text(args),
            database_timeout: Duration::from_millis(
                args.database_timeout_ms.unwrap_or(30_000).max(100),
            ),
            startup_fsck: crate::fsck::StartupPass {
                max_objects: args.startup_fsck_objects.unwrap_or(10_000),
                max_time: Duration::from_secs(args.startup_fsck_secs.unwrap_or(30)),
            },
            metrics_token: args.metrics_token.clone().filter(|t| !t.is_empty()),
            console_oidc_client_id: args
                .console_oidc_client_id
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "pacs-console".into()),
        })
    }
}

/// The syslog forwarding, when `audit_syslog` is set; its companions without it are an error.
fn audit_syslog_settings(
    args: &ServeArgs,
) -> Result<Option<crate::audit::syslog::SyslogSettings>, ConfigError> {
    let Some(url) = args.audit_syslog.clone().filter(|u| !u.is_empty()) else {
        let companions = [
            ("audit_syslog_ca", args.audit_syslog_ca.is_some()),
            ("audit_syslog_cert", args.audit_syslog_cert.is_some()),
            ("audit_syslog_key", args.audit_syslog_key.is_some()),
            (
                "audit_syslog_app_name",
                args.audit_syslog_app_name.is_some(),
            ),
        ];
        return match companions.iter().find(|(_, given)| *given) {
            Some((name, _)) => Err(ConfigError::Invalid(format!(
                "{name} is set but audit_syslog (the collector's URL) is not"
            ))),
            None => Ok(None),
        };
    };
    crate::audit::syslog::SyslogSettings::from_options(
        &url,
        args.audit_syslog_ca.clone(),
        args.audit_syslog_cert.clone(),
        args.audit_syslog_key.clone(),
        args.audit_syslog_app_name.clone(),
    )
    .map(Some)
    .map_err(ConfigError::Invalid)
}

/// The node's certificate and the CA bundles, when TLS is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: crate::tls::CertFiles,
    /// Client certificates are checked against this bundle (required for DIMSE TLS).
    pub client_ca: Option<PathBuf>,
    /// What the node trusts when it connects out (None: the system roots).
    pub ca: Option<PathBuf>,
}

fn tls_settings(args: &ServeArgs) -> Result<Option<TlsSettings>, ConfigError> {
    let plain_off = args.plain_http == Some(false) || args.plain_dimse == Some(false);
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(TlsSettings {
            cert: crate::tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
            client_ca: args.tls_client_ca.clone(),
            ca: args.tls_ca.clone(),
        })),
        (None, None) if plain_off => Err(ConfigError::Invalid(
            "plain_http / plain_dimse false needs TLS (tls_cert and tls_key)".into(),
        )),
        (None, None) => Ok(None),
        _ => Err(ConfigError::Invalid(
            "tls_cert and tls_key go together".into(),
        )),
    }
}

/// The identity provider, when `oidc_issuer` is set (it then needs an audience).
fn oidc_settings(args: &ServeArgs) -> Result<Option<crate::auth::oidc::OidcSettings>, ConfigError> {
    let Some(issuer) = args.oidc_issuer.clone().filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    crate::auth::oidc::validate_issuer(&issuer).map_err(ConfigError::Invalid)?;
    let audience = args
        .oidc_audience
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ConfigError::Invalid("oidc_issuer needs oidc_audience".into()))?;
    Ok(Some(crate::auth::oidc::OidcSettings {
        issuer,
        audience,
        roles_claim: args
            .oidc_roles_claim
            .clone()
            .unwrap_or_else(|| "roles".into()),
    }))
}

/// CORS origins are compared exactly with the `Origin` header: `scheme://host[:port]`, no
/// path, no trailing slash (RFC 6454 6.1).
fn cors_origins(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for origin in &origins {
        if origin == "*" {
            continue;
        }
        let parsed = url::Url::parse(origin).ok();
        let exact = parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.origin().ascii_serialization() == *origin
        });
        if !exact {
            return Err(ConfigError::Invalid(format!(
                "cors_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
            )));
        }
    }
    Ok(origins)
}

/// The TOML file as a layer: keys are the options' names with underscores; unknown keys and
/// values of the wrong type are errors naming the key.
fn load_file(path: &Path) -> Result<ServeArgs, ConfigError> {
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
            timeout: crate::storage::DEFAULT_S3_TIMEOUT,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::ffi::OsStr;
    use std::sync::{Mutex, MutexGuard, PoisonError};

    /// Held by every test that parses options: clap reads the process environment, so these
    /// tests set and clear `PACS_*` variables one at a time.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    /// The environment of `pacs serve` for one test: every variable of its options cleared
    /// (so the developer's own `PACS_*` do not leak in), then `vars` set; all restored on drop.
    struct Env {
        saved: Vec<(OsString, Option<OsString>)>,
        _lock: MutexGuard<'static, ()>,
    }

    impl Env {
        fn set(vars: &[(&str, &str)]) -> Env {
            let lock = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            let names: Vec<OsString> = ServeArgs::command()
                .get_arguments()
                .filter_map(|a| a.get_env().map(OsStr::to_owned))
                .collect();
            let saved = names
                .iter()
                .map(|n| (n.clone(), std::env::var_os(n)))
                .collect();
            for name in &names {
                std::env::remove_var(name);
            }
            for (name, value) in vars {
                assert!(names.iter().any(|n| n == name), "{name} is no option's");
                std::env::set_var(name, value);
            }
            Env { saved, _lock: lock }
        }
    }

    impl Drop for Env {
        fn drop(&mut self) {
            for (name, value) in &self.saved {
                match value {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
        }
    }

    /// `pacs serve <cli>` with exactly the `env` variables and, when given, a --config file
    /// holding `file`.
    fn layered(
        cli: &[&str],
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<OsString> = vec!["pacs".into()];
        if let Some(text) = file {
            let path = dir.path().join("pacs.toml");
            std::fs::write(&path, text).unwrap();
            argv.push("--config".into());
            argv.push(path.into());
        }
        argv.extend(cli.iter().map(OsString::from));
        let _env = Env::set(env);
        Settings::resolve(&ServeArgs::try_parse_from(argv)?)
    }

    fn error_of(cli: &[&str], env: &[(&str, &str)], file: Option<&str>) -> String {
        match layered(cli, env, file) {
            Ok(s) => panic!("{cli:?} {env:?} {file:?} accepted: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// One setting through the four layers: the default alone, then the file, then the
    /// environment over the file, then the command line over both.
    fn check_layers(
        key: &str,
        file_value: &str,
        env_value: &str,
        cli: &[&str],
        get: impl Fn(&Settings) -> String,
        [default, from_file, from_env, from_cli]: [&str; 4],
    ) {
        let var = format!("PACS_{}", key.to_uppercase());
        let file = format!("{key} = {file_value}\n");
        let env = [(var.as_str(), env_value)];
        let check = |cli: &[&str], env: &[(&str, &str)], file: Option<&str>, expected: &str| {
            let s = layered(cli, env, file).unwrap();
            assert_eq!(
                get(&s),
                expected,
                "{key}: cli {cli:?}, env {env:?}, file {file:?}"
            );
        };
        check(&[], &[], None, default);
        check(&[], &[], Some(&file), from_file);
        check(&[], &env, None, from_env);
        check(&[], &env, Some(&file), from_env);
        check(cli, &[], Some(&file), from_cli);
        check(cli, &env, Some(&file), from_cli);
    }

    #[test]
    fn command_line_over_environment_over_file_over_default() {
        check_layers(
            "aet",
            r#""FILE_AE""#,
            "ENV_AE",
            &["--aet", "CLI_AE"],
            |s| s.aet.clone(),
            ["PACS", "FILE_AE", "ENV_AE", "CLI_AE"],
        );
        check_layers(
            "dimse_port",
            "104",
            "4242",
            &["--dimse-port=11113"],
            |s| s.dimse_port.to_string(),
            ["11112", "104", "4242", "11113"],
        );
        check_layers(
            "idle_timeout_secs",
            "10",
            "20",
            &["--idle-timeout-secs", "30"],
            |s| format!("{:?}", s.idle_timeout),
            ["300s", "10s", "20s", "30s"],
        );
        check_layers(
            "require_known_ae",
            "true",
            "false",
            &["--require-known-ae"],
            |s| s.require_known_ae.to_string(),
            ["false", "true", "false", "true"],
        );
        check_layers(
            "cors_origins",
            r#"["https://file.example"]"#,
            "https://a.example,https://b.example",
            &["--cors-origins", "https://cli.example"],
            |s| s.cors_origins.join(" "),
            [
                "",
                "https://file.example",
                "https://a.example https://b.example",
                "https://cli.example",
            ],
        );
    }

    #[test]
    fn booleans_are_flags_with_an_optional_value() {
        let known = |cli: &[&str], env: &[(&str, &str)], file: Option<&str>| {
            layered(cli, env, file).unwrap().require_known_ae
        };
        assert!(known(&["--require-known-ae"], &[], None));
        assert!(known(&["--require-known-ae=true"], &[], None));
        assert!(!known(&["--require-known-ae=false"], &[], None));
        assert!(known(&["--require-known-ae", "true"], &[], None));
        assert!(!known(&["--require-known-ae", "false"], &[], None));
        // a flag without a value does not swallow the next option
        let s = layered(&["--require-known-ae", "--aet", "NEXT"], &[], None).unwrap();
        assert!(s.require_known_ae);
        assert_eq!(s.aet, "NEXT");
        assert!(known(&[], &[("PACS_REQUIRE_KNOWN_AE", "true")], None));
        assert!(!known(&[], &[("PACS_REQUIRE_KNOWN_AE", "false")], None));
        // =false turns off what a lower layer turned on
        let on = Some("require_known_ae = true");
        assert!(!known(
            &["--require-known-ae=false"],
            &[("PACS_REQUIRE_KNOWN_AE", "true")],
            on
        ));
        assert!(!known(&[], &[("PACS_REQUIRE_KNOWN_AE", "false")], on));

        let allow_http = |cli: &[&str], env: &[(&str, &str)]| {
            let mut argv = vec!["--storage", "s3://bucket"];
            argv.extend_from_slice(cli);
            match layered(&argv, env, None).unwrap().storage {
                StorageConfig::S3 { allow_http, .. } => allow_http,
                other => panic!("{other:?}"),
            }
        };
        assert!(!allow_http(&[], &[]));
        assert!(allow_http(&["--s3-allow-http"], &[]));
        assert!(allow_http(&["--s3-allow-http", "true"], &[]));
        assert!(!allow_http(
            &["--s3-allow-http=false"],
            &[("PACS_S3_ALLOW_HTTP", "true")]
        ));
        assert!(allow_http(&[], &[("PACS_S3_ALLOW_HTTP", "true")]));
    }

    #[test]
    fn bad_values_are_named_with_their_option() {
        let named = |error: String, parts: &[&str]| {
            for part in parts {
                assert!(error.contains(part), "{part:?} not in {error:?}");
            }
        };
        named(
            error_of(&["--dimse-port", "abc"], &[], None),
            &["--dimse-port", "'abc'"],
        );
        named(
            error_of(&["--dimse-port", "70000"], &[], None),
            &["--dimse-port", "70000"],
        );
        named(
            error_of(&[], &[("PACS_MAX_PDU", "big")], None),
            &["--max-pdu", "'big'"],
        );
        named(
            error_of(&["--require-known-ae=maybe"], &[], None),
            &["--require-known-ae", "'maybe'"],
        );
        named(
            error_of(&[], &[("PACS_REQUIRE_KNOWN_AE", "yes")], None),
            &["--require-known-ae", "'yes'", "PACS_REQUIRE_KNOWN_AE"],
        );
        named(
            error_of(&["--duplicate-policy", "drop"], &[], None),
            &["--duplicate-policy", "drop"],
        );
        named(
            error_of(&["--bind", "localhost"], &[], None),
            &["--bind", "'localhost'"],
        );
        named(
            error_of(&[], &[], Some(r#"dimse_port = "abc""#)),
            &["pacs.toml", "dimse_port", "\"abc\"", "expected u16"],
        );
        named(
            error_of(&[], &[], Some("require_known_ae = \"yes\"")),
            &["require_known_ae", "\"yes\"", "expected a boolean"],
        );
        named(
            error_of(&[], &[], Some("dimse_prot = 104")),
            &["unknown field", "dimse_prot"],
        );
        // --config is not a file key
        named(
            error_of(&[], &[], Some(r#"config = "other.toml""#)),
            &["unknown field", "config"],
        );
        named(
            error_of(&["--aet", "SEVENTEEN_CHARS_X"], &[], None),
            &["SEVENTEEN_CHARS_X"],
        );
        named(
            error_of(&["--storage", "ftp://host/x"], &[], None),
            &["storage", "ftp://host/x"],
        );
        named(
            error_of(
                &["--worker-token", "t", "--series-quiet-secs", "100000"],
                &[],
                None,
            ),
            &["series_quiet_secs", "100000"],
        );
        named(
            error_of(
                &[],
                &[],
                Some("[[ae]]\ntitle = \"CT1\"\nallow = [\"delete\"]\n"),
            ),
            &["CT1", "delete"],
        );
    }

    /// The names administrators' scripts use: every option `--name-with-dashes`, its variable
    /// `PACS_NAME`, its TOML key `name_with_underscores`.
    #[test]
    fn option_variable_and_key_names_are_kept() {
        const NAMES: &[&str] = &[
            "config",
            "aet",
            "dimse_port",
            "http_port",
            "bind",
            "dimse_bind",
            "http_bind",
            "insecure_allow_anonymous",
            "oidc_issuer",
            "oidc_audience",
            "oidc_roles_claim",
            "trusted_proxies",
            "login_token_secs",
            "tls_cert",
            "tls_key",
            "dimse_tls_port",
            "tls_client_ca",
            "tls_ca",
            "plain_dimse",
            "plain_http",
            "http_max_connections",
            "http_header_timeout_secs",
            "data_dir",
            "database_url",
            "storage",
            "s3_endpoint",
            "s3_region",
            "s3_access_key_id",
            "s3_secret_access_key",
            "s3_allow_http",
            "duplicate_policy",
            "require_known_ae",
            "max_pdu",
            "max_associations",
            "idle_timeout_secs",
            "artim_timeout_secs",
            "shutdown_grace_secs",
            "dicomweb_root",
            "cors_origins",
            "public_url",
            "viewer_dir",
            "qido_max_results",
            "stow_max_request_mb",
            "http_max_in_flight",
            "admin_token",
            "move_associations",
            "worker_token",
            "series_quiet_secs",
            "ai_models_dir",
            "ai_max_attempts",
            // issue 12: DIMSE limits
            "max_associations_per_host",
            "max_instance_mb",
            "min_free_disk_mb",
            // issue 13: audit trail forwarding to syslog
            "audit_syslog",
            "audit_syslog_ca",
            "audit_syslog_cert",
            "audit_syslog_key",
            "audit_syslog_app_name",
            // issue 13: de-identified export
            "deid_secret",
            // issue 13: the audit trail
            "audit",
            // issue 14: faults
            "database_timeout_ms",
            "storage_timeout_ms",
            "startup_fsck_objects",
            "startup_fsck_secs",
            // issue 14: what the operator sees
            "log_format",
            "metrics_token",
            // issue 16: the web console
            "console_oidc_client_id",
        ];
        let command = ServeArgs::command();
        let ids: Vec<&str> = command
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .collect();
        assert_eq!(ids, NAMES);
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()));
            let env = format!("PACS_{}", id.to_uppercase());
            assert_eq!(arg.get_env(), Some(OsStr::new(&env)));
            if id != "config" {
                // the key is known to the file: a value of the wrong type, not an unknown key
                let error = toml::from_str::<ServeArgs>(&format!("{id} = {{}}"))
                    .unwrap_err()
                    .to_string();
                assert!(!error.contains("unknown field"), "{id}: {error}");
            }
        }
    }

    /// Settings in a form two resolutions can be compared by (model versions sorted; the
    /// configuration text, which records how each option was given, left out).
    fn comparable(mut s: Settings) -> String {
        s.configuration.clear();
        let versions: BTreeMap<String, String> =
            s.ai.as_mut()
                .map(|ai| ai.model_versions.drain().collect())
                .unwrap_or_default();
        format!("{s:?} {versions:?}")
    }

    /// The `[default: ...]` in each option's help is the default `Settings::resolve` applies.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let token = ["--worker-token", "t"];
        let defaults = comparable(layered(&token, &[], None).unwrap());
        let mut checked = 0;
        for arg in ServeArgs::command().get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let Some((_, rest)) = help.split_once("[default: ") else {
                continue;
            };
            let value = &rest[..rest.find(']').unwrap()];
            let option = format!("--{}={value}", arg.get_long().unwrap());
            let given = comparable(layered(&[&token[..], &[&option]].concat(), &[], None).unwrap());
            assert_eq!(given, defaults, "{option}");
            checked += 1;
        }
        assert!(checked >= 20, "{checked} documented defaults");
    }

    /// conf/pacs.toml, the documented example, holds the built-in defaults.
    #[test]
    fn the_example_file_holds_the_defaults() {
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/pacs.toml"))
                .unwrap();
        let from_file = comparable(layered(&[], &[], Some(&example)).unwrap());
        assert_eq!(from_file, comparable(layered(&[], &[], None).unwrap()));
    }

    #[test]
    fn defaults_make_an_embedded_node() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.aet, "PACS");
        assert_eq!(s.dimse_port, 11112);
        assert_eq!(s.http_port, 8080);
        assert!(s.database_url.ends_with("index.sqlite"));
        assert!(matches!(s.storage, StorageConfig::Local { .. }));
        assert!(!s.require_known_ae);
        assert!(s.ai.is_none());
    }

    #[test]
    fn file_tables_survive_the_command_line() {
        let file = r#"
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
            [[ai_route]]
            model = "ct-classical"
            modality = ["CT"]
            "#;
        let s = layered(
            &["--dimse-port", "4242"],
            &[("PACS_WORKER_TOKEN", "secret")],
            Some(file),
        )
        .unwrap();
        assert_eq!(s.aet, "FROMFILE");
        assert_eq!(s.dimse_port, 4242);
        assert!(matches!(s.storage, StorageConfig::S3 { ref bucket, .. } if bucket == "bucket"));
        assert_eq!(s.remote_aes.len(), 1);
        assert!(s.remote_aes[0].check_host);
        let ai = s.ai.expect("the worker token enables the AI queue");
        assert_eq!(ai.worker_token, "secret");
        let routes = ai.routes.expect("the file's routes");
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].model, "ct-classical");
    }

    /// Issue 12: the DIMSE limits, the DIMSE side of the TLS options, and per-AE `tls`.
    #[test]
    fn dimse_limits_and_tls_options() {
        let s = layered(&[], &[], None).unwrap();
        assert_eq!(s.max_associations_per_host, 16);
        assert_eq!(s.max_instance_bytes, 2048 << 20);
        assert!(s.plain_dimse);
        assert_eq!(s.dimse_tls_port, 2762);
        let s = layered(
            &[
                "--tls-cert",
                "node.pem",
                "--tls-key",
                "node.key",
                "--plain-dimse=false",
                "--tls-client-ca",
                "ca.pem",
            ],
            &[
                ("PACS_DIMSE_TLS_PORT", "11113"),
                ("PACS_MAX_INSTANCE_MB", "5"),
                ("PACS_MAX_ASSOCIATIONS_PER_HOST", "2"),
            ],
            Some("tls_ca = \"peers.pem\"\n[[ae]]\ntitle = \"SECURE\"\ntls = true\n"),
        )
        .unwrap();
        let tls = s.tls.expect("TLS configured");
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.ca, Some(PathBuf::from("peers.pem")));
        assert!(!s.plain_dimse);
        assert_eq!(s.dimse_tls_port, 11113);
        assert_eq!(s.max_instance_bytes, 5 << 20);
        assert_eq!(s.max_associations_per_host, 2);
        assert!(s.remote_aes[0].tls);
        let error = error_of(&["--plain-dimse", "false"], &[], None);
        assert!(error.contains("plain_dimse"), "{error}");
    }

    /// Issue 13: the syslog collector of the audit trail, through the layers, and its errors.
    #[test]
    fn audit_syslog_options() {
        use crate::audit::syslog::Transport;
        assert!(layered(&[], &[], None).unwrap().audit_syslog.is_none());
        let s = layered(
            &[
                "--audit-syslog-cert",
                "node.pem",
                "--audit-syslog-key",
                "node.key",
            ],
            &[("PACS_AUDIT_SYSLOG_CA", "collector-ca.pem")],
            Some("audit_syslog = \"tls://audit.example.org\"\naudit_syslog_app_name = \"PACS1\"\n"),
        )
        .unwrap();
        let syslog = s.audit_syslog.expect("forwarding configured");
        assert_eq!(syslog.transport, Transport::Tls);
        assert_eq!(syslog.host, "audit.example.org");
        assert_eq!(syslog.port, 6514);
        assert_eq!(syslog.ca, Some(PathBuf::from("collector-ca.pem")));
        let client = syslog.client_cert.expect("client certificate");
        assert_eq!(client.cert, PathBuf::from("node.pem"));
        assert_eq!(client.key, PathBuf::from("node.key"));
        assert_eq!(syslog.app_name, "PACS1");
        let s = layered(&["--audit-syslog", "udp://10.1.2.3:5514"], &[], None).unwrap();
        let syslog = s.audit_syslog.unwrap();
        assert_eq!(
            (syslog.transport, syslog.host.as_str(), syslog.port),
            (Transport::Udp, "10.1.2.3", 5514)
        );
        assert_eq!(syslog.app_name, "pacs");
        for (cli, expected) in [
            (&["--audit-syslog", "syslog://h:514"][..], "syslog://h:514"),
            (&["--audit-syslog-ca", "ca.pem"][..], "audit_syslog_ca"),
            (
                &["--audit-syslog", "tls://h", "--audit-syslog-key", "k.pem"][..],
                "audit_syslog_cert",
            ),
            (
                &["--audit-syslog", "udp://h", "--audit-syslog-ca", "ca.pem"][..],
                "tls://",
            ),
            (
                &[
                    "--audit-syslog",
                    "udp://h",
                    "--audit-syslog-app-name",
                    "a b",
                ][..],
                "audit_syslog_app_name",
            ),
        ] {
            let error = error_of(cli, &[], None);
            assert!(error.contains(expected), "{cli:?}: {error}");
        }
    }

    #[test]
    fn ae_titles_are_validated() {
        assert!(validate_ae_title("CT_SCANNER_01").is_ok());
        for bad in ["", "                ", "A\\B", "SEVENTEEN_CHARS_X"] {
            assert!(validate_ae_title(bad).is_err(), "{bad:?}");
        }
    }
}
