//! Which volume a claim gets: the smallest available one of its class that holds its
//! request in the modes it asks (and, when its first pod has a node, is reachable from that
//! node); or a new `local-path` volume: a folder named after the claim under the node's
//! local-path root, reachable from that node only.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_proto::kinds::LOCAL_PATH_ROOT_ANNOTATION;
use skiff_proto::quantity;

use crate::objects::selectors::Selector;
use crate::scheduler::filters::selector_matches;

/// The annotation naming who made a volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

fn storage(resources: Option<&BTreeMap<String, Quantity>>) -> i128 {
    resources
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity::parse(&q.0).ok())
        .map(|q| q.millis)
        .unwrap_or(0)
}

/// What a claim asks for in bytes (× 1000).
fn requested(claim: &PersistentVolumeClaim) -> i128 {
    storage(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

/// The class name a claim binds within (`""`: volumes of no class).
fn class_name<'a>(claim: &'a PersistentVolumeClaim, class: Option<&'a StorageClass>) -> &'a str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .or_else(|| class.and_then(|c| c.metadata.name.as_deref()))
        .unwrap_or("")
}

/// Whether available volume `pv` serves `claim` (of class `class`), seen from `node` if its
/// first pod has one.
fn fits(
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    node: Option<&Node>,
) -> bool {
    let Some(spec) = &pv.spec else { return false };
    let Some(want) = &claim.spec else {
        return false;
    };
    if pv.metadata.deletion_timestamp.is_some() || spec.claim_ref.is_some() {
        return false;
    }
    if spec.storage_class_name.as_deref().unwrap_or("") != class_name(claim, class) {
        return false;
    }
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    if !want
        .access_modes
        .iter()
        .flatten()
        .all(|m| modes.contains(m))
    {
        return false;
    }
    if storage(spec.capacity.as_ref()) < requested(claim) {
        return false;
    }
    if let Some(sel) = &want.selector {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        match Selector::from_label_selector("spec.selector", sel) {
            Ok(s) if s.matches(&labels) => {}
            _ => return false,
        }
    }
    let required = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref());
    match (required, node) {
        (Some(sel), Some(n)) => selector_matches(
            sel,
            &n.metadata.labels.clone().unwrap_or_default(),
            n.metadata.name.as_deref().unwrap_or(""),
        ),
        _ => true,
    }
}

/// The smallest available volume that serves `claim`.
pub fn best_match(
    volumes: impl Iterator<Item = Arc<PersistentVolume>>,
    claim: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    node: Option<&Node>,
) -> Option<Arc<PersistentVolume>> {
    volumes
        .filter(|pv| fits(pv, claim, class, node))
        .min_by_key(|pv| storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())))
}

/// Why a `local-path` volume cannot be made on `node`, if it cannot.
pub fn local_path_root(node: &Node) -> Result<String, String> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOCAL_PATH_ROOT_ANNOTATION))
        .cloned()
        .ok_or_else(|| {
            format!(
                "node {:?} does not offer local-path volumes (it publishes no {LOCAL_PATH_ROOT_ANNOTATION})",
                node.metadata.name.as_deref().unwrap_or("")
            )
        })
}

/// The name of the volume provisioned for the claim of uid `uid`, as Kubernetes names it.
pub fn volume_name(uid: &str) -> String {
    format!("pvc-{uid}")
}

/// A new `local-path` volume for `claim` of `class` in folder `root` of `node`, reserved for
/// the claim.
pub fn local_path_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    root: &str,
) -> PersistentVolume {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()
        .unwrap_or_else(|| Quantity("0".into()));
    let volume = volume_name(&uid);
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume.clone()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                class.provisioner.clone(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), request)])),
            access_modes: spec.access_modes.clone(),
            persistent_volume_reclaim_policy: class.reclaim_policy.clone(),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some("Filesystem".into()),
            host_path: Some(HostPathVolumeSource {
                path: format!("{}/{volume}_{ns}_{name}", root.trim_end_matches('/')),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            claim_ref: Some(reference(claim)),
            ..Default::default()
        }),
        status: None,
    }
}

/// A volume's reference to `claim`.
pub fn reference(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pv(name: &str, size: &str, class: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": class, "hostPath": {"path": "/x"}}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_smallest_volume_of_the_class_that_holds_the_request_is_taken() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                     "resources": {"requests": {"storage": "2Gi"}}}
        }))
        .unwrap();
        let volumes = [
            pv("small", "1Gi", "manual"),
            pv("big", "10Gi", "manual"),
            pv("right", "5Gi", "manual"),
            pv("other-class", "3Gi", "fast"),
        ];
        let got = best_match(volumes.into_iter(), &claim, None, None);
        assert_eq!(
            got.and_then(|v| v.metadata.name.clone()).as_deref(),
            Some("right")
        );
    }
}
