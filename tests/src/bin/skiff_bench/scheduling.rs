//! `skiff-bench scheduling`: Deployments onto hollow nodes with three control nodes — pods
//! bound per second, the time from apply to every pod Running, and each control node's
//! memory at that scale.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_proto::objects::{Selection, WatchItem};

use super::median;

#[derive(clap::Args, Clone)]
pub struct SchedulingArgs {
    /// Deployments to create.
    #[arg(long, default_value_t = 100)]
    deployments: usize,
    /// Replicas of each.
    #[arg(long, default_value_t = 100)]
    replicas: usize,
    /// Hollow nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Runs (each on a fresh cluster); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

struct RunResult {
    binds_per_sec: f64,
    apply_to_running: Duration,
    apply_to_bound: Duration,
    rss_mib: Vec<f64>,
}

async fn one_run(args: &SchedulingArgs) -> anyhow::Result<RunResult> {
    let (cluster, client, hollow) = super::hollow_cluster::start(args.nodes, "32", "128Gi").await?;
    let total = args.deployments * args.replicas;
    let start_rev = client.status().await?.revision;
    let mut watch = client.watch_objects("pods", &Selection::default(), start_rev);

    let started = Instant::now();
    let creates = (0..args.deployments).map(|i| {
        let client = client.clone();
        let replicas = args.replicas;
        async move {
            let name = format!("app-{i}");
            let d = json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "c", "image": "bench:1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
            });
            client.apply_object("default", serde_json::to_vec(&d).unwrap_or_default()).await
        }
    });
    for r in futures::future::join_all(creates).await {
        r?;
    }
    let mut bound = HashSet::new();
    let mut running = HashSet::new();
    let (mut first_bind, mut last_bind, mut all_running) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while all_running.is_none() {
        let item = tokio::time::timeout_at(deadline.into(), watch.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "timed out: {} bound, {} running of {total}",
                    bound.len(),
                    running.len()
                )
            })?;
        let Some(item) = item else {
            anyhow::bail!("watch ended")
        };
        let bytes = match item? {
            WatchItem::Added(b) | WatchItem::Modified(b) => b,
            _ => continue,
        };
        let p: Value = serde_json::from_slice(&bytes)?;
        let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
        if p["spec"]["nodeName"].is_string() && bound.insert(name.clone()) {
            first_bind.get_or_insert_with(Instant::now);
            if bound.len() == total {
                last_bind = Some(Instant::now());
            }
        }
        if p["status"]["phase"] == "Running" && running.insert(name) && running.len() == total {
            all_running = Some(started.elapsed());
        }
    }
    let (Some(first), Some(last)) = (first_bind, last_bind) else {
        anyhow::bail!("no binds seen")
    };
    let rss_mib = cluster
        .members
        .values()
        .map(|m| m.rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0))
        .collect();
    drop(hollow);
    Ok(RunResult {
        binds_per_sec: total as f64 / (last - first).as_secs_f64().max(0.001),
        apply_to_running: all_running.unwrap_or_default(),
        apply_to_bound: last - started,
        rss_mib,
    })
}

pub async fn run(args: SchedulingArgs) -> anyhow::Result<()> {
    println!(
        "# skiff-bench scheduling: {} Deployments x {} replicas onto {} hollow nodes, 3 control nodes, {} runs",
        args.deployments, args.replicas, args.nodes, args.runs
    );
    println!(
        "{:>4} {:>12} {:>16} {:>18} {:>24}",
        "run", "binds/s", "apply→all bound", "apply→all Running", "control node RSS MiB"
    );
    let mut results = Vec::new();
    for run in 0..args.runs {
        let r = one_run(&args).await?;
        println!(
            "{:>4} {:>12.0} {:>15.1}s {:>17.1}s {:>24}",
            run + 1,
            r.binds_per_sec,
            r.apply_to_bound.as_secs_f64(),
            r.apply_to_running.as_secs_f64(),
            r.rss_mib
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        results.push(r);
    }
    println!(
        "median: {:.0} pods bound/s (target ≥ 1,000), apply → all Running {:.1}s, control node RSS up to {:.0} MiB",
        median(results.iter().map(|r| r.binds_per_sec).collect()),
        median(results.iter().map(|r| r.apply_to_running.as_secs_f64()).collect()),
        median(results.iter().map(|r| r.rss_mib.iter().copied().fold(0.0, f64::max)).collect())
    );
    Ok(())
}
