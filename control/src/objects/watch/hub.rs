//! The member's one watch of the store for every object watcher: each change is decoded once
//! ([`Change`]) and offered to the watchers the [`Index`] names, through bounded queues of
//! shared changes. A watcher whose queue is full (it, or its connection, reads slower than
//! changes come) is cut off: its stream ends with EXPIRED and the client lists again, as
//! Kubernetes' watch cache does; the others never wait for it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::time::Duration;

use skiff_raft::state_machine::{WatchError, WatchFilter, WatchMessage};
use tokio::sync::mpsc;

use super::super::error::{ObjectError, Result};
use super::super::store::ObjectStore;
use super::change::{self, Change, Delivery, Filter};
use super::index::{Index, Place};
use super::metrics::WatchMetrics;
use super::stream::{self, ObjectEventStream};
use super::WatchOptions;

/// Events one watcher may have queued before it is cut off.
const QUEUE_EVENTS: usize = 4096;
/// Bytes of objects one watcher may have queued before it is cut off. The changes are shared,
/// so this bounds what one slow watcher keeps alive, not a copy of its own.
const QUEUE_BYTES: usize = 8 << 20;
/// How often the hub's store watch reports progress when nothing changes (the revision
/// watchers' bookmarks carry).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Where every object key lives.
const OBJECTS_PREFIX: &[u8] = b"/registry/";

/// Why a watcher's queue was closed by the hub.
#[derive(Debug, Clone)]
pub(super) enum Ended {
    /// It fell behind by more than its queue holds.
    TooSlow,
    /// A change of its resource could not be decoded.
    Failed(String),
    /// The hub's own store watch lost the history it needed.
    Expired { requested: u64, compacted: u64 },
}

impl Ended {
    /// The error the watcher's stream ends with; `revision` is the last it delivered.
    pub fn error(&self, revision: u64) -> ObjectError {
        match self {
            Ended::TooSlow => ObjectError::WatchTooSlow {
                revision,
                events: QUEUE_EVENTS,
                mib: QUEUE_BYTES >> 20,
            },
            Ended::Failed(reason) => ObjectError::Corrupt {
                key: "watch".into(),
                reason: reason.clone(),
            },
            Ended::Expired {
                requested,
                compacted,
            } => ObjectError::Expired {
                requested: *requested,
                compacted: *compacted,
            },
        }
    }
}

/// A watcher as the hub holds it.
pub(super) struct Sink {
    tx: mpsc::Sender<Delivery>,
    filter: Arc<Filter>,
    /// The first revision it wants.
    start: u64,
    queued_bytes: Arc<AtomicUsize>,
    ended: Arc<OnceLock<Ended>>,
}

/// The watcher's end of its queue.
pub(super) struct Queue {
    pub rx: mpsc::Receiver<Delivery>,
    pub queued_bytes: Arc<AtomicUsize>,
    pub ended: Arc<OnceLock<Ended>>,
}

struct Dispatch {
    index: Index<Sink>,
    next_id: u64,
}

pub(super) struct Inner {
    pub store: ObjectStore,
    dispatch: Mutex<Dispatch>,
    /// Every change up to this revision has been offered. Moved only under the dispatch lock,
    /// after the queues are filled; read without it by bookmarks.
    dispatched: AtomicU64,
    started: Once,
    pub metrics: WatchMetrics,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Dispatch> {
        self.dispatch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every change up to this revision is in the queues of the watchers that want it.
    pub fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Acquire)
    }

    /// Move the dispatched revision forward; `_held` is the dispatch lock.
    fn dispatched_up_to(&self, _held: &mut Dispatch, revision: u64) {
        self.dispatched.fetch_max(revision, Ordering::Release);
    }
}

/// A watcher's place in the hub; dropping it removes the watcher.
pub(super) struct Registration {
    inner: Arc<Inner>,
    prefix: String,
    place: Place,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner
            .lock()
            .index
            .remove(&self.prefix, &self.place, self.id);
        self.inner.metrics.open.dec();
    }
}

/// The object watches of one member.
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Inner>,
}

