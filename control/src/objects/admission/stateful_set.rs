//! StatefulSets: Kubernetes' defaults (OrderedReady, RollingUpdate from partition 0, claims
//! retained), validation of the template with the claim templates' volumes in it, and the
//! fields that may change once one exists.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};

use super::super::error::FieldError;
use super::super::names;
use super::pod::{self, one_of};
use super::storage;
use super::workloads::{non_negative, validate_selector_and_template};

/// Defaults of a StatefulSet.
pub fn default_stateful_set(sts: &mut StatefulSet) {
    let Some(spec) = sts.spec.as_mut() else {
        return;
    };
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.min_ready_seconds.get_or_insert(0);
    spec.pod_management_policy
        .get_or_insert_with(|| "OrderedReady".into());
    let strategy = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if kind == "RollingUpdate" {
        strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
            .partition
            .get_or_insert(0);
    }
    let retention = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
    retention
        .when_deleted
        .get_or_insert_with(|| "Retain".into());
    retention.when_scaled.get_or_insert_with(|| "Retain".into());
    for t in spec.volume_claim_templates.iter_mut().flatten() {
        if let Some(s) = t.spec.as_mut() {
            storage::default_claim_spec(s);
        }
    }
    if let Some(spec) = spec.template.spec.as_mut() {
        pod::default_spec(spec);
    }
}

/// Validate a StatefulSet.
pub fn validate_stateful_set(sts: &StatefulSet) -> Vec<FieldError> {
    let Some(spec) = &sts.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    let mut errors = Vec::new();
    non_negative(&mut errors, "spec.replicas", spec.replicas);
    non_negative(&mut errors, "spec.minReadySeconds", spec.min_ready_seconds);
    non_negative(
        &mut errors,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
    );
    if let Some(o) = &spec.ordinals {
        non_negative(&mut errors, "spec.ordinals.start", o.start);
    }
    if let Some(e) = spec
        .service_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(names::dns1123_label)
    {
        errors.push(FieldError::new("spec.serviceName", e));
    }
    one_of(
        &mut errors,
        "spec.podManagementPolicy".into(),
        spec.pod_management_policy.as_deref(),
        &["OrderedReady", "Parallel"],
    );
    if let Some(s) = &spec.update_strategy {
        one_of(
            &mut errors,
            "spec.updateStrategy.type".into(),
            s.type_.as_deref(),
            &["RollingUpdate", "OnDelete"],
        );
        if let Some(ru) = &s.rolling_update {
            if s.type_.as_deref() == Some("OnDelete") {
                errors.push(FieldError::new(
                    "spec.updateStrategy.rollingUpdate",
                    "Forbidden: only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
            non_negative(
                &mut errors,
                "spec.updateStrategy.rollingUpdate.partition",
                ru.partition,
            );
            if ru.max_unavailable.is_some() {
                errors.push(FieldError::new(
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    "Forbidden: not supported (Kubernetes' alpha feature): pods are replaced \
                     one at a time",
                ));
            }
        }
    }
    if let Some(r) = &spec.persistent_volume_claim_retention_policy {
        for (field, v) in [
            ("whenDeleted", r.when_deleted.as_deref()),
            ("whenScaled", r.when_scaled.as_deref()),
        ] {
            one_of(
                &mut errors,
                format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                v,
                &["Retain", "Delete"],
            );
        }
    }
    // Each claim template is a volume of the pods: the template is checked with them in it.
    let mut template = spec.template.clone();
    let mut claim_names = BTreeSet::new();
    for (i, t) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let path = format!("spec.volumeClaimTemplates[{i}]");
        let name = t.metadata.name.clone().unwrap_or_default();
        if let Some(e) = names::dns1123_label(&name) {
            errors.push(FieldError::new(format!("{path}.metadata.name"), e));
        } else if !claim_names.insert(name.clone()) {
            errors.push(FieldError::new(
                format!("{path}.metadata.name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
        match &t.spec {
            None => errors.push(FieldError::new(format!("{path}.spec"), "Required value")),
            Some(s) => errors.extend(storage::validate_claim_spec(s, &format!("{path}.spec"))),
        }
        if let Some(ps) = template.spec.as_mut() {
            let volumes = ps.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| v.name != name);
            volumes.push(claim_volume(&name, "placeholder"));
        }
    }
    validate_selector_and_template(&spec.selector, Some(&template), &["Always"], &mut errors);
    errors
}

/// The pod volume `name` of claim `claim`.
pub fn claim_volume(name: &str, claim: &str) -> Volume {
    Volume {
        name: name.to_string(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_string(),
            read_only: None,
        }),
        ..Default::default()
    }
}

/// What of a StatefulSet may not change: everything in its spec but the replicas, ordinals,
/// template, update strategy, claim retention and minReadySeconds, as Kubernetes has it.
pub fn immutable_stateful_set_changes(
    current: &StatefulSet,
    next: &StatefulSet,
) -> Vec<FieldError> {
    let (Some(a), Some(b)) = (&current.spec, &next.spec) else {
        return Vec::new();
    };
    let strip = |s: &k8s_openapi::api::apps::v1::StatefulSetSpec| {
        let mut s = s.clone();
        s.replicas = None;
        s.ordinals = None;
        s.template = Default::default();
        s.update_strategy = None;
        s.persistent_volume_claim_retention_policy = None;
        s.min_ready_seconds = None;
        s.revision_history_limit = None;
        s
    };
    if strip(a) == strip(b) {
        return Vec::new();
    }
    vec![FieldError::new(
        "spec",
        "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', \
         'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
         'minReadySeconds' are forbidden",
    )]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn web() -> StatefulSet {
        let mut sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {
                "serviceName": "web",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "x",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}}
                }]
            }
        }))
        .unwrap();
        default_stateful_set(&mut sts);
        sts
    }

    #[test]
    fn mounts_of_claim_templates_are_valid_and_only_some_fields_change() {
        let sts = web();
        assert!(
            validate_stateful_set(&sts).is_empty(),
            "{:?}",
            validate_stateful_set(&sts)
        );
        let mut scaled = sts.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(5);
        assert!(immutable_stateful_set_changes(&sts, &scaled).is_empty());
        let mut renamed = sts.clone();
        renamed.spec.as_mut().unwrap().service_name = Some("other".into());
        assert_eq!(immutable_stateful_set_changes(&sts, &renamed).len(), 1);
    }
}
