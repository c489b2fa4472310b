//! `skiffctl apply -f FILE|DIR|- [--wait]` and `skiffctl create -f ...`.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;
use skiff_proto::kinds;
use skiff_proto::objects::Selection;
use skiff_proto::pb::apply_object_response::Outcome;
use skiff_proto::Client;

use super::{display_name, parse, ExitWith};
use crate::manifest;

#[derive(Args)]
pub struct ApplyArgs {
    /// Manifest files or directories; `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Namespace for objects that name none (default: "default"); one that names another
    /// namespace is refused.
    #[arg(short = 'n', long, default_value = "")]
    pub namespace: String,
    /// Wait until the objects are ready; exit 2 if pods cannot be placed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "300s", value_parser = skiff_proto::duration::parse)]
    pub timeout: Duration,
}

pub async fn apply(client: &Client, args: ApplyArgs) -> anyhow::Result<()> {
    run(client, args, false).await
}

pub async fn create(client: &Client, args: ApplyArgs) -> anyhow::Result<()> {
    run(client, args, true).await
}

async fn run(client: &Client, args: ApplyArgs, create_only: bool) -> anyhow::Result<()> {
    if args.files.is_empty() {
        anyhow::bail!("-f FILE is required (a file, a folder, or - for standard input)");
    }
    let docs = manifest::read(&args.files)?;
    let mut failed = 0;
    let mut applied = Vec::new();
    for doc in docs {
        let bytes = serde_json::to_vec(&doc.object)?;
        let result = if create_only {
            create_one(client, &args.namespace, &doc.object, bytes).await
        } else {
            client
                .apply_object(&args.namespace, bytes)
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| {
                    let obj = parse(&r.object)?;
                    let kind = kinds::by_resource(&r.resource)
                        .ok_or_else(|| anyhow::anyhow!("unknown resource {}", r.resource))?;
                    let word = match Outcome::try_from(r.outcome) {
                        Ok(Outcome::Created) => "created",
                        Ok(Outcome::Configured) => "configured",
                        _ => "unchanged",
                    };
                    Ok((kind, obj, word))
                })
        };
        match result {
            Ok((kind, obj, word)) => {
                println!("{} {word}", display_name(kind, &obj));
                applied.push((kind, obj));
            }
            Err(e) => {
                eprintln!("error: {}: {e:#}", doc.source);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(ExitWith {
            code: 1,
            message: format!("{failed} object(s) were not applied"),
        }
        .into());
    }
    if args.wait {
        wait_ready(client, &applied, args.timeout).await?;
    }
    Ok(())
}

async fn create_one(
    client: &Client,
    namespace: &str,
    obj: &Value,
    bytes: Vec<u8>,
) -> anyhow::Result<(&'static kinds::KindInfo, Value, &'static str)> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind_name = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let kind = kinds::by_api_version(api_version, kind_name).ok_or_else(|| {
        anyhow::anyhow!("kind: no matches for kind {kind_name:?} in version {api_version:?}")
    })?;
    let r = client.create_object(kind.plural, namespace, bytes).await?;
    Ok((kind, parse(&r.object)?, "created"))
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// Whether a pod cannot be placed, and why.
fn unschedulable(pod: &Value) -> Option<String> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find_map(|c| {
            (c.get("type")? == "PodScheduled"
                && c.get("status")? == "False"
                && c.get("reason")? == "Unschedulable")
                .then(|| {
                    c.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unschedulable")
                        .to_string()
                })
        })
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

async fn wait_ready(
    client: &Client,
    objects: &[(&'static kinds::KindInfo, Value)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for (kind, obj) in objects {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let labels = obj
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            });
        loop {
            let cur = parse(
                &client
                    .get_object(kind.plural, &ns, &name, false)
                    .await?
                    .object,
            )?;
            let ready = match kind.kind {
                "Deployment" | "ReplicaSet" | "ReplicationController" => {
                    let want = i(&cur, "/spec/replicas");
                    let observed = kind.kind != "Deployment"
                        || i(&cur, "/status/observedGeneration") >= i(&cur, "/metadata/generation");
                    observed
                        && i(&cur, "/status/readyReplicas") >= want
                        && (kind.kind != "Deployment" || i(&cur, "/status/updatedReplicas") >= want)
                }
                "Pod" => pod_ready(&cur),
                _ => true,
            };
            if ready {
                println!("{} ready", display_name(kind, &cur));
                break;
            }
            let pods: Vec<Value> = match (kind.kind, &labels) {
                ("Pod", _) => vec![cur.clone()],
                (_, Some(l)) => {
                    let sel = Selection {
                        namespace: ns.clone(),
                        labels: l.clone(),
                        fields: String::new(),
                    };
                    client
                        .list_objects("pods", &sel)
                        .await?
                        .items
                        .iter()
                        .filter_map(|b| serde_json::from_slice(b).ok())
                        .collect()
                }
                _ => vec![],
            };
            if let Some((pod, why)) = pods.iter().find_map(|p| unschedulable(p).map(|w| (p, w))) {
                return Err(ExitWith {
                    code: 2,
                    message: format!(
                        "{}: pod {} cannot be placed: {why}",
                        display_name(kind, &cur),
                        pod.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    ),
                }
                .into());
            }
            if started.elapsed() > timeout {
                return Err(ExitWith {
                    code: 1,
                    message: format!(
                        "timed out after {timeout:?} waiting for {} to be ready",
                        display_name(kind, &cur)
                    ),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}
