//! One stored change as every watcher sees it, made once per member: the resource and
//! namespace read from the key, the value opened (Secrets are sealed at rest), the JSON with
//! its resourceVersion spliced in, and, only when a selector needs it, the parsed states
//! before and after.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;
use skiff_raft::mvcc::{Event, EventKind};

use super::super::error::ObjectError;
use super::super::meta;
use super::super::selectors::{FieldSelector, Selector};
use super::super::store::ObjectStore;
use super::EventType;

/// A decoded change, shared by every watcher it goes to.
pub(super) struct Change {
    /// The revision of the change.
    pub revision: u64,
    /// The resource's key prefix (`/registry/{group}/{plural}/`).
    pub prefix: String,
    /// The object's namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Added, Modified or Deleted, as a watcher without selectors sees it.
    pub base: EventType,
    /// The object as JSON with its resourceVersion: the new state, or the last for a delete.
    pub object: Bytes,
    /// The stored values before and after (empty after a delete), parsed on first need.
    values: (Option<Vec<u8>>, Option<Vec<u8>>),
    parsed: OnceLock<States>,
}

/// The parsed states of an object around a change.
pub(super) struct States {
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl States {
    /// `spec.nodeName` before and after ("" when absent), for the node index.
    pub fn node_names(&self) -> (Option<&str>, Option<&str>) {
        fn node(v: &Option<Value>) -> Option<&str> {
            v.as_ref().map(|v| {
                v.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            })
        }
        (node(&self.before), node(&self.after))
    }
}

fn parse(bytes: &Option<Vec<u8>>) -> Option<Value> {
    bytes
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
}

impl Change {
    /// The parsed states, parsed on the first call.
    pub fn states(&self) -> &States {
        self.parsed.get_or_init(|| States {
            before: parse(&self.values.0),
            after: parse(&self.values.1),
        })
    }

    /// A change of a pod in `default` from `before` to `after` (JSON), for tests.
    #[cfg(test)]
    pub fn of_pod(before: Option<&str>, after: Option<&str>) -> Self {
        Change {
            revision: 7,
            prefix: "/registry/core/pods/".into(),
            namespace: "default".into(),
            base: EventType::Modified,
            object: Bytes::new(),
            values: (
                before.map(|b| b.as_bytes().to_vec()),
                after.map(|a| a.as_bytes().to_vec()),
            ),
            parsed: OnceLock::new(),
        }
    }

    /// Bytes a queued change holds.
    pub fn size(&self) -> usize {
        self.object.len() + 64
    }
}

/// The key prefix and namespace of an object key `/registry/{group}/{plural}/[ns/]name`.
fn split_key(key: &[u8]) -> Option<(String, String)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut slashes = key.match_indices('/').map(|(i, _)| i);
    // The fourth slash ends the prefix: "", "registry", group, plural.
    let end = slashes.nth(3)?;
    let (prefix, rest) = key.split_at(end + 1);
    let namespace = rest.split_once('/').map(|(ns, _)| ns).unwrap_or("");
    Some((prefix.to_string(), namespace.to_string()))
}

/// A change that could not be decoded, and the resource it belongs to.
pub(super) struct Undecodable {
    /// The resource's key prefix.
    pub prefix: String,
    pub error: ObjectError,
}

/// Decode one store event; `None` for a key outside the object space or a delete that
/// carries no previous state.
pub(super) fn decode(
    store: &ObjectStore,
    revision: u64,
    mut ev: Event,
) -> std::result::Result<Option<Change>, Undecodable> {
    let Some((prefix, namespace)) = split_key(&ev.kv.key) else {
        return Ok(None);
    };
    if let Err(error) = store.open_event(&mut ev) {
        return Err(Undecodable { prefix, error });
    }
    let prev = ev.prev.map(|p| p.value);
    let (base, shown, after) = match ev.kind {
        EventKind::Delete => {
            let Some(prev) = prev.as_ref() else {
                return Ok(None);
            };
            (EventType::Deleted, prev.as_slice(), None)
        }
        EventKind::Put => {
            let base = if prev.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            };
            (base, ev.kv.value.as_slice(), Some(ev.kv.value.clone()))
        }
    };
    let object = Bytes::from(meta::with_resource_version(shown, revision));
    Ok(Some(Change {
        revision,
        prefix,
        namespace,
        base,
        object,
        values: (prev, after),
        parsed: OnceLock::new(),
    }))
}

/// What one watcher selects within its resource.
#[derive(Debug)]
pub(super) struct Filter {
    /// Empty = every namespace.
    pub namespace: String,
    pub labels: Selector,
    pub fields: FieldSelector,
}

impl Filter {
    fn everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, obj: &Option<Value>) -> bool {
        obj.as_ref()
            .is_some_and(|o| self.labels.matches_object(o) && self.fields.matches(o))
    }

    /// The event this watcher sees for `change`, if any.
    pub fn event_type(&self, change: &Change) -> Option<EventType> {
        if !self.namespace.is_empty() && self.namespace != change.namespace {
            return None;
        }
        if self.everything() {
            return Some(change.base);
        }
        let states = change.states();
        match (self.matches(&states.before), self.matches(&states.after)) {
            (false, true) => Some(EventType::Added),
            (true, true) => Some(EventType::Modified),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        }
    }
}

/// A change as queued for one watcher.
pub(super) type Delivery = (EventType, Arc<Change>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_resource_prefix_and_namespace() {
        assert_eq!(
            split_key(b"/registry/core/pods/default/web-0"),
            Some(("/registry/core/pods/".into(), "default".into()))
        );
        assert_eq!(
            split_key(b"/registry/core/nodes/n1"),
            Some(("/registry/core/nodes/".into(), String::new()))
        );
        assert_eq!(split_key(b"/other"), None);
    }

    #[test]
    fn a_selector_sees_objects_arrive_and_leave() {
        let change = Change::of_pod;
        let on_n1 = Filter {
            namespace: String::new(),
            labels: Selector::default(),
            fields: FieldSelector::parse("f", "spec.nodeName=n1").expect("selector"),
        };
        let unbound = r#"{"spec":{}}"#;
        let bound = r#"{"spec":{"nodeName":"n1"}}"#;
        let c = change(Some(unbound), Some(bound));
        assert_eq!(on_n1.event_type(&c), Some(EventType::Added));
        assert_eq!(c.states().node_names(), (Some(""), Some("n1")));
        let c = change(Some(bound), Some(bound));
        assert_eq!(on_n1.event_type(&c), Some(EventType::Modified));
        let c = change(Some(bound), None);
        assert_eq!(on_n1.event_type(&c), Some(EventType::Deleted));
        let c = change(Some(unbound), Some(unbound));
        assert_eq!(on_n1.event_type(&c), None);
        let elsewhere = Filter {
            namespace: "kube-system".into(),
            labels: Selector::default(),
            fields: FieldSelector::default(),
        };
        assert_eq!(elsewhere.event_type(&c), None);
    }
}
