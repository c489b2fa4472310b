//! The controllers' view of one kind: an informer cache with the indexes they look objects up
//! by, and a feed of its changes that every controller's runner subscribes to.
//!
//! ```text
//!  Informer<K> ──events──▶ forwarder ──feed──▶ runner of controller A
//!       │ cache + indexes                 └──▶ runner of controller B
//!       └────────── read by reconciles (get, by_index) ◀───────┘
//! ```

use std::ops::Deref;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use skiff_proto::informer::Cacheable;
use skiff_proto::objects::{Informer, InformerBuilder, InformerEvent, Selection};
use skiff_proto::Client;
use tokio::sync::oneshot;

use super::feed::{self, Feed};
use super::ownership::controller_uid;
use super::runner::ObjectKey;

/// Changes queued per subscriber and not yet taken; a runner that falls further behind
/// reconciles every key.
const FEED_CAPACITY: usize = 16 * 1024;

/// Index: the uid of an object's controlling owner.
pub const CONTROLLER: &str = "controller";
/// Index: the uid of each of an object's owners.
pub const OWNER: &str = "owner";
/// Index: the namespace of an object that has no controlling owner.
pub const ORPHANS: &str = "orphans";
/// Index: an object's namespace.
pub const NAMESPACE: &str = "namespace";
/// Index: a pod's node.
pub const NODE: &str = "node";
/// Index: `namespace/claim` of each volume claim a pod mounts, or a volume is bound to.
pub const CLAIM: &str = "claim";
/// Index: `namespace/key=value` for each of an object's labels.
pub const LABEL: &str = "label";

/// One kind as the controllers see it.
pub struct Watched<K> {
    informer: Informer<K>,
    feed: Arc<Feed<InformerEvent<K>>>,
    /// Held for its drop, which ends the forwarder and with it the informer.
    _forwarder: Forwarder,
}

/// The forwarder's task, stopped when its [`Watched`] goes: whether the term's controllers
/// ran or their start was cut short by a lost leadership, nothing of them outlives it.
struct Forwarder(tokio::task::AbortHandle);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<K> Deref for Watched<K> {
    type Target = Informer<K>;

    fn deref(&self) -> &Informer<K> {
        &self.informer
    }
}

impl<K> Watched<K>
where
    K: Cacheable,
{
    /// Start the informer of `builder`. `synced` fires after its first list.
    pub fn start(builder: InformerBuilder<K>, synced: &mut Vec<oneshot::Receiver<()>>) -> Self {
        let (informer, mut events) = builder.start();
        let feed = Arc::new(Feed::new(FEED_CAPACITY));
        let (sync_tx, sync_rx) = oneshot::channel();
        synced.push(sync_rx);
        let forward = feed.clone();
        let task = tokio::spawn(async move {
            let mut sync_tx = Some(sync_tx);
            while let Some(e) = events.recv().await {
                if matches!(e, InformerEvent::Synced) {
                    if let Some(s) = sync_tx.take() {
                        let _ = s.send(());
                    }
                }
                // No subscriber yet is fine: a runner reconciles every key when it starts.
                forward.send(e);
            }
        });
        Self {
            informer,
            feed,
            _forwarder: Forwarder(task.abort_handle()),
        }
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> feed::Receiver<InformerEvent<K>> {
        self.feed.subscribe()
    }

    /// The key of every cached object.
    pub fn object_keys(&self) -> Vec<ObjectKey> {
        self.informer
            .keys()
            .into_iter()
            .map(ObjectKey::from)
            .collect()
    }
}

/// An informer of every `K`, with the indexes controllers share.
pub fn builder<K>(client: &Client) -> InformerBuilder<K>
where
    K: Cacheable,
{
    Informer::<K>::builder(client.clone(), Selection::default())
}

/// Index by controlling owner, by every owner, and orphans by namespace.
pub fn with_owner_indexes<K>(b: InformerBuilder<K>) -> InformerBuilder<K>
where
    K: Cacheable,
{
    b.index(CONTROLLER, |o: &K| {
        controller_uid(o.metadata())
            .map(|u| vec![u.to_string()])
            .unwrap_or_default()
    })
    .index(OWNER, |o: &K| {
        o.metadata()
            .owner_references
            .iter()
            .flatten()
            .map(|r| r.uid.clone())
            .collect()
    })
    .index(ORPHANS, |o: &K| {
        let m = o.metadata();
        if controller_uid(m).is_none() {
            vec![m.namespace.clone().unwrap_or_default()]
        } else {
            Vec::new()
        }
    })
}

/// Index by namespace.
pub fn with_namespace_index<K>(b: InformerBuilder<K>) -> InformerBuilder<K>
where
    K: Cacheable,
{
    b.index(NAMESPACE, |o: &K| {
        vec![o.metadata().namespace.clone().unwrap_or_default()]
    })
}

/// Index by each label (`namespace/key=value`).
pub fn with_label_index<K>(b: InformerBuilder<K>) -> InformerBuilder<K>
where
    K: Cacheable,
{
    b.index(LABEL, |o: &K| {
        let m = o.metadata();
        let ns = m.namespace.as_deref().unwrap_or("");
        m.labels
            .iter()
            .flatten()
            .map(|(k, v)| label_value(ns, k, v))
            .collect()
    })
}

/// The [`LABEL`] index value of label `key=value` in `namespace`.
pub fn label_value(namespace: &str, key: &str, value: &str) -> String {
    format!("{namespace}/{key}={value}")
}

/// The namespace and name of `o`'s controlling owner if it is of `kind`.
pub fn controller_key<K: Metadata<Ty = ObjectMeta>>(o: &K, kind: &str) -> Option<ObjectKey> {
    let m = o.metadata();
    m.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == kind)
        .map(|r| ObjectKey::new(m.namespace.clone().unwrap_or_default(), r.name.clone()))
}

/// Objects whose controlling owner is `uid` and that live in `namespace`.
pub fn controlled_by<K: Cacheable>(
    informer: &Informer<K>,
    namespace: &str,
    uid: &str,
) -> Vec<Arc<K>> {
    informer
        .by_index(CONTROLLER, uid)
        .into_iter()
        .filter(|o| o.metadata().namespace.as_deref().unwrap_or("") == namespace)
        .collect()
}
