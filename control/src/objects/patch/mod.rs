//! Patches: JSON merge patch (RFC 7386) and JSON patch (RFC 6902) through the `json-patch`
//! crate; strategic merge patch ([`strategic`]) following each kind's [`schema`]; and the
//! three-way patch `apply` computes from the last applied manifest and the new one
//! ([`three_way`]).

pub mod schema;
pub mod strategic;
pub mod three_way;

use serde_json::Value;

use self::schema::Schema;
use super::error::{ObjectError, Result};

/// Which kind of patch a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
    /// Kubernetes' strategic merge patch.
    Strategic,
}

/// A parsed patch.
#[derive(Debug, Clone)]
pub enum Patch {
    /// A merge patch: a JSON object.
    Merge(Value),
    /// A JSON patch: operations.
    Json(json_patch::Patch),
    /// A strategic merge patch: a JSON object with directives.
    Strategic(Value),
}

impl Patch {
    /// Parse `bytes` as a patch of `kind`; a malformed one is refused naming the reason.
    pub fn parse(kind: PatchKind, bytes: &[u8]) -> Result<Self> {
        match kind {
            PatchKind::Merge | PatchKind::Strategic => {
                let v: Value = serde_json::from_slice(bytes)
                    .map_err(|e| ObjectError::bad("patch", format!("invalid JSON: {e}")))?;
                if !v.is_object() {
                    return Err(ObjectError::bad(
                        "patch",
                        "a merge patch must be a JSON object",
                    ));
                }
                Ok(if kind == PatchKind::Merge {
                    Self::Merge(v)
                } else {
                    Self::Strategic(v)
                })
            }
            PatchKind::Json => serde_json::from_slice(bytes).map(Self::Json).map_err(|e| {
                ObjectError::bad(
                    "patch",
                    format!("not a JSON patch (a list of RFC 6902 operations): {e}"),
                )
            }),
        }
    }

    /// The object the patch sets fields of (its `metadata.resourceVersion`, if any, is a
    /// precondition), unless it is a list of operations.
    pub fn object(&self) -> Option<&Value> {
        match self {
            Self::Merge(p) | Self::Strategic(p) => Some(p),
            Self::Json(_) => None,
        }
    }

    /// Apply it to `target`, whose kind merges by `schema`; a JSON patch whose operation fails
    /// changes nothing and names the operation and its path.
    pub fn apply(&self, target: &mut Value, schema: &Schema) -> Result<()> {
        match self {
            Self::Merge(p) => {
                json_patch::merge(target, p);
                Ok(())
            }
            Self::Strategic(p) => strategic::apply(target, p, schema),
            Self::Json(p) => json_patch::patch(target, &p.0)
                .map_err(|e| ObjectError::bad("patch", e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let p = Patch::parse(
            PatchKind::Merge,
            br#"{"a": "z", "c": {"f": null}, "l": [3]}"#,
        )
        .expect("an object");
        p.apply(&mut t, &schema::POD).expect("applies");
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn a_json_patch_applies_whole_or_not_at_all_and_names_the_failing_operation() {
        let ops = br#"[{"op": "replace", "path": "/a", "value": 2},
                       {"op": "test", "path": "/b", "value": true}]"#;
        let p = Patch::parse(PatchKind::Json, ops).expect("operations");
        let mut doc = json!({"a": 1, "b": false});
        let e = p
            .apply(&mut doc, &schema::OBJECT)
            .expect_err("the test fails")
            .to_string();
        assert!(e.contains("/b"), "{e}");
        assert_eq!(doc, json!({"a": 1, "b": false}), "nothing applied");
        let e = Patch::parse(PatchKind::Json, br#"{"a": 1}"#).expect_err("not a list");
        assert!(e.to_string().contains("not a JSON patch"), "{e}");
        let e = Patch::parse(PatchKind::Merge, b"[1]").expect_err("not an object");
        assert!(e.to_string().contains("JSON object"), "{e}");
    }
}
