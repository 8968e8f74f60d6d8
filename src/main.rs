//! `pacs`: the node's command line. `pacs` alone (or `pacs serve`) runs the node.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "pacs", version, about = "A DICOM-native PACS node")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (the default). Each option may also be given as a PACS_* environment
    /// variable or in the --config file (same name with underscores); the command line wins
    /// over the environment, the environment over the file.
    Serve(Box<pacs::config::ServeArgs>),
    /// Administer the remote AEs of a running node through its admin API.
    Ae(AeArgs),
    /// Manage local users (in the index: works before the node starts, and a running node
    /// sees the change at once).
    User(UserArgs),
    /// Manage API keys for scripts and AI workers (in the index, like `pacs user`).
    Key(KeyArgs),
    /// Search the audit trail and verify its hash chain (in the index, like `pacs user`).
    Audit(AuditArgs),
    /// Write synthetic CT or MR series (realistic geometry, deterministic UIDs) for tests,
    /// demos and benchmarks.
    Synth(SynthArgs),
    /// De-identified export (PS3.15 Annex E) of studies through a running node: creates the
    /// export job, follows it, and downloads the ZIP (or sends to an AE or a STOW-RS URL).
    Export(ExportArgs),
    /// Check that the object store and the index agree (staging files left by a crash,
    /// unindexed objects, rows whose object is missing or differs from its SHA-256), one
    /// finding per line; --repair mends what can be mended. Exit status: 0 clean, 1 found
    /// something (even if repaired), 2 an operational error. Takes `pacs serve`'s options
    /// (--data-dir, --database-url, --storage, --config...). docs/faults.md.
    Fsck(Box<FsckArgs>),
    /// A patient's measurements over time (the SRs' TID 1500 measurements, grouped by
    /// tracked finding and quantity) from a running node, as a table. docs/measurements.md.
    Measurements(MeasurementsArgs),
}

#[derive(clap::Args)]
struct MeasurementsArgs {
    /// Patient ID (0010,0020).
    patient_id: String,
    /// Only this measured concept (its code value, e.g. 118565006 for Volume).
    #[arg(long)]
    concept: Option<String>,
    /// Only this Tracking Identifier or Tracking Unique Identifier.
    #[arg(long)]
    tracking_id: Option<String>,
    /// Studies from this date (YYYYMMDD).
    #[arg(long)]
    from: Option<String>,
    /// Studies up to this date (YYYYMMDD).
    #[arg(long)]
    to: Option<String>,
    /// The node's HTTP address.
    #[arg(long, env = "PACS_NODE_URL", default_value = "http://127.0.0.1:8080")]
    node: String,
    /// API key or token, when the node requires one (the `read` permission).
    #[arg(long, env = "PACS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct FsckArgs {
    /// Re-index unindexed objects that are valid DICOM instances, remove staging files, spill
    /// files and invalid or superseded unindexed objects, remove rows whose object is missing.
    #[arg(long)]
    repair: bool,
    /// Leave alone what is younger than this many seconds (an ingest may be under way).
    #[arg(long, default_value_t = 600)]
    grace_secs: u64,
    #[command(flatten)]
    serve: pacs::config::ServeArgs,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The node's HTTP URL.
    #[arg(long, env = "PACS_NODE_URL", default_value = "http://127.0.0.1:8080")]
    node: String,
    /// A bearer token (login token, API key or admin token) with the deidentify permission.
    #[arg(long, env = "PACS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A Study Instance UID to export (repeat for several).
    #[arg(long = "study", required = true)]
    studies: Vec<String>,
    /// Where the ZIP goes: FILE.zip, or a directory it is unpacked into.
    #[arg(long, required_unless_present_any = ["to_ae", "to_stow"], conflicts_with_all = ["to_ae", "to_stow"])]
    out: Option<std::path::PathBuf>,
    /// Send to this registered AE (C-STORE) instead.
    #[arg(long, conflicts_with = "to_stow")]
    to_ae: Option<String>,
    /// Post to this STOW-RS URL (the studies resource) instead.
    #[arg(long)]
    to_stow: Option<String>,
    #[arg(long)]
    retain_longitudinal_modified_dates: bool,
    #[arg(long)]
    retain_patient_characteristics: bool,
    #[arg(long)]
    retain_device_identity: bool,
    #[arg(long)]
    retain_institution_identity: bool,
    #[arg(long)]
    retain_uids: bool,
    #[arg(long)]
    retain_safe_private: bool,
    #[arg(long)]
    clean_descriptors: bool,
}

