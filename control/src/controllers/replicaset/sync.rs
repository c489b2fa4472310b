//! What a ReplicaSet and a ReplicationController do alike: keep `replicas` active pods that
//! match the selector, owned through a controller reference; adopt matching orphans, release
//! pods that stopped matching, delete the least valuable pods first; and count what the
//! status reports. Each controller writes that status to its own kind.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use skiff_proto::objects::{Api, ApiError};

use crate::controllers::cache::{self, controlled_by};
use crate::controllers::context::Ctx;
use crate::controllers::ownership::{
    controller_ref, created_at, is_active, is_available, is_ready, pod_from_template, revision_of,
};
use crate::controllers::runner::{Action, ReconcileError};
use crate::objects::selectors::Selector;

/// The kind whose pods are kept, as its controller references name it.
pub struct Owner<'a> {
    /// `apps/v1`, `v1`.
    pub api_version: &'a str,
    /// `ReplicaSet`, `ReplicationController`.
    pub kind: &'a str,
}

/// What a sync did and found.
#[derive(Debug, Default)]
pub struct Synced {
    /// The status the caches show now.
    pub status: ReplicaSetStatus,
    /// The revision of the last pod write.
    pub last: u64,
    /// The first write that failed.
    pub failed: Option<ApiError>,
    /// When a ready pod turns available.
    pub look_again: Option<Duration>,
}

impl Synced {
    /// The reconcile's outcome once the status is written (`status_write` failing counts).
    pub fn outcome(self, status_write: Result<(), ApiError>) -> Result<Action, ReconcileError> {
        // Only pod writes count toward `last`: it is awaited on the pod cache.
        let failed = self.failed.or(status_write.err());
        if let Some(e) = failed {
            return Err(ReconcileError::after_write(self.last, e));
        }
        let action = Action::done().wrote(self.last);
        Ok(match self.look_again {
            Some(d) => action.or_requeue_after(d),
            None => action,
        })
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

/// Keep `rs`'s pods; `None` when there is nothing to do (no spec, a selector admission
/// would refuse, or a foreground delete the garbage collector carries out).
pub async fn sync(ctx: &Ctx, rs: &ReplicaSet, owner: &Owner<'_>) -> Option<Synced> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    // One being deleted in the foreground is the garbage collector's to take down.
    if rs.metadata.deletion_timestamp.is_some()
        && rs
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
    {
        return None;
    }
    let spec = rs.spec.as_ref()?;
    let selector = Selector::from_label_selector("spec.selector", &spec.selector).ok()?;
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
                refs.push(controller_ref(owner.api_version, owner.kind, &rs.metadata));
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
            let pod = pod_from_template(
                template.clone(),
                owner.api_version,
                owner.kind,
                &rs.metadata,
                format!("{name}-"),
            );
            let api = pods_api.clone();
            creates.push(async move { api.create(&pod).await });
        }
        // Creates go out together, so the store coalesces them into few Raft entries.
        for r in futures::future::join_all(creates).await {
            match r {
                Ok(p) => last = last.max(revision_of(&p.metadata)),
                Err(e) => {
                    tracing::warn!(owner = owner.kind, name = %name, error = %e, "creating a pod failed");
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
                    tracing::debug!(owner = owner.kind, name = %name, error = %e, "deleting a pod failed");
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
    Some(Synced {
        status,
        last,
        failed,
        // A ready pod becomes available after minReadySeconds: look again then.
        look_again: next_available(active_now.iter().map(|p| &***p), min_ready),
    })
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
