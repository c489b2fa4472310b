//! Patches: JSON merge patch (RFC 7386) and JSON patch (RFC 6902) through the `json-patch`
//! crate, and the three-way patch `apply` computes from the last applied configuration, the
//! new manifest and the live object (Skiff's own: it is what kubectl's apply does for kinds
//! without a strategic merge schema).

use serde_json::{Map, Value};

use super::error::{ObjectError, Result};

/// Which kind of patch a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
}

/// A parsed patch.
#[derive(Debug, Clone)]
pub enum Patch {
    /// A merge patch: a JSON object.
    Merge(Value),
    /// A JSON patch: operations.
    Json(json_patch::Patch),
}

impl Patch {
    /// Parse `bytes` as a patch of `kind`; a malformed one is refused naming the reason.
    pub fn parse(kind: PatchKind, bytes: &[u8]) -> Result<Self> {
        match kind {
            PatchKind::Merge => {
                let v: Value = serde_json::from_slice(bytes)
                    .map_err(|e| ObjectError::bad("patch", format!("invalid JSON: {e}")))?;
                if !v.is_object() {
                    return Err(ObjectError::bad(
                        "patch",
                        "a merge patch must be a JSON object",
                    ));
                }
                Ok(Self::Merge(v))
            }
            PatchKind::Json => serde_json::from_slice(bytes).map(Self::Json).map_err(|e| {
                ObjectError::bad(
                    "patch",
                    format!("not a JSON patch (a list of RFC 6902 operations): {e}"),
                )
            }),
        }
    }

    /// Apply it to `target`; a JSON patch whose operation fails changes nothing and names the
    /// operation and its path.
    pub fn apply(&self, target: &mut Value) -> Result<()> {
        match self {
            Self::Merge(p) => {
                apply(target, p);
                Ok(())
            }
            Self::Json(p) => json_patch::patch(target, &p.0)
                .map_err(|e| ObjectError::bad("patch", e.to_string())),
        }
    }
}

/// Apply merge patch `patch` to `target`.
pub fn apply(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The patch that turns the last applied manifest into the new one, applied to whatever the
/// live object holds: every field of `new` is set (lists replaced whole), and fields that
/// `last` set but `new` no longer has are removed. Fields neither ever set (defaults, what
/// controllers and the scheduler wrote) stay as they are.
pub fn three_way(last: &Value, new: &Value) -> Value {
    match (last, new) {
        (Value::Object(l), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, lv) in l {
                match n.get(k) {
                    None => {
                        out.insert(k.clone(), Value::Null);
                    }
                    Some(nv) => {
                        out.insert(k.clone(), three_way(lv, nv));
                    }
                }
            }
            for (k, nv) in n {
                if !l.contains_key(k) {
                    out.insert(k.clone(), strip_nulls(nv));
                }
            }
            Value::Object(out)
        }
        (_, n) => strip_nulls(n),
    }
}

/// A manifest's explicit nulls mean "unset"; as patch values they would delete.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        apply(&mut t, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn three_way_keeps_what_others_set_and_drops_what_was_unapplied() {
        let last = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 3}});
        let new =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 3, "paused": true}});
        let mut live = json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "set-by-hand"}, "uid": "u"}, "spec": {"replicas": 3, "strategy": {}}, "status": {"x": 1}});
        apply(&mut live, &three_way(&last, &new));
        assert_eq!(
            live,
            json!({"metadata": {"labels": {"a": "1", "c": "set-by-hand"}, "uid": "u"}, "spec": {"replicas": 3, "strategy": {}, "paused": true}, "status": {"x": 1}})
        );
    }

    #[test]
    fn a_json_patch_applies_whole_or_not_at_all_and_names_the_failing_operation() {
        let ops = br#"[{"op": "replace", "path": "/a", "value": 2},
                       {"op": "test", "path": "/b", "value": true}]"#;
        let p = Patch::parse(PatchKind::Json, ops).expect("operations");
        let mut doc = json!({"a": 1, "b": false});
        let e = p.apply(&mut doc).expect_err("the test fails").to_string();
        assert!(e.contains("/b"), "{e}");
        assert_eq!(doc, json!({"a": 1, "b": false}), "nothing applied");
        let e = Patch::parse(PatchKind::Json, br#"{"a": 1}"#).expect_err("not a list");
        assert!(e.to_string().contains("not a JSON patch"), "{e}");
        let e = Patch::parse(PatchKind::Merge, b"[1]").expect_err("not an object");
        assert!(e.to_string().contains("JSON object"), "{e}");
    }
}
