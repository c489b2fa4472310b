//! One pass over a StatefulSet, in Kubernetes' order:
//!
//! 1. each ordinal in range without a pod gets its claims, then its pod (OrderedReady: one
//!    at a time, each once every lower ordinal is running and ready; Parallel: all at once);
//!    a finished pod is deleted, to be made again;
//! 2. pods of ordinals out of range go, the highest first (OrderedReady: one at a time,
//!    while all others are ready), and with `whenScaled: Delete` their claims after them;
//! 3. RollingUpdate: once every pod is ready, the highest pod at or above the partition that
//!    is not of the update revision is deleted (remade by 1 from the new template);
//! 4. the status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use serde_json::json;
use skiff_proto::objects::{Api, ApiError, DeleteParams};

use super::identity::{
    claim_templates, claims_go_when_scaled, claims_go_with_set, new_claims, new_pod, ordinal_of,
    set_reference, REVISION_LABEL,
};
use crate::controllers::cache::{self, controlled_by};
use crate::controllers::context::Ctx;
use crate::controllers::ownership::{is_available, is_ready, revision_of};
use crate::controllers::revisions::{self, ensure_update_revision, template_of, Revisions};
use crate::controllers::runner::writes::Writes;
use crate::controllers::runner::{Action, ReconcileError};

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn revision_label(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

fn running_and_ready(p: &Pod, min_ready: i32) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && is_available(p, min_ready)
}

fn already_exists(e: &ApiError) -> bool {
    matches!(e, ApiError::Client(skiff_proto::ClientError::Rejected(s)) if s.code() == tonic::Code::AlreadyExists)
}

/// The set's view of itself in one pass.
struct Plan<'a> {
    sts: &'a StatefulSet,
    ns: String,
    start: usize,
    end: usize,
    ordered: bool,
    min_ready: i32,
    /// Its pods by ordinal.
    pods: BTreeMap<usize, Arc<Pod>>,
}

