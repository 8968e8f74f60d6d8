//! `pacs-ai-worker`: leases analysis jobs from a PACS node, runs the matching model on the
//! series and stores a DICOM Segmentation and a TID 1500 SR back into the study.
//!
//! Settings come from the command line, then the environment (`PACS_AI_*`, `PACS_WORKER_TOKEN`),
//! then a TOML file (`--config`, same keys with underscores), then the defaults.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pacs_ai_worker::inference::RuntimeOptions;
use pacs_ai_worker::worker::{run, WorkerSettings};
use serde::Deserialize;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(name = "pacs-ai-worker", version, about)]
struct Cli {
    /// The node's HTTP address, e.g. http://127.0.0.1:8042.
    #[arg(long, env = "PACS_AI_NODE")]
    node: Option<String>,
    /// The node's worker token (`pacs serve --worker-token`).
    #[arg(long, env = "PACS_WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Folder of model folders (default: the shipped `ai-worker/models` of this checkout).
    #[arg(long, env = "PACS_AI_MODELS")]
    models: Option<PathBuf>,
    /// Jobs processed at the same time (default 1).
    #[arg(long, env = "PACS_AI_CONCURRENCY")]
    concurrency: Option<usize>,
    /// ONNX Runtime threads per inference (default 0: one per core).
    #[arg(long, env = "PACS_AI_THREADS")]
    threads: Option<usize>,
    /// Try the CUDA execution provider (needs the onnxruntime-gpu library); falls back to the CPU.
    #[arg(long, env = "PACS_AI_CUDA")]
    cuda: Option<bool>,
    /// libonnxruntime to load (default: ORT_DYLIB_PATH, else the onnxruntime Python wheel's).
    #[arg(long, env = "PACS_AI_ONNXRUNTIME")]
    onnxruntime: Option<PathBuf>,
    /// This worker's name in job records (default: host name and process id).
    #[arg(long, env = "PACS_AI_WORKER_ID")]
    worker_id: Option<String>,
    /// Lease length asked for each job; heartbeats renew it every third of it (default 60).
    #[arg(long, env = "PACS_AI_LEASE_SECS")]
    lease_secs: Option<u64>,
    /// How often an idle slot asks for work, in milliseconds (default 1000).
    #[arg(long, env = "PACS_AI_POLL_MS")]
    poll_ms: Option<u64>,
    /// Path of the node's DICOMweb service (default /dicom-web).
    #[arg(long, env = "PACS_AI_DICOMWEB_ROOT")]
    dicomweb_root: Option<String>,
    /// After SIGTERM, how long a job in progress may run before it is given back (default 20).
    #[arg(long, env = "PACS_AI_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: Option<u64>,
    /// TOML file with any of the settings above.
    #[arg(long, env = "PACS_AI_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    node: Option<String>,
    token: Option<String>,
    models: Option<PathBuf>,
    concurrency: Option<usize>,
    threads: Option<usize>,
    cuda: Option<bool>,
    onnxruntime: Option<PathBuf>,
    worker_id: Option<String>,
    lease_secs: Option<u64>,
    poll_ms: Option<u64>,
    dicomweb_root: Option<String>,
    shutdown_grace_secs: Option<u64>,
}

/// The shipped models of a checkout: from the working directory (the repository or
/// `ai-worker/`), next to the binary (`target/<profile>/`), or where this crate was built.
fn default_models_dir() -> PathBuf {
    let mut candidates = vec![PathBuf::from("ai-worker/models"), PathBuf::from("models")];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(root) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            candidates.push(root.join("ai-worker/models"));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

fn settings(cli: Cli) -> Result<WorkerSettings, String> {
    let file: FileSettings = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileSettings::default(),
    };
    let node = cli
        .node
        .or(file.node)
        .ok_or("--node is required (the node's HTTP address, e.g. http://127.0.0.1:8042)")?;
    let token = cli
        .token
        .or(file.token)
        .ok_or("--token is required (the node's --worker-token)")?;
    // Test hook, not a setting: hold each leased job this long before working on it.
    let pause_ms = std::env::var("PACS_AI_TEST_PAUSE_AFTER_LEASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(WorkerSettings {
        node,
        token,
        dicomweb_root: cli
            .dicomweb_root
            .or(file.dicomweb_root)
            .unwrap_or_else(|| "/dicom-web".into()),
        models_dir: cli
            .models
            .or(file.models)
            .unwrap_or_else(default_models_dir),
        worker_id: cli
            .worker_id
            .or(file.worker_id)
            .unwrap_or_else(default_worker_id),
        concurrency: cli.concurrency.or(file.concurrency).unwrap_or(1).max(1),
        runtime: RuntimeOptions {
            dylib_path: cli.onnxruntime.or(file.onnxruntime),
            intra_threads: cli.threads.or(file.threads).unwrap_or(0),
            cuda: cli.cuda.or(file.cuda).unwrap_or(false),
            cuda_device: 0,
        },
        lease_secs: cli.lease_secs.or(file.lease_secs).unwrap_or(60).max(1),
        poll_interval: Duration::from_millis(cli.poll_ms.or(file.poll_ms).unwrap_or(1000)),
        shutdown_grace: Duration::from_secs(
            cli.shutdown_grace_secs
                .or(file.shutdown_grace_secs)
                .unwrap_or(20),
        ),
        pause_after_lease: Duration::from_millis(pause_ms),
    })
}

/// Turns true on SIGTERM or Ctrl-C.
async fn watch_signals(tx: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stop requested: finishing or giving back the jobs in progress");
    let _ = tx.send(true);
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let settings = match settings(Cli::parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pacs-ai-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pacs-ai-worker: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(watch_signals(tx));
        run(settings, rx).await
    });
    // A job given back at shutdown may still be computing on a blocking thread: do not wait
    // for it (dropping the runtime would).
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pacs-ai-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
