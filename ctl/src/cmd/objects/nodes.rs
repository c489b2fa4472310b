//! `skiffctl cordon|uncordon|drain NODE`.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use skiff_proto::objects::Selection;
use skiff_proto::Client;

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
        let pods = client.list_objects("pods", &sel).await?.items;
        let params = skiff_proto::objects::DeleteParams {
            grace_period_seconds: args.grace_period,
            ..Default::default()
        };
        for b in &pods {
            let p = parse(b)?;
            let s = |ptr: &str| {
                p.pointer(ptr)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            println!(
                "evicting pod {}/{}",
                s("/metadata/namespace"),
                s("/metadata/name")
            );
            let _ = client
                .delete_object(
                    "pods",
                    &s("/metadata/namespace"),
                    &s("/metadata/name"),
                    &params,
                )
                .await;
        }
        let started = Instant::now();
        loop {
            let left = client.list_objects("pods", &sel).await?.items.len();
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
