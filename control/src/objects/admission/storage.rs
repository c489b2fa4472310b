//! PersistentVolumes, PersistentVolumeClaims and StorageClasses: Kubernetes' defaults and
//! validation, what may not change once they exist, and the volume kinds Skiff carries out
//! (host folders: `hostPath` and `local`).

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_proto::quantity;

use super::super::error::FieldError;
use super::super::selectors::Selector;
use super::pod::one_of;

/// The finalizer that keeps a claim while pods use it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Skiff's provisioner: a folder on the node the first pod of a claim lands on.
pub const LOCAL_PATH_PROVISIONER: &str = "skiff.dev/local-path";
/// The StorageClass of [`LOCAL_PATH_PROVISIONER`] every cluster starts with, its default.
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// The annotation that makes a StorageClass the default of claims that name none.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn access_modes(modes: Option<&Vec<String>>, path: &str, errors: &mut Vec<FieldError>) {
    let modes = modes.map(Vec::as_slice).unwrap_or_default();
    if modes.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.accessModes"),
            "Required value: at least 1 access mode is required",
        ));
    }
    for (i, m) in modes.iter().enumerate() {
        one_of(
            errors,
            format!("{path}.accessModes[{i}]"),
            Some(m),
            ACCESS_MODES,
        );
    }
}

/// A storage size at `field`: required, a quantity, above zero.
fn storage_size(q: Option<&Quantity>, field: &str, errors: &mut Vec<FieldError>) {
    match q.map(|q| (q, quantity::parse(&q.0))) {
        None => errors.push(FieldError::new(field, "Required value")),
        Some((q, Err(e))) => errors.push(FieldError::new(
            field,
            format!("Invalid value: {:?}: {e}", q.0),
        )),
        Some((q, Ok(v))) if v.millis <= 0 => errors.push(FieldError::new(
            field,
            format!("Invalid value: {:?}: must be greater than zero", q.0),
        )),
        Some(_) => {}
    }
}

fn filesystem_only(mode: Option<&str>, field: String, errors: &mut Vec<FieldError>) {
    if let Some(m) = mode.filter(|m| *m != "Filesystem") {
        errors.push(FieldError::new(
            field,
            format!("Unsupported value: {m:?}: Skiff's volumes are folders (\"Filesystem\")"),
        ));
    }
}

/// Defaults of a claim's spec (also a StatefulSet's claim templates).
pub fn default_claim_spec(spec: &mut PersistentVolumeClaimSpec) {
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
}

/// Defaults of a PersistentVolumeClaim.
pub fn default_claim(pvc: &mut PersistentVolumeClaim) {
    if let Some(spec) = pvc.spec.as_mut() {
        default_claim_spec(spec);
    }
}

/// Validate a claim's spec at `path` (`spec`, or a StatefulSet's claim template).
pub fn validate_claim_spec(spec: &PersistentVolumeClaimSpec, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    access_modes(spec.access_modes.as_ref(), path, &mut errors);
    let requests = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    storage_size(
        requests.and_then(|r| r.get("storage")),
        &format!("{path}.resources.requests.storage"),
        &mut errors,
    );
    filesystem_only(
        spec.volume_mode.as_deref(),
        format!("{path}.volumeMode"),
        &mut errors,
    );
    if spec.data_source.is_some() || spec.data_source_ref.is_some() {
        errors.push(FieldError::new(
            format!("{path}.dataSource"),
            "Forbidden: volumes cannot be populated from snapshots or other claims",
        ));
    }
    if let Some(s) = &spec.selector {
        if let Err(e) = Selector::from_label_selector(&format!("{path}.selector"), s) {
            errors.push(e);
        }
    }
    errors
}

/// Validate a PersistentVolumeClaim.
pub fn validate_claim(pvc: &PersistentVolumeClaim) -> Vec<FieldError> {
    match &pvc.spec {
        None => vec![FieldError::new("spec", "Required value")],
        Some(spec) => validate_claim_spec(spec, "spec"),
    }
}

/// What of a claim may not change: its spec, except a volume or class given to a claim
/// that had none (the binder and the default class do that).
pub fn immutable_claim_changes(
    current: &PersistentVolumeClaim,
    next: &PersistentVolumeClaim,
) -> Vec<FieldError> {
    let (Some(a), Some(b)) = (&current.spec, &next.spec) else {
        return Vec::new();
    };
    let mut a = a.clone();
    if a.volume_name.as_deref().is_none_or(str::is_empty) {
        a.volume_name = b.volume_name.clone();
    }
    if a.storage_class_name.is_none() {
        a.storage_class_name = b.storage_class_name.clone();
    }
    if a.resources != b.resources {
        return vec![FieldError::new(
            "spec.resources.requests.storage",
            "Forbidden: volumes cannot be resized",
        )];
    }
    if &a != b {
        return vec![FieldError::new(
            "spec",
            "Forbidden: spec is immutable after creation",
        )];
    }
    Vec::new()
}

/// Defaults of a PersistentVolume: Retain, as Kubernetes gives one made by hand.
pub fn default_volume(pv: &mut PersistentVolume) {
    if let Some(spec) = pv.spec.as_mut() {
        spec.persistent_volume_reclaim_policy
            .get_or_insert_with(|| "Retain".into());
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    }
}

