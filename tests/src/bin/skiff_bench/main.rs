//! `skiff-bench`: benchmarks that compare Skiff with its peers side by side in one run.
//!
//! `skiff-bench store` measures Skiff's store against etcd (see `store.rs`),
//! `skiff-bench objects` measures the object API (see `objects.rs`), `skiff-bench scheduling`
//! the scheduler (`scheduling.rs`), `skiff-bench pods` pods on a real node (`pods.rs`),
//! `skiff-bench watch` watch fan-out against etcd's and the leader's memory (`watch.rs`).

use std::time::Duration;

use clap::{Parser, Subcommand};

mod authz;
mod backup;
mod controllers;
mod etcd;
mod hollow_cluster;
mod network;
mod objects;
mod pods;
mod proxy;
mod rolling;
mod scheduling;
mod store;
mod watch;
mod workloads;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Skiff's store against etcd: writes, reads, failover.
    Store(store::StoreArgs),
    /// The object API: create overhead, watch fan-out, list latency, memory.
    Objects(objects::ObjectsArgs),
    /// The scheduler and controllers: Deployments onto hollow nodes.
    Scheduling(scheduling::SchedulingArgs),
    /// The controllers under a steady churn at two cluster sizes: cost follows the work.
    Controllers(controllers::ControllersArgs),
    /// Pods on a real node: create-to-Running latency and the agent's memory.
    Pods(pods::PodsArgs),
    /// The service proxy on a real node: rule latency, full sync, ClusterIP throughput.
    Proxy(proxy::ProxyArgs),
    /// What enforcing roles costs object creates (roles vs always-allow, paired).
    Authz(authz::AuthzArgs),
    /// The pod network and cluster DNS on real nodes: throughput, DNS latency, propagation.
    Network(network::NetworkArgs),
    /// Watch fan-out against etcd's, and the leader's memory at 10,000 pods.
    Watch(watch::WatchArgs),
    /// A rolling restart of three members under writes: the longest write stall, SIGTERM
    /// (leadership handed over) against kill -9.
    RollingRestart(rolling::RollingArgs),
    /// DaemonSet rollouts and Job completions on hollow nodes.
    Workloads(workloads::WorkloadsArgs),
    /// Backup and restore of a large store against the disk's own write speed, with memory.
    Backup(backup::BackupArgs),
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

/// The last line of a benchmark's output: whether anything failed.
fn print_verdict(errors: usize, what: &str) {
    if errors == 0 {
        println!("verdict: no errors");
    } else {
        println!("verdict: {errors} {what}: see the tables");
    }
}

/// Wait until the cluster has made its built-in namespaces (shortly after its first leader).
async fn wait_for_default_namespace(client: &skiff_proto::Client) {
    while client
        .get_object("namespaces", "", "default", false)
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Store(a) => store::run(a).await,
        Cmd::Objects(a) => objects::run(a).await,
        Cmd::Authz(a) => authz::run(a).await,
        Cmd::Scheduling(a) => scheduling::run(a).await,
        Cmd::Controllers(a) => controllers::run(a).await,
        Cmd::Pods(a) => pods::run(a).await,
        Cmd::Proxy(a) => proxy::run(a).await,
        Cmd::Network(a) => network::run(a).await,
        Cmd::Watch(a) => watch::run(a).await,
        Cmd::RollingRestart(a) => rolling::run(a).await,
        Cmd::Backup(a) => backup::run(a).await,
        Cmd::Workloads(a) => workloads::run(a).await,
    }
}
