//! The patch `apply` sends to the live object, computed from the last applied manifest and
//! the new one, as kubectl's three-way strategic merge: every field of the new manifest is
//! set; what the last manifest set and the new one no longer has is removed; everything
//! else (defaults, what controllers, the scheduler or another writer put there) stays. Lists
//! with a merge key are merged entry by entry, so an entry someone else added survives and an
//! entry the manifest dropped goes (`$patch: delete`); the manifest's order is kept with
//! `$setElementOrder`.

use serde_json::{Map, Value};

use super::schema::{Field, Schema};
use crate::objects::error::{ObjectError, Result};

/// The strategic merge patch from `last` to `new`, to apply to the live object.
pub fn patch(last: &Value, new: &Value, schema: &Schema) -> Result<Value> {
    let empty = Map::new();
    let last = last.as_object().unwrap_or(&empty);
    match new {
        Value::Object(new) => Ok(Value::Object(diff(last, new, schema, "")?)),
        _ => Err(ObjectError::bad(
            "object",
            "a manifest must be a JSON object",
        )),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn diff(
    last: &Map<String, Value>,
    new: &Map<String, Value>,
    schema: &Schema,
    path: &str,
) -> Result<Map<String, Value>> {
    let empty = Map::new();
    let mut out = Map::new();
    for key in last.keys() {
        if !new.contains_key(key) {
            out.insert(key.clone(), Value::Null);
        }
    }
    for (key, value) in new {
        let before = last.get(key);
        // A manifest's null means "unset": it removes what the last apply set, and is no
        // value of its own.
        if value.is_null() {
            if before.is_some() {
                out.insert(key.clone(), Value::Null);
            }
            continue;
        }
        let here = join(path, key);
        match (schema.field(key), value) {
            (
                Some(Field::MergeList {
                    key: merge_key,
                    item,
                }),
                Value::Array(entries),
            ) => {
                let before = before.and_then(Value::as_array).map_or(&[][..], |v| v);
                let (entries, order) = diff_list(before, entries, merge_key, item, &here)?;
                out.insert(key.clone(), Value::Array(entries));
                out.insert(format!("$setElementOrder/{key}"), Value::Array(order));
            }
            (Some(Field::Set), Value::Array(values)) => {
                let gone: Vec<Value> = before
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|v| !values.contains(v))
                    .cloned()
                    .collect();
                if !gone.is_empty() {
                    out.insert(
                        format!("$deleteFromPrimitiveList/{key}"),
                        Value::Array(gone),
                    );
                }
                out.insert(key.clone(), value.clone());
            }
            (_, Value::Object(sub)) => {
                let sub_schema = schema.object(key);
                let before = before.and_then(Value::as_object).unwrap_or(&empty);
                let mut d = diff(before, sub, sub_schema, &here)?;
                if sub_schema.retain_keys {
                    d.insert("$retainKeys".into(), retained(sub));
                }
                out.insert(key.clone(), Value::Object(d));
            }
            (_, other) => {
                out.insert(key.clone(), other.clone());
            }
        }
    }
    Ok(out)
}

/// The patch entries of a merged list, and the manifest's order of them.
fn diff_list(
    last: &[Value],
    new: &[Value],
    merge_key: &str,
    item: &Schema,
    path: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let empty = Map::new();
    let mut entries = Vec::new();
    let mut order = Vec::new();
    for (i, entry) in new.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let id = entry
            .as_object()
            .and_then(|e| e.get(merge_key))
            .ok_or_else(|| {
                ObjectError::bad(
                    format!("{here}.{merge_key}"),
                    format!("Required value: entries of this list are merged by {merge_key}"),
                )
            })?;
        let before = last
            .iter()
            .find(|l| l.get(merge_key) == Some(id))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let new_entry = entry.as_object().unwrap_or(&empty);
        let mut d = diff(before, new_entry, item, &here)?;
        d.insert(merge_key.to_string(), id.clone());
        if item.retain_keys {
            d.insert("$retainKeys".into(), retained(new_entry));
        }
        entries.push(Value::Object(d));
        order.push(Value::Object(Map::from_iter([(
            merge_key.to_string(),
            id.clone(),
        )])));
    }
    for gone in last {
        let Some(id) = gone.get(merge_key) else {
            continue;
        };
        if !new.iter().any(|n| n.get(merge_key) == Some(id)) {
            entries.push(Value::Object(Map::from_iter([
                (merge_key.to_string(), id.clone()),
                ("$patch".to_string(), Value::from("delete")),
            ])));
        }
    }
    Ok((entries, order))
}

fn retained(obj: &Map<String, Value>) -> Value {
    Value::Array(
        obj.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| Value::from(k.as_str()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::objects::patch::schema::{DEPLOYMENT, OBJECT};
    use crate::objects::patch::strategic;

    fn applied(last: Value, new: Value, live: Value, schema: &Schema) -> Value {
        let p = patch(&last, &new, schema).expect("a patch");
        let mut live = live;
        strategic::apply(&mut live, &p, schema).expect("applies");
        live
    }

    #[test]
    fn what_others_added_survives_and_what_the_manifest_dropped_goes() {
        let container =
            |name: &str, env: Value| json!({"name": name, "image": "busybox", "env": env});
        let last = json!({"spec": {"template": {"spec": {"containers": [
            container("app", json!([{"name": "MODE", "value": "a"}])),
            container("old", json!([]))]}}}});
        let new = json!({"spec": {"template": {"spec": {"containers": [
            container("app", json!([{"name": "MODE", "value": "b"}]))]}}}});
        let live = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "app", "image": "busybox", "imagePullPolicy": "Always",
             "env": [{"name": "MODE", "value": "a"}, {"name": "ADDED", "value": "1"}]},
            container("old", json!([])),
            container("sidecar", json!([]))]}}}});
        assert_eq!(
            applied(last, new, live, &DEPLOYMENT),
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "app", "image": "busybox", "imagePullPolicy": "Always",
                 "env": [{"name": "MODE", "value": "b"}, {"name": "ADDED", "value": "1"}]},
                container("sidecar", json!([]))]}}}})
        );
    }

    #[test]
    fn kinds_without_rules_merge_as_before() {
        let last = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 3}});
        let new = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 3, "paused": true, "x": null}});
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "set-by-hand"}, "uid": "u"}, "spec": {"replicas": 3, "strategy": {}}, "status": {"x": 1}});
        assert_eq!(
            applied(last, new, live, &OBJECT),
            json!({"metadata": {"labels": {"a": "1", "c": "set-by-hand"}, "uid": "u"}, "spec": {"replicas": 3, "strategy": {}, "paused": true}, "status": {"x": 1}})
        );
    }

    #[test]
    fn a_strategy_switched_to_recreate_drops_the_defaulted_rolling_update() {
        let last = json!({"spec": {"strategy": {"type": "RollingUpdate"}}});
        let new = json!({"spec": {"strategy": {"type": "Recreate"}}});
        let live = json!({"spec": {"strategy": {"type": "RollingUpdate",
                                                "rollingUpdate": {"maxSurge": "25%"}}}});
        assert_eq!(
            applied(last, new, live, &DEPLOYMENT),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );
    }

    #[test]
    fn a_list_entry_without_its_merge_key_is_named() {
        let new = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let e = patch(&json!({}), &new, &DEPLOYMENT)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("spec.template.spec.containers[0].name"), "{e}");
    }
}
