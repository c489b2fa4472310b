//! The informer: a local cache of one kind, kept current by a list and then a watch, with
//! optional indexes, for controllers and agents.
//!
//! ```text
//!  list ──▶ cache (+ indexes) ──▶ Synced
//!   ▲          ▲
//!   │          └── watch from the cache's revision ──▶ Applied { object, previous } / Deleted
//!   │                 │ error: back off, watch again from the cache's revision
//!   └── EXPIRED ──────┘ (the history it needs is gone: only then list again)
//! ```
//!
//! An object the informer cannot decode is never dropped silently: it is logged with its
//! key and counted ([`Informer::undecodable`]).

mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::client::{jitter, Client, ClientError};
use crate::objects::{ObjectName, Selection, WatchItem};
pub use store::IndexFn;
use store::{objects, Index, Store};

type Meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A kind an informer caches: a Kubernetes type with object metadata, decoded from JSON.
pub trait Cacheable:
    k8s_openapi::Resource + k8s_openapi::Metadata<Ty = Meta> + DeserializeOwned + Send + Sync + 'static
{
}

impl<K> Cacheable for K where
    K: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = Meta>
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// What an informer tells its owner.
#[derive(Debug)]
pub enum InformerEvent<K> {
    /// The cache was (re)filled from a list: handle everything as new.
    Synced,
    /// An object was created or changed.
    Applied {
        /// Its state now.
        object: Arc<K>,
        /// Its state before, if the cache held it.
        previous: Option<Arc<K>>,
    },
    /// An object was deleted (its last state).
    Deleted(Arc<K>),
}

// By hand: the objects are shared, so `K` itself need not be `Clone`.
impl<K> Clone for InformerEvent<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Synced => Self::Synced,
            Self::Applied { object, previous } => Self::Applied {
                object: object.clone(),
                previous: previous.clone(),
            },
            Self::Deleted(o) => Self::Deleted(o.clone()),
        }
    }
}

/// A local cache of one kind kept current by list and watch.
pub struct Informer<K> {
    store: Arc<RwLock<Store<K>>>,
    revision: Arc<AtomicU64>,
    undecodable: Arc<AtomicU64>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            revision: self.revision.clone(),
            undecodable: self.undecodable.clone(),
        }
    }
}

fn name_of<K: k8s_openapi::Metadata<Ty = Meta>>(k: &K) -> ObjectName {
    let m = k.metadata();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn revision_of<K: k8s_openapi::Metadata<Ty = Meta>>(k: &K) -> u64 {
    k.metadata()
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The namespace and name of an object that does not decode as its kind.
fn raw_name(bytes: &[u8]) -> Option<ObjectName> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string);
    Some((
        s("/metadata/namespace").unwrap_or_default(),
        s("/metadata/name")?,
    ))
}

