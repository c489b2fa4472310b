//! JSON merge patch (RFC 7386), and the three-way patch `apply` computes from the last
//! applied configuration, the new manifest and the live object.

use serde_json::{Map, Value};

/// Apply merge patch `patch` to `target`.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            apply(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
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
}
