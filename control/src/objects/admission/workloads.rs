//! ReplicaSets, ReplicationControllers, Deployments and DaemonSets: defaults (Deployment strategy
//! 25%/25%, ...) and validation, including that the selector matches the pod template's labels.

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
    RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::error::FieldError;
use super::super::selectors::Selector;
use super::pod;

/// Defaults of a ReplicaSet.
pub fn default_replica_set(rs: &mut ReplicaSet) {
    if let Some(spec) = rs.spec.as_mut() {
        spec.replicas.get_or_insert(1);
        spec.min_ready_seconds.get_or_insert(0);
        if let Some(spec) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
            pod::default_spec(spec);
        }
    }
}

/// Defaults of a ReplicationController, as Kubernetes gives them: the selector and the
/// object's labels default to the template's labels.
pub fn default_replication_controller(rc: &mut ReplicationController) {
    let template_labels = rc
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .filter(|l| !l.is_empty());
    if let Some(spec) = rc.spec.as_mut() {
        spec.replicas.get_or_insert(1);
        spec.min_ready_seconds.get_or_insert(0);
        if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
            spec.selector.clone_from(&template_labels);
        }
        if let Some(spec) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
            pod::default_spec(spec);
        }
    }
    if rc.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
        rc.metadata.labels = template_labels;
    }
}

/// Validate a ReplicationController: as a ReplicaSet whose selector is `matchLabels` alone.
pub fn validate_replication_controller(rc: &ReplicationController) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &rc.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    non_negative(&mut errors, "spec.replicas", spec.replicas);
    non_negative(&mut errors, "spec.minReadySeconds", spec.min_ready_seconds);
    let selector = LabelSelector {
        match_labels: spec.selector.clone(),
        match_expressions: None,
    };
    validate_selector_and_template(&selector, spec.template.as_ref(), &["Always"], &mut errors);
    errors
}

/// Defaults of a Deployment.
pub fn default_deployment(d: &mut Deployment) {
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        spec.min_ready_seconds.get_or_insert(0);
        let strategy = spec
            .strategy
            .get_or_insert_with(DeploymentStrategy::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_surge
                .get_or_insert_with(|| IntOrString::String("25%".into()));
            ru.max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".into()));
        }
        if let Some(spec) = spec.template.spec.as_mut() {
            pod::default_spec(spec);
        }
    }
}

/// Check that `selector` is valid and non-empty, selects `template`'s labels, and that the
/// template is a valid pod whose restart policy is one of `restart_policies`.
pub(super) fn validate_selector_and_template(
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    restart_policies: &[&str],
    errors: &mut Vec<FieldError>,
) {
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty());
    if empty {
        errors.push(FieldError::new(
            "spec.selector",
            "Required value: a non-empty selector is required",
        ));
    }
    let parsed = match Selector::from_label_selector("spec.selector", selector) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let Some(template) = template else {
        errors.push(FieldError::new("spec.template", "Required value"));
        return;
    };
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Some(sel) = parsed {
        if !empty && !sel.matches(&labels) {
            errors.push(FieldError::new(
                "spec.template.metadata.labels",
                format!("Invalid value: {labels:?}: `selector` does not match template `labels`"),
            ));
        }
    }
    validate_template_spec(template, "spec.template", restart_policies, errors);
}

