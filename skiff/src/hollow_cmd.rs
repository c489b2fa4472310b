//! `skiff hollow-node`: simulated nodes for tests and scale benchmarks (no containers run).

use std::time::Duration;

use clap::Args;
use skiff_control::hollow::{self, HollowConfig};
use skiff_proto::config_file::ConfigFile;
use skiff_proto::{Client, ClientConfig};

#[derive(Args)]
pub struct HollowArgs {
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Control node addresses (host:port,...); default: those of `--config`.
    #[arg(long, env = "SKIFF_ENDPOINTS", value_delimiter = ',')]
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
    /// A client config whose current context's credentials to connect with (mutual TLS).
    #[arg(long, env = "SKIFFCONFIG")]
    pub config: Option<std::path::PathBuf>,
}

pub async fn run(args: HollowArgs) -> anyhow::Result<()> {
    let (mut endpoints, credentials) = match &args.config {
        Some(path) => {
            let file = ConfigFile::load(path)?;
            let context = file.context(None, path)?;
            (context.endpoints.clone(), context.credentials.clone())
        }
        None => (Vec::new(), None),
    };
    if !args.endpoints.is_empty() {
        endpoints.clone_from(&args.endpoints);
    }
    if endpoints.is_empty() {
        anyhow::bail!("--endpoints: required without --config");
    }
    let client = Client::with_config(
        &endpoints,
        ClientConfig {
            tls: credentials
                .map(skiff_proto::tls::LiveCredentials::new)
                .transpose()?,
            ..Default::default()
        },
    )?;
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