impl WatchHub {
    /// The hub of `store`'s member, counting into `metrics`. Its store watch starts with the
    /// first object watch.
    pub fn new(store: ObjectStore, metrics: WatchMetrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                dispatch: Mutex::new(Dispatch {
                    index: Index::default(),
                    next_id: 0,
                }),
                dispatched: AtomicU64::new(0),
                started: Once::new(),
                metrics,
            }),
        }
    }

    /// Start watching `resource`. Batches of events arrive in revision order; the first item
    /// is a bookmark at the revision the watch starts after.
    pub fn watch(&self, resource: &str, opts: WatchOptions) -> Result<ObjectEventStream> {
        let inner = &self.inner;
        inner.started.call_once(|| start(inner.clone()));
        let kind = inner.store.kind(resource)?.info();
        let prefix = kind.key_prefix();
        let state = inner.store.node().state().clone();
        let compacted = state.state().compacted;
        let start = if opts.resource_version == 0 {
            state.revision() + 1
        } else {
            opts.resource_version + 1
        };
        if start <= compacted {
            return Err(ObjectError::Expired {
                requested: start,
                compacted,
            });
        }
        let namespace = if kind.namespaced {
            opts.namespace
        } else {
            String::new()
        };
        let history = WatchFilter {
            key: if namespace.is_empty() {
                prefix.clone().into_bytes()
            } else {
                format!("{prefix}{namespace}/").into_bytes()
            },
            prefix: true,
        };
        let filter = Arc::new(Filter {
            namespace,
            labels: opts.labels,
            fields: opts.fields,
        });
        let place = Place::of(&filter);
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
        let queue = Queue {
            rx,
            queued_bytes: Arc::default(),
            ended: Arc::default(),
        };
        let sink = Sink {
            tx,
            filter: filter.clone(),
            start,
            queued_bytes: queue.queued_bytes.clone(),
            ended: queue.ended.clone(),
        };
        let (id, joined_at) = {
            let mut d = inner.lock();
            let id = d.next_id;
            d.next_id += 1;
            d.index.insert(&prefix, &place, id, sink);
            (id, inner.dispatched())
        };
        inner.metrics.open.inc();
        let registration = Registration {
            inner: inner.clone(),
            prefix,
            place,
            id,
        };
        Ok(stream::start(stream::Watcher {
            inner: inner.clone(),
            _registration: registration,
            filter,
            history,
            start,
            joined_at,
            queue,
            bookmark_every: opts.bookmark_every,
        }))
    }
}

fn start(inner: Arc<Inner>) {
    {
        let mut d = inner.lock();
        let now = inner.store.node().state().revision();
        inner.dispatched_up_to(&mut d, now);
    }
    tokio::spawn(run(inner));
}

/// Follow the store and fan its changes out, until the store's feed closes.
async fn run(inner: Arc<Inner>) {
    let state = inner.store.node().state().clone();
    loop {
        let from = inner.dispatched() + 1;
        let mut feed = state.watch(
            WatchFilter {
                key: OBJECTS_PREFIX.to_vec(),
                prefix: true,
            },
            from,
            PROGRESS_EVERY,
        );
        loop {
            match feed.recv().await {
                Some(Ok(WatchMessage::Events(events))) => fan_out(&inner, events),
                Some(Ok(WatchMessage::Progress(revision))) => {
                    let mut d = inner.lock();
                    inner.dispatched_up_to(&mut d, revision);
                }
                Some(Err(e)) => {
                    // Only if this member fell behind its own history (or the store failed):
                    // the watchers cannot be told what they missed, so they list again.
                    tracing::warn!("object watch feed: {e}; every watcher lists again");
                    let ended = match e {
                        WatchError::Expired {
                            requested,
                            compacted,
                        } => Ended::Expired {
                            requested,
                            compacted,
                        },
                        WatchError::Storage(reason) => Ended::Failed(reason),
                    };
                    let mut d = inner.lock();
                    for sink in d.index.drain() {
                        let _ = sink.ended.set(ended.clone());
                    }
                    let now = state.revision();
                    inner.dispatched_up_to(&mut d, now);
                    break;
                }
                None => {
                    let mut d = inner.lock();
                    for sink in d.index.drain() {
                        let _ = sink.ended.set(Ended::Failed("the store stopped".into()));
                    }
                    return;
                }
            }
        }
    }
}

/// Decode each change once and offer it to the watchers that may want it.
fn fan_out(inner: &Inner, events: Vec<(u64, skiff_raft::mvcc::Event)>) {
    let Some(last) = events.last().map(|(r, _)| *r) else {
        return;
    };
    let mut changes = Vec::with_capacity(events.len());
    let mut failed: Vec<(String, String)> = Vec::new();
    for (revision, ev) in events {
        match change::decode(&inner.store, revision, ev) {
            Ok(Some(c)) => changes.push(Arc::new(c)),
            Ok(None) => {}
            Err(u) => {
                tracing::error!(key = %u.prefix, revision, "watch: cannot decode a change: {}", u.error);
                failed.push((u.prefix, u.error.to_string()));
            }
        }
    }
    let metrics = &inner.metrics;
    let mut d = inner.lock();
    for (prefix, reason) in failed {
        for sink in d.index.remove_resource(&prefix) {
            let _ = sink.ended.set(Ended::Failed(reason.clone()));
        }
    }
    for change in &changes {
        metrics.changes.inc();
        d.index
            .offer(change, |_, sink| offer(sink, change, metrics));
    }
    inner.dispatched_up_to(&mut d, last);
}

/// Queue `change` for `sink` if it wants it; `false` when the watcher must go (cut off, or
/// its stream is gone).
fn offer(sink: &Sink, change: &Arc<Change>, metrics: &WatchMetrics) -> bool {
    if change.revision < sink.start {
        return true;
    }
    let Some(kind) = sink.filter.event_type(change) else {
        return true;
    };
    let size = change.size();
    let queued = sink.queued_bytes.fetch_add(size, Ordering::Relaxed) + size;
    let cut = |sink: &Sink| {
        let _ = sink.ended.set(Ended::TooSlow);
        metrics.cut_off.inc();
        false
    };
    if queued > QUEUE_BYTES {
        return cut(sink);
    }
    match sink.tx.try_send((kind, change.clone())) {
        Ok(()) => {
            metrics.deliveries.inc();
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => cut(sink),
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
