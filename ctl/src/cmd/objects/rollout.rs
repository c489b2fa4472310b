//! `skiffctl rollout status|history|undo|restart|pause|resume deployment/NAME`, and
//! `rollout status|history|undo|restart statefulset/NAME|daemonset/NAME` (their revisions
//! are ControllerRevisions).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use skiff_proto::objects::Selection;
use skiff_proto::Client;

use skiff_proto::kinds::KindInfo;

use super::{parse, targets, ExitWith, NamespaceArgs};

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Wait until the rollout is complete (deployments, statefulsets and daemonsets).
    Status(RolloutArgs),
    /// The revisions of a Deployment, StatefulSet or DaemonSet.
    History(RolloutArgs),
    /// Go back to the previous (or a given) revision.
    Undo(UndoArgs),
    /// Replace every pod, one rollout step at a time (deployments, statefulsets and
    /// daemonsets).
    Restart(RolloutArgs),
    /// Stop rolling out template changes.
    Pause(RolloutArgs),
    /// Roll out again.
    Resume(RolloutArgs),
}

#[derive(Args)]
pub struct RolloutArgs {
    /// deployment/NAME or deployment NAME
    #[arg(required = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// rollout status: how long to wait.
    #[arg(long, default_value = "600s", value_parser = skiff_proto::duration::parse)]
    pub timeout: Duration,
}

#[derive(Args)]
pub struct UndoArgs {
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// The revision to go back to (default: the one before the current).
    #[arg(long)]
    pub to_revision: Option<i64>,
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn revision(v: &Value) -> i64 {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

async fn owned_replicasets(client: &Client, ns: &str, d: &Value) -> anyhow::Result<Vec<Value>> {
    let uid = d
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let sel = Selection {
        namespace: ns.to_string(),
        ..Default::default()
    };
    let mut out: Vec<Value> = client
        .list_objects("replicasets", &sel)
        .await?
        .items
        .iter()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        .filter(|rs| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                })
        })
        .collect();
    out.sort_by_key(revision);
    Ok(out)
}

/// The one workload named, if it is a Deployment, StatefulSet or DaemonSet.
fn workload_of(args: &RolloutArgs) -> anyhow::Result<(&'static KindInfo, String)> {
    let t = targets(&args.args)?;
    let [(kind, name)] = t.as_slice() else {
        anyhow::bail!("give one deployment, statefulset or daemonset")
    };
    if !matches!(kind.kind, "Deployment" | "StatefulSet" | "DaemonSet") {
        anyhow::bail!(
            "rollout works on deployments, statefulsets and daemonsets, not {}",
            kind.plural
        );
    }
    Ok((*kind, name.clone()))
}

fn deployment_of(args: &RolloutArgs) -> anyhow::Result<String> {
    let t = targets(&args.args)?;
    let [(kind, name)] = t.as_slice() else {
        anyhow::bail!("give one deployment")
    };
    if kind.kind != "Deployment" {
        anyhow::bail!("rollout works on deployments, not {}", kind.plural);
    }
    Ok(name.clone())
}

pub async fn run(client: &Client, cmd: RolloutCommand) -> anyhow::Result<()> {
    match cmd {
        RolloutCommand::Status(a) => status(client, a).await,
        RolloutCommand::History(a) if keeps_controller_revisions(&a) => {
            history_of_set(client, a).await
        }
        RolloutCommand::History(a) => history(client, a).await,
        RolloutCommand::Undo(a) if keeps_controller_revisions(&a.rollout) => {
            undo_set(client, a).await
        }
        RolloutCommand::Undo(a) => undo(client, a).await,
        RolloutCommand::Restart(a) => {
            let (kind, name) = workload_of(&a)?;
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": jiff::Timestamp::now().to_string()}}}}});
            client
                .patch_object(
                    kind.plural,
                    &a.ns.namespace,
                    &name,
                    serde_json::to_vec(&patch)?,
                    false,
                )
                .await?;
            println!("{}/{name} restarted", kind.qualified_singular());
            Ok(())
        }
        RolloutCommand::Pause(a) => pause(client, a, true).await,
        RolloutCommand::Resume(a) => pause(client, a, false).await,
    }
}

