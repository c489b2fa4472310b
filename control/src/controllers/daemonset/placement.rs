//! Which nodes a DaemonSet's pod belongs on, and the pods it makes: Kubernetes' rules (the
//! template's node selector and required affinity, the node's NoSchedule and NoExecute
//! taints against the template's tolerations and those every daemon pod gets), and a pod
//! pinned to its node by a required affinity on the node's name, so the scheduler places it.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};

use crate::controllers::ownership::pod_from_template;
use crate::scheduler::filters::{matches_affinity, tolerates};
use crate::scheduler::node_info::NodeInfo;

/// The label naming the template a daemon pod was made from.
pub const TEMPLATE_HASH: &str = "controller-revision-hash";

/// Whether a DaemonSet's pod belongs on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// A pod should be made there.
    pub should_run: bool,
    /// A pod there may stay (an untolerated NoSchedule taint added later keeps it).
    pub may_stay: bool,
}

/// The tolerations the DaemonSet controller gives every daemon pod, as Kubernetes': it runs
/// on nodes that are not ready, unreachable, under pressure or cordoned.
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut t = vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
        // The scheduler's own stand-in for a node that is not ready.
        exists("node.kubernetes.io/not-ready", "NoSchedule"),
    ];
    if host_network {
        t.push(exists(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    t
}

/// The pod `ds` makes for `node`: its template, owned by `ds`, labelled with the template's
/// `hash`, tolerating what daemon pods tolerate, and required to go on `node`.
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let mut pod = pod_from_template(
        template,
        "apps/v1",
        "DaemonSet",
        &ds.metadata,
        format!("{name}-"),
    );
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH.into(), hash.into());
    if let Some(spec) = pod.spec.as_mut() {
        let host_network = spec.host_network == Some(true);
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        for t in daemon_tolerations(host_network) {
            if !tolerations.contains(&t) {
                tolerations.push(t);
            }
        }
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        let node_affinity = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        // The node was chosen by the template's own rules: the name alone decides now.
        node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
            }],
        });
    }
    pod
}

/// The node a daemon pod is for: where it runs, or the node its affinity names.
pub fn node_of(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Whether `ds`'s pod belongs on `node`.
pub fn fit(ds: &DaemonSet, node: &Node) -> Fit {
    let none = Fit {
        should_run: false,
        may_stay: false,
    };
    if node.metadata.deletion_timestamp.is_some() {
        return none;
    }
    // The template as a pod, with the tolerations daemon pods get.
    let pod = new_pod(ds, "", "");
    let original = Pod {
        metadata: Default::default(),
        spec: ds.spec.as_ref().and_then(|s| s.template.spec.clone()),
        status: None,
    };
    let info = NodeInfo::new(node);
    if !matches_affinity(&original, &info) {
        return none;
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut fit = Fit {
        should_run: true,
        may_stay: true,
    };
    for taint in node.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
        if tolerations.iter().any(|t| tolerates(t, taint)) {
            continue;
        }
        match taint.effect.as_str() {
            "NoSchedule" => fit.should_run = false,
            "NoExecute" => return none,
            _ => {}
        }
    }
    fit
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{Container, NodeSpec, PodSpec, PodTemplateSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn ds(node_selector: Option<(&str, &str)>, tolerations: Vec<Toleration>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        node_selector: node_selector
                            .map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                        tolerations: Some(tolerations),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, label: Option<(&str, &str)>, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn nodes_fit_by_selector_and_taints_as_kubernetes_decides() {
        let plain = ds(None, vec![]);
        let run = Fit {
            should_run: true,
            may_stay: true,
        };
        assert_eq!(fit(&plain, &node("a", None, vec![])), run);
        // Daemon pods run on cordoned and not-ready nodes.
        let cordoned = node(
            "b",
            None,
            vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")],
        );
        assert_eq!(fit(&plain, &cordoned), run);
        let not_ready = node(
            "c",
            None,
            vec![taint("node.kubernetes.io/not-ready", "NoExecute")],
        );
        assert_eq!(fit(&plain, &not_ready), run);
        // A taint of their own is not tolerated, unless the template says so.
        let gpu = node("d", None, vec![taint("gpu", "NoSchedule")]);
        assert_eq!(
            fit(&plain, &gpu),
            Fit {
                should_run: false,
                may_stay: true
            }
        );
        let evict = node("e", None, vec![taint("gpu", "NoExecute")]);
        assert!(!fit(&plain, &evict).may_stay);
        let tolerant = ds(
            None,
            vec![Toleration {
                key: Some("gpu".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }],
        );
        assert_eq!(fit(&tolerant, &evict), run);
        // The node selector chooses.
        let picky = ds(Some(("disk", "ssd")), vec![]);
        assert!(!fit(&picky, &node("f", None, vec![])).should_run);
        assert_eq!(fit(&picky, &node("g", Some(("disk", "ssd")), vec![])), run);
    }

    #[test]
    fn a_daemon_pod_is_pinned_to_its_node_and_read_back() {
        let p = new_pod(&ds(None, vec![]), "n7", "abc");
        assert_eq!(node_of(&p).as_deref(), Some("n7"));
        assert_eq!(p.metadata.labels.as_ref().unwrap()[TEMPLATE_HASH], "abc");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        let tolerations = p.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert!(tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable")));
    }
}
