//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector, owned
//! through a controller reference; adopts matching orphans, releases pods that stopped
//! matching, deletes the least valuable pods first, and reports status.
//!
//! Keyed by ReplicaSet; a pod's change reaches its controlling ReplicaSet, or, for an orphan,
//! the ReplicaSets of its namespace that select it (they may adopt it).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use skiff_proto::objects::{Api, ApiError};

use super::cache::{self, controlled_by};
use super::context::Ctx;
use super::ownership::{
    controller_ref, controller_uid, created_at, is_active, is_available, is_ready, revision_of,
};
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};
use crate::objects::selectors::Selector;

/// The controller's name.
pub const NAME: &str = "replicaset";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let pods_ctx = ctx.clone();
    Runner::new(
        ReplicaSetController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.replicasets.subscribe(), |rs: &ReplicaSet| {
        vec![ObjectKey::of(rs)]
    })
    .watches(ctx.pods.subscribe(), move |p: &Pod| {
        sets_for_pod(&pods_ctx, p)
    })
    .run()
    .await
}

/// The ReplicaSets a pod's change concerns: its controller, or those that may adopt it.
fn sets_for_pod(ctx: &Ctx, p: &Pod) -> Vec<ObjectKey> {
    if let Some(owner) = cache::controller_key(p, "ReplicaSet") {
        return vec![owner];
    }
    if controller_uid(&p.metadata).is_some() || !is_active(p) {
        return Vec::new();
    }
    let ns = p.metadata.namespace.as_deref().unwrap_or("");
    let labels = p.metadata.labels.clone().unwrap_or_default();
    ctx.replicasets
        .by_index(cache::NAMESPACE, ns)
        .iter()
        .filter(|rs| {
            rs.spec.as_ref().is_some_and(|s| {
                Selector::from_label_selector("spec.selector", &s.selector)
                    .is_ok_and(|sel| !sel.is_empty() && sel.matches(&labels))
            })
        })
        .map(|rs| ObjectKey::of(&**rs))
        .collect()
}

/// Reconciles one ReplicaSet.
pub struct ReplicaSetController {
    ctx: Arc<Ctx>,
}

impl Reconciler for ReplicaSetController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(rs) = self.ctx.replicasets.get(&key.namespace, &key.name) else {
            return Ok(Action::done()); // gone: the garbage collector takes its pods
        };
        // One being deleted in the foreground is the garbage collector's to take down.
        if rs.metadata.deletion_timestamp.is_some()
            && rs
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
        {
            return Ok(Action::done());
        }
        reconcile(&self.ctx, &rs).await
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.replicasets.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.pods.wait_for(revision, timeout).await;
    }
}

/// Pods ranked from least to most valuable to keep (deleted first).
pub fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<i64>) {
    let scheduled = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let created = created_at(&p.metadata);
    (
        u8::from(scheduled),
        phase,
        u8::from(is_ready(p)),
        std::cmp::Reverse(created),
    )
}

