//! `skiffctl logs`, `skiffctl exec` and `skiffctl image import`: they reach the node agent of
//! the pod (or the named node) through any control node.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use futures::StreamExt;
use skiff_proto::pb::{ExecRequest, LogsRequest};
use skiff_proto::Client;

use super::objects::ExitWith;

#[derive(Args)]
pub struct LogsArgs {
    /// The pod, or a workload's first pod: `job/NAME`, `deployment/NAME`, ...
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Keep printing new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous run of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines.
    #[arg(long, default_value_t = -1)]
    pub tail: i64,
}

#[derive(Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the first).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Seconds before the command is killed.
    #[arg(long, default_value_t = 60)]
    pub timeout: u32,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import the images of an OCI archive (a tar of an OCI image layout) onto a node, or onto
    /// every Ready node.
    Import {
        /// The archive.
        file: PathBuf,
        /// The node to import on (default: every Ready node).
        #[arg(long)]
        node: Option<String>,
    },
}

/// The pod `target` names: itself (`NAME`, `pod/NAME`), or the first pod a workload's
/// selector picks (`job/NAME`, as kubectl picks it).
async fn pod_of(client: &Client, namespace: &str, target: &str) -> anyhow::Result<String> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok(target.to_string());
    };
    let kind = super::objects::resolve_kind(kind)?;
    if kind.kind == "Pod" {
        return Ok(name.to_string());
    }
    let obj: serde_json::Value = serde_json::from_slice(
        &client
            .get_object(kind.plural, namespace, name, false)
            .await?
            .object,
    )?;
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .or_else(|| {
            obj.pointer("/spec/selector")
                .filter(|_| kind.kind == "ReplicationController")
        })
        .and_then(|m| m.as_object())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{target}: it has no label selector to find its pods by"))?
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    let list = client
        .list_objects(
            "pods",
            &skiff_proto::objects::Selection {
                namespace: namespace.to_string(),
                labels: selector,
                ..Default::default()
            },
        )
        .await?;
    let mut pods: Vec<(String, String)> = list
        .items
        .iter()
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter_map(|p| {
            let created = p
                .pointer("/metadata/creationTimestamp")?
                .as_str()?
                .to_string();
            Some((created, p.pointer("/metadata/name")?.as_str()?.to_string()))
        })
        .collect();
    pods.sort();
    pods.into_iter()
        .next()
        .map(|(_, n)| n)
        .ok_or_else(|| anyhow::anyhow!("{target}: no pods found"))
}

pub async fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<()> {
    let pod = pod_of(client, &a.namespace, &a.pod).await?;
    let mut stream = client
        .pod_logs(LogsRequest {
            namespace: a.namespace,
            pod,
            container: a.container.unwrap_or_default(),
            follow: a.follow,
            previous: a.previous,
            tail_lines: a.tail.max(0),
        })
        .await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?.data)?;
        out.flush()?;
    }
    Ok(())
}

pub async fn exec(client: &Client, a: ExecArgs) -> anyhow::Result<()> {
    let container = match a.container {
        Some(c) => c,
        None => {
            // kubectl's default: the pod's first container.
            let pod = client
                .get_object("pods", &a.namespace, &a.pod, false)
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&pod.object)?;
            v.pointer("/spec/containers/0/name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string()
        }
    };
    let r = client
        .pod_exec(ExecRequest {
            namespace: a.namespace,
            pod: a.pod,
            container,
            command: a.command,
            timeout_seconds: a.timeout,
        })
        .await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&r.output)?;
    out.flush()?;
    if r.exit_code != 0 {
        return Err(ExitWith {
            code: u8::try_from(r.exit_code.clamp(1, 255)).unwrap_or(1),
            message: format!("command terminated with exit code {}", r.exit_code),
        }
        .into());
    }
    Ok(())
}

pub async fn image(client: &Client, c: ImageCommand) -> anyhow::Result<()> {
    match c {
        ImageCommand::Import { file, node } => {
            let data =
                std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let nodes = match node {
                Some(n) => vec![n],
                None => ready_nodes(client).await?,
            };
            if nodes.is_empty() {
                anyhow::bail!("no node is Ready to import on");
            }
            let mut failed = 0;
            for node in &nodes {
                match client.import_image(node, data.clone()).await {
                    Ok(names) => {
                        for n in names {
                            println!("image/{n} imported on node/{node}");
                        }
                    }
                    Err(e) => {
                        eprintln!("error: node/{node}: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                return Err(ExitWith {
                    code: 1,
                    message: format!("{failed} of {} node(s) did not import", nodes.len()),
                }
                .into());
            }
            Ok(())
        }
    }
}

/// The names of the Nodes whose Ready condition is True.
async fn ready_nodes(client: &Client) -> anyhow::Result<Vec<String>> {
    let list = client
        .list_objects("nodes", &skiff_proto::objects::Selection::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter(|n| {
            n.pointer("/status/conditions")
                .and_then(|c| c.as_array())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .filter_map(|n| n.pointer("/metadata/name")?.as_str().map(String::from))
        .collect())
}
