//! A StatefulSet pod's identity: its ordinal, its name `SET-N`, its host name within the
//! governing Service (`SET-N.SERVICE.NS.svc`), and its claims `TEMPLATE-SET-N`, which outlive
//! it so the next pod of that ordinal finds the same data.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controllers::ownership::controller_ref;
use crate::objects::admission::stateful_set::claim_volume;

/// The label naming the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The label naming a pod by itself, so a Service can select one ordinal.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

fn set_name(sts: &StatefulSet) -> &str {
    sts.metadata.name.as_deref().unwrap_or("")
}

/// The name of ordinal `ordinal`'s pod.
pub fn pod_name(sts: &StatefulSet, ordinal: usize) -> String {
    format!("{}-{ordinal}", set_name(sts))
}

/// The ordinal of a pod of `sts`, from its name.
pub fn ordinal_of(sts: &StatefulSet, pod: &Pod) -> Option<usize> {
    let name = pod.metadata.name.as_deref()?;
    let rest = name.strip_prefix(set_name(sts))?.strip_prefix('-')?;
    // `web-01` is not ordinal 1's pod.
    if rest.len() > 1 && rest.starts_with('0') {
        return None;
    }
    rest.parse().ok()
}

/// The name of the claim of template `template` for ordinal `ordinal`.
pub fn claim_name(sts: &StatefulSet, template: &str, ordinal: usize) -> String {
    format!("{template}-{}-{ordinal}", set_name(sts))
}

/// The claim templates' names.
pub fn claim_templates(sts: &StatefulSet) -> Vec<&PersistentVolumeClaim> {
    sts.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .collect()
}

/// An owner reference to `sts` that does not control (a claim kept per the retention policy
/// is the StatefulSet's dependent, never its pod).
pub fn set_reference(sts: &StatefulSet) -> OwnerReference {
    OwnerReference {
        controller: Some(false),
        ..controller_ref("apps/v1", "StatefulSet", &sts.metadata)
    }
}

/// Whether `sts`'s claims go with it (`whenDeleted: Delete`).
pub fn claims_go_with_set(sts: &StatefulSet) -> bool {
    sts.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete")
}

/// Whether claims of ordinals scaled away go (`whenScaled: Delete`).
pub fn claims_go_when_scaled(sts: &StatefulSet) -> bool {
    sts.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_scaled.as_deref())
        == Some("Delete")
}

/// The claims ordinal `ordinal`'s pod needs, as they are made.
pub fn new_claims(sts: &StatefulSet, ordinal: usize) -> Vec<PersistentVolumeClaim> {
    let selector_labels: BTreeMap<String, String> = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    claim_templates(sts)
        .into_iter()
        .map(|t| {
            let template = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(sts, &template, ordinal)),
                    namespace: sts.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: claims_go_with_set(sts).then(|| vec![set_reference(sts)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// The pod of ordinal `ordinal`, from `template` of revision `revision`: named and labelled
/// by its ordinal, known by that name in the governing Service, mounting its own claims.
pub fn new_pod(
    sts: &StatefulSet,
    ordinal: usize,
    template: &PodTemplateSpec,
    revision: &str,
) -> Pod {
    let name = pod_name(sts, ordinal);
    let template = template.clone();
    let mut pod = Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        status: None,
    };
    pod.metadata.name = Some(name.clone());
    pod.metadata.generate_name = None;
    pod.metadata.namespace = sts.metadata.namespace.clone();
    pod.metadata.owner_references = Some(vec![controller_ref(
        "apps/v1",
        "StatefulSet",
        &sts.metadata,
    )]);
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(REVISION_LABEL.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let service = sts
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname = Some(name);
        spec.subdomain = service;
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        for t in claim_templates(sts) {
            let template = t.metadata.name.clone().unwrap_or_default();
            volumes.retain(|v| v.name != template);
            volumes.push(claim_volume(
                &template,
                &claim_name(sts, &template, ordinal),
            ));
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn web() -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "serviceName": "web",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "x"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}}}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_is_named_by_its_ordinal_and_mounts_its_own_claim() {
        let sts = web();
        let template = sts.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&sts, 2, &template, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        assert_eq!(ordinal_of(&sts, &pod), Some(2));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let claim = spec.volumes.unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "data-web-2");
        let claims = new_claims(&sts, 2);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data-web-2"));
        assert_eq!(claims[0].metadata.labels.as_ref().unwrap()["app"], "web");
        let other = Pod {
            metadata: ObjectMeta {
                name: Some("web-02".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(ordinal_of(&sts, &other), None);
    }
}
