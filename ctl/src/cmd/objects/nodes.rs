//! `skiffctl cordon|uncordon|drain NODE`. A drain evicts (Kubernetes' Eviction: refused
//! while a PodDisruptionBudget allows no disruption, and retried), or with
//! `--disable-eviction` deletes.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use skiff_proto::objects::Selection;
use skiff_proto::{Client, ClientError};

use super::{parse, ExitWith};

#[derive(Args)]
pub struct NodeArgs {
    /// Node names.
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

#[derive(Args)]
pub struct DrainArgs {
    /// Node names.
    #[arg(required = true)]
    pub nodes: Vec<String>,
    /// How long to wait for the pods to be gone.
    #[arg(long, default_value = "120s", value_parser = skiff_proto::duration::parse)]
    pub timeout: Duration,
    /// Seconds each pod gets to stop (default: its own).
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// Delete the pods instead of evicting them: disruption budgets are not asked.
    #[arg(long)]
    pub disable_eviction: bool,
    /// Leave DaemonSet pods in place (without it, a node running one is not drained).
    #[arg(long)]
    pub ignore_daemonsets: bool,
}

/// How long a drain waits before evicting again a pod whose budget refused it.
const EVICTION_RETRY: Duration = Duration::from_secs(2);

/// A pod's namespace and name, and whether a DaemonSet controls it.
fn pod_on_node(p: &Value) -> (String, String, bool) {
    let s = |ptr: &str| {
        p.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let daemon = p
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["controller"] == true && r["kind"] == "DaemonSet")
        });
    (s("/metadata/namespace"), s("/metadata/name"), daemon)
}

async fn set_unschedulable(client: &Client, node: &str, on: bool) -> anyhow::Result<()> {
    let current = parse(&client.get_object("nodes", "", node, false).await?.object)?;
    let already = current
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        == Some(true);
    if already == on {
        println!(
            "node/{node} already {}",
            if on { "cordoned" } else { "uncordoned" }
        );
        return Ok(());
    }
    let patch =
        json!({"spec": {"unschedulable": if on { Value::Bool(true) } else { Value::Null }}});
    client
        .patch_object("nodes", "", node, serde_json::to_vec(&patch)?, false)
        .await?;
    println!("node/{node} {}", if on { "cordoned" } else { "uncordoned" });
    Ok(())
}

pub async fn cordon(client: &Client, args: NodeArgs, on: bool) -> anyhow::Result<()> {
    for n in &args.nodes {
        set_unschedulable(client, n, on).await?;
    }
    Ok(())
}

pub async fn drain(client: &Client, args: DrainArgs) -> anyhow::Result<()> {
    for node in &args.nodes {
        set_unschedulable(client, node, true).await?;
        let sel = Selection {
            fields: format!("spec.nodeName={node}"),
            ..Default::default()
        };
        let mut pending = Vec::new();
        let mut daemons = Vec::new();
        for b in &client.list_objects("pods", &sel).await?.items {
            let (ns, name, daemon) = pod_on_node(&parse(b)?);
            if daemon {
                daemons.push(format!("{ns}/{name}"));
            } else {
                pending.push((ns, name));
            }
        }
        if !daemons.is_empty() && !args.ignore_daemonsets {
            return Err(ExitWith {
                code: 1,
                message: format!(
                    "node/{node}: cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {}",
                    daemons.join(", ")
                ),
            }
            .into());
        }
        let params = skiff_proto::objects::DeleteParams {
            grace_period_seconds: args.grace_period,
            evict: !args.disable_eviction,
            ..Default::default()
        };
        let started = Instant::now();
        while !pending.is_empty() {
            let mut refused = Vec::new();
            for (ns, name) in pending {
                match client.delete_object("pods", &ns, &name, &params).await {
                    Ok(_) => println!("evicting pod {ns}/{name}"),
                    Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => {}
                    Err(ClientError::Rejected(s)) if s.code() == tonic::Code::ResourceExhausted => {
                        eprintln!(
                            "error when evicting pods/{name:?} -n {ns:?} (will retry after {}s): {}",
                            EVICTION_RETRY.as_secs(),
                            s.message()
                        );
                        refused.push((ns, name));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            pending = refused;
            if !pending.is_empty() {
                if started.elapsed() > args.timeout {
                    return Err(ExitWith {
                        code: 1,
                        message: format!(
                            "node/{node}: {} pod(s) not evicted after {:?}: their disruption budgets allow none",
                            pending.len(),
                            args.timeout
                        ),
                    }
                    .into());
                }
                tokio::time::sleep(EVICTION_RETRY).await;
            }
        }
        loop {
            let left = client
                .list_objects("pods", &sel)
                .await?
                .items
                .iter()
                .filter_map(|b| parse(b).ok())
                .filter(|p| !pod_on_node(p).2)
                .count();
            if left == 0 {
                break;
            }
            if started.elapsed() > args.timeout {
                return Err(ExitWith {
                    code: 1,
                    message: format!(
                        "node/{node}: {left} pod(s) still there after {:?}",
                        args.timeout
                    ),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("node/{node} drained");
    }
    Ok(())
}
