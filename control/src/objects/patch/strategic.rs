//! Strategic merge patch, as Kubernetes' API server applies it: a JSON merge patch in which
//! lists with a merge key merge entry by entry ([`super::schema`]) and directives say what a
//! plain merge patch cannot:
//!
//! - `$patch: delete` in a list entry removes the entry with its key; in an object, the object;
//! - `$patch: replace` in an object or as a list entry replaces it whole;
//! - `$deleteFromPrimitiveList/<field>` removes scalars from a set-like list;
//! - `$setElementOrder/<field>` orders a merged list; entries the patch does not name keep their
//!   place after the entry they followed;
//! - `$retainKeys` clears the object's fields it does not list.
//!
//! Written here because no maintained Rust crate implements it (kube-rs sends such patches to
//! the API server, which applies them with Go's `strategicpatch` package).

use serde_json::{Map, Value};

use super::schema::{Field, Schema};
use crate::objects::error::{ObjectError, Result};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

fn bad(path: &str, reason: impl Into<String>) -> ObjectError {
    let field = if path.is_empty() {
        "patch".to_string()
    } else {
        format!("patch: {path}")
    };
    ObjectError::bad(field, reason)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The `$patch` directive of an object, checked.
fn directive<'a>(obj: &'a Map<String, Value>, path: &str) -> Result<Option<&'a str>> {
    match obj.get(PATCH) {
        None => Ok(None),
        Some(Value::String(d)) if matches!(d.as_str(), "delete" | "replace" | "merge") => {
            Ok(Some(d))
        }
        Some(other) => Err(bad(
            path,
            format!("$patch: {other} is not a directive (delete, replace or merge)"),
        )),
    }
}

