//! The disruption controller: each PodDisruptionBudget's status, which evictions read
//! ([`crate::objects::eviction`]): the pods it expects, those healthy (Ready, not being
//! deleted, not just evicted), how many must stay healthy (`minAvailable`, or the expected
//! count less `maxUnavailable`; percentages of the expected count, rounded up) and so how
//! many disruptions are allowed now.
//!
//! The expected count is the pods' controllers' scale, as Kubernetes reads it, when the
//! budget speaks in percentages or `maxUnavailable` (a ReplicaSet's or ReplicationController's
//! replicas, a DaemonSet's desired count), else the pods that exist. A pod an eviction noted
//! in `disruptedPods` is not counted healthy until it is gone, or two minutes have passed.
//!
//! Keyed by budget; a pod's change reaches every budget of its namespace.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_proto::objects::Api;

use super::cache;
use super::context::Ctx;
use super::ownership::{is_active, is_ready};
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};
use crate::objects::selectors::Selector;

/// The controller's name.
pub const NAME: &str = "disruption";
/// How long an evicted pod stays noted when its deletion is not seen.
const DISRUPTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let pods_ctx = ctx.clone();
    Runner::new(
        DisruptionController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.pdbs.subscribe(), |b: &PodDisruptionBudget| {
        vec![ObjectKey::of(b)]
    })
    .watches(ctx.pods.subscribe(), move |p: &Pod| {
        let ns = p.metadata.namespace.as_deref().unwrap_or("");
        pods_ctx
            .pdbs
            .by_index(cache::NAMESPACE, ns)
            .iter()
            .map(|b| ObjectKey::of(&**b))
            .collect()
    })
    .run()
    .await
}

/// Reconciles one budget.
pub struct DisruptionController {
    ctx: Arc<Ctx>,
}

impl Reconciler for DisruptionController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(pdb) = self.ctx.pdbs.get(&key.namespace, &key.name) else {
            return Ok(Action::done());
        };
        let (status, again) = status_of(&self.ctx, &pdb);
        let mut action = Action::done();
        if let Some(d) = again {
            action = action.or_requeue_after(d);
        }
        if pdb.status.as_ref() == Some(&status) {
            return Ok(action);
        }
        let mut next = (*pdb).clone();
        next.status = Some(status);
        let api: Api<PodDisruptionBudget> = Api::new(self.ctx.client.clone(), &key.namespace);
        api.update_status(&next).await?;
        Ok(action)
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.pdbs.object_keys()
    }
}

/// `value` of `total`: a count, or a percentage rounded up.
fn scaled(value: &IntOrString, total: i32) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * i64::from(total) + 99) / 100) as i32
        }
    }
}

/// The pods' expected count: their controllers' scale, or the pods themselves.
fn expected_count(ctx: &Ctx, ns: &str, pods: &[Arc<Pod>]) -> i32 {
    let mut seen = HashSet::new();
    let mut total = 0;
    for p in pods {
        let owner = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        let Some(owner) = owner else {
            total += 1;
            continue;
        };
        if !seen.insert(owner.uid.clone()) {
            continue;
        }
        let scale = match owner.kind.as_str() {
            "ReplicaSet" => ctx
                .replicasets
                .get(ns, &owner.name)
                .and_then(|o| o.spec.as_ref()?.replicas),
            "ReplicationController" => ctx
                .replicationcontrollers
                .get(ns, &owner.name)
                .and_then(|o| o.spec.as_ref()?.replicas),
            "DaemonSet" => ctx
                .daemonsets
                .get(ns, &owner.name)
                .and_then(|o| Some(o.status.as_ref()?.desired_number_scheduled)),
            _ => None,
        };
        total += scale.unwrap_or_else(|| {
            pods.iter()
                .filter(|q| {
                    q.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.uid == owner.uid)
                })
                .count() as i32
        });
    }
    total
}

/// The status `pdb` should show, and when to look again (a noted eviction expiring).
fn status_of(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
) -> (PodDisruptionBudgetStatus, Option<Duration>) {
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let selector = spec
        .selector
        .as_ref()
        // As policy/v1 reads it: no selector selects no pod, an empty one every pod of the
        // namespace.
        .and_then(|s| Selector::from_label_selector("spec.selector", s).ok());
    // Through the label index when the selector names a label: only those pods are read.
    let first_label = spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .and_then(|m| m.iter().next())
        .map(|(k, v)| cache::label_value(&ns, k, v));
    let candidates = match first_label {
        Some(label) => ctx.pods.by_index(cache::LABEL, &label),
        None => ctx.pods.list(),
    };
    let pods: Vec<Arc<Pod>> = match &selector {
        None => Vec::new(),
        Some(sel) => candidates
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|p| is_active(p))
            .filter(|p| sel.matches(&p.metadata.labels.clone().unwrap_or_default()))
            .collect(),
    };
    let now = jiff::Timestamp::now();
    let live: HashSet<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let mut again = None;
    let disrupted: BTreeMap<String, Time> = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| {
            let left = at.0.as_second() + DISRUPTION_TIMEOUT.as_secs() as i64 - now.as_second();
            let keep = live.contains(name.as_str()) && left > 0;
            if keep {
                let d = Duration::from_secs(left as u64 + 1);
                again = Some(again.map_or(d, |a: Duration| a.min(d)));
            }
            keep
        })
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| is_ready(p))
        .filter(|p| {
            p.metadata
                .name
                .as_ref()
                .is_none_or(|n| !disrupted.contains_key(n))
        })
        .count() as i32;
    let counts_pods = matches!(spec.min_available, Some(IntOrString::Int(_)));
    let expected = if counts_pods {
        pods.len() as i32
    } else {
        expected_count(ctx, &ns, &pods)
    };
    let desired = match (&spec.min_available, &spec.max_unavailable) {
        (Some(min), _) => scaled(min, expected),
        (None, Some(max)) => (expected - scaled(max, expected)).max(0),
        (None, None) => expected,
    };
    let allowed = (healthy - desired).max(0);
    let old = pdb.status.clone().unwrap_or_default();
    let (cond_status, reason, message) = if allowed > 0 {
        ("True", "SufficientPods", "")
    } else {
        (
            "False",
            "InsufficientPods",
            "not enough healthy pods to allow a disruption",
        )
    };
    let since = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed" && c.status == cond_status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let status = PodDisruptionBudgetStatus {
        observed_generation: pdb.metadata.generation,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        disruptions_allowed: allowed,
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        conditions: Some(vec![Condition {
            type_: "DisruptionAllowed".into(),
            status: cond_status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: pdb.metadata.generation,
            last_transition_time: since,
        }]),
    };
    (status, again)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_scale_as_kubernetes_scales_them() {
        assert_eq!(scaled(&IntOrString::Int(2), 3), 2);
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::String("34%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::String("0%".into()), 3), 0);
        assert_eq!(scaled(&IntOrString::String("100%".into()), 3), 3);
    }
}
