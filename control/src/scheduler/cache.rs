//! The scheduler's own view of the nodes, kept current from pod and node changes rather than
//! rebuilt from every pod on each pass, so its cost follows the changes, not the cluster.
//!
//! A bound pod counts on its node; a placement the scheduler made but the caches do not show
//! yet is *assumed*: counted at once (so the next pod sees it), confirmed when the pod's bind
//! comes back, and forgotten if it never does.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::node_info::{NodeInfo, Placement};
use crate::controllers::ownership::controller_uid;
use crate::controllers::runner::ObjectKey;

/// How a pod counts on its node.
#[derive(Debug, Clone)]
struct Placed {
    placement: Placement,
    /// Assumed by the scheduler at this instant, not yet seen bound.
    assumed_at: Option<Instant>,
}

/// Nodes with what is placed on them.
#[derive(Debug, Default)]
pub struct SchedulerCache {
    nodes: BTreeMap<String, NodeInfo>,
    placed: HashMap<ObjectKey, Placed>,
}

/// The node a pod is bound to, unless it is finished (it frees its resources then).
pub fn bound_node(p: &Pod) -> Option<&str> {
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())?;
    let finished = matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    (!finished).then_some(node)
}

impl SchedulerCache {
    /// The nodes, by name.
    pub fn nodes(&self) -> &BTreeMap<String, NodeInfo> {
        &self.nodes
    }

    /// The nodes, to place on.
    pub fn nodes_mut(&mut self) -> &mut BTreeMap<String, NodeInfo> {
        &mut self.nodes
    }

    fn unplace(&mut self, key: &ObjectKey) -> Option<Placed> {
        let placed = self.placed.remove(key)?;
        if let Some(n) = self.nodes.get_mut(&placed.placement.node) {
            n.remove(&placed.placement);
        }
        Some(placed)
    }

    fn place(&mut self, key: ObjectKey, placed: Placed) {
        if let Some(n) = self.nodes.get_mut(&placed.placement.node) {
            n.add(&placed.placement);
        }
        self.placed.insert(key, placed);
    }

    /// A node was created or changed.
    pub fn node_applied(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.nodes.get_mut(&name) {
            Some(info) => info.refresh(node),
            None => {
                let mut info = NodeInfo::new(node);
                // Pods bound to it before it was seen (or while it was gone) count again.
                for p in self.placed.values().filter(|p| p.placement.node == name) {
                    info.add(&p.placement);
                }
                self.nodes.insert(name, info);
            }
        }
    }

    /// A node was deleted.
    pub fn node_deleted(&mut self, node: &Node) {
        self.nodes
            .remove(node.metadata.name.as_deref().unwrap_or(""));
    }

    /// A pod was created or changed: it counts on its node if bound and not finished.
    pub fn pod_applied(&mut self, pod: &Pod) {
        let key = ObjectKey::of(pod);
        match bound_node(pod) {
            Some(node) => {
                let placement = Placement::of(pod, node, controller_uid(&pod.metadata));
                if self
                    .placed
                    .get(&key)
                    .is_some_and(|p| p.assumed_at.is_none() && p.placement == placement)
                {
                    return;
                }
                self.unplace(&key);
                self.place(
                    key,
                    Placed {
                        placement,
                        assumed_at: None,
                    },
                );
            }
            None => {
                // Unbound: only an assumption of ours counts it, until it lapses.
                if self
                    .placed
                    .get(&key)
                    .is_some_and(|p| p.assumed_at.is_none())
                {
                    self.unplace(&key);
                }
            }
        }
    }

    /// A pod was deleted.
    pub fn pod_deleted(&mut self, pod: &Pod) {
        self.unplace(&ObjectKey::of(pod));
    }