/// Apply `patch` to `target` following `schema`. On error `target` may be half-changed: the
/// caller patches a copy.
pub fn apply(target: &mut Value, patch: &Value, schema: &Schema) -> Result<()> {
    let Value::Object(p) = patch else {
        return Err(bad("", "a strategic merge patch must be a JSON object"));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(t) = target.as_object_mut() {
        merge_object(t, p, schema, "")?;
    }
    Ok(())
}

fn merge_object(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    schema: &Schema,
    path: &str,
) -> Result<()> {
    match directive(patch, path)? {
        Some("replace") => {
            *target = without_directives(patch);
            return Ok(());
        }
        Some("delete") => return Err(bad(path, "$patch: delete cannot remove the whole object")),
        _ => {}
    }
    let mut orders = Vec::new();
    let mut removals = Vec::new();
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(SET_ORDER) {
            orders.push((field, value));
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM) {
            removals.push((field, value));
            continue;
        }
        if key == PATCH || key == RETAIN_KEYS {
            continue;
        }
        if key.starts_with('$') {
            return Err(bad(path, format!("{key} is not a patch directive")));
        }
        let here = join(path, key);
        match (schema.field(key), value) {
            (_, Value::Null) => {
                target.remove(key);
            }
            (
                Some(Field::MergeList {
                    key: merge_key,
                    item,
                }),
                Value::Array(entries),
            ) => {
                let list = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                merge_list(list, entries, merge_key, item, &here)?;
            }
            (Some(Field::Set), Value::Array(values)) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                if let Value::Array(list) = slot {
                    for v in values {
                        if !list.contains(v) {
                            list.push(v.clone());
                        }
                    }
                }
            }
            (_, Value::Object(sub)) => {
                if directive(sub, &here)? == Some("delete") {
                    target.remove(key);
                    continue;
                }
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Some(t) = slot.as_object_mut() {
                    merge_object(t, sub, schema.object(key), &here)?;
                }
            }
            (_, other) => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    for (field, values) in removals {
        let Value::Array(values) = values else {
            return Err(bad(path, format!("{DELETE_FROM}{field} must be a list")));
        };
        if let Some(Value::Array(list)) = target.get_mut(field) {
            list.retain(|v| !values.contains(v));
        }
    }
    for (field, order) in orders {
        let Value::Array(order) = order else {
            return Err(bad(path, format!("{SET_ORDER}{field} must be a list")));
        };
        let merge_key = match schema.field(field) {
            Some(Field::MergeList { key, .. }) => Some(key),
            _ => None,
        };
        if let Some(Value::Array(list)) = target.get_mut(field) {
            let identity = |v: &Value| match merge_key {
                Some(k) => v.get(k).cloned(),
                None => Some(v.clone()),
            };
            let order: Vec<Value> = order.iter().filter_map(identity).collect();
            reorder(list, &order, identity);
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Some(keep) = retain.as_array() else {
            return Err(bad(path, "$retainKeys must be a list of field names"));
        };
        target.retain(|k, _| keep.iter().any(|v| v.as_str() == Some(k)));
    }
    Ok(())
}

/// Merge `entries` into the list `slot` entry by entry, matched by `merge_key`.
fn merge_list(
    slot: &mut Value,
    entries: &[Value],
    merge_key: &str,
    item: &Schema,
    path: &str,
) -> Result<()> {
    let replace = entries
        .iter()
        .any(|e| e.get(PATCH).and_then(Value::as_str) == Some("replace"));
    if replace {
        *slot = Value::Array(
            entries
                .iter()
                .filter(|e| e.get(PATCH).is_none())
                .map(|e| match e {
                    Value::Object(m) => Value::Object(without_directives(m)),
                    other => other.clone(),
                })
                .collect(),
        );
        return Ok(());
    }
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    let Value::Array(list) = slot else {
        return Ok(());
    };
    for (i, entry) in entries.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let Value::Object(e) = entry else {
            return Err(bad(
                &here,
                format!("entries are merged by {merge_key}, so each must be an object"),
            ));
        };
        let Some(id) = e.get(merge_key) else {
            return Err(bad(
                &here,
                format!("{merge_key}: Required value: entries are merged by {merge_key}"),
            ));
        };
        let at = list.iter().position(|v| v.get(merge_key) == Some(id));
        match (directive(e, &here)?, at) {
            (Some("delete"), Some(at)) => {
                list.remove(at);
            }
            (Some("delete"), None) => {}
            (_, Some(at)) => {
                if let Some(t) = list[at].as_object_mut() {
                    merge_object(t, e, item, &here)?;
                } else {
                    list[at] = Value::Object(Map::new());
                    if let Some(t) = list[at].as_object_mut() {
                        merge_object(t, e, item, &here)?;
                    }
                }
            }
            (_, None) => {
                let mut new = Map::new();
                merge_object(&mut new, e, item, &here)?;
                list.push(Value::Object(new));
            }
        }
    }
    Ok(())
}

/// Order `list` as `order` names its entries; an entry `order` does not name stays right
/// after the entry it followed (at the front if it led).
fn reorder(list: &mut Vec<Value>, order: &[Value], identity: impl Fn(&Value) -> Option<Value>) {
    let named = |v: &Value| identity(v).and_then(|id| order.iter().position(|o| *o == id));
    let mut leading = Vec::new();
    let mut after: Vec<Vec<Value>> = vec![Vec::new(); order.len()];
    let mut placed: Vec<Option<Value>> = vec![None; order.len()];
    let mut last = None;
    for v in list.drain(..) {
        match named(&v) {
            Some(at) if placed[at].is_none() => {
                placed[at] = Some(v);
                last = Some(at);
            }
            _ => match last {
                Some(at) => after[at].push(v),
                None => leading.push(v),
            },
        }
    }
    list.extend(leading);
    for (v, rest) in placed.into_iter().zip(after) {
        list.extend(v);
        list.extend(rest);
    }
}

fn without_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::objects::patch::schema::{DEPLOYMENT, OBJECT, POD};

    fn patched(target: Value, patch: Value, schema: &Schema) -> Value {
        let mut t = target;
        apply(&mut t, &patch, schema).expect("applies");
        t
    }

    #[test]
    fn containers_and_env_merge_by_name_and_other_lists_are_replaced() {
        let pod = json!({"spec": {
            "containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
                           {"name": "b", "image": "y"}],
            "tolerations": [{"key": "k"}]}});
        let p = json!({"spec": {
            "containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]},
                           {"name": "c", "image": "z"}],
            "tolerations": [{"key": "other"}]}});
        assert_eq!(
            patched(pod, p, &POD),
            json!({"spec": {
                "containers": [{"name": "a", "image": "x",
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                               {"name": "b", "image": "y"},
                               {"name": "c", "image": "z"}],
                "tolerations": [{"key": "other"}]}})
        );
    }

    #[test]
    fn directives_delete_replace_and_order() {
        let pod = json!({"metadata": {"finalizers": ["a", "b"]},
                         "spec": {"containers": [{"name": "a"}, {"name": "x"}, {"name": "b"}],
                                  "volumes": [{"name": "v", "emptyDir": {}}]}});
        let p = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
                       "spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "c"}],
                                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                                "volumes": [{"$patch": "replace"}, {"name": "w"}]}});
        assert_eq!(
            patched(pod, p, &POD),
            json!({"metadata": {"finalizers": ["b", "c"]},
                   "spec": {"containers": [{"name": "c"}, {"name": "a"}, {"name": "x"}],
                            "volumes": [{"name": "w"}]}})
        );
    }

    #[test]
    fn retain_keys_clears_what_the_patch_does_not_keep() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxSurge": "25%"}}}});
        let p = json!({"spec": {"strategy": {"type": "Recreate", "$retainKeys": ["type"]}}});
        assert_eq!(
            patched(d, p, &DEPLOYMENT),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );
    }

    #[test]
    fn without_a_schema_it_is_a_merge_patch() {
        let t = json!({"data": {"a": "1", "b": "2"}, "l": [1, 2]});
        let p = json!({"data": {"a": null, "c": "3"}, "l": [3]});
        assert_eq!(
            patched(t, p, &OBJECT),
            json!({"data": {"b": "2", "c": "3"}, "l": [3]})
        );
    }

    #[test]
    fn malformed_patches_name_the_field_and_the_reason() {
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        for (p, why) in [
            (
                json!({"spec": {"containers": [{"image": "x"}]}}),
                "name: Required value",
            ),
            (json!({"spec": {"containers": ["a"]}}), "must be an object"),
            (json!({"spec": {"$patch": "drop"}}), "not a directive"),
            (json!({"$bogus": 1}), "not a patch directive"),
            (json!([1]), "JSON object"),
        ] {
            let mut t = pod.clone();
            let e = apply(&mut t, &p, &POD).expect_err("refused").to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
    }
}
