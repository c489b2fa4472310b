//! Changes to one object: `scale`, `label`, `annotate` (merge patches), `patch` (a merge
//! patch or a JSON patch given by hand) and `edit` ($EDITOR, then an update that is refused if
//! the object changed meanwhile).

use std::process::Command;

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Map, Value};
use skiff_proto::Client;

use super::{display_name, parse, targets, NamespaceArgs};

#[derive(Args)]
pub struct ScaleArgs {
    /// KIND NAME or KIND/NAME (deployments, replicasets, replicationcontrollers).
    #[arg(required = true)]
    pub args: Vec<String>,
    /// The new replica count.
    #[arg(long)]
    pub replicas: i64,
    /// Only if the object is at this resourceVersion.
    #[arg(long)]
    pub resource_version: Option<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

pub async fn scale(client: &Client, args: ScaleArgs) -> anyhow::Result<()> {
    for (kind, name) in targets(&args.args)? {
        if !matches!(
            kind.kind,
            "Deployment" | "ReplicaSet" | "ReplicationController" | "StatefulSet"
        ) {
            bail!(
                "{}: cannot be scaled (only deployments, replicasets, replicationcontrollers and statefulsets)",
                kind.plural
            );
        }
        let mut patch = json!({"spec": {"replicas": args.replicas}});
        if let Some(rv) = &args.resource_version {
            patch["metadata"] = json!({"resourceVersion": rv});
        }
        let r = client
            .patch_object(
                kind.plural,
                &args.ns.for_kind(kind),
                &name,
                serde_json::to_vec(&patch)?,
                false,
            )
            .await?;
        println!("{} scaled", display_name(kind, &parse(&r.object)?));
    }
    Ok(())
}

#[derive(Args)]
pub struct PatchArgs {
    /// KIND NAME or KIND/NAME.
    #[arg(required = true)]
    pub args: Vec<String>,
    /// The patch, JSON or YAML: an object for `strategic` and `merge`, a list of operations
    /// for `json`.
    #[arg(short, long)]
    pub patch: String,
    /// `strategic` (Kubernetes' strategic merge patch: containers, env, ports and the other
    /// keyed lists merge entry by entry), `merge` (RFC 7386 JSON merge patch: lists are
    /// replaced) or `json` (RFC 6902 JSON patch, all its operations or none).
    #[arg(long = "type", default_value = "strategic", value_parser = ["strategic", "merge", "json"])]
    pub patch_type: String,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

pub async fn patch(client: &Client, args: PatchArgs) -> anyhow::Result<()> {
    use skiff_proto::pb::patch_object_request::PatchType;
    // YAML is a superset of JSON: one parser takes both, as kubectl's -p does (and reads
    // YAML as kubectl does).
    let value: Value = crate::manifest::yaml::documents(&args.patch)
        .context("--patch: not JSON or YAML")?
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    let kind_of_patch = match args.patch_type.as_str() {
        "json" => PatchType::Json,
        "merge" => PatchType::Merge,
        _ => PatchType::Strategic,
    };
    for (kind, name) in targets(&args.args)? {
        let r = client
            .patch_object_as(
                kind.plural,
                &args.ns.for_kind(kind),
                &name,
                serde_json::to_vec(&value)?,
                kind_of_patch,
                false,
            )
            .await?;
        println!("{} patched", display_name(kind, &parse(&r.object)?));
    }
    Ok(())
}

#[derive(Args)]
pub struct MetaArgs {
    /// KIND NAME KEY=VALUE... KEY-... (or KIND/NAME KEY=VALUE...)
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Replace existing values.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

/// `label` (labels) or `annotate` (annotations).
pub async fn set_meta(
    client: &Client,
    args: MetaArgs,
    field: &str,
    verb: &str,
) -> anyhow::Result<()> {
    // Names never end in '-' (DNS-1123), so `KEY-` is always a removal.
    let is_change = |a: &String| a.contains('=') || a.ends_with('-');
    let split = args
        .args
        .iter()
        .position(is_change)
        .unwrap_or(args.args.len());
    let (objs, changes) = args.args.split_at(split);
    if changes.is_empty() {
        bail!("give at least one KEY=VALUE or KEY- to {verb}");
    }
    for (kind, name) in targets(objs)? {
        let ns = args.ns.for_kind(kind);
        let current = parse(
            &client
                .get_object(kind.plural, &ns, &name, false)
                .await?
                .object,
        )?;
        let existing = current
            .pointer(&format!("/metadata/{field}"))
            .cloned()
            .unwrap_or(json!({}));
        let mut set = Map::new();
        for c in changes {
            if let Some((k, v)) = c.split_once('=') {
                if let Some(old) = existing.get(k).and_then(Value::as_str) {
                    if old != v && !args.overwrite {
                        bail!("{k:?} already has a value ({old}), and --overwrite is false");
                    }
                }
                set.insert(k.to_string(), Value::String(v.to_string()));
            } else if let Some(k) = c.strip_suffix('-') {
                set.insert(k.to_string(), Value::Null);
            }
        }
        // Pinned to the version read, so the overwrite check above holds.
        let patch = json!({"metadata": {field: set, "resourceVersion": current.pointer("/metadata/resourceVersion")}});
        let r = client
            .patch_object(kind.plural, &ns, &name, serde_json::to_vec(&patch)?, false)
            .await?;
        println!("{} {verb}", display_name(kind, &parse(&r.object)?));
    }
    Ok(())
}

#[derive(Args)]
pub struct EditArgs {
    /// KIND NAME or KIND/NAME
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Edit as JSON instead of YAML.
    #[arg(short = 'o', long, default_value = "yaml")]
    pub output: String,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

pub async fn edit(client: &Client, args: EditArgs) -> anyhow::Result<()> {
    let editor = std::env::var("KUBE_EDITOR")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    for (kind, name) in targets(&args.args)? {
        let ns = args.ns.for_kind(kind);
        let current = parse(
            &client
                .get_object(kind.plural, &ns, &name, false)
                .await?
                .object,
        )?;
        let (text, ext) = if args.output == "json" {
            (serde_json::to_string_pretty(&current)?, "json")
        } else {
            (serde_norway::to_string(&current)?, "yaml")
        };
        let file = tempfile::Builder::new()
            .prefix("skiffctl-edit-")
            .suffix(&format!(".{ext}"))
            .tempfile()?;
        std::fs::write(file.path(), &text)?;
        let mut parts = editor.split_whitespace();
        let program = parts.next().unwrap_or("vi");
        let status = Command::new(program)
            .args(parts)
            .arg(file.path())
            .status()
            .with_context(|| format!("running the editor {editor:?}"))?;
        if !status.success() {
            bail!("the editor {editor:?} exited with {status}; nothing changed");
        }
        let edited = std::fs::read_to_string(file.path())?;
        if edited == text {
            println!("Edit cancelled, no changes made.");
            continue;
        }
        let docs = crate::manifest::parse(&file.path().display().to_string(), &edited)?;
        let [doc] = docs.as_slice() else {
            bail!("the edited file must hold exactly one object")
        };
        let r = client
            .update_object(kind.plural, &ns, serde_json::to_vec(&doc.object)?, false)
            .await?;
        println!("{} edited", display_name(kind, &parse(&r.object)?));
    }
    Ok(())
}