/// Check that the pod template at `path` is a valid pod whose restart policy is one of
/// `restart_policies`.
pub(super) fn validate_template_spec(
    template: &PodTemplateSpec,
    path: &str,
    restart_policies: &[&str],
    errors: &mut Vec<FieldError>,
) {
    match &template.spec {
        None => errors.push(FieldError::new(format!("{path}.spec"), "Required value")),
        Some(spec) => {
            errors.extend(pod::validate_spec(spec, &format!("{path}.spec")));
            if let Some(r) = spec
                .restart_policy
                .as_deref()
                .filter(|r| !restart_policies.contains(r))
            {
                let allowed: Vec<String> =
                    restart_policies.iter().map(|p| format!("{p:?}")).collect();
                errors.push(FieldError::new(
                    format!("{path}.spec.restartPolicy"),
                    format!(
                        "Unsupported value: {r:?}: supported values: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
}

/// Refuse a negative `v` at `field`.
pub(super) fn non_negative(errors: &mut Vec<FieldError>, field: &str, v: Option<i32>) {
    if let Some(v) = v.filter(|v| *v < 0) {
        errors.push(FieldError::new(
            field,
            format!("Invalid value: {v}: must be greater than or equal to 0"),
        ));
    }
}

/// Validate a ReplicaSet.
pub fn validate_replica_set(rs: &ReplicaSet) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &rs.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    non_negative(&mut errors, "spec.replicas", spec.replicas);
    non_negative(&mut errors, "spec.minReadySeconds", spec.min_ready_seconds);
    validate_selector_and_template(
        &spec.selector,
        spec.template.as_ref(),
        &["Always"],
        &mut errors,
    );
    errors
}

/// A surge or unavailability bound: a non-negative count or a percentage.
fn int_or_percent(errors: &mut Vec<FieldError>, field: &str, v: Option<&IntOrString>) -> bool {
    match v {
        None => false,
        Some(IntOrString::Int(n)) => {
            non_negative(errors, field, Some(*n));
            *n > 0
        }
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i32>().ok()) {
                Some(p) if (0..=100).contains(&p) => p > 0,
                _ => {
                    errors.push(FieldError::new(field, format!("Invalid value: {s:?}: must be an integer or a percentage between 0% and 100% (e.g. '25%')")));
                    true
                }
            }
        }
    }
}

/// Check a rolling update's `maxSurge` and `maxUnavailable` at `path`: valid bounds, not
/// both 0. Whether each is above 0.
fn rolling_bounds(
    errors: &mut Vec<FieldError>,
    path: &str,
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
) -> (bool, bool) {
    let surge = int_or_percent(errors, &format!("{path}.maxSurge"), surge);
    let unavailable = int_or_percent(errors, &format!("{path}.maxUnavailable"), unavailable);
    if !surge && !unavailable {
        errors.push(FieldError::new(
            format!("{path}.maxUnavailable"),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    (surge, unavailable)
}

/// Validate a Deployment.
pub fn validate_deployment(d: &Deployment) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &d.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    non_negative(&mut errors, "spec.replicas", spec.replicas);
    non_negative(&mut errors, "spec.minReadySeconds", spec.min_ready_seconds);
    non_negative(
        &mut errors,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
    );
    if let (Some(p), Some(m)) = (spec.progress_deadline_seconds, spec.min_ready_seconds) {
        if p <= m {
            errors.push(FieldError::new(
                "spec.progressDeadlineSeconds",
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(s) = &spec.strategy {
        match s.type_.as_deref() {
            Some("Recreate") => {
                if s.rolling_update.is_some() {
                    errors.push(FieldError::new("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'"));
                }
            }
            Some("RollingUpdate") | None => {
                if let Some(ru) = &s.rolling_update {
                    rolling_bounds(&mut errors, "spec.strategy.rollingUpdate", ru.max_surge.as_ref(), ru.max_unavailable.as_ref());
                }
            }
            Some(other) => errors.push(FieldError::new("spec.strategy.type", format!("Unsupported value: {other:?}: supported values: \"Recreate\", \"RollingUpdate\""))),
        }
    }
    validate_selector_and_template(
        &spec.selector,
        Some(&spec.template),
        &["Always"],
        &mut errors,
    );
    errors
}

/// Defaults of a DaemonSet: RollingUpdate with maxUnavailable 1 and maxSurge 0, a history
/// of 10.
pub fn default_daemon_set(ds: &mut DaemonSet) {
    if let Some(spec) = ds.spec.as_mut() {
        spec.revision_history_limit.get_or_insert(10);
        spec.min_ready_seconds.get_or_insert(0);
        let strategy = spec
            .update_strategy
            .get_or_insert_with(DaemonSetUpdateStrategy::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDaemonSet::default);
            ru.max_unavailable.get_or_insert(IntOrString::Int(1));
            ru.max_surge.get_or_insert(IntOrString::Int(0));
        }
        if let Some(spec) = spec.template.spec.as_mut() {
            pod::default_spec(spec);
        }
    }
}

/// Validate a DaemonSet.
pub fn validate_daemon_set(ds: &DaemonSet) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &ds.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    non_negative(&mut errors, "spec.minReadySeconds", spec.min_ready_seconds);
    non_negative(
        &mut errors,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
    );
    if let Some(s) = &spec.update_strategy {
        match s.type_.as_deref() {
            Some("OnDelete") => {
                if s.rolling_update.is_some() {
                    errors.push(FieldError::new("spec.updateStrategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'OnDelete'"));
                }
            }
            Some("RollingUpdate") | None => {
                if let Some(ru) = &s.rolling_update {
                    let (surge, unavailable) = rolling_bounds(&mut errors, "spec.updateStrategy.rollingUpdate", ru.max_surge.as_ref(), ru.max_unavailable.as_ref());
                    if surge && unavailable {
                        errors.push(FieldError::new("spec.updateStrategy.rollingUpdate.maxUnavailable", "may not be set when maxSurge is non-zero (set it to 0)"));
                    }
                }
            }
            Some(other) => errors.push(FieldError::new("spec.updateStrategy.type", format!("Unsupported value: {other:?}: supported values: \"OnDelete\", \"RollingUpdate\""))),
        }
    }
    validate_selector_and_template(
        &spec.selector,
        Some(&spec.template),
        &["Always"],
        &mut errors,
    );
    errors
}
