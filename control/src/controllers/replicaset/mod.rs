//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector, owned
//! through a controller reference; adopts matching orphans, releases pods that stopped
//! matching, deletes the least valuable pods first, and reports status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use skiff_proto::objects::{Api, ApiError};

use super::context::{Ctx, Kind};
use super::ownership::{
    controller_ref, controller_uid, is_active, is_available, is_ready, revision_of,
};
use crate::objects::selectors::Selector;

/// ReplicaSets reconciled at once.
const CONCURRENT_RECONCILES: usize = 16;

/// How long to wait for the caches to show our own writes before acting again.
const OWN_WRITES_WAIT: Duration = Duration::from_secs(5);

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let mut trigger = ctx.trigger(&[Kind::Pods, Kind::ReplicaSets]).quick();
    let mut last_write = 0u64;
    loop {
        // Act only on caches that include what we wrote last time, so a pod we just created
        // is never created twice.
        ctx.pods.wait_for(last_write, OWN_WRITES_WAIT).await;
        last_write = reconcile_all(&ctx).await.max(last_write);
        trigger.wait(Duration::from_secs(10)).await;
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
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        u8::from(scheduled),
        phase,
        u8::from(is_ready(p)),
        std::cmp::Reverse(created),
    )
}

async fn reconcile_all(ctx: &Ctx) -> u64 {
    let pods = ctx.pods.list();
    let mut by_owner: HashMap<&str, Vec<&Arc<Pod>>> = HashMap::new();
    for p in &pods {
        if let Some(uid) = controller_uid(&p.metadata) {
            by_owner.entry(uid).or_default().push(p);
        }
    }
    let sets: Vec<Arc<ReplicaSet>> = ctx
        .replicasets
        .list()
        .into_iter()
        // One being deleted in the foreground is the garbage collector's to take down.
        .filter(|rs| {
            !(rs.metadata.deletion_timestamp.is_some()
                && rs
                    .metadata
                    .finalizers
                    .as_ref()
                    .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion")))
        })
        .collect();
    // ReplicaSets are independent: several at once keep the write path busy.
    let pods = &pods;
    let results: Vec<u64> = futures::stream::iter(sets)
        .map(|rs: Arc<ReplicaSet>| {
            let uid = rs.metadata.uid.clone().unwrap_or_default();
            let owned: Vec<Arc<Pod>> = by_owner.get(uid.as_str()).map(|v| v.iter().map(|p| Arc::clone(p)).collect()).unwrap_or_default();
            async move {
                let owned_refs: Vec<&Arc<Pod>> = owned.iter().collect();
                match reconcile(ctx, &rs, &owned_refs, pods).await {
                    Ok(rev) => rev,
                    Err(e) => {
                        tracing::debug!(replicaset = rs.metadata.name.as_deref().unwrap_or(""), error = %e, "reconcile failed; will retry");
                        0
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENT_RECONCILES)
        .collect()
        .await;
    results.into_iter().max().unwrap_or(0)
}

async fn reconcile(
    ctx: &Ctx,
    rs: &ReplicaSet,
    owned: &[&Arc<Pod>],
    all: &[Arc<Pod>],
) -> Result<u64, ApiError> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let Some(spec) = &rs.spec else { return Ok(0) };
    let Ok(selector) = Selector::from_label_selector("spec.selector", &spec.selector) else {
        return Ok(0); // admission refuses bad selectors; nothing to do with one
    };
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::new(ctx.client.clone(), &ns);
    let mut last = 0;

    // Adopt orphans that match; release owned pods that no longer match.
    let mut mine: Vec<Arc<Pod>> = Vec::new();
    for p in owned {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if selector.matches(&labels) {
            mine.push((*p).clone());
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
            if let Ok(p) = pods_api
                .patch(p.metadata.name.as_deref().unwrap_or(""), &patch)
                .await
            {
                last = last.max(revision_of(&p.metadata));
            }
        }
    }
    if rs.metadata.deletion_timestamp.is_none() {
        for p in all.iter().filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str())
                && controller_uid(&p.metadata).is_none()
                && is_active(p)
        }) {
            if !selector.is_empty()
                && selector.matches(&p.metadata.labels.clone().unwrap_or_default())
            {
                let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref("apps/v1", "ReplicaSet", &rs.metadata));
                let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": p.metadata.resource_version}});
                if let Ok(p) = pods_api
                    .patch(p.metadata.name.as_deref().unwrap_or(""), &patch)
                    .await
                {
                    last = last.max(revision_of(&p.metadata));
                    mine.push(Arc::new(p));
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
                Err(e) => tracing::warn!(replicaset = %name, error = %e, "creating a pod failed"),
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
            if let Err(e) = r {
                tracing::debug!(replicaset = %name, error = %e, "deleting a pod failed");
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
        match api.update_status(&next).await {
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(replicaset = %name, error = %e, "status update failed; will retry")
            }
        }
    }
    Ok(last)
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