async fn pause(client: &Client, a: RolloutArgs, on: bool) -> anyhow::Result<()> {
    let name = deployment_of(&a)?;
    let patch = json!({"spec": {"paused": if on { Value::Bool(true) } else { Value::Null }}});
    client
        .patch_object(
            "deployments",
            &a.ns.namespace,
            &name,
            serde_json::to_vec(&patch)?,
            false,
        )
        .await?;
    println!(
        "deployment.apps/{name} {}",
        if on { "paused" } else { "resumed" }
    );
    Ok(())
}

/// What a workload's rollout still waits for (a message), given the object and its name;
/// `None` once it is done.
type Waiting = fn(&Value, &str) -> Option<String>;

/// What a Deployment's rollout still waits for, if anything.
fn deployment_waiting(d: &Value, name: &str) -> Option<String> {
    let want = i(d, "/spec/replicas");
    let (updated, total, available) = (
        i(d, "/status/updatedReplicas"),
        i(d, "/status/replicas"),
        i(d, "/status/availableReplicas"),
    );
    let observed = i(d, "/status/observedGeneration") >= i(d, "/metadata/generation");
    if !observed {
        Some("Waiting for deployment spec update to be observed...".to_string())
    } else if updated < want {
        Some(format!("Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."))
    } else if total > updated {
        Some(format!("Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...", total - updated))
    } else if available < updated {
        Some(format!("Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."))
    } else {
        None
    }
}

/// What a DaemonSet's rollout still waits for: every node it belongs on running an
/// available pod of its template.
fn daemon_set_waiting(ds: &Value, name: &str) -> Option<String> {
    let want = i(ds, "/status/desiredNumberScheduled");
    let updated = i(ds, "/status/updatedNumberScheduled");
    let available = i(ds, "/status/numberAvailable");
    let observed = i(ds, "/status/observedGeneration") >= i(ds, "/metadata/generation");
    if !observed {
        Some("Waiting for daemon set spec update to be observed...".to_string())
    } else if updated < want {
        Some(format!("Waiting for daemon set {name:?} rollout to finish: {updated} out of {want} new pods have been updated..."))
    } else if available < want {
        Some(format!("Waiting for daemon set {name:?} rollout to finish: {available} of {want} updated pods are available..."))
    } else {
        None
    }
}

/// What a StatefulSet's rollout still waits for: its pods ready, and of the update
/// revision from the partition up.
fn stateful_set_waiting(sts: &Value, name: &str) -> Option<String> {
    let want = i(sts, "/spec/replicas");
    let ready = i(sts, "/status/readyReplicas");
    let updated = i(sts, "/status/updatedReplicas");
    let partition = i(sts, "/spec/updateStrategy/rollingUpdate/partition");
    let observed = i(sts, "/status/observedGeneration") >= i(sts, "/metadata/generation");
    let on_delete = sts
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");
    let (current, update) = (
        sts.pointer("/status/currentRevision")
            .and_then(Value::as_str),
        sts.pointer("/status/updateRevision")
            .and_then(Value::as_str),
    );
    if !observed {
        Some("Waiting for statefulset spec update to be observed...".to_string())
    } else if ready < want {
        Some(format!("Waiting for {} pods to be ready...", want - ready))
    } else if on_delete {
        None
    } else if partition > 0 {
        let to_update = (want - partition).max(0);
        (updated < to_update).then(|| format!("Waiting for partitioned roll out of {name:?} to finish: {updated} out of {to_update} new pods have been updated..."))
    } else if current != update {
        Some(format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {}...",
            update.unwrap_or("")
        ))
    } else {
        None
    }
}

