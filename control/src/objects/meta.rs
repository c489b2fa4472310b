//! Helpers over objects as JSON: the metadata the server owns, and the splice that puts
//! `metadata.resourceVersion` (the store's mod_revision, never stored) into stored bytes
//! without parsing them.

use serde_json::{Map, Value};

/// Annotation where `apply` keeps the manifest it last applied, as kubectl does.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Metadata fields only the server sets.
const SERVER_OWNED: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
];

/// The current time as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `metadata`, created if absent.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata was just made an object")
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Drop what clients may not set.
pub fn strip_server_owned(obj: &mut Value) {
    let meta = metadata_mut(obj);
    for f in SERVER_OWNED {
        meta.remove(*f);
    }
}

/// Copy the server-owned metadata of `from` onto `to` (an update keeps them).
pub fn keep_server_owned(from: &Value, to: &mut Value) {
    let Some(src) = from.get("metadata").and_then(Value::as_object) else {
        return;
    };
    let dst = metadata_mut(to);
    for f in SERVER_OWNED {
        match src.get(*f) {
            Some(v) => dst.insert((*f).to_string(), v.clone()),
            None => dst.remove(*f),
        };
    }
}

/// Whether anything outside metadata and status differs (the spec, data, ...): such a
/// change bumps `generation`.
pub fn spec_differs(a: &Value, b: &Value) -> bool {
    let body = |v: &Value| -> Vec<(String, Value)> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    body(a) != body(b)
}

/// The finalizers of an object.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Stored bytes with `metadata.resourceVersion` set to `revision`.
pub fn with_resource_version(stored: &[u8], revision: u64) -> Vec<u8> {
    const META: &[u8] = b"\"metadata\":{";
    let rv = format!("\"resourceVersion\":\"{revision}\"");
    if let Some(at) = stored.windows(META.len()).position(|w| w == META) {
        let at = at + META.len();
        let mut out = Vec::with_capacity(stored.len() + rv.len() + 1);
        out.extend_from_slice(&stored[..at]);
        out.extend_from_slice(rv.as_bytes());
        if stored.get(at) != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(&stored[at..]);
        return out;
    }
    // Not the layout the store writes; do it the slow way.
    match serde_json::from_slice::<Value>(stored) {
        Ok(mut v) => {
            metadata_mut(&mut v).insert("resourceVersion".into(), revision.to_string().into());
            serde_json::to_vec(&v).unwrap_or_else(|_| stored.to_vec())
        }
        Err(_) => stored.to_vec(),
    }
}

/// The resourceVersion of an object as a revision (`0` when absent; an error names the field
/// when it is not a number).
pub fn resource_version(obj: &Value) -> Result<u64, super::error::ObjectError> {
    match obj.pointer("/metadata/resourceVersion") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => s.parse().map_err(|_| {
            super::error::ObjectError::bad(
                "metadata.resourceVersion",
                format!("{s:?} is not a resource version this server issued"),
            )
        }),
        Some(other) => Err(super::error::ObjectError::bad(
            "metadata.resourceVersion",
            format!("must be a string, got {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn resource_version_is_spliced_into_metadata() {
        let stored = serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}),
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&with_resource_version(&stored, 42)).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "42");
        assert_eq!(out["metadata"]["name"], "a");
        let empty = serde_json::to_vec(&json!({"kind": "X", "metadata": {}})).unwrap();
        let out: Value = serde_json::from_slice(&with_resource_version(&empty, 7)).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn generation_follows_spec_changes_only() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {}});
        let mut b = a.clone();
        b["metadata"]["labels"]["a"] = json!("2");
        b["status"]["x"] = json!(1);
        assert!(!spec_differs(&a, &b));
        b["spec"]["replicas"] = json!(2);
        assert!(spec_differs(&a, &b));
    }
}
