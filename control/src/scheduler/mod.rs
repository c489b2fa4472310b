//! The scheduler: places pods that have no node. For each pod it filters the nodes
//! ([`filters`]), scores the rest (least allocated, spreading an owner's pods, preferred
//! affinity) and binds it by setting `spec.nodeName` with compare-and-swap. Placements are
//! assumed at once in its own view ([`node_info`]), so it never waits for its binds to come
//! back; binds go out concurrently and the store coalesces them into few Raft entries. A pod
//! that fits nowhere gets `PodScheduled=False` and an Event saying why, and is tried again
//! when nodes change.

pub mod filters;
pub mod node_info;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use skiff_proto::objects::Api;
use tokio::sync::Semaphore;

use crate::controllers::context::{Ctx, Kind};
use crate::controllers::events::Involved;
use crate::controllers::ownership::controller_uid;
use filters::{preferred_weight, reasons, unschedulable_message, Ask};
use node_info::NodeInfo;

/// Binds in flight at once.
const MAX_BINDS_IN_FLIGHT: usize = 256;
/// How often a pod that fit nowhere is tried again when nothing changed.
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(5);
/// An assumed placement the caches never confirm is forgotten after this long.
const ASSUME_TTL: Duration = Duration::from_secs(30);

type PodKey = (String, String);

/// A placement made but not yet seen in the cache: node, pod, when.
type Assumed = (String, Arc<Pod>, Instant);

#[derive(Default)]
struct State {
    /// Pods bound by us that the cache does not show bound yet: key → (node, pod, when).
    assumed: Arc<Mutex<HashMap<PodKey, Assumed>>>,
    /// Pods that fit nowhere: key → (message, when tried, nodes revision then).
    unschedulable: HashMap<PodKey, (String, Instant, u64)>,
}

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let mut trigger = ctx.trigger(&[Kind::Pods, Kind::Nodes]).quick();
    let mut state = State::default();
    let binds = Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT));
    loop {
        schedule_pending(&ctx, &mut state, &binds).await;
        trigger.wait(Duration::from_secs(1)).await;
    }
}

