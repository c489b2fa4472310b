//! `skiff hollow-node`: simulated nodes for tests and scale benchmarks (no containers run).

use std::time::Duration;

use clap::Args;
use skiff_control::hollow::{self, HollowConfig};
use skiff_proto::Client;

#[derive(Args)]
pub struct HollowArgs {
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Control node addresses (host:port,...).
    #[arg(long, env = "SKIFF_ENDPOINTS", value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Node names are PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "hollow")]
    pub prefix: String,
    /// Allocatable cpu per node.
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Allocatable memory per node.
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    /// Pods per node.
    #[arg(long, default_value_t = 110)]
    pub pods: u32,
    /// Seconds between lease renewals.
    #[arg(long, default_value_t = 2)]
    pub renew_seconds: u64,
}

pub async fn run(args: HollowArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoints)?;
    let cfg = HollowConfig {
        count: args.count,
        prefix: args.prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        renew_every: Duration::from_secs(args.renew_seconds.max(1)),
        lease_namespace: "skiff-system".into(),
    };
    tokio::select! {
        _ = hollow::run(client, cfg) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
