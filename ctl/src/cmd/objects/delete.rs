//! `skiffctl delete KIND NAME... | -f FILE | KIND -l SELECTOR`.

use clap::{Args, ValueEnum};
use serde_json::Value;
use skiff_proto::kinds::{self, KindInfo};
use skiff_proto::objects::{DeleteParams, Selection};
use skiff_proto::pb::delete_object_request::Propagation;
use skiff_proto::{Client, ClientError};

use super::{parse, resolve_kind, targets, ExitWith, NamespaceArgs};
use crate::manifest;

#[derive(Clone, Copy, ValueEnum)]
pub enum Cascade {
    Background,
    Foreground,
    Orphan,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// KIND NAME..., KIND/NAME ..., or KIND with -l.
    pub args: Vec<String>,
    /// Delete the objects of these manifests.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Delete every object of KIND matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// What happens to dependents.
    #[arg(long, value_enum, default_value = "background")]
    pub cascade: Cascade,
    /// Pods: seconds to stop (default: the pod's own terminationGracePeriodSeconds).
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// Pods: stop at once (grace period 0... as kubectl's --now, 1 second).
    #[arg(long)]
    pub now: bool,
    /// Do not fail when an object is already gone.
    #[arg(long)]
    pub ignore_not_found: bool,
}

pub async fn run(client: &Client, args: DeleteArgs) -> anyhow::Result<()> {
    let mut todo: Vec<(&'static KindInfo, String, String)> = Vec::new();
    if !args.files.is_empty() {
        for doc in manifest::read(&args.files)? {
            let o = &doc.object;
            let s = |p: &str| {
                o.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let kind = kinds::by_api_version(&s("/apiVersion"), &s("/kind")).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no matches for kind {:?} in version {:?}",
                    doc.source,
                    s("/kind"),
                    s("/apiVersion")
                )
            })?;
            let ns = if kind.namespaced {
                Some(s("/metadata/namespace"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or(args.ns.namespace.clone())
            } else {
                String::new()
            };
            todo.push((kind, ns, s("/metadata/name")));
        }
    } else if let Some(sel) = &args.selector {
        let kind = resolve_kind(
            args.args
                .first()
                .ok_or_else(|| anyhow::anyhow!("give the KIND to delete with -l"))?,
        )?;
        let selection = Selection {
            namespace: args.ns.for_kind(kind),
            labels: sel.clone(),
            fields: String::new(),
        };
        for b in client.list_objects(kind.plural, &selection).await?.items {
            let o = parse(&b)?;
            let s = |p: &str| {
                o.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            todo.push((kind, s("/metadata/namespace"), s("/metadata/name")));
        }
        if todo.is_empty() {
            eprintln!("No resources found");
        }
    } else {
        let t = targets(&args.args)?;
        if t.is_empty() {
            anyhow::bail!("give KIND NAME, KIND/NAME, -f FILE or KIND -l SELECTOR");
        }
        for (kind, name) in t {
            todo.push((kind, args.ns.for_kind(kind), name));
        }
    }
    let params = DeleteParams {
        propagation: match args.cascade {
            Cascade::Background => Propagation::Background,
            Cascade::Foreground => Propagation::Foreground,
            Cascade::Orphan => Propagation::Orphan,
        },
        grace_period_seconds: if args.now { Some(1) } else { args.grace_period },
        ..Default::default()
    };
    let mut failed = 0;
    for (kind, ns, name) in todo {
        match client.delete_object(kind.plural, &ns, &name, &params).await {
            Ok(_) => println!("{} {name:?} deleted", kind.qualified_singular()),
            Err(ClientError::Rejected(s))
                if s.code() == tonic::Code::NotFound && args.ignore_not_found => {}
            Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => {
                eprintln!("Error from server (NotFound): {}", s.message());
                failed += 1;
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(ExitWith {
            code: 1,
            message: format!("{failed} object(s) were not deleted"),
        }
        .into());
    }
    Ok(())
}
