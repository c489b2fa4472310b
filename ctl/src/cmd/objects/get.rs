//! `skiffctl get KIND [NAME...] [-o yaml|json|wide|name] [-l] [--field-selector] [-n|-A] [-w]`.

use clap::Args;
use serde_json::{json, Value};
use skiff_proto::kinds::KindInfo;
use skiff_proto::objects::{Selection, WatchItem};
use skiff_proto::{Client, ClientError};

use super::{display_name, parse, resolve_kind, NamespaceArgs};
use crate::table;

#[derive(Args)]
pub struct GetArgs {
    /// KIND (or KIND1,KIND2) then names, or KIND/NAME ...
    #[arg(required = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// Output: yaml, json, wide, name or jsonpath=TEMPLATE (default: a table).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Label selector, e.g. app=web,tier!=db.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector: metadata.name, metadata.namespace, spec.nodeName, status.phase.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Serve from whichever control node answers, without a read index.
    #[arg(long)]
    pub stale: bool,
}

/// Print `objects` of `kind` in the chosen output.
pub fn print(
    kind: &KindInfo,
    objects: &[Value],
    output: Option<&str>,
    with_namespace: bool,
    single: bool,
) -> anyhow::Result<()> {
    match output {
        Some("json") => {
            let out = if single && objects.len() == 1 {
                objects[0].clone()
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": objects})
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Some("yaml") => {
            let out = if single && objects.len() == 1 {
                objects[0].clone()
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": objects})
            };
            print!("{}", serde_norway::to_string(&out)?);
        }
        Some("name") => {
            for o in objects {
                println!("{}", display_name(kind, o));
            }
        }
        None | Some("wide") => {
            let wide = output == Some("wide");
            let mut header = Vec::new();
            let mut rows = Vec::new();
            for o in objects {
                let (h, mut r) = table::columns(kind, o, wide);
                if with_namespace {
                    r.insert(
                        0,
                        o.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                }
                header = h;
                rows.push(r);
            }
            if with_namespace {
                header.insert(0, "NAMESPACE");
            }
            if !rows.is_empty() {
                table::print(&header, &rows);
            }
        }
        Some(o) if o.starts_with("jsonpath=") => {
            let template = crate::jsonpath::Template::parse(&o["jsonpath=".len()..])?;
            let root = if single && objects.len() == 1 {
                objects[0].clone()
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": objects})
            };
            print!("{}", template.render(&root));
        }
        Some(other) => {
            anyhow::bail!("--output {other:?} is not supported; use yaml, json, wide, name or jsonpath=TEMPLATE")
        }
    }
    Ok(())
}

pub async fn run(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    let by_slash = args.args[0].contains('/');
    let mut groups: Vec<(&'static KindInfo, Vec<String>)> = Vec::new();
    if by_slash {
        for (kind, name) in super::targets(&args.args)? {
            match groups.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, names)) => names.push(name),
                None => groups.push((kind, vec![name])),
            }
        }
    } else {
        for k in args.args[0].split(',') {
            // kubectl's `all`: the workload kinds.
            let kinds: Vec<&str> = if k == "all" {
                vec![
                    "pods",
                    "services",
                    "daemonsets",
                    "deployments",
                    "replicasets",
                    "statefulsets",
                    "jobs",
                    "cronjobs",
                ]
            } else {
                vec![k]
            };
            for k in kinds {
                groups.push((resolve_kind(k)?, args.args[1..].to_vec()));
            }
        }
    }
    let mut missing = 0;
    let mut printed_tables = false;
    for (kind, names) in &groups {
        let ns = args.ns.for_kind(kind);
        let with_namespace = kind.namespaced && args.ns.all_namespaces;
        let (objects, revision) = if names.is_empty() {
            let sel = Selection {
                namespace: ns.clone(),
                labels: args.selector.clone().unwrap_or_default(),
                fields: args.field_selector.clone().unwrap_or_default(),
            };
            let r = client
                .list_objects_page(kind.plural, &sel, 0, "", args.stale)
                .await?;
            let objects = r
                .items
                .iter()
                .map(|b| parse(b))
                .collect::<anyhow::Result<Vec<_>>>()?;
            (objects, r.revision)
        } else {
            let mut objects = Vec::new();
            let mut rev = 0;
            for name in names {
                match client.get_object(kind.plural, &ns, name, args.stale).await {
                    Ok(r) => {
                        rev = rev.max(r.revision);
                        objects.push(parse(&r.object)?);
                    }
                    Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => {
                        eprintln!("Error from server (NotFound): {}", s.message());
                        missing += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (objects, rev)
        };
        if objects.is_empty()
            && names.is_empty()
            && !args.watch
            && args.output.as_deref() != Some("json")
            && args.output.as_deref() != Some("yaml")
        {
            if ns.is_empty() {
                eprintln!("No resources found");
            } else {
                eprintln!("No resources found in {ns} namespace.");
            }
        }
        let table = matches!(args.output.as_deref(), None | Some("wide"));
        if table && !objects.is_empty() {
            // Tables of several kinds are set apart by a blank line, as kubectl does.
            if printed_tables {
                println!();
            }
            printed_tables = true;
        }
        print(
            kind,
            &objects,
            args.output.as_deref(),
            with_namespace,
            !names.is_empty() && groups.len() == 1,
        )?;
        if args.watch {
            watch(client, kind, &args, ns, revision, names).await?;
        }
    }
    if missing > 0 {
        return Err(super::ExitWith {
            code: 1,
            message: format!("{missing} object(s) not found"),
        }
        .into());
    }
    Ok(())
}

async fn watch(
    client: &Client,
    kind: &'static KindInfo,
    args: &GetArgs,
    ns: String,
    revision: u64,
    names: &[String],
) -> anyhow::Result<()> {
    let sel = Selection {
        namespace: ns,
        labels: args.selector.clone().unwrap_or_default(),
        fields: args.field_selector.clone().unwrap_or_default(),
    };
    let mut rx = client.watch_objects(kind.plural, &sel, revision);
    let with_namespace = kind.namespaced && args.ns.all_namespaces;
    while let Some(item) = rx.recv().await {
        let bytes = match item? {
            WatchItem::Added(b) | WatchItem::Modified(b) | WatchItem::Deleted(b) => b,
            WatchItem::Bookmark(_) => continue,
        };
        let obj = parse(&bytes)?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        match args.output.as_deref() {
            None | Some("wide") => {
                let (_, mut r) = table::columns(kind, &obj, args.output.is_some());
                if with_namespace {
                    r.insert(
                        0,
                        obj.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                }
                println!("{}", r.join("   "));
            }
            out => print(kind, &[obj], out, with_namespace, true)?,
        }
    }
    Ok(())
}
