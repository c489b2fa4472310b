//! The garbage collector: dependents whose owners are all gone are deleted (background
//! cascade); an owner being deleted in the foreground waits for its dependents
//! (`foregroundDeletion`); an orphaning delete releases them (`orphan`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use skiff_proto::objects::DeleteParams;
use skiff_proto::pb::delete_object_request::Propagation;

use super::context::{Ctx, Kind};

/// Finalizer of a foreground delete.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an orphaning delete.
pub const ORPHAN: &str = "orphan";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let mut trigger = ctx.trigger(&[Kind::Pods, Kind::ReplicaSets, Kind::Deployments]);
    loop {
        collect(&ctx).await;
        trigger.wait(Duration::from_secs(10)).await;
    }
}

/// An object the collector handles: its resource and metadata.
struct Obj {
    resource: &'static str,
    meta: ObjectMeta,
}

fn has(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

async fn collect(ctx: &Ctx) {
    let mut all: Vec<Obj> = Vec::new();
    all.extend(ctx.deployments.list().iter().map(|o| Obj {
        resource: "deployments",
        meta: o.metadata.clone(),
    }));
    all.extend(ctx.replicasets.list().iter().map(|o| Obj {
        resource: "replicasets",
        meta: o.metadata.clone(),
    }));
    all.extend(ctx.pods.list().iter().map(|o| Obj {
        resource: "pods",
        meta: o.metadata.clone(),
    }));
    let by_uid: HashMap<&str, &Obj> = all
        .iter()
        .filter_map(|o| Some((o.meta.uid.as_deref()?, o)))
        .collect();
    let mut dependents: HashMap<&str, Vec<&Obj>> = HashMap::new();
    for o in &all {
        for r in o.meta.owner_references.iter().flatten() {
            dependents.entry(r.uid.as_str()).or_default().push(o);
        }
    }
    let live_uids: HashSet<&str> = by_uid.keys().copied().collect();

    for o in &all {
        let ns = o.meta.namespace.clone().unwrap_or_default();
        let name = o.meta.name.clone().unwrap_or_default();
        let uid = o.meta.uid.clone().unwrap_or_default();
        let deleting = o.meta.deletion_timestamp.is_some();
        // Background: every owner gone → the dependent goes.
        let refs: Vec<_> = o.meta.owner_references.iter().flatten().collect();
        if !refs.is_empty() && !deleting && refs.iter().all(|r| !live_uids.contains(r.uid.as_str()))
        {
            tracing::info!(resource = o.resource, namespace = %ns, name = %name, "owner gone; deleting dependent");
            let _ = ctx
                .client
                .delete_object(
                    o.resource,
                    &ns,
                    &name,
                    &DeleteParams {
                        propagation: Propagation::Background,
                        ..Default::default()
                    },
                )
                .await;
            continue;
        }
        if !deleting {
            continue;
        }
        let deps = dependents.get(uid.as_str()).cloned().unwrap_or_default();
        if has(&o.meta, ORPHAN) {
            for d in &deps {
                let kept: Vec<_> = d
                    .meta
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": kept}});
                let _ = ctx
                    .client
                    .patch_object(
                        d.resource,
                        d.meta.namespace.as_deref().unwrap_or(""),
                        d.meta.name.as_deref().unwrap_or(""),
                        serde_json::to_vec(&patch).unwrap_or_default(),
                        false,
                    )
                    .await;
            }
            remove_finalizer(ctx, o, ORPHAN).await;
        } else if has(&o.meta, FOREGROUND) {
            let blocking: Vec<&&Obj> = deps
                .iter()
                .filter(|d| {
                    d.meta
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
                })
                .collect();
            if blocking.is_empty() {
                remove_finalizer(ctx, o, FOREGROUND).await;
            } else {
                for d in blocking
                    .iter()
                    .filter(|d| d.meta.deletion_timestamp.is_none())
                {
                    let _ = ctx
                        .client
                        .delete_object(
                            d.resource,
                            d.meta.namespace.as_deref().unwrap_or(""),
                            d.meta.name.as_deref().unwrap_or(""),
                            &DeleteParams {
                                propagation: Propagation::Foreground,
                                ..Default::default()
                            },
                        )
                        .await;
                }
            }
        }
    }
}

async fn remove_finalizer(ctx: &Ctx, o: &Obj, finalizer: &str) {
    let kept: Vec<&String> = o
        .meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let patch =
        json!({"metadata": {"finalizers": kept, "resourceVersion": o.meta.resource_version}});
    let _ = ctx
        .client
        .patch_object(
            o.resource,
            o.meta.namespace.as_deref().unwrap_or(""),
            o.meta.name.as_deref().unwrap_or(""),
            serde_json::to_vec(&patch).unwrap_or_default(),
            false,
        )
        .await;
}