/// The resourceVersion of an object that does not decode as its kind (0 if none).
fn raw_revision(bytes: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.pointer("/metadata/resourceVersion")?
                .as_str()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// `namespace/name` of an object that does not decode as its kind, for the report.
fn key_of_raw(bytes: &[u8]) -> String {
    raw_name(bytes).map_or_else(|| "(no name)".to_string(), |(ns, n)| format!("{ns}/{n}"))
}

/// Builds an informer with indexes.
pub struct InformerBuilder<K> {
    client: Client,
    selection: Selection,
    indexes: Vec<Index<K>>,
    compact: bool,
}

impl<K> InformerBuilder<K>
where
    K: Cacheable,
{
    /// Keep index `name`: each object under the values `values_of` gives.
    pub fn index(
        mut self,
        name: &'static str,
        values_of: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.indexes.push(Index::new(name, Arc::new(values_of)));
        self
    }

    /// Keep the objects as their JSON and decode them on each read: a fraction of the
    /// memory, for a cache of many objects of which each read wants few.
    pub fn compact(mut self) -> Self {
        self.compact = true;
        self
    }

    /// Start it; events go to the returned receiver (dropping it stops the informer).
    pub fn start(self) -> (Informer<K>, mpsc::Receiver<InformerEvent<K>>) {
        let (tx, rx) = mpsc::channel(1024);
        let me = Informer {
            store: Arc::new(RwLock::new(Store::new(self.indexes, self.compact))),
            revision: Arc::new(AtomicU64::new(0)),
            undecodable: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(run_informer::<K>(
            self.client,
            self.selection,
            me.clone(),
            tx,
        ));
        (me, rx)
    }
}

impl<K> Informer<K>
where
    K: Cacheable,
{
    /// Start an informer over `sel`; events go to the returned receiver (dropping it stops
    /// the informer).
    pub fn start(client: Client, sel: Selection) -> (Self, mpsc::Receiver<InformerEvent<K>>) {
        Self::builder(client, sel).start()
    }

    /// An informer over `sel` to which indexes can be added before it starts.
    pub fn builder(client: Client, sel: Selection) -> InformerBuilder<K> {
        InformerBuilder {
            client,
            selection: sel,
            indexes: Vec::new(),
            compact: false,
        }
    }
}

impl<K: DeserializeOwned> Informer<K> {
    fn read<T>(&self, f: impl FnOnce(&Store<K>) -> T) -> T {
        match self.store.read() {
            Ok(s) => f(&s),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut Store<K>) -> T) -> T {
        match self.store.write() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// One cached object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = (namespace.to_string(), name.to_string());
        self.read(|s| s.get(&key))?.object()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.iter().collect()
    }

    /// Every cached object, decoded one at a time as the iterator is walked: a compact
    /// cache is never all decoded at once.
    pub fn iter(&self) -> impl Iterator<Item = Arc<K>> {
        self.read(|s| s.all())
            .into_iter()
            .filter_map(|s| s.object())
    }

    /// The names of every cached object.
    pub fn keys(&self) -> Vec<ObjectName> {
        self.read(|s| s.keys())
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read(|s| s.len())
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects index `index` holds under `value` (none if there is no such index).
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        objects(self.read(|s| s.by_index(index, value)))
    }

    /// The store revision the cache reflects (0 before the first list).
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Objects listed or watched that did not decode as this kind (each was logged).
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Wait until the cache reflects `revision` (a write's own revision, say); `false` on
    /// timeout.
    pub async fn wait_for(&self, revision: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.revision() < revision {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    fn advance(&self, revision: u64) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    fn report_undecodable(&self, resource: &str, bytes: &[u8], error: &serde_json::Error) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(resource, object = %key_of_raw(bytes), %error, "informer: an object does not decode as its kind; it is not in the cache");
    }
}

/// How a watch ended.
enum WatchEnd {
    /// The receiver is gone: stop.
    Stopped,
    /// The history it needs is gone: list again.
    Expired,
    /// It failed otherwise: watch again from the cache's revision.
    Failed(ClientError),
}

async fn run_informer<K>(
    client: Client,
    sel: Selection,
    me: Informer<K>,
    tx: mpsc::Sender<InformerEvent<K>>,
) where
    K: Cacheable,
{
    let resource = K::URL_PATH_SEGMENT;
    let mut backoff = Duration::from_millis(100);
    'list: loop {
        let list = match client.list_objects(resource, &sel).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(resource, error = %e, "informer list failed; retrying");
                // Stopped while its API cannot be reached: no list will ever tell it so.
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // Filled beside the old cache, which readers keep using until the swap.
        let mut fresh = me.read(Store::empty_like);
        for item in list.items {
            match serde_json::from_slice::<K>(&item) {
                Ok(k) => {
                    let k = Arc::new(k);
                    fresh.insert(name_of(&*k), &k, &item);
                }
                Err(e) => me.report_undecodable(resource, &item, &e),
            }
        }
        // The old cache is freed outside the lock.
        let old = me.write(|s| std::mem::replace(s, fresh));
        drop(old);
        me.advance(list.revision);
        if tx.send(InformerEvent::Synced).await.is_err() {
            return;
        }
        loop {
            match watch_once(&client, &sel, &me, &tx).await {
                WatchEnd::Stopped => return,
                WatchEnd::Expired => continue 'list,
                WatchEnd::Failed(e) => {
                    tracing::debug!(resource, error = %e, "informer watch failed; watching again from its revision");
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Watch from the cache's revision until the watch ends.
async fn watch_once<K>(
    client: &Client,
    sel: &Selection,
    me: &Informer<K>,
    tx: &mpsc::Sender<InformerEvent<K>>,
) -> WatchEnd
where
    K: Cacheable,
{
    let resource = K::URL_PATH_SEGMENT;
    let mut watch = client.watch_objects(resource, sel, me.revision());
    loop {
        let item = tokio::select! {
            item = watch.recv() => item,
            _ = tx.closed() => return WatchEnd::Stopped,
        };
        let event = match item {
            None => {
                return WatchEnd::Failed(ClientError::Rejected(tonic::Status::unavailable(
                    "watch ended",
                )))
            }
            Some(Err(ClientError::Expired { .. })) => return WatchEnd::Expired,
            Some(Err(e)) => return WatchEnd::Failed(e),
            Some(Ok(WatchItem::Bookmark(rev))) => {
                me.advance(rev);
                continue;
            }
            Some(Ok(WatchItem::Added(b) | WatchItem::Modified(b))) => {
                match serde_json::from_slice::<K>(&b) {
                    Ok(k) => {
                        let k = Arc::new(k);
                        let previous = me.write(|s| s.insert(name_of(&*k), &k, &b));
                        me.advance(revision_of(&*k));
                        InformerEvent::Applied {
                            object: k,
                            previous,
                        }
                    }
                    Err(e) => {
                        me.report_undecodable(resource, &b, &e);
                        // The cache is behind on this object, but not on the revision: a
                        // wait for it must not stall.
                        me.advance(raw_revision(&b));
                        continue;
                    }
                }
            }
            Some(Ok(WatchItem::Deleted(b))) => match serde_json::from_slice::<K>(&b) {
                Ok(k) => {
                    me.write(|s| s.remove(&name_of(&k)));
                    me.advance(revision_of(&k));
                    InformerEvent::Deleted(Arc::new(k))
                }
                Err(e) => {
                    me.report_undecodable(resource, &b, &e);
                    // Gone all the same: an older state must not outlive it in the cache.
                    let Some(gone) = raw_name(&b).and_then(|n| me.write(|s| s.remove(&n))) else {
                        continue;
                    };
                    InformerEvent::Deleted(gone)
                }
            },
        };
        if tx.send(event).await.is_err() {
            return WatchEnd::Stopped;
        }
    }
}