#[derive(clap::Args)]
struct AeArgs {
    /// The node's HTTP address.
    #[arg(long, env = "PACS_NODE_URL", default_value = "http://127.0.0.1:8080")]
    node: String,
    /// Admin token, when the node has one.
    #[arg(long, env = "PACS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: AeCommand,
}

#[derive(Subcommand)]
enum AeCommand {
    /// List the registered AEs.
    List,
    /// Register an AE (or change it with --update).
    Add {
        title: String,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, default_value = "")]
        description: String,
        /// Operations it may perform, comma-separated: echo,store,find,move,get.
        #[arg(long, value_delimiter = ',', default_value = "echo,store")]
        allow: Vec<String>,
        /// Roles, comma-separated (viewer, technologist...): the DIMSE operations their
        /// permissions cover are allowed too.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// It may receive C-MOVE sub-operations.
        #[arg(long)]
        move_destination: bool,
        /// Accept it only from its host.
        #[arg(long)]
        check_host: bool,
        /// Replace an AE that exists instead of failing.
        #[arg(long)]
        update: bool,
        /// Accept it only over TLS and connect to it over TLS (--host: the name its
        /// certificate carries).
        #[arg(long)]
        tls: bool,
    },
    /// Remove an AE.
    Remove { title: String },
    /// Run a C-ECHO from the node to an AE.
    Echo { title: String },
}

