//! The object commands, as kubectl has them: apply, create, get, describe, delete, scale,
//! label, annotate, edit, wait.

pub mod apply;
pub mod create;
pub mod delete;
pub mod describe;
pub mod get;
pub mod modify;
pub mod nodes;
pub mod rollout;
pub mod set_image;
pub mod wait;

use anyhow::anyhow;
use clap::Args;
use serde_json::Value;
use skiff_proto::kinds::{self, KindInfo};

/// An error that ends skiffctl with a particular exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitWith {
    /// The exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

/// Namespace flags shared by the object commands.
#[derive(Args, Clone, Debug)]
pub struct NamespaceArgs {
    /// Namespace of the objects.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Every namespace (get, delete -l).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

impl NamespaceArgs {
    /// The namespace to use for `kind` (empty for cluster-scoped kinds or -A).
    pub fn for_kind(&self, kind: &KindInfo) -> String {
        if !kind.namespaced || self.all_namespaces {
            String::new()
        } else {
            self.namespace.clone()
        }
    }
}

/// The kind a user names, or an error as kubectl words it.
pub fn resolve_kind(name: &str) -> anyhow::Result<&'static KindInfo> {
    kinds::lookup(name).ok_or_else(|| anyhow!("the server doesn't have a resource type {name:?}"))
}

/// `KIND NAME...` or `KIND/NAME ...` into (kind, name) pairs.
pub fn targets(args: &[String]) -> anyhow::Result<Vec<(&'static KindInfo, String)>> {
    let mut out = Vec::new();
    if let Some(first) = args.first() {
        if !first.contains('/') {
            let kind = resolve_kind(first)?;
            for name in &args[1..] {
                out.push((kind, name.clone()));
            }
            return Ok(out);
        }
    }
    for a in args {
        let (k, n) = a.split_once('/').ok_or_else(|| {
            anyhow!("{a:?}: expected KIND/NAME when the first argument is KIND/NAME")
        })?;
        out.push((resolve_kind(k)?, n.to_string()));
    }
    Ok(out)
}

/// `pod/web`, `deployment.apps/web`.
pub fn display_name(kind: &KindInfo, obj: &Value) -> String {
    format!(
        "{}/{}",
        kind.qualified_singular(),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

/// Parse an object returned by the server.
pub fn parse(bytes: &[u8]) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(bytes)?)
}
