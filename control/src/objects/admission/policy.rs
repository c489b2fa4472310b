//! PodDisruptionBudgets (policy/v1): exactly one of `minAvailable` and `maxUnavailable` (a
//! count or a percentage), a valid selector, and an unhealthy-pod eviction policy Kubernetes
//! knows.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::error::FieldError;
use super::super::selectors::Selector;

fn count_or_percent(errors: &mut Vec<FieldError>, field: &str, v: &IntOrString) {
    match v {
        IntOrString::Int(n) if *n < 0 => errors.push(FieldError::new(
            field,
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        )),
        IntOrString::Int(_) => {}
        IntOrString::String(s) => {
            if !s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(|p| (0..=100).contains(&p))
            {
                errors.push(FieldError::new(
                    field,
                    format!("Invalid value: {s:?}: must be an integer or a percentage between 0% and 100%"),
                ));
            }
        }
    }
}

/// Validate a PodDisruptionBudget.
pub fn validate_pod_disruption_budget(pdb: &PodDisruptionBudget) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &pdb.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    match (&spec.min_available, &spec.max_unavailable) {
        (Some(_), Some(_)) => errors.push(FieldError::new(
            "spec",
            "Invalid value: minAvailable and maxUnavailable cannot be both set",
        )),
        (None, None) => errors.push(FieldError::new(
            "spec.minAvailable",
            "Required value: one of minAvailable and maxUnavailable",
        )),
        (Some(v), None) => count_or_percent(&mut errors, "spec.minAvailable", v),
        (None, Some(v)) => count_or_percent(&mut errors, "spec.maxUnavailable", v),
    }
    if let Some(sel) = &spec.selector {
        if let Err(e) = Selector::from_label_selector("spec.selector", sel) {
            errors.push(e);
        }
    }
    match spec.unhealthy_pod_eviction_policy.as_deref() {
        None | Some("IfHealthyBudget" | "AlwaysAllow") => {}
        Some(other) => errors.push(FieldError::new(
            "spec.unhealthyPodEvictionPolicy",
            format!("Unsupported value: {other:?}: supported values: \"IfHealthyBudget\", \"AlwaysAllow\""),
        )),
    }
    errors
}