#[derive(clap::Args)]
struct UserArgs {
    #[command(flatten)]
    index: pacs::config::IndexArgs,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user.
    Add {
        name: String,
        /// Roles, comma-separated: viewer, technologist, radiologist, admin, ai-worker.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users and their roles.
    List,
    /// Remove a user.
    Remove { name: String },
    /// Change a user's password (which ends its login tokens).
    Passwd {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(clap::Args)]
struct AuditArgs {
    #[command(flatten)]
    index: pacs::config::IndexArgs,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Records, newest first, filtered like GET /api/audit.
    Search(Box<AuditSearch>),
    /// Walks the hash chain; exits non-zero, naming the records, when it is broken.
    Verify,
}

#[derive(clap::Args)]
struct AuditSearch {
    #[command(flatten)]
    params: pacs::audit::api::SearchParams,
    /// One JSON object per line (with the XML) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct KeyArgs {
    #[command(flatten)]
    index: pacs::config::IndexArgs,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key; prints it (once, and nothing else on standard output).
    Create {
        name: String,
        /// Roles, comma-separated (ai-worker for an AI worker's own key).
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
    /// List the keys (never the keys themselves).
    List,
    /// Revoke a key.
    Revoke { name: String },
}

#[derive(clap::Args)]
struct SynthArgs {
    /// Number of studies (one patient each).
    #[arg(long, default_value_t = 1)]
    studies: usize,
    /// Series per study.
    #[arg(long, default_value_t = 1)]
    series: usize,
    /// Slices per series.
    #[arg(long, default_value_t = 100)]
    slices: usize,
    /// CT or MR.
    #[arg(long, default_value = "CT")]
    modality: pacs_synth::SynthModality,
    /// Seed all UIDs and names derive from.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (files go to OUT/<study>/<series>/IMnnnn.dcm).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Study Date of every study (YYYYMMDD): with the same seed, the same patients scanned
    /// again on that date (new UIDs).
    #[arg(long)]
    study_date: Option<String>,
    /// Scale of the CT phantom's lungs, each axis, in (0.3, 1.2]: a structure that grows
    /// between follow-up studies (its volume scales with the cube).
    #[arg(long, default_value_t = 1.0)]
    lung_scale: f64,
    /// Rows and columns of every image (default 512 for CT, 256 for MR). The pixel spacing
    /// stays; the phantom is scaled to the field of view.
    #[arg(long, value_parser = clap::value_parser!(u16).range(16..=2048))]
    size: Option<u16>,
}

/// Logs go to standard error: standard output is the commands' answer (`pacs key create`
/// prints the key and nothing else). JSON lines (`--log-format json`) carry the fields of every
/// span they were written in: an HTTP request's `request_id`, an association's
/// `association_id`.
fn init_logs(format: pacs::config::LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        pacs::config::LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        pacs::config::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// dicom-rs builds its errors with snafu, which captures a whole stack trace for each when
/// `RUST_LIB_BACKTRACE` or, failing that, `RUST_BACKTRACE` is 1. Parsing meets such errors as a
/// matter of course (the end of a data set is one), so a node started with `RUST_BACKTRACE=1`
/// for its panics spent about 3% of its CPU unwinding during ingest. Unless the variable is
/// set, library backtraces are off; panics keep theirs (`RUST_BACKTRACE`).
fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // before any other thread exists: nothing reads the environment concurrently
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

fn main() -> std::process::ExitCode {
    quiet_library_backtraces();
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| pacs::config::name_the_variable(e).exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(cli.command, None | Some(Command::Serve(_))) {
        init_logs(pacs::config::LogFormat::Text);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        // `pacs` alone: `pacs serve` with no options (the environment and its file still apply)
        None => run_serve(
            &runtime,
            &pacs::config::ServeArgs::command()
                .try_get_matches_from(["pacs"])
                .unwrap_or_else(|e| pacs::config::name_the_variable(e).exit()),
        ),
        Some(Command::Serve(_)) => run_serve(
            &runtime,
            matches.subcommand_matches("serve").expect("serve matches"),
        ),
        Some(Command::Synth(args)) => run_synth(args),
        Some(Command::Ae(args)) => runtime.block_on(run_ae(args)),
        Some(Command::Measurements(args)) => runtime.block_on(run_measurements(args)),
        Some(Command::User(args)) => runtime.block_on(run_user(args)),
        Some(Command::Key(args)) => runtime.block_on(run_key(args)),
        Some(Command::Export(args)) => runtime.block_on(run_export(args)),
        Some(Command::Audit(args)) => runtime.block_on(run_audit(args)),
        Some(Command::Fsck(args)) => {
            let matches = matches.subcommand_matches("fsck").expect("fsck matches");
            return runtime.block_on(run_fsck(&args, matches));
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pacs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_serve(
    runtime: &tokio::runtime::Runtime,
    matches: &clap::ArgMatches,
) -> Result<(), Box<dyn std::error::Error>> {
    let args = pacs::config::ServeArgs::from_matches(matches)?;
    // before the settings are resolved, which may warn (an unreadable model manifest)
    init_logs(args.log_format.unwrap_or_default());
    let settings = pacs::config::Settings::resolve(&args)?;
    runtime.block_on(pacs::node::serve(settings))?;
    Ok(())
}

/// `pacs fsck`: findings on standard output, one per line, then a summary line.
async fn run_fsck(args: &FsckArgs, matches: &clap::ArgMatches) -> std::process::ExitCode {
    use std::io::Write;
    let opened = async {
        let serve = pacs::config::ServeArgs::from_matches(matches)?;
        let settings = pacs::config::Settings::resolve(&serve)?;
        let index =
            pacs::index::open_with(&settings.database_url, settings.database_timeout).await?;
        let storage = pacs::storage::Storage::open(&settings.storage)?;
        Ok::<_, Box<dyn std::error::Error>>((settings, index, storage))
    };
    let (settings, index, storage) = match opened.await {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("pacs fsck: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let options = pacs::fsck::Options {
        repair: args.repair,
        grace: std::time::Duration::from_secs(args.grace_secs),
        check_rows: true,
        max_objects: None,
        max_time: None,
        spill_dir: Some(settings.data_dir.join("tmp")),
    };
    let mut print = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let report = pacs::fsck::run(index, storage, &options, &mut print).await;
    print(&report.summary());
    std::process::ExitCode::from(report.exit_code())
}

/// The first line of standard input, without its line end.
fn password_from_stdin(given: bool) -> Result<String, Box<dyn std::error::Error>> {
    if !given {
        return Err("give the password on standard input with --password-stdin".into());
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err("no password on standard input".into());
    }
    Ok(password)
}

async fn open_accounts(
    index: &pacs::config::IndexArgs,
) -> Result<(pacs::auth::accounts::Accounts, CliAudit), Box<dyn std::error::Error>> {
    let url = index.database_url()?;
    let index = pacs::index::open(&url).await?;
    let audit = CliAudit(pacs::audit::Audit::start(index.clone(), "PACS", None));
    Ok((pacs::auth::accounts::Accounts::new(index), audit))
}

/// The audit trail of `pacs user` and `pacs key`: a change made on the command line is a
/// Security Alert like the same change through the admin API, the operating-system user as
/// the requestor (`os:NAME`).
struct CliAudit(pacs::audit::Audit);

impl CliAudit {
    async fn change(&self, type_code: pacs::audit::Code, object: &str, action: &str) {
        use pacs::audit::{AuditEvent, EventKind, ObjectRef, Participant};
        let os_user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let event = AuditEvent::new(EventKind::SecurityAlert)
            .type_code(type_code)
            .participant(Participant::user(&format!("os:{os_user}"), None).requestor())
            .participant(Participant::node("pacs-cli"))
            .object(ObjectRef::user(object).detail("Action", action));
        self.0.record(event).await;
        // durable before the command returns
        self.0.flush().await;
    }
}

fn time_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

async fn run_user(args: UserArgs) -> Result<(), Box<dyn std::error::Error>> {
    use pacs::audit::types::user_security_attributes_changed as changed;
    let (accounts, audit) = open_accounts(&args.index).await?;
    match args.command {
        UserCommand::Add {
            name,
            roles,
            password_stdin,
        } => {
            let password = password_from_stdin(password_stdin)?;
            let user = accounts.add_user(&name, &roles, &password).await?;
            audit.change(changed(), &name, "create user").await;
            eprintln!("added user {} ({})", user.name, user.roles.join(","));
        }
        UserCommand::List => {
            println!("{:<24}  {:<40}  CREATED", "NAME", "ROLES");
            for user in accounts.users().await? {
                println!(
                    "{:<24}  {:<40}  {}",
                    user.name,
                    user.roles.join(","),
                    time_of(user.created_at_ms)
                );
            }
        }
        UserCommand::Remove { name } => {
            accounts.remove_user(&name).await?;
            audit.change(changed(), &name, "delete user").await;
            eprintln!("removed user {name}");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let password = password_from_stdin(password_stdin)?;
            accounts.set_password(&name, &password).await?;
            audit.change(changed(), &name, "change password").await;
            eprintln!("changed the password of {name}; its login tokens no longer work");
        }
    }
    Ok(())
}

async fn run_key(args: KeyArgs) -> Result<(), Box<dyn std::error::Error>> {
    use pacs::audit::types::security_configuration as changed;
    let (accounts, audit) = open_accounts(&args.index).await?;
    match args.command {
        KeyCommand::Create { name, roles } => {
            let (key, info) = accounts.create_key(&name, &roles).await?;
            audit
                .change(changed(), &format!("key:{name}"), "create API key")
                .await;
            // the key alone on standard output, so that scripts can capture it
            println!("{key}");
            eprintln!(
                "created key {} ({}); it is shown only now",
                info.name,
                info.roles.join(",")
            );
        }
        KeyCommand::List => {
            println!(
                "{:<24}  {:<40}  {:<25}  REVOKED",
                "NAME", "ROLES", "CREATED"
            );
            for key in accounts.keys().await? {
                println!(
                    "{:<24}  {:<40}  {:<25}  {}",
                    key.name,
                    key.roles.join(","),
                    time_of(key.created_at_ms),
                    key.revoked_at_ms.map(time_of).unwrap_or_else(|| "-".into())
                );
            }
        }
        KeyCommand::Revoke { name } => {
            accounts.revoke_key(&name).await?;
            audit
                .change(changed(), &format!("key:{name}"), "revoke API key")
                .await;
            eprintln!("revoked key {name}");
        }
    }
    Ok(())
}

fn run_synth(args: SynthArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = pacs_synth::SynthOptions::new(args.modality);
    opts.studies = args.studies;
    opts.series_per_study = args.series;
    opts.slices = args.slices;
    opts.seed = args.seed;
    opts.out = args.out;
    opts.study_date = args.study_date;
    opts.lung_scale = args.lung_scale;
    if let Some(size) = args.size {
        opts.rows = size;
        opts.columns = size;
    }
    let started = std::time::Instant::now();
    let summary = pacs_synth::synthesise(&opts)?;
    println!(
        "wrote {} instances ({} bytes) to {} in {:.1} s",
        summary.instances.len(),
        summary.bytes,
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn run_measurements(args: MeasurementsArgs) -> Result<(), Box<dyn std::error::Error>> {
    let base = args.node.trim_end_matches('/');
    let mut url = reqwest::Url::parse(&format!("{base}/api/patients/"))?;
    url.path_segments_mut()
        .map_err(|_| "the node URL cannot take a path")?
        .pop_if_empty()
        .push(&args.patient_id)
        .push("measurements");
    for (k, v) in [
        ("concept", &args.concept),
        ("tracking_id", &args.tracking_id),
        ("from", &args.from),
        ("to", &args.to),
    ] {
        if let Some(v) = v {
            url.query_pairs_mut().append_pair(k, v);
        }
    }
    let mut request = reqwest::Client::new().get(url);
    if let Some(t) = &args.token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        return Err(format!("{status}: {message}").into());
    }
    let tracks: Vec<pacs::measurements::Track> = serde_json::from_str(&text)?;
    print!("{}", pacs::measurements::table(&tracks));
    Ok(())
}

async fn run_ae(args: AeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let base = args.node.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let with_token = |rb: reqwest::RequestBuilder| match &args.token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    };
    let response = match &args.command {
        AeCommand::List => {
            with_token(client.get(format!("{base}/api/aes")))
                .send()
                .await?
        }
        AeCommand::Add {
            title,
            host,
            port,
            description,
            allow,
            roles,
            move_destination,
            check_host,
            update,
            tls,
        } => {
            let body = serde_json::json!({
                "title": title, "host": host, "port": port, "description": description,
                "allow": allow, "roles": roles, "move_destination": move_destination,
                "check_host": check_host, "tls": tls,
            });
            let rb = if *update {
                client.put(format!("{base}/api/aes/{title}"))
            } else {
                client.post(format!("{base}/api/aes"))
            };
            with_token(rb).json(&body).send().await?
        }
        AeCommand::Remove { title } => {
            with_token(client.delete(format!("{base}/api/aes/{title}")))
                .send()
                .await?
        }
        AeCommand::Echo { title } => {
            with_token(client.post(format!("{base}/api/aes/{title}/echo")))
                .send()
                .await?
        }
    };
    let status = response.status();
    let text = response.text().await?;
    let value: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    if !status.is_success() {
        let message = value
            .as_ref()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.clone());
        return Err(format!("{status}: {message}").into());
    }
    match (&args.command, value) {
        (AeCommand::List, Some(serde_json::Value::Array(aes))) => {
            println!(
                "{:<16}  {:<24}  {:>5}  {:<26}  {:<20}  flags",
                "TITLE", "HOST", "PORT", "ALLOW", "ROLES"
            );
            for ae in aes {
                let mut flags = Vec::new();
                if ae["move_destination"].as_bool() == Some(true) {
                    flags.push("move-destination");
                }
                if ae["check_host"].as_bool() == Some(true) {
                    flags.push("check-host");
                }
                if ae["tls"].as_bool() == Some(true) {
                    flags.push("tls");
                }
                let allow: Vec<&str> = ae["allow"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                let roles: Vec<&str> = ae["roles"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                println!(
                    "{:<16}  {:<24}  {:>5}  {:<26}  {:<20}  {}",
                    ae["title"].as_str().unwrap_or_default(),
                    ae["host"].as_str().unwrap_or("-"),
                    ae["port"]
                        .as_u64()
                        .map(|p| p.to_string())
                        .unwrap_or("-".into()),
                    allow.join(","),
                    roles.join(","),
                    flags.join(",")
                );
            }
        }
        (AeCommand::Echo { title }, Some(v)) => {
            println!(
                "C-ECHO {title}: success, {:.1} ms",
                v["round_trip_ms"].as_f64().unwrap_or_default()
            );
        }
        (AeCommand::Remove { title }, _) => println!("removed {title}"),
        (_, Some(v)) => println!("{}", serde_json::to_string_pretty(&v)?),
        (_, None) => {}
    }
    Ok(())
}

async fn run_export(args: ExportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let base = args.node.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let with_token = |rb: reqwest::RequestBuilder| match &args.token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    };
    let destination = match (&args.to_ae, &args.to_stow) {
        (Some(title), _) => serde_json::json!({ "type": "ae", "title": title }),
        (_, Some(url)) => serde_json::json!({ "type": "stow", "url": url }),
        _ => serde_json::json!({ "type": "zip" }),
    };
    let body = serde_json::json!({
        "studies": args.studies,
        "destination": destination,
        "options": {
            "retain_longitudinal_modified_dates": args.retain_longitudinal_modified_dates,
            "retain_patient_characteristics": args.retain_patient_characteristics,
            "retain_device_identity": args.retain_device_identity,
            "retain_institution_identity": args.retain_institution_identity,
            "retain_uids": args.retain_uids,
            "retain_safe_private": args.retain_safe_private,
            "clean_descriptors": args.clean_descriptors,
        },
    });
    async fn answer(
        response: reqwest::Response,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let status = response.status();
        let text = response.text().await?;
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if !status.is_success() {
            let message = value["error"].as_str().map(str::to_string).unwrap_or(text);
            return Err(format!("{status}: {message}").into());
        }
        Ok(value)
    }
    let created = answer(
        with_token(client.post(format!("{base}/api/exports")))
            .json(&body)
            .send()
            .await?,
    )
    .await?;
    let id = created["id"]
        .as_i64()
        .ok_or("the node did not say the export's id")?;
    eprintln!("export {id} queued");
    let job = loop {
        let job = answer(
            with_token(client.get(format!("{base}/api/exports/{id}")))
                .send()
                .await?,
        )
        .await?;
        let state = job["state"].as_str().unwrap_or_default().to_string();
        eprintln!(
            "export {id}: {state}, {}/{} instances, {} failed, {} bytes",
            job["instances_done"],
            job["instances_total"],
            job["instances_failed"],
            job["bytes_done"]
        );
        if !matches!(state.as_str(), "queued" | "running") {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    if let Some(errors) = job["errors"].as_array() {
        for e in errors {
            eprintln!(
                "  {}: {}",
                e["sop_instance_uid"].as_str().unwrap_or("-"),
                e["error"].as_str().unwrap_or("-")
            );
        }
    }
    if job["state"] != "succeeded" {
        return Err(format!(
            "export {id} {}: {}",
            job["state"].as_str().unwrap_or("?"),
            job["error"].as_str().unwrap_or("")
        )
        .into());
    }
    let Some(out) = &args.out else {
        return Ok(());
    };
    let response = with_token(client.get(format!("{base}/api/exports/{id}/archive")))
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(format!("{status}: {}", response.text().await?).into());
    }
    let archive = response.bytes().await?;
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        std::fs::write(out, &archive)?;
        eprintln!("wrote {} ({} bytes)", out.display(), archive.len());
    } else {
        let entries = pacs::export::zip_archive::read_entries(std::io::Cursor::new(&archive[..]))?;
        for (name, data) in &entries {
            let path = out.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, data)?;
        }
        eprintln!("unpacked {} files into {}", entries.len(), out.display());
    }
    Ok(())
}

async fn run_audit(args: AuditArgs) -> Result<(), Box<dyn std::error::Error>> {
    let url = args.index.database_url()?;
    let index = pacs::index::open(&url).await?;
    match args.command {
        AuditCommand::Search(search) => {
            let AuditSearch { params, json } = *search;
            let filter = params.filter()?;
            let records = index.audit_search(&filter).await?;
            if json {
                for r in &records {
                    println!("{}", pacs::audit::api::record_json(r));
                }
            } else {
                println!(
                    "{:>8}  {:<24}  {:<22}  {:>3}  {:<20}  {:<16}  {:<15}  {:<16}  STUDIES",
                    "SEQ", "TIME", "EVENT", "OUT", "USER", "AE", "ADDRESS", "PATIENT"
                );
                for r in &records {
                    let r2 = &r.record;
                    println!(
                        "{:>8}  {:<24}  {:<22}  {:>3}  {:<20}  {:<16}  {:<15}  {:<16}  {}",
                        r.seq,
                        pacs::audit::xml::date_time(r2.time_ms),
                        r2.event,
                        r2.outcome,
                        r2.user,
                        r2.ae,
                        r2.address,
                        r2.patient_id,
                        r2.study_uids.join(",")
                    );
                }
            }
        }
        AuditCommand::Verify => {
            let report = index.audit_verify().await?;
            if report.breaks.is_empty() {
                println!(
                    "audit chain intact: {} records, last sequence number {}",
                    report.records, report.last_seq
                );
            } else {
                for b in &report.breaks {
                    eprintln!("audit chain broken at record {}: {}", b.seq, b.reason);
                }
                return Err(format!(
                    "the audit chain is broken in {} place(s) ({} records read)",
                    report.breaks.len(),
                    report.records
                )
                .into());
            }
        }
    }
    Ok(())
}