    /// Count `pod` on `node` before its bind comes back.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let key = ObjectKey::of(pod);
        self.unplace(&key);
        self.place(
            key,
            Placed {
                placement: Placement::of(pod, node, controller_uid(&pod.metadata)),
                assumed_at: Some(Instant::now()),
            },
        );
    }

    /// The pods placed by assumptions not yet confirmed.
    pub fn assumed(&self) -> Vec<ObjectKey> {
        self.placed
            .iter()
            .filter(|(_, p)| p.assumed_at.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `key` is placed by an assumption not yet confirmed.
    pub fn is_assumed(&self, key: &ObjectKey) -> bool {
        self.placed.get(key).is_some_and(|p| p.assumed_at.is_some())
    }

    /// A bind failed: the assumption goes.
    pub fn forget(&mut self, key: &ObjectKey) {
        if self.is_assumed(key) {
            self.unplace(key);
        }
    }

    /// Drop assumptions older than `ttl`; the keys dropped.
    pub fn expire(&mut self, ttl: Duration) -> Vec<ObjectKey> {
        let old: Vec<ObjectKey> = self
            .placed
            .iter()
            .filter(|(_, p)| p.assumed_at.is_some_and(|t| t.elapsed() >= ttl))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.unplace(k);
        }
        old
    }

    /// Start again from `nodes` and `pods` (after missed changes).
    pub fn rebuild<'a, P: Borrow<Pod>>(
        &mut self,
        nodes: impl Iterator<Item = &'a Node>,
        pods: impl Iterator<Item = P>,
    ) {
        let assumed: Vec<(ObjectKey, Placed)> = self
            .placed
            .drain()
            .filter(|(_, p)| p.assumed_at.is_some())
            .collect();
        self.nodes.clear();
        for n in nodes {
            self.node_applied(n);
        }
        for p in pods {
            self.pod_applied(p.borrow());
        }
        for (k, p) in assumed {
            if !self.placed.contains_key(&k) {
                self.place(k, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        Container, NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("4".into())),
                    ("memory".to_string(), Quantity("8Gi".into())),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "cpu".to_string(),
                            Quantity("500m".into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn cpu_on(c: &SchedulerCache, n: &str) -> (i128, i64) {
        let info = &c.nodes()[n];
        (info.requested.cpu_millis, info.pods)
    }

    #[test]
    fn pods_count_while_bound_and_unfinished_and_changes_are_applied_once() {
        let mut c = SchedulerCache::default();
        c.node_applied(&node("a"));
        c.pod_applied(&pod("p", Some("a"), "Running"));
        c.pod_applied(&pod("p", Some("a"), "Running")); // the same again: counted once
        assert_eq!(cpu_on(&c, "a"), (500, 1));
        c.pod_applied(&pod("p", Some("a"), "Succeeded"));
        assert_eq!(cpu_on(&c, "a"), (0, 0));
        c.pod_applied(&pod("q", Some("a"), "Running"));
        c.pod_deleted(&pod("q", Some("a"), "Running"));
        assert_eq!(cpu_on(&c, "a"), (0, 0));
    }

    #[test]
    fn an_assumption_counts_at_once_is_confirmed_by_the_bind_and_can_lapse() {
        let mut c = SchedulerCache::default();
        c.node_applied(&node("a"));
        let p = pod("p", None, "Pending");
        c.assume(&p, "a");
        assert_eq!(cpu_on(&c, "a"), (500, 1));
        // The pod's own change without the bind does not undo the assumption.
        c.pod_applied(&p);
        assert!(c.is_assumed(&ObjectKey::of(&p)));
        c.pod_applied(&pod("p", Some("a"), "Pending"));
        assert!(!c.is_assumed(&ObjectKey::of(&p)));
        assert_eq!(cpu_on(&c, "a"), (500, 1));
        let q = pod("q", None, "Pending");
        c.assume(&q, "a");
        assert_eq!(c.expire(Duration::ZERO), vec![ObjectKey::of(&q)]);
        assert_eq!(cpu_on(&c, "a"), (500, 1));
    }

    #[test]
    fn a_node_changed_keeps_its_pods_and_a_node_seen_late_gets_them() {
        let mut c = SchedulerCache::default();
        c.pod_applied(&pod("p", Some("a"), "Running"));
        c.node_applied(&node("a"));
        assert_eq!(cpu_on(&c, "a"), (500, 1));
        let mut cordoned = node("a");
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        c.node_applied(&cordoned);
        assert!(c.nodes()["a"].unschedulable);
        assert_eq!(cpu_on(&c, "a"), (500, 1));
    }
}
