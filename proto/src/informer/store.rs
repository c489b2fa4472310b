//! The informer's cache of one kind: objects by name, and the indexes over them.
//!
//! A cache holds each object either decoded (shared as `Arc<K>`) or, when built compact, as
//! the JSON it arrived in, decoded again on each read. A typed Kubernetes object takes four
//! to five times the bytes of its JSON (a `Pod` is over 2 KiB before its first container,
//! each string and map its own allocation): for the leader's cache of every pod in the
//! cluster that difference is most of its memory, while its reads touch few pods at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::objects::ObjectName;

/// The values an object is indexed under.
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// One index: the names of the objects under each value.
pub(super) struct Index<K> {
    pub(super) name: &'static str,
    values_of: IndexFn<K>,
    entries: HashMap<String, BTreeSet<ObjectName>>,
}

impl<K> Index<K> {
    pub(super) fn new(name: &'static str, values_of: IndexFn<K>) -> Self {
        Self {
            name,
            values_of,
            entries: HashMap::new(),
        }
    }

    fn insert(&mut self, key: &ObjectName, obj: &K) {
        for v in (self.values_of)(obj) {
            self.entries.entry(v).or_default().insert(key.clone());
        }
    }

    fn remove(&mut self, key: &ObjectName, obj: &K) {
        for v in (self.values_of)(obj) {
            if let Some(set) = self.entries.get_mut(&v) {
                set.remove(key);
                if set.is_empty() {
                    self.entries.remove(&v);
                }
            }
        }
    }
}

/// One cached object, as the cache keeps it.
pub(super) enum Stored<K> {
    /// Decoded, shared with every reader.
    Object(Arc<K>),
    /// The JSON it was decoded from (it decodes: it did once).
    Json(Arc<[u8]>),
}

impl<K> Clone for Stored<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Object(o) => Self::Object(o.clone()),
            Self::Json(j) => Self::Json(j.clone()),
        }
    }
}

impl<K: DeserializeOwned> Stored<K> {
    /// The object, decoded if it is kept as JSON.
    pub(super) fn object(&self) -> Option<Arc<K>> {
        match self {
            Self::Object(o) => Some(o.clone()),
            Self::Json(j) => match serde_json::from_slice(j) {
                Ok(o) => Some(Arc::new(o)),
                Err(error) => {
                    // It decoded when it was stored; the same bytes decode the same way.
                    tracing::error!(%error, "informer: a cached object no longer decodes");
                    None
                }
            },
        }
    }
}

/// Objects by name, with their indexes.
pub(super) struct Store<K> {
    objects: BTreeMap<ObjectName, Stored<K>>,
    indexes: Vec<Index<K>>,
    compact: bool,
}

impl<K: DeserializeOwned> Store<K> {
    /// An empty store; `compact` keeps objects as JSON.
    pub(super) fn new(indexes: Vec<Index<K>>, compact: bool) -> Self {
        Self {
            objects: BTreeMap::new(),
            indexes,
            compact,
        }
    }

    fn stored(&self, obj: &Arc<K>, json: &[u8]) -> Stored<K> {
        if self.compact {
            Stored::Json(Arc::from(json))
        } else {
            Stored::Object(obj.clone())
        }
    }

    /// Cache `obj`, decoded from `json`; its previous state if there was one.
    pub(super) fn insert(&mut self, key: ObjectName, obj: &Arc<K>, json: &[u8]) -> Option<Arc<K>> {
        let stored = self.stored(obj, json);
        let previous = self
            .objects
            .insert(key.clone(), stored)
            .and_then(|p| p.object());
        for index in &mut self.indexes {
            if let Some(p) = &previous {
                index.remove(&key, p);
            }
            index.insert(&key, obj);
        }
        previous
    }

    /// Forget `key`; its last cached state if there was one.
    pub(super) fn remove(&mut self, key: &ObjectName) -> Option<Arc<K>> {
        let previous = self.objects.remove(key)?.object();
        if let Some(p) = &previous {
            for index in &mut self.indexes {
                index.remove(key, p);
            }
        }
        previous
    }

