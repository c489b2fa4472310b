//! `skiffctl create -f FILE...`, and objects made from flags as kubectl makes them:
//! `create job NAME --image IMG [-- COMMAND...]` and `create job NAME --from cronjob/CJ`
//! (a run of a CronJob now, outside its schedule).

use anyhow::{anyhow, bail};
use clap::Args;
use serde_json::{json, Value};
use skiff_proto::kinds;
use skiff_proto::Client;

use super::apply::{self, ApplyArgs};
use super::{display_name, parse, resolve_kind};

#[derive(Args)]
pub struct CreateArgs {
    /// What to make without a manifest: `job NAME`.
    pub what: Vec<String>,
    /// Manifests (`-f`), their namespace and `--wait`.
    #[command(flatten)]
    pub manifests: ApplyArgs,
    /// The image of a Job's one container.
    #[arg(long)]
    pub image: Option<String>,
    /// Make the Job from this CronJob's template: `cronjob/NAME`.
    #[arg(long)]
    pub from: Option<String>,
    /// The container's command, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn run(client: &Client, a: CreateArgs) -> anyhow::Result<()> {
    if !a.manifests.files.is_empty() {
        if !a.what.is_empty() {
            bail!("give either -f or `job NAME`, not both");
        }
        return apply::create(client, a.manifests).await;
    }
    let [kind, name] = &a.what[..] else {
        bail!("expected -f FILE, or `job NAME --image IMG` or `job NAME --from cronjob/NAME`");
    };
    if resolve_kind(kind)?.kind != "Job" {
        bail!("{kind:?}: only jobs are made from flags; use -f for the rest");
    }
    let ns = if a.manifests.namespace.is_empty() {
        "default".to_string()
    } else {
        a.manifests.namespace.clone()
    };
    let job = match (&a.from, &a.image) {
        (Some(from), None) => from_cron_job(client, &ns, name, from).await?,
        (None, Some(image)) => json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [container(name, image, &a.command)],
            }}},
        }),
        _ => bail!("a job needs exactly one of --image and --from"),
    };
    let made = client
        .create_object("jobs", &ns, serde_json::to_vec(&job)?)
        .await?;
    println!(
        "{} created",
        display_name(&kinds::JOB, &parse(&made.object)?)
    );
    Ok(())
}

fn container(name: &str, image: &str, command: &[String]) -> Value {
    let mut c = json!({"name": name, "image": image});
    if !command.is_empty() {
        c["command"] = json!(command);
    }
    c
}

/// A Job from CronJob `from`'s template, owned by it and marked as run by hand.
async fn from_cron_job(client: &Client, ns: &str, name: &str, from: &str) -> anyhow::Result<Value> {
    let (kind, cj_name) = from
        .split_once('/')
        .ok_or_else(|| anyhow!("--from {from:?}: expected cronjob/NAME"))?;
    if resolve_kind(kind)?.kind != "CronJob" {
        bail!("--from {from:?}: a job is made from a cronjob");
    }
    let cj = parse(
        &client
            .get_object("cronjobs", ns, cj_name, false)
            .await?
            .object,
    )?;
    let template = cj.pointer("/spec/jobTemplate").cloned().unwrap_or_default();
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(ns);
    metadata["annotations"]["cronjob.kubernetes.io/instantiate"] = json!("manual");
    metadata["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "CronJob",
        "name": cj_name, "uid": cj.pointer("/metadata/uid").cloned().unwrap_or_default(),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    Ok(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_default(),
    }))
}