/// Run one pass over `sts`.
pub async fn sync(ctx: &Ctx, sts: &StatefulSet) -> Result<Action, ReconcileError> {
    let Some(spec) = sts.spec.as_ref() else {
        return Ok(Action::done());
    };
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::done());
    }
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let mut writes = Writes::default();

    let revisions = Revisions::of(ctx, sts);
    match ensure_update_revision(ctx, sts, &revisions).await {
        // The next pass sees the revision in the cache.
        Ok(Some(rev)) => {
            writes.wrote(rev);
            return writes.outcome();
        }
        Ok(None) => {}
        Err(e) => {
            writes.fail(e);
            return writes.outcome();
        }
    }
    let update_rev = revisions::update_revision_name(sts);
    let current_rev = sts
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .filter(|r| revisions.get(r).is_some())
        .unwrap_or_else(|| update_rev.clone());
    let current_template = revisions
        .get(&current_rev)
        .and_then(|r| template_of(r))
        .unwrap_or_else(|| spec.template.clone());

    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0) as usize;
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0) as usize;
    let mut plan = Plan {
        sts,
        ns: ns.clone(),
        start,
        end: start + replicas,
        ordered: spec.pod_management_policy.as_deref() != Some("Parallel"),
        min_ready: spec.min_ready_seconds.unwrap_or(0),
        pods: BTreeMap::new(),
    };
    for p in controlled_by(&ctx.pods, &ns, &uid) {
        if let Some(o) = ordinal_of(sts, &p) {
            plan.pods.insert(o, p);
        }
    }
    let pods_api: Api<Pod> = Api::new(ctx.client.clone(), &ns);
    let claims_api: Api<PersistentVolumeClaim> = Api::new(ctx.client.clone(), &ns);

    // 1. Ordinals in range.
    let mut to_create: Vec<usize> = Vec::new();
    let mut to_delete: Vec<Arc<Pod>> = Vec::new();
    let mut all_ready = true;
    for ord in plan.start..plan.end {
        let ready = match plan.pods.get(&ord) {
            None => {
                to_create.push(ord);
                false
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => false,
            Some(p) if finished(p) => {
                to_delete.push(p.clone());
                false
            }
            Some(p) => running_and_ready(p, plan.min_ready),
        };
        all_ready &= ready;
        if plan.ordered && !ready {
            break;
        }
    }
    // A claim still being deleted (scaled away a moment ago) would leave the pod without its
    // volume: the pod waits until the claim is gone and made anew.
    let claim_going = |ord: usize| {
        new_claims(sts, ord).iter().any(|c| {
            ctx.claims
                .get(&ns, c.metadata.name.as_deref().unwrap_or(""))
                .is_some_and(|c| c.metadata.deletion_timestamp.is_some())
        })
    };
    let held: Vec<usize> = to_create
        .iter()
        .copied()
        .filter(|o| claim_going(*o))
        .collect();
    if !held.is_empty() {
        to_create.retain(|o| !held.contains(o));
        writes.again_in(Duration::from_secs(1));
    }
    let creates = to_create.iter().map(|&ord| {
        // Below the partition a pod is made as it was; at or above it, from the update.
        let (template, rev): (&PodTemplateSpec, &str) = if rolling && ord < plan.start + partition {
            (&current_template, &current_rev)
        } else {
            (&spec.template, &update_rev)
        };
        let pod = new_pod(sts, ord, template, rev);
        let claims = new_claims(sts, ord);
        let (pods_api, claims_api) = (&pods_api, &claims_api);
        let have: Vec<bool> = claims
            .iter()
            .map(|c| {
                ctx.claims
                    .get(&ns, c.metadata.name.as_deref().unwrap_or(""))
                    .is_some()
            })
            .collect();
        async move {
            let mut last = 0;
            for (c, have) in claims.iter().zip(have) {
                if have {
                    continue;
                }
                match claims_api.create(c).await {
                    Ok(c) => last = last.max(revision_of(&c.metadata)),
                    Err(e) if already_exists(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            match pods_api.create(&pod).await {
                Ok(p) => Ok(last.max(revision_of(&p.metadata))),
                Err(e) if already_exists(&e) => Ok(last),
                Err(e) => Err(e),
            }
        }
    });
    for r in futures::future::join_all(creates).await {
        match r {
            Ok(rev) => writes.wrote(rev),
            Err(e) => writes.fail(e),
        }
    }

    // 2. Ordinals out of range, the highest first.
    let condemned: Vec<Arc<Pod>> = plan
        .pods
        .iter()
        .rev()
        .filter(|(o, _)| **o < plan.start || **o >= plan.end)
        .map(|(_, p)| p.clone())
        .collect();
    if !plan.ordered {
        to_delete.extend(
            condemned
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .cloned(),
        );
    } else if all_ready && to_create.is_empty() {
        if let Some(p) = condemned.first() {
            let others_ready = condemned[1..]
                .iter()
                .all(|p| running_and_ready(p, plan.min_ready));
            if p.metadata.deletion_timestamp.is_none() && others_ready {
                to_delete.push(p.clone());
            }
        }
    }

    // 3. The rolling update, one pod at a time from the top: OrderedReady once all pods are
    // ready; Parallel as soon as the updated pods above are (so a bad template that broke
    // every pod can still be replaced by a fixed one).
    let may_update = if plan.ordered {
        all_ready && to_create.is_empty() && condemned.is_empty()
    } else {
        to_create.is_empty() && held.is_empty()
    };
    if rolling && may_update {
        for o in (plan.start + partition..plan.end).rev() {
            let Some(p) = plan.pods.get(&o) else { break };
            if revision_label(p) != Some(update_rev.as_str()) {
                if p.metadata.deletion_timestamp.is_none() && !to_delete.contains(p) {
                    to_delete.push(p.clone());
                }
                break;
            }
            if !running_and_ready(p, plan.min_ready) {
                break;
            }
        }
    }
    let deletes = to_delete.iter().map(|p| {
        let name = p.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            uid: p.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        let api = &pods_api;
        async move { api.delete(&name, &params).await }
    });
    for r in futures::future::join_all(deletes).await {
        writes.note(r, |_| 0);
    }

    // Claims: kept by the retention policy.
    claims_per_policy(ctx, &plan, &claims_api, &mut writes).await;

    // Old revisions beyond the history limit go.
    let mut in_use: BTreeSet<String> = plan
        .pods
        .values()
        .filter_map(|p| revision_label(p).map(str::to_string))
        .collect();
    in_use.insert(update_rev.clone());
    in_use.insert(current_rev.clone());
    let keep = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let rev_api: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        Api::new(ctx.client.clone(), &ns);
    for r in revisions::surplus(&revisions, &in_use, keep) {
        let name = r.metadata.name.clone().unwrap_or_default();
        writes.note(rev_api.delete(&name, &DeleteParams::default()).await, |_| 0);
    }

    // 4. The status.
    let status = status_of(&plan, &current_rev, &update_rev);
    if sts.status.as_ref() != Some(&status) {
        let mut next = sts.clone();
        next.status = Some(status);
        let api: Api<StatefulSet> = Api::new(ctx.client.clone(), &ns);
        writes.note(api.update_status(&next).await, |s| revision_of(&s.metadata));
    }
    if plan.min_ready > 0 {
        writes.again_in(Duration::from_secs(plan.min_ready as u64 + 1));
    }
    writes.outcome()
}

/// Claims follow the retention policy: with `whenDeleted: Delete` each names the set as its
/// owner (the garbage collector removes it with the set), without it none does; with
/// `whenScaled: Delete` the claims of ordinals scaled away go once their pod has.
async fn claims_per_policy(
    ctx: &Ctx,
    plan: &Plan<'_>,
    api: &Api<PersistentVolumeClaim>,
    writes: &mut Writes,
) {
    let sts = plan.sts;
    let templates: Vec<String> = claim_templates(sts)
        .iter()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    if templates.is_empty() {
        return;
    }
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let with_set = claims_go_with_set(sts);
    let set_name = sts.metadata.name.clone().unwrap_or_default();
    for claim in ctx.claims.by_index(cache::NAMESPACE, &plan.ns) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let Some(ordinal) = templates.iter().find_map(|t| {
            let rest = name.strip_prefix(&format!("{t}-{set_name}-"))?;
            rest.parse::<usize>().ok()
        }) else {
            continue;
        };
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let owners = claim.metadata.owner_references.clone().unwrap_or_default();
        let owned = owners.iter().any(|r| r.uid == uid);
        let gone_pod = !plan.pods.contains_key(&ordinal);
        let scaled_away = ordinal < plan.start || ordinal >= plan.end;
        if scaled_away && gone_pod && claims_go_when_scaled(sts) {
            writes.note(api.delete(&name, &DeleteParams::default()).await, |_| 0);
            continue;
        }
        if owned != with_set {
            let mut refs: Vec<_> = owners.into_iter().filter(|r| r.uid != uid).collect();
            if with_set {
                refs.push(set_reference(sts));
            }
            let patch = json!({"metadata": {"ownerReferences": refs,
                "resourceVersion": claim.metadata.resource_version}});
            writes.note(api.patch(&name, &patch).await, |c| revision_of(&c.metadata));
        }
    }
}

/// The status from the pods before this pass's writes (the next pass counts those).
fn status_of(plan: &Plan<'_>, current_rev: &str, update_rev: &str) -> StatefulSetStatus {
    let live: Vec<&Arc<Pod>> = plan.pods.values().filter(|p| !finished(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let replicas = count(&|_| true);
    let ready = count(&|p| is_ready(p));
    let updated = count(&|p| revision_label(p) == Some(update_rev));
    let wanted = (plan.end - plan.start) as i32;
    // The update is complete once every pod is of it and ready: it becomes the current one.
    let complete = updated == wanted && ready == wanted && replicas == wanted;
    let current = if complete { update_rev } else { current_rev };
    StatefulSetStatus {
        observed_generation: plan.sts.metadata.generation,
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(count(&|p| is_available(p, plan.min_ready))),
        current_replicas: Some(count(&|p| revision_label(p) == Some(current))),
        updated_replicas: Some(updated),
        current_revision: Some(current.to_string()),
        update_revision: Some(update_rev.to_string()),
        collision_count: Some(0),
        conditions: None,
    }
}