    /// Hold exactly `objects` (each with the JSON it was decoded from).
    /// An empty store with the same indexes, kept the same way: a re-list fills one object
    /// at a time (a compact store never holds every object decoded at once) and then takes
    /// the place of the old.
    pub(super) fn empty_like(&self) -> Self {
        Self {
            objects: BTreeMap::new(),
            indexes: self
                .indexes
                .iter()
                .map(|i| Index::new(i.name, i.values_of.clone()))
                .collect(),
            compact: self.compact,
        }
    }

    pub(super) fn get(&self, key: &ObjectName) -> Option<Stored<K>> {
        self.objects.get(key).cloned()
    }

    pub(super) fn all(&self) -> Vec<Stored<K>> {
        self.objects.values().cloned().collect()
    }

    pub(super) fn keys(&self) -> Vec<ObjectName> {
        self.objects.keys().cloned().collect()
    }

    pub(super) fn len(&self) -> usize {
        self.objects.len()
    }

    /// The objects index `index` holds under `value` (none if there is no such index).
    pub(super) fn by_index(&self, index: &str, value: &str) -> Vec<Stored<K>> {
        let Some(i) = self.indexes.iter().find(|i| i.name == index) else {
            return Vec::new();
        };
        i.entries
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| self.objects.get(k).cloned())
            .collect()
    }
}

/// Decode what a read took out of the store (outside its lock: a compact read decodes).
pub(super) fn objects<K: DeserializeOwned>(stored: Vec<Stored<K>>) -> Vec<Arc<K>> {
    stored.iter().filter_map(Stored::object).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn config_map(name: &str, app: &str, data: &str) -> (ObjectName, Arc<ConfigMap>, Vec<u8>) {
        let json = serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"namespace": "ns", "name": name, "labels": {"app": app}},
            "data": {"k": data},
        }))
        .unwrap_or_default();
        let obj: ConfigMap = serde_json::from_slice(&json).unwrap_or_default();
        (("ns".into(), name.into()), Arc::new(obj), json)
    }

    fn by_app() -> Index<ConfigMap> {
        Index::new(
            "app",
            Arc::new(|c: &ConfigMap| {
                c.metadata
                    .labels
                    .iter()
                    .flatten()
                    .filter(|(k, _)| *k == "app")
                    .map(|(_, v)| v.clone())
                    .collect()
            }),
        )
    }

    fn data(c: &ConfigMap) -> &str {
        c.data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map_or("", String::as_str)
    }

    fn names(objects: &[Arc<ConfigMap>]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_compact_store_reads_back_what_a_decoded_one_does() {
        for compact in [false, true] {
            let mut s = Store::new(vec![by_app()], compact);
            let (ka, a, ja) = config_map("a", "web", "1");
            let (kb, b, jb) = config_map("b", "web", "2");
            s.insert(ka.clone(), &a, &ja);
            s.insert(kb.clone(), &b, &jb);
            assert_eq!(names(&objects(s.by_index("app", "web"))), ["a", "b"]);

            // b moves to another app: the index follows, and the previous state comes back.
            let (_, b2, jb2) = config_map("b", "db", "3");
            let previous = s.insert(kb.clone(), &b2, &jb2);
            assert_eq!(
                previous.as_deref().map(data),
                Some("2"),
                "compact={compact}"
            );
            assert_eq!(names(&objects(s.by_index("app", "web"))), ["a"]);
            assert_eq!(names(&objects(s.by_index("app", "db"))), ["b"]);
            let got = s.get(&kb).and_then(|g| g.object());
            assert_eq!(got.as_deref().map(data), Some("3"));

            let gone = s.remove(&ka);
            assert_eq!(gone.as_deref().map(data), Some("1"));
            assert!(s.by_index("app", "web").is_empty());
            assert_eq!(s.len(), 1);
            assert_eq!(s.keys(), vec![kb]);
            assert!(s.by_index("no-such-index", "db").is_empty());
        }
    }

    #[test]
    fn a_compact_store_keeps_json_and_a_decoded_one_shares_the_object() {
        let (k, obj, json) = config_map("a", "web", "1");
        let mut compact = Store::new(Vec::new(), true);
        compact.insert(k.clone(), &obj, &json);
        assert!(matches!(compact.get(&k), Some(Stored::Json(j)) if *j == *json));

        let mut decoded = Store::new(Vec::new(), false);
        decoded.insert(k.clone(), &obj, &json);
        assert!(matches!(decoded.get(&k), Some(Stored::Object(o)) if Arc::ptr_eq(&o, &obj)));
    }
}
