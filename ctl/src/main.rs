//! `skiffctl`: the command-line client of a Skiff cluster.

mod cmd;
mod endpoints;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiffctl",
    version,
    about = "Command-line client for Skiff clusters"
)]
struct Cli {
    /// Control node addresses (host:port,...); overrides the config file.
    #[arg(long, global = true, env = "SKIFF_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Client config file; default: $SKIFFCONFIG, ./.skiff/config.json, ~/.skiff/config.json.
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// Context of the config file to use.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read and write keys of the replicated store.
    #[command(subcommand)]
    Kv(cmd::kv::KvCommand),
    /// Inspect and change the control plane's membership.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let endpoints = endpoints::resolve(
            &cli.endpoints,
            cli.config.as_deref(),
            cli.context.as_deref(),
        )?;
        let client = skiff_proto::Client::new(&endpoints)?;
        match cli.command {
            Command::Kv(c) => cmd::kv::run(&client, c).await,
            Command::Cluster(c) => cmd::cluster::run(&client, c).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
