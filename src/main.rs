//! `pacs`: the node's command line. `pacs` alone (or `pacs serve`) runs the node.

use clap::{Parser, Subcommand};

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
    /// Run the node (the default).
    Serve(Box<pacs::config::ServeArgs>),
    /// Write synthetic CT or MR series (realistic geometry, deterministic UIDs) for tests,
    /// demos and benchmarks.
    Synth(SynthArgs),
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
    modality: pacs::synth::SynthModality,
    /// Seed all UIDs and names derive from.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (files go to OUT/<study>/<series>/IMnnnn.dcm).
    #[arg(long)]
    out: std::path::PathBuf,
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        None => run_serve(&runtime, pacs::config::ServeArgs::default_from_env()),
        Some(Command::Serve(args)) => run_serve(&runtime, *args),
        Some(Command::Synth(args)) => run_synth(args),
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
    args: pacs::config::ServeArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let settings = pacs::config::Settings::resolve(&args)?;
    runtime.block_on(pacs::node::serve(settings))?;
    Ok(())
}

fn run_synth(args: SynthArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = pacs::synth::SynthOptions::new(args.modality);
    opts.studies = args.studies;
    opts.series_per_study = args.series;
    opts.slices = args.slices;
    opts.seed = args.seed;
    opts.out = args.out;
    let started = std::time::Instant::now();
    let summary = pacs::synth::synthesise(&opts)?;
    println!(
        "wrote {} instances ({} bytes) to {} in {:.1} s",
        summary.instances.len(),
        summary.bytes,
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