async fn reconcile(ctx: &Ctx, rs: &ReplicaSet) -> Result<Action, ReconcileError> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let Some(spec) = &rs.spec else {
        return Ok(Action::done());
    };
    let Ok(selector) = Selector::from_label_selector("spec.selector", &spec.selector) else {
        return Ok(Action::done()); // admission refuses bad selectors; nothing to do with one
    };
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let owned = controlled_by(&ctx.pods, &ns, &uid);
    let pods_api: Api<Pod> = Api::new(ctx.client.clone(), &ns);
    let mut last = 0;
    let mut failed: Option<ApiError> = None;

    // Adopt orphans that match; release owned pods that no longer match.
    let mut mine: Vec<Arc<Pod>> = Vec::new();
    for p in &owned {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if selector.matches(&labels) {
            mine.push(p.clone());
        } else if rs.metadata.deletion_timestamp.is_none() {
            let refs: Vec<_> = p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.uid != uid)
                .cloned()
                .collect();
            let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": p.metadata.resource_version}});
            match pods_api
                .patch(p.metadata.name.as_deref().unwrap_or(""), &patch)
                .await
            {
                Ok(p) => last = last.max(revision_of(&p.metadata)),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
    }
    if rs.metadata.deletion_timestamp.is_none() {
        let orphans = ctx.pods.by_index(cache::ORPHANS, &ns);
        for p in orphans.iter().filter(|p| is_active(p)) {
            if !selector.is_empty()
                && selector.matches(&p.metadata.labels.clone().unwrap_or_default())
            {
                let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref("apps/v1", "ReplicaSet", &rs.metadata));
                let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": p.metadata.resource_version}});
                match pods_api
                    .patch(p.metadata.name.as_deref().unwrap_or(""), &patch)
                    .await
                {
                    Ok(p) => {
                        last = last.max(revision_of(&p.metadata));
                        mine.push(Arc::new(p));
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
    }

    let mut active: Vec<Arc<Pod>> = mine.iter().filter(|p| is_active(p)).cloned().collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    if rs.metadata.deletion_timestamp.is_none() && active.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let mut creates = Vec::new();
        for _ in active.len()..want {
            let mut pod = Pod {
                metadata: template.metadata.clone().unwrap_or_default(),
                spec: template.spec.clone(),
                status: None,
            };
            pod.metadata.name = None;
            pod.metadata.generate_name = Some(format!("{name}-"));
            pod.metadata.namespace = Some(ns.clone());
            pod.metadata.owner_references =
                Some(vec![controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]);
            let api = pods_api.clone();
            creates.push(async move { api.create(&pod).await });
        }
        // Creates go out together, so the store coalesces them into few Raft entries.
        for r in futures::future::join_all(creates).await {
            match r {
                Ok(p) => last = last.max(revision_of(&p.metadata)),
                Err(e) => {
                    tracing::warn!(replicaset = %name, error = %e, "creating a pod failed");
                    failed.get_or_insert(e);
                }
            }
        }
    } else if active.len() > want {
        active.sort_by_key(|p| deletion_rank(p));
        let excess = active.len() - want;
        let doomed: std::collections::HashSet<String> = active
            .iter()
            .take(excess)
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        // The status below must not count pods being deleted now.
        mine.retain(|p| p.metadata.name.as_ref().is_none_or(|n| !doomed.contains(n)));
        let deletes = active.iter().take(excess).map(|p| {
            let api = pods_api.clone();
            let pod_name = p.metadata.name.clone().unwrap_or_default();
            async move { api.delete(&pod_name, &Default::default()).await }
        });
        for r in futures::future::join_all(deletes).await {
            match r {
                // Gone already: what the delete was for (the cache had not shown it yet).
                Err(ApiError::Client(skiff_proto::ClientError::Rejected(s)))
                    if s.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    tracing::debug!(replicaset = %name, error = %e, "deleting a pod failed");
                    failed.get_or_insert(e);
                }
                Ok(_) => {}
            }
        }
        active.truncate(0);
    }

    // Status from what the caches show.
    let active_now: Vec<&Arc<Pod>> = mine.iter().filter(|p| is_active(p)).collect();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let status = ReplicaSetStatus {
        replicas: active_now.len() as i32,
        ready_replicas: Some(active_now.iter().filter(|p| is_ready(p)).count() as i32),
        available_replicas: Some(
            active_now
                .iter()
                .filter(|p| is_available(p, min_ready))
                .count() as i32,
        ),
        fully_labeled_replicas: Some(
            active_now
                .iter()
                .filter(|p| {
                    let l = p.metadata.labels.clone().unwrap_or_default();
                    template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
                })
                .count() as i32,
        ),
        observed_generation: rs.metadata.generation,
        ..Default::default()
    };
    if rs.status.as_ref() != Some(&status) {
        let mut next = rs.clone();
        next.status = Some(status);
        let api: Api<ReplicaSet> = Api::new(ctx.client.clone(), &ns);
        // Only pod writes count toward `last`: it is awaited on the pod cache.
        if let Err(e) = api.update_status(&next).await {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        return Err(ReconcileError::after_write(last, e));
    }
    let action = Action::done().wrote(last);
    // A ready pod becomes available after minReadySeconds: look again then.
    Ok(
        match next_available(active_now.iter().map(|p| &***p), min_ready) {
            Some(d) => action.or_requeue_after(d),
            None => action,
        },
    )
}

/// How long until the first ready pod that is not yet available becomes available.
fn next_available<'a>(pods: impl Iterator<Item = &'a Pod>, min_ready: i32) -> Option<Duration> {
    if min_ready <= 0 {
        return None;
    }
    let now = jiff::Timestamp::now().as_second();
    pods.filter(|p| is_ready(p) && !is_available(p, min_ready))
        .filter_map(|p| {
            let since = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready")?
                .last_transition_time
                .as_ref()?
                .0
                .as_second();
            Some(Duration::from_secs(
                (since + i64::from(min_ready) - now).clamp(0, 3600) as u64 + 1,
            ))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(node: Option<&str>, phase: &str, ready: bool, created: i64) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn least_valuable_pods_go_first() {
        let mut pods = [
            pod(Some("n"), "Running", true, 100),
            pod(Some("n"), "Running", true, 200),
            pod(None, "Pending", false, 50),
            pod(Some("n"), "Running", false, 10),
            pod(Some("n"), "Pending", false, 10),
        ];
        pods.sort_by_key(deletion_rank);
        let order: Vec<(bool, String, bool, i64)> = pods
            .iter()
            .map(|p| {
                (
                    p.spec.as_ref().unwrap().node_name.is_some(),
                    p.status.as_ref().unwrap().phase.clone().unwrap(),
                    is_ready(p),
                    p.metadata
                        .creation_timestamp
                        .as_ref()
                        .unwrap()
                        .0
                        .as_second(),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (false, "Pending".into(), false, 50),
                (true, "Pending".into(), false, 10),
                (true, "Running".into(), false, 10),
                (true, "Running".into(), true, 200),
                (true, "Running".into(), true, 100),
            ]
        );
    }
}
