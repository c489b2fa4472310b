//! Node lifecycle: a node whose Lease has not been renewed within the grace period turns
//! `Ready=Unknown` and gets the `node.kubernetes.io/unreachable:NoExecute` taint; its pods are
//! evicted once their toleration of that taint runs out, so their owners replace them
//! elsewhere. A node whose Lease is renewed again is Ready and untainted.
//!
//! Keyed by node; a Lease renewal queues its node, and each node is looked at again when its
//! Lease would run out, since no event says that it did.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_proto::objects::Api;

use super::cache;
use super::context::Ctx;
use super::events::Involved;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The taint of a node that stopped renewing its Lease.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// The controller's name.
pub const NAME: &str = "node-lifecycle";

/// How often pods on an unreachable node are looked at while their tolerations run.
const EVICTION_CHECK: Duration = Duration::from_secs(1);

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let lease_ns = ctx.settings.lease_namespace.clone();
    Runner::new(
        NodeLifecycle {
            ctx: ctx.clone(),
            seen: Mutex::new(HashMap::new()),
            started: Instant::now(),
        },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.nodes.subscribe(), |n: &Node| vec![ObjectKey::of(n)])
    .watches(ctx.leases.subscribe(), move |l: &Lease| {
        if l.metadata.namespace.as_deref() == Some(lease_ns.as_str()) {
            vec![ObjectKey::new(
                "",
                l.metadata.name.clone().unwrap_or_default(),
            )]
        } else {
            Vec::new()
        }
    })
    .run()
    .await
}

/// Watches each node's Lease.
pub struct NodeLifecycle {
    ctx: Arc<Ctx>,
    /// When this leader first saw each node's current lease renewal: clocks of nodes are
    /// never compared.
    seen: Mutex<HashMap<String, (String, Instant)>>,
    started: Instant,
}

impl Reconciler for NodeLifecycle {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(node) = self.ctx.nodes.get("", &key.name) else {
            if let Ok(mut seen) = self.seen.lock() {
                seen.remove(&key.name);
            }
            return Ok(Action::done());
        };
        let lease = lease_key(&self.ctx, &key.name).unwrap_or_default();
        let silent_for = {
            let mut seen = match self.seen.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            let entry = seen
                .entry(key.name.clone())
                .or_insert_with(|| (lease.clone(), self.started));
            if entry.0 != lease {
                *entry = (lease, Instant::now());
            }
            entry.1.elapsed()
        };
        reconcile(&self.ctx, &node, silent_for).await
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.nodes.object_keys()
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

async fn reconcile(ctx: &Ctx, node: &Node, silent_for: Duration) -> Result<Action, ReconcileError> {
    let grace = ctx.settings.node_grace;
    let name = node.metadata.name.clone().unwrap_or_default();
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == UNREACHABLE));
    let lost = silent_for > grace;
    if lost && !tainted {
        tracing::warn!(silent_for = ?silent_for, "node lease expired; marking it unreachable");
        mark(ctx, node, true).await?;
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
        // The taint's own change brings the node back for the evictions.
        return Ok(Action::done());
    }
    if !lost {
        if tainted {
            tracing::info!("node lease renewed; ready again");
            mark(ctx, node, false).await?;
        }
        // No event says a lease was not renewed: look again when it would run out.
        return Ok(Action::requeue_after(
            grace.saturating_sub(silent_for) + Duration::from_millis(100),
        ));
    }
    let since = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .and_then(|ts| ts.iter().find(|t| t.key == UNREACHABLE))
        .and_then(|t| t.time_added.as_ref())
        .map(|t| t.0);
    let tainted_for = since
        .map(|t| {
            Duration::from_secs((jiff::Timestamp::now().as_second() - t.as_second()).max(0) as u64)
        })
        .unwrap_or_default();
    let mut waiting = false;
    for pod in ctx
        .pods
        .by_index(cache::NODE, &name)
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        match toleration(pod, ctx.settings.eviction_toleration) {
            Some(t) if tainted_for >= t => {
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                tracing::info!(pod = %pod_name, "evicting pod from an unreachable node");
                match ctx
                    .client
                    .delete_object("pods", &ns, &pod_name, &Default::default())
                    .await
                {
                    Ok(_) => {}
                    Err(skiff_proto::ClientError::Rejected(s))
                        if s.code() == tonic::Code::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
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
            Some(_) => waiting = true,
            None => {}
        }
    }
    // Still unreachable: evict pods whose tolerations run out, and notice a renewal.
    Ok(Action::requeue_after(if waiting {
        EVICTION_CHECK
    } else {
        grace
    }))
}

async fn mark(ctx: &Ctx, node: &Node, unreachable: bool) -> Result<(), ReconcileError> {
    let api: Api<Node> = Api::new(ctx.client.clone(), "");
    // Both writes compare-and-swap on the version read: a change made meanwhile (a pod CIDR
    // handed out, the agent's own status) is a conflict, retried on a fresh copy, never
    // overwritten.
    let mut next = node.clone();
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
    let updated = api.update(&next).await?;
    {
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
        api.update_status(&with_status).await?;
    }
    Ok(())
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
