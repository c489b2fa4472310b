//! One pass over a DaemonSet: on each node it belongs on, one pod of the current template;
//! none elsewhere; failed pods replaced; old pods replaced as the update strategy allows
//! (RollingUpdate: at most `maxUnavailable` nodes without an available pod, or with
//! `maxSurge` the new pod first; OnDelete: only when an old pod is deleted); and the status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_proto::objects::{Api, ApiError, DeleteParams};

use super::placement::{fit, new_pod, node_of, TEMPLATE_HASH};
use crate::controllers::cache::controlled_by;
use crate::controllers::context::Ctx;
use crate::controllers::deployment::template_hash;
use crate::controllers::ownership::{created_at, is_active, is_available, revision_of};
use crate::controllers::revisions::{self, ensure_update_revision, Revisions};
use crate::controllers::runner::{Action, ReconcileError};

/// The daemon pods of one node.
#[derive(Default)]
struct OnNode {
    current: Vec<Arc<Pod>>,
    old: Vec<Arc<Pod>>,
    failed: Vec<Arc<Pod>>,
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(TEMPLATE_HASH)
        .map(String::as_str)
}

fn failed(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

/// `value` of `total` (a count or a percentage, rounded up).
fn scaled(value: Option<&IntOrString>, total: usize) -> usize {
    match value {
        Some(IntOrString::Int(n)) => (*n).max(0) as usize,
        Some(IntOrString::String(s)) => {
            let pct: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (pct * total).div_ceil(100)
        }
        None => 0,
    }
}

/// Run one pass over `ds`.
pub async fn sync(ctx: &Ctx, ds: &DaemonSet) -> Result<Action, ReconcileError> {
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::done());
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::done());
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let hash = template_hash(&spec.template);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let pods_api: Api<Pod> = Api::new(ctx.client.clone(), &ns);
    // Its template kept as a ControllerRevision, for `rollout history|undo`; the pods do not
    // wait for it.
    let revisions = Revisions::of(ctx, ds);
    let revision_written = ensure_update_revision(ctx, ds, &revisions).await;
    let update_revision = revisions::update_revision_name(ds);
    let name = ds.metadata.name.clone().unwrap_or_default();
    let mut in_use = BTreeSet::from([update_revision]);

    let mut by_node: BTreeMap<String, OnNode> = BTreeMap::new();
    for p in controlled_by(&ctx.pods, &ns, &uid) {
        if let Some(h) = hash_of(&p) {
            in_use.insert(format!("{name}-{h}"));
        }
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = node_of(&p) else { continue };
        let slot = by_node.entry(node).or_default();
        if failed(&p) {
            slot.failed.push(p);
        } else if !is_active(&p) {
            continue;
        } else if hash_of(&p) == Some(hash.as_str()) {
            slot.current.push(p);
        } else {
            slot.old.push(p);
        }
    }
    let nodes = ctx.nodes.list();
    let fits: BTreeMap<String, _> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, fit(ds, n))))
        .collect();

    let mut create: Vec<String> = Vec::new();
    let mut delete: Vec<Arc<Pod>> = Vec::new();
    let desired = fits.values().filter(|f| f.should_run).count();

    // Pods where they do not belong, failed pods and duplicates go.
    for (node, slot) in &mut by_node {
        delete.append(&mut slot.failed);
        let f = fits.get(node).copied();
        if !f.is_some_and(|f| f.may_stay) {
            delete.append(&mut slot.current);
            delete.append(&mut slot.old);
            continue;
        }
        for list in [&mut slot.current, &mut slot.old] {
            list.sort_by_key(|p| created_at(&p.metadata));
            if list.len() > 1 {
                delete.extend(list.drain(1..));
            }
        }
    }
    // Nodes it belongs on without a pod get one.
    for (node, f) in &fits {
        let slot = by_node.get(node);
        let has_pod = slot.is_some_and(|s| !s.current.is_empty() || !s.old.is_empty());
        if f.should_run && !has_pod {
            create.push(node.clone());
        }
    }

    // The update.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling {
        let ru = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired);
        let mut max_unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired);
        if surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let available_on = |s: &OnNode| {
            s.current
                .iter()
                .chain(s.old.iter())
                .any(|p| is_available(p, min_ready))
        };
        let mut unavailable = fits
            .iter()
            .filter(|(n, f)| f.should_run && !by_node.get(*n).is_some_and(available_on))
            .count();
        let mut surging = by_node
            .values()
            .filter(|s| !s.current.is_empty() && !s.old.is_empty())
            .count();
        for (node, slot) in &mut by_node {
            if slot.old.is_empty() || !fits.get(node).is_some_and(|f| f.may_stay) {
                continue;
            }
            let old_available = slot.old.iter().any(|p| is_available(p, min_ready));
            if surge > 0 {
                match slot.current.first() {
                    // The new pod is up: the old one goes.
                    Some(p) if is_available(p, min_ready) => delete.append(&mut slot.old),
                    Some(_) => {}
                    None if !old_available => delete.append(&mut slot.old),
                    None if surging < surge => {
                        surging += 1;
                        create.push(node.clone());
                    }
                    None => {}
                }
            } else if !old_available {
                // Replacing a pod that serves nothing costs no availability.
                delete.append(&mut slot.old);
            } else if unavailable < max_unavailable {
                unavailable += 1;
                delete.append(&mut slot.old);
            }
        }
    }

    let mut last = 0;
    let mut first_error: Option<ApiError> = None;
    // The next pass needs to see pods, not the revision (one it misses is made again, and
    // the pods' cache would not move for it).
    if let Err(e) = revision_written {
        first_error = Some(e);
    }
    let creates = create.iter().map(|node| {
        let pod = new_pod(ds, node, &hash);
        let api = pods_api.clone();
        async move { api.create(&pod).await }
    });
    for r in futures::future::join_all(creates).await {
        match r {
            Ok(p) => last = last.max(revision_of(&p.metadata)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let deletes = delete.iter().map(|p| {
        let api = pods_api.clone();
        let name = p.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            uid: p.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        async move { api.delete(&name, &params).await }
    });
    for r in futures::future::join_all(deletes).await {
        match r {
            Ok(_) => {}
            Err(ApiError::Client(skiff_proto::ClientError::Rejected(s)))
                if s.code() == tonic::Code::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }

    // Revisions beyond the history limit that no pod runs go.
    let keep = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let revisions_api: Api<ControllerRevision> = Api::new(ctx.client.clone(), &ns);
    for r in revisions::surplus(&revisions, &in_use, keep) {
        let name = r.metadata.name.clone().unwrap_or_default();
        match revisions_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(ApiError::Client(skiff_proto::ClientError::Rejected(s)))
                if s.code() == tonic::Code::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }

    let status = status_of(ds, &by_node, &fits, &hash, min_ready, desired);
    if ds.status.as_ref() != Some(&status) {
        let mut next = ds.clone();
        next.status = Some(status);
        let api: Api<DaemonSet> = Api::new(ctx.client.clone(), &ns);
        if let Err(e) = api.update_status(&next).await {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(ReconcileError::after_write(last, e));
    }
    let action = Action::done().wrote(last);
    // A ready pod turns available after minReadySeconds: look again then.
    Ok(if min_ready > 0 {
        action.or_requeue_after(Duration::from_secs(min_ready as u64 + 1))
    } else {
        action
    })
}

/// What the status reports, from the pods before this pass's writes (the next pass counts
/// those).
fn status_of(
    ds: &DaemonSet,
    by_node: &BTreeMap<String, OnNode>,
    fits: &BTreeMap<String, super::placement::Fit>,
    hash: &str,
    min_ready: i32,
    desired: usize,
) -> DaemonSetStatus {
    let mut s = DaemonSetStatus {
        desired_number_scheduled: desired as i32,
        observed_generation: ds.metadata.generation,
        ..Default::default()
    };
    let (mut ready, mut available, mut updated) = (0, 0, 0);
    for (node, slot) in by_node {
        let pods: Vec<&Arc<Pod>> = slot.current.iter().chain(slot.old.iter()).collect();
        if pods.is_empty() {
            continue;
        }
        let scheduled = pods.iter().any(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        });
        if !fits.get(node).is_some_and(|f| f.should_run || f.may_stay) {
            s.number_misscheduled += 1;
            continue;
        }
        if scheduled {
            s.current_number_scheduled += 1;
        }
        if pods
            .iter()
            .any(|p| crate::controllers::ownership::is_ready(p))
        {
            ready += 1;
        }
        if pods.iter().any(|p| is_available(p, min_ready)) {
            available += 1;
        }
        if slot.current.iter().any(|p| hash_of(p) == Some(hash)) {
            updated += 1;
        }
    }
    s.number_ready = ready;
    s.number_available = Some(available);
    s.number_unavailable = Some((desired as i32 - available).max(0));
    s.updated_number_scheduled = Some(updated);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_scale_as_counts_or_percentages_rounded_up() {
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 10), 2);
        assert_eq!(scaled(Some(&IntOrString::String("25%".into())), 10), 3);
        assert_eq!(scaled(Some(&IntOrString::String("0%".into())), 10), 0);
        assert_eq!(scaled(None, 10), 0);
    }
}