async fn status(client: &Client, a: RolloutArgs) -> anyhow::Result<()> {
    let (kind, name) = workload_of(&a)?;
    let (waiting, noun): (Waiting, &str) = match kind.kind {
        "DaemonSet" => (daemon_set_waiting, "daemon set"),
        "StatefulSet" => (stateful_set_waiting, "statefulset"),
        _ => (deployment_waiting, "deployment"),
    };
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let obj = parse(
            &client
                .get_object(kind.plural, &a.ns.namespace, &name, false)
                .await?
                .object,
        )?;
        let Some(msg) = waiting(&obj, &name) else {
            println!("{noun} {name:?} successfully rolled out");
            return Ok(());
        };
        if msg != last {
            println!("{msg}");
            last = msg;
        }
        if started.elapsed() > a.timeout {
            return Err(ExitWith {
                code: 1,
                message: format!("timed out waiting for the rollout of {name:?}"),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn history(client: &Client, a: RolloutArgs) -> anyhow::Result<()> {
    let name = deployment_of(&a)?;
    let d = parse(
        &client
            .get_object("deployments", &a.ns.namespace, &name, false)
            .await?
            .object,
    )?;
    println!("deployment.apps/{name}");
    println!("REVISION  CHANGE-CAUSE");
    for rs in owned_replicasets(client, &a.ns.namespace, &d).await? {
        let cause = rs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get("kubernetes.io/change-cause"))
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        println!("{:<9} {cause}", revision(&rs));
    }
    Ok(())
}

async fn undo(client: &Client, a: UndoArgs) -> anyhow::Result<()> {
    let name = deployment_of(&a.rollout)?;
    let ns = a.rollout.ns.namespace.clone();
    let mut d = parse(
        &client
            .get_object("deployments", &ns, &name, false)
            .await?
            .object,
    )?;
    let rss = owned_replicasets(client, &ns, &d).await?;
    let current = revision(&d);
    let target = match a.to_revision {
        Some(r) => rss.iter().find(|rs| revision(rs) == r),
        None => rss.iter().rev().find(|rs| revision(rs) < current),
    }
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no revision to go back to (revisions: {})",
            rss.iter()
                .map(|r| revision(r).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let mut template = target
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    d["spec"]["template"] = template;
    client
        .update_object("deployments", &ns, serde_json::to_vec(&d)?, false)
        .await?;
    println!(
        "deployment.apps/{name} rolled back to revision {}",
        revision(target)
    );
    Ok(())
}

/// StatefulSets and DaemonSets keep their templates as ControllerRevisions.
fn keeps_controller_revisions(a: &RolloutArgs) -> bool {
    workload_of(a).is_ok_and(|(k, _)| matches!(k.kind, "StatefulSet" | "DaemonSet"))
}

/// A StatefulSet or DaemonSet and its ControllerRevisions, oldest first.
async fn set_and_revisions(
    client: &Client,
    kind: &KindInfo,
    ns: &str,
    name: &str,
) -> anyhow::Result<(Value, Vec<Value>)> {
    let sts = parse(
        &client
            .get_object(kind.plural, ns, name, false)
            .await?
            .object,
    )?;
    let uid = sts.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let sel = Selection {
        namespace: ns.to_string(),
        ..Default::default()
    };
    let mut revisions: Vec<Value> = client
        .list_objects("controllerrevisions", &sel)
        .await?
        .items
        .iter()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        .filter(|r| {
            r.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|o| o.get("uid") == Some(&uid)))
        })
        .collect();
    revisions.sort_by_key(|r| i(r, "/revision"));
    Ok((sts, revisions))
}

async fn history_of_set(client: &Client, a: RolloutArgs) -> anyhow::Result<()> {
    let (kind, name) = workload_of(&a)?;
    let (_, revisions) = set_and_revisions(client, kind, &a.ns.namespace, &name).await?;
    println!("{}/{name}", kind.qualified_singular());
    println!("REVISION  CHANGE-CAUSE");
    for r in &revisions {
        let cause = r
            .pointer("/metadata/annotations")
            .and_then(|a| a.get("kubernetes.io/change-cause"))
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        println!("{:<9} {cause}", i(r, "/revision"));
    }
    Ok(())
}

async fn undo_set(client: &Client, a: UndoArgs) -> anyhow::Result<()> {
    let (kind, name) = workload_of(&a.rollout)?;
    let ns = a.rollout.ns.namespace.clone();
    let (mut sts, revisions) = set_and_revisions(client, kind, &ns, &name).await?;
    let current = revisions.last().map(|r| i(r, "/revision")).unwrap_or(0);
    let target = match a.to_revision {
        Some(n) => revisions.iter().find(|r| i(r, "/revision") == n),
        None => revisions.iter().rev().find(|r| i(r, "/revision") < current),
    }
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no revision to go back to (revisions: {})",
            revisions
                .iter()
                .map(|r| i(r, "/revision").to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let template = target
        .pointer("/data/spec/template")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("revision {} holds no template", i(target, "/revision")))?;
    sts["spec"]["template"] = template;
    client
        .update_object(kind.plural, &ns, serde_json::to_vec(&sts)?, false)
        .await?;
    println!(
        "{}/{name} rolled back to revision {}",
        kind.qualified_singular(),
        i(target, "/revision")
    );
    Ok(())
}
