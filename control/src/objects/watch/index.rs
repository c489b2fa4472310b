//! The watchers of each resource, indexed by what they select so that a change is tested only
//! against watchers that may want it: a node agent's watch of its own pods costs one lookup per
//! change, not one test per watcher.
//!
//! A watcher requiring `spec.nodeName=X` is filed under node X; otherwise one of a namespace
//! under it; otherwise under the resource as a whole. A change is offered to the whole-resource
//! watchers, those of its namespace, and those of its node before and after (a pod leaving a
//! node is a DELETED for that node's watchers).

use std::collections::HashMap;
use std::sync::Arc;

use super::change::{Change, Filter};

/// Where a watcher is filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    Everything,
    Namespace(String),
    Node(String),
}

impl Place {
    /// The most selective place for `filter`.
    pub fn of(filter: &Filter) -> Self {
        if let Some(node) = filter.fields.required("spec.nodeName") {
            Place::Node(node.to_string())
        } else if !filter.namespace.is_empty() {
            Place::Namespace(filter.namespace.clone())
        } else {
            Place::Everything
        }
    }
}

type Bucket<W> = HashMap<u64, W>;

/// One resource's watchers.
struct Resource<W> {
    everything: Bucket<W>,
    by_namespace: HashMap<String, Bucket<W>>,
    by_node: HashMap<String, Bucket<W>>,
}

impl<W> Default for Resource<W> {
    fn default() -> Self {
        Self {
            everything: HashMap::new(),
            by_namespace: HashMap::new(),
            by_node: HashMap::new(),
        }
    }
}

impl<W> Resource<W> {
    fn bucket(&mut self, place: &Place) -> Option<&mut Bucket<W>> {
        match place {
            Place::Everything => Some(&mut self.everything),
            Place::Namespace(ns) => self.by_namespace.get_mut(ns),
            Place::Node(n) => self.by_node.get_mut(n),
        }
    }

    fn is_empty(&self) -> bool {
        self.everything.is_empty() && self.by_namespace.is_empty() && self.by_node.is_empty()
    }
}

/// Watchers `W` by resource key prefix and place.
pub(super) struct Index<W> {
    resources: HashMap<String, Resource<W>>,
}

impl<W> Default for Index<W> {
    fn default() -> Self {
        Self {
            resources: HashMap::new(),
        }
    }
}

impl<W> Index<W> {
    /// File watcher `id` of resource `prefix` at `place`.
    pub fn insert(&mut self, prefix: &str, place: &Place, id: u64, watcher: W) {
        let r = self.resources.entry(prefix.to_string()).or_default();
        let bucket = match place {
            Place::Everything => &mut r.everything,
            Place::Namespace(ns) => r.by_namespace.entry(ns.clone()).or_default(),
            Place::Node(n) => r.by_node.entry(n.clone()).or_default(),
        };
        bucket.insert(id, watcher);
    }

    /// Remove watcher `id`, returning it if it was filed.
    pub fn remove(&mut self, prefix: &str, place: &Place, id: u64) -> Option<W> {
        let r = self.resources.get_mut(prefix)?;
        let bucket = r.bucket(place)?;
        let w = bucket.remove(&id)?;
        let emptied = bucket.is_empty();
        if emptied {
            match place {
                Place::Everything => {}
                Place::Namespace(ns) => {
                    r.by_namespace.remove(ns);
                }
                Place::Node(n) => {
                    r.by_node.remove(n);
                }
            }
        }
        if r.is_empty() {
            self.resources.remove(prefix);
        }
        Some(w)
    }

    /// Every watcher of resource `prefix`, removed.
    pub fn remove_resource(&mut self, prefix: &str) -> Vec<W> {
        let Some(r) = self.resources.remove(prefix) else {
            return Vec::new();
        };
        let mut out: Vec<W> = r.everything.into_values().collect();
        for (_, b) in r.by_namespace.into_iter().chain(r.by_node) {
            out.extend(b.into_values());
        }
        out
    }

