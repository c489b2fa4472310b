//! `skiff`: the server binary. `skiff control` runs a control node, `skiff node` a node agent;
//! `skiff up` runs a local HA cluster.

mod control_cmd;
mod hollow_cmd;
mod join;
mod node_cmd;
mod recover_cmd;
mod restore_cmd;
mod staging;
mod up;

use clap::{Parser, Subcommand};

// sled rewrites whole tree nodes on every change; glibc's allocator spent a quarter of a
// control node's CPU on that churn (perf). jemalloc costs a fraction of it and, unlike
// mimalloc, gives memory back once a burst is over (its background threads purge pages
// unused for a second; `.cargo/config.toml` sets that, `_RJEM_MALLOC_CONF` overrides it), so
// a member's resident memory follows what it holds rather than its largest burst. The
// feature `system-allocator` keeps glibc's, which heap profilers (heaptrack) see.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: a container control plane with its own replicated store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one control node.
    Control(Box<control_cmd::ControlArgs>),
    /// Run a local HA cluster (three control nodes on loopback, data under ./.skiff/).
    Up(up::UpArgs),
    /// Run the node agent: the pods bound to this node, on containerd.
    Node(Box<node_cmd::NodeArgs>),
    /// Simulate nodes (register, renew leases, report bound pods Running; no containers).
    HollowNode(hollow_cmd::HollowArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn,h2=warn,tower=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // A network namespace is joined per thread: before the runtime starts any.
    if let Some(ns) = match &cli.command {
        Command::Node(args) => args.netns.as_ref(),
        _ => None,
    } {
        if let Err(e) = node_cmd::join_netns(ns) {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Control(args) => control_cmd::run(*args).await,
            Command::Up(args) => up::run(args).await,
            Command::HollowNode(args) => hollow_cmd::run(args).await,
            Command::Node(args) => node_cmd::run(*args).await,
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
