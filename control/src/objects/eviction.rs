//! Evictions (Kubernetes' Eviction subresource): a pod is deleted only if the
//! PodDisruptionBudget that selects it allows one more disruption now. The budget's
//! `disruptionsAllowed` is taken down by one, and the pod noted in `disruptedPods`, by a
//! compare-and-swap of the budget's status before the pod is deleted: two evictions at once
//! never both spend the last disruption. The disruption controller counts again from the
//! pods (and forgets a noted pod once it is gone, or after two minutes).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_raft::RequestId;

use super::error::{ObjectError, Result};
use super::selectors::Selector;
use super::store::{DeleteOptions, Deleted, ListOptions, ObjectStore};

/// Attempts at taking a disruption from a budget that keeps changing under us.
const ATTEMPTS: usize = 10;

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ObjectError::bad("object", e.to_string()))
}

/// The budgets of `namespace` that select `pod`.
async fn budgets_of(
    store: &ObjectStore,
    namespace: &str,
    pod: &Pod,
) -> Result<Vec<PodDisruptionBudget>> {
    let page = store
        .list(
            "poddisruptionbudgets",
            &ListOptions {
                namespace: namespace.to_string(),
                ..Default::default()
            },
        )
        .await?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut out = Vec::new();
    for item in &page.items {
        let pdb: PodDisruptionBudget = decode(item)?;
        let selects = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| Selector::from_label_selector("spec.selector", s).ok())
            // As policy/v1 reads it: no selector selects no pod, an empty one every pod of
            // the namespace.
            .is_some_and(|s| s.matches(&labels));
        if selects {
            out.push(pdb);
        }
    }
    Ok(out)
}

/// Evict pod `namespace`/`name`: delete it with `opts` if its budget allows, else refuse
/// with [`ObjectError::DisruptionBudget`] and change nothing.
pub async fn evict(
    store: &ObjectStore,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
    request_id: RequestId,
) -> Result<Deleted> {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    for _ in 0..ATTEMPTS {
        let (bytes, _) = store.get("pods", ns, name, false).await?;
        let pod: Pod = decode(&bytes)?;
        // One already going, or finished, disrupts nothing more.
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if pod.metadata.deletion_timestamp.is_some() || finished {
            return store.delete("pods", ns, name, opts, request_id).await;
        }
        let budgets = budgets_of(store, ns, &pod).await?;
        let pdb = match budgets.as_slice() {
            [] => return store.delete("pods", ns, name, opts, request_id).await,
            [one] => one.clone(),
            more => {
                return Err(ObjectError::DisruptionBudget(format!(
                    "pod {ns}/{name} has more than one PodDisruptionBudget ({}), which eviction does not support",
                    more.iter()
                        .filter_map(|b| b.metadata.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
        let status = pdb.status.clone().unwrap_or_default();
        let spec = pdb.spec.clone().unwrap_or_default();
        // An unhealthy pod serves nothing: evicting it costs no availability when the
        // budget is met (IfHealthyBudget), or ever (AlwaysAllow).
        if !is_ready(&pod) {
            let always = spec.unhealthy_pod_eviction_policy.as_deref() == Some("AlwaysAllow");
            if always || status.current_healthy >= status.desired_healthy {
                return store.delete("pods", ns, name, opts, request_id).await;
            }
        }
        if status.observed_generation.unwrap_or(0) < pdb.metadata.generation.unwrap_or(0) {
            return Err(ObjectError::DisruptionBudget(format!(
                "Cannot evict pod {ns}/{name}: its disruption budget {pdb_name} has not been processed yet; retry"
            )));
        }
        if status.disruptions_allowed <= 0 {
            return Err(ObjectError::DisruptionBudget(format!(
                "Cannot evict pod {ns}/{name} as it would violate the pod's disruption budget {pdb_name} (needs {} healthy, has {})",
                status.desired_healthy, status.current_healthy
            )));
        }
        let mut next = pdb.clone();
        let s = next.status.get_or_insert_with(Default::default);
        s.disruptions_allowed -= 1;
        s.disrupted_pods
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), Time(jiff::Timestamp::now()));
        let body =
            serde_json::to_vec(&next).map_err(|e| ObjectError::bad("object", e.to_string()))?;
        match store
            .update("poddisruptionbudgets", ns, &body, true, 0)
            .await
        {
            Ok(_) => return store.delete("pods", ns, name, opts, request_id).await,
            // Another eviction took a disruption first: count again.
            Err(ObjectError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ObjectError::DisruptionBudget(format!(
        "Cannot evict pod {ns}/{name}: its disruption budget kept changing; retry"
    )))
}
