//! Filters: why a pod cannot go on a node. Each returns the reasons, worded as the
//! Kubernetes scheduler words them, so the "0/N nodes are available: ..." message reads the same.

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, Pod, Taint, Toleration};

use super::node_info::{host_ports, NodeInfo, Requests};

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = toleration.key.as_deref().is_none_or(|k| k.is_empty())
        && toleration.operator.as_deref() == Some("Exists")
        || toleration.key.as_deref() == Some(taint.key.as_str());
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect_ok && key_ok && value_ok
}

fn requirement_matches(
    r: &NodeSelectorRequirement,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether the node matches the pod's nodeSelector and required node affinity.
pub fn matches_affinity(pod: &Pod, node: &NodeInfo) -> bool {
    let Some(spec) = &pod.spec else { return true };
    if !spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|sel| selector_matches(sel, &node.labels, &node.name))
}

/// Whether a node of `labels` and `name` matches `sel`: its terms are ORed, the requirements
/// of one term ANDed. The one field a node is matched on is its name (a DaemonSet pod names
/// its node so).
pub fn selector_matches(
    sel: &NodeSelector,
    labels: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> bool {
    let fields =
        std::collections::BTreeMap::from([("metadata.name".to_string(), name.to_string())]);
    sel.node_selector_terms.iter().any(|t| {
        t.match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_matches(r, labels))
            && t.match_fields
                .iter()
                .flatten()
                .all(|r| requirement_matches(r, &fields))
    })
}

/// Weight of the pod's preferred node affinity terms that `node` matches.
pub fn preferred_weight(pod: &Pod, node: &NodeInfo) -> i64 {
    let preferred = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        });
    preferred
        .into_iter()
        .flatten()
        .filter(|t| {
            t.preference
                .match_expressions
                .iter()
                .flatten()
                .all(|r| requirement_matches(r, &node.labels))
        })
        .map(|t| i64::from(t.weight))
        .sum()
}

/// What a pod asks of a node, computed once per pod.
pub struct Ask<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its resource requests.
    pub requests: Requests,
    /// Its tolerations.
    pub tolerations: Vec<Toleration>,
    /// Its host ports.
    pub ports: Vec<(i32, String)>,
    /// Where its volumes are: each a node selector the node must match.
    pub volume_nodes: Vec<NodeSelector>,
}

impl<'a> Ask<'a> {
    /// What `pod` asks.
    pub fn of(pod: &'a Pod) -> Self {
        Self {
            pod,
            requests: super::node_info::requests_of(pod),
            tolerations: pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default(),
            ports: host_ports(pod),
            volume_nodes: Vec::new(),
        }
    }
}

/// Every reason the pod does not fit `node`; empty when it fits.
pub fn reasons(ask: &Ask<'_>, node: &NodeInfo) -> Vec<String> {
    let (pod, req, tolerations) = (ask.pod, ask.requests, &ask.tolerations);
    if node.unschedulable {
        let unsched = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerations.iter().any(|t| tolerates(t, &unsched)) {
            return vec!["node(s) were unschedulable".into()];
        }
    }
    for taint in node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
    {
        if !tolerations.iter().any(|t| tolerates(t, taint)) {
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            )];
        }
    }
    // A pod that tolerates the not-ready taint (a DaemonSet's) may go on a node not ready.
    let not_ready = Taint {
        key: "node.kubernetes.io/not-ready".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if !node.ready && !tolerations.iter().any(|t| tolerates(t, &not_ready)) {
        return vec!["node(s) were not ready".into()];
    }
    if !matches_affinity(pod, node) {
        return vec!["node(s) didn't match Pod's node affinity/selector".into()];
    }
    if !ask
        .volume_nodes
        .iter()
        .all(|sel| selector_matches(sel, &node.labels, &node.name))
    {
        return vec!["node(s) had volume node affinity conflict".into()];
    }
    let mut out = Vec::new();
    if node.pods + 1 > node.allocatable.2 {
        out.push("Too many pods".to_string());
    }
    if req.cpu_millis > 0 && node.requested.cpu_millis + req.cpu_millis > node.allocatable.0 {
        out.push("Insufficient cpu".to_string());
    }
    if req.memory_millis > 0
        && node.requested.memory_millis + req.memory_millis > node.allocatable.1
    {
        out.push("Insufficient memory".to_string());
    }
    if !out.is_empty() {
        return out;
    }
    if ask.ports.iter().any(|p| node.ports.contains_key(p)) {
        return vec!["node(s) didn't have free ports for the requested pod ports".into()];
    }
    Vec::new()
}

/// "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {k: v}."
pub fn unschedulable_message(
    total: usize,
    counts: &std::collections::BTreeMap<String, usize>,
) -> String {
    if counts.is_empty() {
        return format!("0/{total} nodes are available: no nodes registered.");
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn message_reads_as_kubernetes_writes_it() {
        let counts = BTreeMap::from([
            ("Insufficient cpu".to_string(), 2),
            (
                "node(s) had untolerated taint {dedicated: gpu}".to_string(),
                1,
            ),
        ]);
        assert_eq!(unschedulable_message(3, &counts), "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}.");
    }

    #[test]
    fn tolerations_match_taints() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let equal = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        let exists_all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        let other = Toleration {
            key: Some("dedicated".into()),
            value: Some("cpu".into()),
            ..Default::default()
        };
        assert!(tolerates(&equal, &taint));
        assert!(tolerates(&exists_all, &taint));
        assert!(!tolerates(&other, &taint));
    }
}
