//! The remaining kinds: Namespace, Node, ConfigMap, Secret, Event and Lease.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, NamespaceStatus, Node, Secret};

use super::super::error::FieldError;
use super::super::names;

/// Largest total of a ConfigMap's or Secret's data.
const DATA_MAX_BYTES: usize = 1024 * 1024;

/// A new namespace is Active.
pub fn default_namespace(ns: &mut Namespace) {
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    status.phase.get_or_insert_with(|| "Active".into());
}

/// Secrets are Opaque unless typed.
pub fn default_secret(s: &mut Secret) {
    s.type_.get_or_insert_with(|| "Opaque".into());
}

fn validate_keys<'a>(
    errors: &mut Vec<FieldError>,
    sections: impl IntoIterator<Item = (&'a str, Vec<(&'a String, usize)>)>,
) {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for (section, entries) in sections {
        for (k, len) in entries {
            total += len;
            if let Some(e) = names::config_map_key(k) {
                errors.push(FieldError::new(format!("{section}[{k}]"), e));
            } else if !seen.insert(k.clone()) {
                errors.push(FieldError::new(
                    format!("{section}[{k}]"),
                    "Duplicate value: the key is in both data and binaryData",
                ));
            }
        }
    }
    if total > DATA_MAX_BYTES {
        errors.push(FieldError::new(
            "data",
            format!("Too long: must have at most {DATA_MAX_BYTES} bytes"),
        ));
    }
}

/// Validate a ConfigMap.
pub fn validate_config_map(c: &ConfigMap) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let data = c.data.iter().flatten().map(|(k, v)| (k, v.len())).collect();
    let binary = c
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.0.len()))
        .collect();
    validate_keys(&mut errors, [("data", data), ("binaryData", binary)]);
    errors
}

/// Validate a Secret.
pub fn validate_secret(s: &Secret) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let data = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.0.len()))
        .collect();
    let string_data = s
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.len()))
        .collect();
    validate_keys(&mut errors, [("data", data), ("stringData", string_data)]);
    errors
}

/// Secrets store `stringData` merged into `data`, as Kubernetes does on write.
pub fn fold_string_data(s: &mut Secret) {
    if let Some(sd) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in sd {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

/// Validate a Node.
pub fn validate_node(n: &Node) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(spec) = &n.spec {
        if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
            let ok = cidr.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
            });
            if !ok {
                errors.push(FieldError::new(
                    "spec.podCIDR",
                    format!("Invalid value: {cidr:?}: must be a CIDR such as 10.244.1.0/24"),
                ));
            }
        }
        for (i, t) in spec.taints.iter().flatten().enumerate() {
            if let Some(e) = names::qualified_name(&t.key) {
                errors.push(FieldError::new(format!("spec.taints[{i}].key"), e));
            }
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
                errors.push(FieldError::new(format!("spec.taints[{i}].effect"), format!("Unsupported value: {:?}: supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"", t.effect)));
            }
        }
    }
    errors
}

/// Validate an Event.
pub fn validate_event(e: &Event) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if e.involved_object.kind.as_deref().unwrap_or("").is_empty() {
        errors.push(FieldError::new("involvedObject.kind", "Required value"));
    }
    if let Some(t) = e.type_.as_deref() {
        if !["Normal", "Warning"].contains(&t) {
            errors.push(FieldError::new(
                "type",
                format!("Unsupported value: {t:?}: supported values: \"Normal\", \"Warning\""),
            ));
        }
    }
    errors
}

/// Validate a Lease.
pub fn validate_lease(l: &Lease) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(d) = l.spec.as_ref().and_then(|s| s.lease_duration_seconds) {
        if d <= 0 {
            errors.push(FieldError::new(
                "spec.leaseDurationSeconds",
                "must be greater than 0",
            ));
        }
    }
    errors
}
