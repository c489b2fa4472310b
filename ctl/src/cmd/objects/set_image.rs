//! `skiffctl set image KIND/NAME CONTAINER=IMAGE... [-n NS]`: change container images of a
//! pod or of a workload's pod template (`*=IMAGE` for every container), as kubectl's.

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use skiff_proto::Client;

use super::{display_name, parse, resolve_kind};

#[derive(Subcommand)]
pub enum SetCommand {
    /// Change container images: `set image deployment/web web=nginx:1.25`.
    Image(SetImageArgs),
}

#[derive(Args)]
pub struct SetImageArgs {
    /// KIND/NAME, then CONTAINER=IMAGE pairs.
    #[arg(required = true, num_args = 2..)]
    pub args: Vec<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Where a kind keeps the pod spec whose containers are changed.
fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        "Deployment"
        | "ReplicaSet"
        | "ReplicationController"
        | "DaemonSet"
        | "StatefulSet"
        | "Job" => Some("/spec/template/spec"),
        _ => None,
    }
}

/// Set `image` on the containers of `spec` named `container` (every one for `*`); how many.
fn set_image(spec: &mut Value, container: &str, image: &str) -> usize {
    let mut changed = 0;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if container == "*" || c["name"] == container {
                c["image"] = Value::String(image.to_string());
                changed += 1;
            }
        }
    }
    changed
}

pub async fn run(client: &Client, command: SetCommand) -> anyhow::Result<()> {
    let SetCommand::Image(a) = command;
    let (target, pairs) = a
        .args
        .split_first()
        .ok_or_else(|| anyhow!("name a KIND/NAME"))?;
    let (kind, name) = target
        .split_once('/')
        .ok_or_else(|| anyhow!("{target:?}: expected KIND/NAME"))?;
    let kind = resolve_kind(kind)?;
    let pointer = pod_spec_pointer(kind.kind)
        .ok_or_else(|| anyhow!("{}: has no containers to set images of", kind.plural))?;
    let ns = if kind.namespaced {
        a.namespace.as_str()
    } else {
        ""
    };
    let mut obj = parse(
        &client
            .get_object(kind.plural, ns, name, false)
            .await?
            .object,
    )?;
    let spec = obj
        .pointer_mut(pointer)
        .ok_or_else(|| anyhow!("{}/{name} has no pod spec", kind.plural))?;
    for pair in pairs {
        let (container, image) = pair
            .split_once('=')
            .filter(|(c, i)| !c.is_empty() && !i.is_empty())
            .ok_or_else(|| anyhow!("{pair:?}: expected CONTAINER=IMAGE"))?;
        if set_image(spec, container, image) == 0 {
            bail!(
                "unable to find container named {container:?} in {}/{name}",
                kind.plural
            );
        }
    }
    // The object as read, resourceVersion included: a concurrent change is a conflict.
    let updated = client
        .update_object(kind.plural, ns, serde_json::to_vec(&obj)?, false)
        .await?;
    println!(
        "{} image updated",
        display_name(kind, &parse(&updated.object)?)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn images_change_by_container_name_or_all_at_once() {
        let mut spec = json!({"initContainers": [{"name": "init", "image": "a:1"}],
                              "containers": [{"name": "web", "image": "a:1"}, {"name": "log", "image": "b:1"}]});
        assert_eq!(set_image(&mut spec, "web", "a:2"), 1);
        assert_eq!(spec["containers"][0]["image"], "a:2");
        assert_eq!(spec["containers"][1]["image"], "b:1");
        assert_eq!(set_image(&mut spec, "nope", "x"), 0);
        assert_eq!(set_image(&mut spec, "*", "c:3"), 3);
        assert_eq!(
            pod_spec_pointer("CronJob"),
            Some("/spec/jobTemplate/spec/template/spec")
        );
        assert_eq!(pod_spec_pointer("Service"), None);
    }
}