fn key_of(p: &Pod) -> PodKey {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

fn is_pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty)
        && p.metadata.deletion_timestamp.is_none()
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == "default-scheduler")
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The node scores for `ask` among `feasible` (indices into `nodes`); the best index.
fn best_node(
    ask: &Ask<'_>,
    owner: Option<&str>,
    nodes: &[NodeInfo],
    feasible: &[usize],
) -> Option<usize> {
    let max_owner = owner
        .map(|o| {
            feasible
                .iter()
                .map(|&i| nodes[i].per_owner.get(o).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let weights: Vec<i64> = feasible
        .iter()
        .map(|&i| preferred_weight(ask.pod, &nodes[i]))
        .collect();
    let max_weight = weights.iter().copied().max().unwrap_or(0);
    let pod_name = ask.pod.metadata.name.as_deref().unwrap_or("");
    let mut best: Option<(i128, u64, usize)> = None;
    for (j, &i) in feasible.iter().enumerate() {
        let n = &nodes[i];
        let free = |cap: i128, used: i128, req: i128| {
            if cap <= 0 {
                0
            } else {
                ((cap - used - req).max(0) * 100) / cap
            }
        };
        let least = (free(
            n.allocatable.0,
            n.requested.cpu_millis,
            ask.requests.cpu_millis,
        ) + free(
            n.allocatable.1,
            n.requested.memory_millis,
            ask.requests.memory_millis,
        )) / 2;
        let spread = match owner {
            Some(o) if max_owner > 0 => {
                i128::from(100 * (max_owner - n.per_owner.get(o).copied().unwrap_or(0)) / max_owner)
            }
            _ => 100,
        };
        let affinity = if max_weight > 0 {
            i128::from(100 * weights[j] / max_weight)
        } else {
            0
        };
        let score = least + 2 * spread + affinity - i128::from(n.pods.min(1_000_000)) / 1000;
        // Ties broken by a hash of pod and node, so equal nodes share the load.
        let tie = pod_name
            .bytes()
            .chain(n.name.bytes())
            .fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
            });
        if best.is_none_or(|(s, t, _)| score > s || (score == s && tie > t)) {
            best = Some((score, tie, i));
        }
    }
    best.map(|(_, _, i)| i)
}

async fn schedule_pending(ctx: &Ctx, state: &mut State, binds: &Arc<Semaphore>) {
    let pods = ctx.pods.list();
    let node_objs = ctx.nodes.list();
    let nodes_revision = ctx.nodes.revision();
    let mut nodes: Vec<NodeInfo> = node_objs.iter().map(|n| NodeInfo::new(n)).collect();
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();

    // What is placed: bound pods from the cache, then our own assumptions.
    let mut bound_keys = std::collections::HashSet::new();
    for p in &pods {
        let Some(node) = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        bound_keys.insert(key_of(p));
        if matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        if let Some(&i) = index.get(node) {
            nodes[i].place(p, controller_uid(&p.metadata));
        }
    }
    let assumed_now: Vec<(PodKey, String, Arc<Pod>)> = {
        let Ok(mut assumed) = state.assumed.lock() else {
            return;
        };
        assumed.retain(|k, (_, _, at)| !bound_keys.contains(k) && at.elapsed() < ASSUME_TTL);
        assumed
            .iter()
            .map(|(k, (n, p, _))| (k.clone(), n.clone(), p.clone()))
            .collect()
    };
    let mut assumed_keys = std::collections::HashSet::new();
    for (k, node, p) in &assumed_now {
        assumed_keys.insert(k.clone());
        if let Some(&i) = index.get(node) {
            nodes[i].place(p, controller_uid(&p.metadata));
        }
    }

    let mut pending: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| is_pending(p) && !assumed_keys.contains(&key_of(p)))
        .collect();
    pending.sort_by_key(|p| {
        let prio = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        (
            std::cmp::Reverse(prio),
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0),
        )
    });
    state
        .unschedulable
        .retain(|k, _| pending.iter().any(|p| &key_of(p) == k));

    let mut feasible = Vec::with_capacity(nodes.len());
    for pod in pending {
        let key = key_of(pod);
        if let Some((_, at, rev)) = state.unschedulable.get(&key) {
            if *rev == nodes_revision && at.elapsed() < RETRY_UNSCHEDULABLE {
                continue;
            }
        }
        let ask = Ask::of(pod);
        feasible.clear();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let why = reasons(&ask, n);
            if why.is_empty() {
                feasible.push(i);
            } else {
                for r in why {
                    *counts.entry(r).or_default() += 1;
                }
            }
        }
        let owner = controller_uid(&pod.metadata);
        match best_node(&ask, owner, &nodes, &feasible) {
            Some(i) => {
                nodes[i].place(pod, owner);
                let node = nodes[i].name.clone();
                state.unschedulable.remove(&key);
                if let Ok(mut a) = state.assumed.lock() {
                    a.insert(key.clone(), (node.clone(), (*pod).clone(), Instant::now()));
                }
                let Ok(permit) = binds.clone().acquire_owned().await else {
                    return;
                };
                let api: Api<Pod> = Api::new(ctx.client.clone(), &key.0);
                let assumed = state.assumed.clone();
                let rv = pod.metadata.resource_version.clone();
                tokio::spawn(async move {
                    let patch =
                        json!({"metadata": {"resourceVersion": rv}, "spec": {"nodeName": node}});
                    if let Err(e) = api.patch(&key.1, &patch).await {
                        tracing::debug!(pod = %key.1, node = %node, error = %e, "bind failed; the pod goes back to the queue");
                        if let Ok(mut a) = assumed.lock() {
                            a.remove(&key);
                        }
                    }
                    drop(permit);
                });
            }
            None => {
                let message = unschedulable_message(nodes.len(), &counts);
                let changed = state
                    .unschedulable
                    .get(&key)
                    .is_none_or(|(m, _, _)| *m != message);
                state.unschedulable.insert(
                    key.clone(),
                    (message.clone(), Instant::now(), nodes_revision),
                );
                if changed {
                    report_unschedulable(ctx, pod, &message).await;
                }
            }
        }
    }
}

async fn report_unschedulable(ctx: &Ctx, pod: &Pod, message: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    tracing::info!(pod = %name, namespace = %ns, %message, "pod fits no node");
    ctx.recorder.record(
        &Involved {
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespace: ns.clone(),
            name: name.clone(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        },
        "Warning",
        "FailedScheduling",
        message,
        "default-scheduler",
    );
    let mut next = pod.clone();
    let status = next.status.get_or_insert_with(Default::default);
    let mut conditions: Vec<PodCondition> = status
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "PodScheduled")
        .collect();
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        ..Default::default()
    });
    status.conditions = Some(conditions);
    let api: Api<Pod> = Api::new(ctx.client.clone(), &ns);
    if let Err(e) = api.update_status(&next).await {
        tracing::debug!(pod = %name, error = %e, "recording PodScheduled=False failed");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str) -> NodeInfo {
        let res = BTreeMap::from([
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("8Gi".into())),
            ("pods".to_string(), Quantity("110".into())),
        ]);
        NodeInfo::new(&Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(res),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn owned_pod(i: usize) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("web-{i}")),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        }
    }

    #[test]
    fn an_owners_pods_spread_evenly() {
        let mut nodes = vec![node("a"), node("b"), node("c")];
        let all: Vec<usize> = (0..3).collect();
        for i in 0..10 {
            let pod = owned_pod(i);
            let ask = Ask::of(&pod);
            let best = best_node(&ask, Some("owner"), &nodes, &all).expect("a node fits");
            nodes[best].place(&pod, Some("owner"));
        }
        let mut counts: Vec<i64> = nodes.iter().map(|n| n.pods).collect();
        counts.sort_unstable();
        assert_eq!(counts, vec![3, 3, 4]);
    }
}