    /// How many watchers are filed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.resources
            .values()
            .map(|r| {
                r.everything.len()
                    + r.by_namespace
                        .values()
                        .chain(r.by_node.values())
                        .map(HashMap::len)
                        .sum::<usize>()
            })
            .sum()
    }

    /// Every filed watcher, emptying the index.
    pub fn drain(&mut self) -> Vec<W> {
        let prefixes: Vec<String> = self.resources.keys().cloned().collect();
        prefixes
            .iter()
            .flat_map(|p| self.remove_resource(p))
            .collect()
    }

    /// Call `offer` with each watcher that may want `change`, each at most once; `offer`
    /// returns `false` to have the watcher removed.
    pub fn offer(&mut self, change: &Arc<Change>, mut offer: impl FnMut(u64, &W) -> bool) {
        let Some(r) = self.resources.get(&change.prefix) else {
            return;
        };
        // The place of a refused watcher is only made when one is refused: this runs for
        // every change.
        let mut dropped: Vec<(Place, u64)> = Vec::new();
        let mut visit = |place: &dyn Fn() -> Place, bucket: &Bucket<W>| {
            for (id, w) in bucket {
                if !offer(*id, w) {
                    dropped.push((place(), *id));
                }
            }
        };
        visit(&|| Place::Everything, &r.everything);
        if let Some(b) = r.by_namespace.get(&change.namespace) {
            visit(&|| Place::Namespace(change.namespace.clone()), b);
        }
        if !r.by_node.is_empty() {
            let (before, after) = change.states().node_names();
            let moved = after.filter(|a| before != Some(*a));
            for node in before.into_iter().chain(moved) {
                if let Some(b) = r.by_node.get(node) {
                    visit(&|| Place::Node(node.to_string()), b);
                }
            }
        }
        for (place, id) in dropped {
            self.remove(&change.prefix, &place, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::change::Change;
    use super::*;

    fn offered(index: &mut Index<&'static str>, change: Change) -> Vec<&'static str> {
        let mut out = Vec::new();
        index.offer(&Arc::new(change), |_, w| {
            out.push(*w);
            true
        });
        out.sort();
        out
    }

    fn moved() -> Change {
        Change::of_pod(
            Some(r#"{"spec":{"nodeName":"n1"}}"#),
            Some(r#"{"spec":{"nodeName":"n2"}}"#),
        )
    }

    #[test]
    fn a_change_is_offered_only_to_watchers_that_may_want_it() {
        let pods = "/registry/core/pods/";
        let mut index = Index::default();
        index.insert(pods, &Place::Everything, 1, "all");
        index.insert(pods, &Place::Namespace("default".into()), 2, "default");
        index.insert(pods, &Place::Namespace("other".into()), 3, "other");
        index.insert(pods, &Place::Node("n1".into()), 4, "n1");
        index.insert(pods, &Place::Node("n2".into()), 5, "n2");
        index.insert("/registry/core/nodes/", &Place::Everything, 6, "nodes");
        assert_eq!(index.len(), 6);

        assert_eq!(offered(&mut index, moved()), ["all", "default", "n1", "n2"]);
        let unbound = Change::of_pod(None, Some(r#"{"spec":{}}"#));
        assert_eq!(offered(&mut index, unbound), ["all", "default"]);

        // A watcher the offer refuses is removed; so is one removed by hand.
        let change = Arc::new(moved());
        index.offer(&change, |id, _| id != 4);
        assert_eq!(index.len(), 5);
        assert_eq!(index.remove(pods, &Place::Node("n2".into()), 5), Some("n2"));
        assert_eq!(index.remove(pods, &Place::Node("n2".into()), 5), None);
        assert_eq!(index.remove_resource(pods).len(), 3);
        assert_eq!(index.drain(), ["nodes"]);
        assert_eq!(index.len(), 0);
    }
}
