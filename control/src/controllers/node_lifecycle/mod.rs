//! Node lifecycle: a node whose Lease has not been renewed within the grace period turns
//! `Ready=Unknown` and gets the `node.kubernetes.io/unreachable:NoExecute` taint; its pods are
//! evicted once their toleration of that taint runs out, so their owners replace them
//! elsewhere. A node whose Lease is renewed again is Ready and untainted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_proto::objects::Api;

use super::context::{Ctx, Kind};
use super::events::Involved;

/// The taint of a node that stopped renewing its Lease.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let mut trigger = ctx.trigger(&[Kind::Nodes, Kind::Leases]);
    // When this leader first saw each lease renewal: clocks of nodes are never compared.
    let mut seen: HashMap<String, (String, Instant)> = HashMap::new();
    let started = Instant::now();
    loop {
        reconcile(&ctx, &mut seen, started).await;
        trigger.wait(Duration::from_millis(500)).await;
    }
}

fn lease_key(ctx: &Ctx, node: &str) -> Option<String> {
    let lease = ctx.leases.get(&ctx.settings.lease_namespace, node)?;
    let spec = lease.spec.as_ref()?;
    Some(format!(
        "{:?}/{:?}",
        spec.renew_time.as_ref().map(|t| t.0),
        lease.metadata.resource_version
    ))
}

/// How long a pod tolerates the unreachable taint.
pub fn toleration(pod: &Pod, default: Duration) -> Option<Duration> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    for t in tolerations.into_iter().flatten() {
        let key_ok = t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == UNREACHABLE);
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == "NoExecute");
        if key_ok
            && effect_ok
            && (t.operator.as_deref() == Some("Exists") || t.key.as_deref() == Some(UNREACHABLE))
        {
            return t
                .toleration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64));
        }
    }
    Some(default)
}

async fn reconcile(ctx: &Ctx, seen: &mut HashMap<String, (String, Instant)>, started: Instant) {
    let grace = ctx.settings.node_grace;
    let nodes = ctx.nodes.list();
    for node in &nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let key = lease_key(ctx, &name).unwrap_or_default();
        let entry = seen
            .entry(name.clone())
            .or_insert_with(|| (key.clone(), started));
        if entry.0 != key {
            *entry = (key, Instant::now());
        }
        let silent_for = entry.1.elapsed();
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == UNREACHABLE));
        let lost = silent_for > grace;
        if lost && !tainted {
            tracing::warn!(node = %name, silent_for = ?silent_for, "node lease expired; marking it unreachable");
            mark(ctx, node, true).await;
            ctx.recorder.record(
                &Involved {
                    kind: "Node".into(),
                    api_version: "v1".into(),
                    namespace: String::new(),
                    name: name.clone(),
                    uid: node.metadata.uid.clone().unwrap_or_default(),
                },
                "Normal",
                "NodeNotReady",
                &format!(
                    "Node {name} status is now: NodeNotReady (no heartbeat for {}s)",
                    silent_for.as_secs()
                ),
                "node-controller",
            );
        } else if !lost && tainted {
            tracing::info!(node = %name, "node lease renewed; ready again");
            mark(ctx, node, false).await;
        }
        if lost && tainted {
            let since = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .and_then(|ts| ts.iter().find(|t| t.key == UNREACHABLE))
                .and_then(|t| t.time_added.as_ref())
                .map(|t| t.0);
            let tainted_for = since
                .map(|t| {
                    Duration::from_secs(
                        (jiff::Timestamp::now().as_second() - t.as_second()).max(0) as u64
                    )
                })
                .unwrap_or_default();
            for pod in ctx.pods.list().iter().filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
                    && p.metadata.deletion_timestamp.is_none()
            }) {
                if toleration(pod, ctx.settings.eviction_toleration)
                    .is_some_and(|t| tainted_for >= t)
                {
                    let ns = pod.metadata.namespace.clone().unwrap_or_default();
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    tracing::info!(node = %name, pod = %pod_name, "evicting pod from an unreachable node");
                    let _ = ctx
                        .client
                        .delete_object("pods", &ns, &pod_name, &Default::default())
                        .await;
                    ctx.recorder.record(
                        &Involved {
                            kind: "Pod".into(),
                            api_version: "v1".into(),
                            namespace: ns,
                            name: pod_name.clone(),
                            uid: pod.metadata.uid.clone().unwrap_or_default(),
                        },
                        "Normal",
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {pod_name}"),
                        "node-controller",
                    );
                }
            }
        }
    }
}

async fn mark(ctx: &Ctx, node: &Node, unreachable: bool) {
    let api: Api<Node> = Api::new(ctx.client.clone(), "");
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut next = node.clone();
    next.metadata.resource_version = None;
    let spec = next.spec.get_or_insert_with(Default::default);
    let mut taints: Vec<Taint> = spec
        .taints
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != UNREACHABLE)
        .collect();
    if unreachable {
        taints.push(Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(jiff::Timestamp::now())),
            value: None,
        });
    }
    spec.taints = if taints.is_empty() {
        None
    } else {
        Some(taints)
    };
    if let Ok(updated) = api.update(&next).await {
        let mut with_status = updated;
        let status = with_status.status.get_or_insert_with(Default::default);
        let mut conditions: Vec<NodeCondition> = status
            .conditions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "Ready")
            .collect();
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: if unreachable { "Unknown" } else { "True" }.into(),
            reason: Some(
                if unreachable {
                    "NodeStatusUnknown"
                } else {
                    "KubeletReady"
                }
                .into(),
            ),
            message: Some(
                if unreachable {
                    "the node stopped renewing its lease"
                } else {
                    "the node renews its lease"
                }
                .into(),
            ),
            last_transition_time: Some(Time(jiff::Timestamp::now())),
            ..Default::default()
        });
        status.conditions = Some(conditions);
        with_status.metadata.resource_version = None;
        if let Err(e) = api.update_status(&with_status).await {
            tracing::debug!(node = %name, error = %e, "node status update failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    use super::*;

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_tolerate_unreachable_nodes_for_their_own_time_or_the_default() {
        let default = Duration::from_secs(5);
        assert_eq!(toleration(&pod(vec![]), default), Some(default));
        let own = Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(60),
            ..Default::default()
        };
        assert_eq!(
            toleration(&pod(vec![own]), default),
            Some(Duration::from_secs(60))
        );
        let forever = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(toleration(&pod(vec![forever]), default), None);
    }
}