/// Validate a PersistentVolume: a size, access modes, a host folder as its source.
pub fn validate_volume(pv: &PersistentVolume) -> Vec<FieldError> {
    let Some(spec) = &pv.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    let mut errors = Vec::new();
    storage_size(
        spec.capacity.as_ref().and_then(|c| c.get("storage")),
        "spec.capacity.storage",
        &mut errors,
    );
    access_modes(spec.access_modes.as_ref(), "spec", &mut errors);
    filesystem_only(
        spec.volume_mode.as_deref(),
        "spec.volumeMode".into(),
        &mut errors,
    );
    one_of(
        &mut errors,
        "spec.persistentVolumeReclaimPolicy".into(),
        spec.persistent_volume_reclaim_policy.as_deref(),
        &["Delete", "Retain"],
    );
    let path = match (&spec.host_path, &spec.local) {
        (Some(h), None) => Some(("spec.hostPath.path", h.path.as_str())),
        (None, Some(l)) => {
            if spec.node_affinity.is_none() {
                errors.push(FieldError::new(
                    "spec.nodeAffinity",
                    "Required value: Local volume requires node affinity",
                ));
            }
            Some(("spec.local.path", l.path.as_str()))
        }
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "spec.local",
                "Forbidden: may not specify more than 1 volume type",
            ));
            None
        }
        (None, None) => {
            errors.push(FieldError::new(
                "spec",
                "Required value: a volume source: Skiff's node agent mounts hostPath and local \
                 volumes",
            ));
            None
        }
    };
    if let Some((field, p)) = path {
        if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
            errors.push(FieldError::new(
                field,
                format!("Invalid value: {p:?}: must be an absolute path without '..'"),
            ));
        }
    }
    errors
}

/// What of a volume may not change: where its data is and which nodes hold it.
pub fn immutable_volume_changes(
    current: &PersistentVolume,
    next: &PersistentVolume,
) -> Vec<FieldError> {
    let (Some(a), Some(b)) = (&current.spec, &next.spec) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    if a.host_path != b.host_path || a.local != b.local {
        errors.push(FieldError::new(
            "spec",
            "Forbidden: a volume's source is immutable after creation",
        ));
    }
    if a.node_affinity != b.node_affinity {
        errors.push(FieldError::new(
            "spec.nodeAffinity",
            "Invalid value: field is immutable",
        ));
    }
    errors
}

/// Defaults of a StorageClass: Delete, Immediate, as Kubernetes'.
pub fn default_class(sc: &mut StorageClass) {
    sc.reclaim_policy.get_or_insert_with(|| "Delete".into());
    sc.volume_binding_mode
        .get_or_insert_with(|| "Immediate".into());
}

/// Validate a StorageClass.
pub fn validate_class(sc: &StorageClass) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if sc.provisioner.is_empty() {
        errors.push(FieldError::new("provisioner", "Required value"));
    }
    one_of(
        &mut errors,
        "reclaimPolicy".into(),
        sc.reclaim_policy.as_deref(),
        &["Delete", "Retain"],
    );
    one_of(
        &mut errors,
        "volumeBindingMode".into(),
        sc.volume_binding_mode.as_deref(),
        &["Immediate", "WaitForFirstConsumer"],
    );
    if sc.allow_volume_expansion == Some(true) {
        errors.push(FieldError::new(
            "allowVolumeExpansion",
            "Forbidden: volumes cannot be resized",
        ));
    }
    errors
}

/// What of a class may not change: its provisioner, parameters, reclaim policy and binding
/// mode.
pub fn immutable_class_changes(current: &StorageClass, next: &StorageClass) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut check = |field: &str, same: bool| {
        if !same {
            errors.push(FieldError::new(
                field,
                "Forbidden: updates to this field are forbidden",
            ));
        }
    };
    check("provisioner", current.provisioner == next.provisioner);
    check("parameters", current.parameters == next.parameters);
    check(
        "reclaimPolicy",
        current.reclaim_policy == next.reclaim_policy,
    );
    check(
        "volumeBindingMode",
        current.volume_binding_mode == next.volume_binding_mode,
    );
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_claim_needs_modes_and_a_size_and_stays_as_made() {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce", "Sometimes"], "volumeMode": "Block"}
        }))
        .unwrap();
        assert_eq!(
            fields(validate_claim(&pvc)),
            [
                "spec.accessModes[1]",
                "spec.resources.requests.storage",
                "spec.volumeMode"
            ]
        );
        let a: PersistentVolumeClaim = serde_json::from_value(json!({
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        let mut bound = a.clone();
        bound.spec.as_mut().unwrap().volume_name = Some("pvc-1".into());
        bound.spec.as_mut().unwrap().storage_class_name = Some("local-path".into());
        assert!(immutable_claim_changes(&a, &bound).is_empty());
        let mut other = bound.clone();
        other.spec.as_mut().unwrap().volume_name = Some("pvc-2".into());
        assert_eq!(fields(immutable_claim_changes(&bound, &other)), ["spec"]);
    }

    #[test]
    fn a_volume_is_a_host_folder_and_local_ones_name_their_node() {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "local": {"path": "/data/../etc"}}
        }))
        .unwrap();
        assert_eq!(
            fields(validate_volume(&pv)),
            ["spec.nodeAffinity", "spec.local.path"]
        );
        let nfs: PersistentVolume = serde_json::from_value(json!({
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                     "nfs": {"server": "x", "path": "/"}}
        }))
        .unwrap();
        assert_eq!(fields(validate_volume(&nfs)), ["spec"]);
    }
}
