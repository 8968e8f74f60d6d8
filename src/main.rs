//! `pacs`: the node's command line. `pacs` alone (or `pacs serve`) runs the node.

use clap::{Parser, Subcommand};
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
    Serve(pacs::config::ServeArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        None => run_serve(&runtime, pacs::config::ServeArgs::default_from_env()),
        Some(Command::Serve(args)) => run_serve(&runtime, args),
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
