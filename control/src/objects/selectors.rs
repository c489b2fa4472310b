//! Label selectors (`app=web,tier!=db`, `env in (a,b)`, `!canary`) and field selectors
//! (`metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`), parsed once and
//! matched against objects as JSON; also the structured `LabelSelector` of workloads.
//!
//! Written here rather than taken from a crate: no well-kept Rust crate parses Kubernetes'
//! selector grammar (the few on crates.io are small, unmaintained and cover label selectors
//! only). This follows apimachinery's grammar and names the term it cannot read.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::error::{FieldError, ObjectError, Result};
use super::names;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`
    Equals(String, String),
    /// `key!=value` (also true when the key is absent)
    NotEquals(String, String),
    /// `key in (a,b)`
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the key is absent)
    NotIn(String, Vec<String>),
    /// `key`
    Exists(String),
    /// `!key`
    DoesNotExist(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Split on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(field: &str, rest: &str) -> Result<Vec<String>> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| ObjectError::bad(field, format!("{rest:?}: expected a set like (a,b)")))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &values {
        if let Some(e) = names::label_value(v) {
            return Err(ObjectError::bad(field, e));
        }
    }
    Ok(values)
}

impl Selector {
    /// Parse the string form; `field` names the request field in errors.
    pub fn parse(field: &str, s: &str) -> Result<Self> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for part in split_top_level(s) {
            let part = part.trim();
            let key_ok = |k: &str| match names::qualified_name(k) {
                Some(e) => Err(ObjectError::bad(field, format!("label key {e}"))),
                None => Ok(k.to_string()),
            };
            let value_ok = |v: &str| match names::label_value(v) {
                Some(e) => Err(ObjectError::bad(field, e)),
                None => Ok(v.to_string()),
            };
            let req = if let Some(k) = part.strip_prefix('!') {
                Requirement::DoesNotExist(key_ok(k.trim())?)
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key_ok(k.trim())?, value_ok(v.trim())?)
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(key_ok(k.trim())?, value_ok(v.trim())?)
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(key_ok(k.trim())?, value_ok(v.trim())?)
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(key_ok(k.trim())?, set_values(field, rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(key_ok(k.trim())?, set_values(field, rest)?)
            } else if part.contains(['(', ')', ' ']) {
                return Err(ObjectError::bad(
                    field,
                    format!("{part:?} is not a label requirement (key, !key, key=value, key!=value, key in (a,b), key notin (a,b))"),
                ));
            } else {
                Requirement::Exists(key_ok(part)?)
            };
            requirements.push(req);
        }
        Ok(Self { requirements })
    }

    /// The selector of a workload's structured `LabelSelector`.
    pub fn from_label_selector(
        field: &str,
        ls: &LabelSelector,
    ) -> std::result::Result<Self, FieldError> {
        let mut requirements = Vec::new();
        for (k, v) in ls.match_labels.iter().flatten() {
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for (i, e) in ls.match_expressions.iter().flatten().enumerate() {
            let values = e.values.clone().unwrap_or_default();
            let f = format!("{field}.matchExpressions[{i}]");
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(FieldError::new(format!("{f}.values"), "must be specified when operator is In or NotIn"));
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(FieldError::new(format!("{f}.values"), "may not be specified when operator is Exists or DoesNotExist"));
                }
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(FieldError::new(
                        format!("{f}.operator"),
                        format!("{other:?} is not a valid operator: supported values are \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""),
                    ))
                }
            };
            requirements.push(req);
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the labels of the JSON object `obj` satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }
}

/// The labels of a JSON object.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The fields a field selector may name, with their JSON pointers.
const FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
    ("spec.nodeName", "/spec/nodeName"),
    ("status.phase", "/status/phase"),
];

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(&'static str, bool, String)>,
}

impl FieldSelector {
    /// Parse `a=b,c!=d`; only the supported fields are accepted.
    pub fn parse(field: &str, s: &str) -> Result<Self> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for part in s.split(',') {
            let part = part.trim();
            let (name, equal, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ObjectError::bad(
                    field,
                    format!("{part:?} is not a field requirement (field=value or field!=value)"),
                ));
            };
            let name = name.trim();
            let pointer = FIELDS
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    ObjectError::bad(
                        field,
                        format!(
                            "field {name:?} is not supported; supported fields: {}",
                            FIELDS
                                .iter()
                                .map(|(f, _)| *f)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            terms.push((pointer, equal, value.trim().to_string()));
        }
        Ok(Self { terms })
    }

    /// The value `field` (as `spec.nodeName`) must equal, when a term requires one.
    pub fn required(&self, field: &str) -> Option<&str> {
        let pointer = FIELDS.iter().find(|(f, _)| *f == field)?.1;
        self.terms
            .iter()
            .find(|(p, equal, _)| *p == pointer && *equal)
            .map(|(_, _, v)| v.as_str())
    }

    /// Whether there is no term.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the JSON object `obj` satisfies every term (an absent field reads as "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(pointer, equal, value)| {
            let actual = obj.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_match_as_kubectl_means_them() {
        let s = Selector::parse(
            "labelSelector",
            "app=web,tier!=db,env in (prod, staging),!canary",
        )
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod"), ("canary", "1")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod"), ("tier", "db")])));
        let e = Selector::parse("labelSelector", "app").unwrap();
        assert!(e.matches(&labels(&[("app", "")])));
        assert!(!e.matches(&labels(&[])));
        assert!(Selector::parse("labelSelector", "app in a,b").is_err());
        assert!(Selector::parse("labelSelector", "bad key=1").is_err());
    }

    #[test]
    fn field_selectors_cover_the_supported_fields() {
        let pod = json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("f", "spec.nodeName=n1,status.phase!=Failed")
                .unwrap()
                .matches(&pod)
        );
        assert!(!FieldSelector::parse("f", "spec.nodeName=")
            .unwrap()
            .matches(&pod));
        assert!(FieldSelector::parse("f", "metadata.name==a")
            .unwrap()
            .matches(&pod));
        let err = FieldSelector::parse("fieldSelector", "spec.foo=1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fieldSelector") && err.contains("spec.foo"),
            "{err}"
        );
    }
}
