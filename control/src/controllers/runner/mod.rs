//! The one controller runner, in the manner of kube-runtime's `Controller` and Kubernetes'
//! work queues. A controller is a [`Reconciler`]: `reconcile(key) -> Result<Action>`, level
//! triggered, reading informer caches. The runner feeds it keys:
//!
//! ```text
//!  informer events ──map to keys──▶ ┌────────────┐ ──take──▶ worker ─▶ reconcile(key)
//!  (owned pod → its owner's key)    │ WorkQueue  │              │  Ok(Action): done, or
//!  re-list / lag ──every key──────▶ │ (deduped)  │ ◀─requeue────┤  requeue after a delay
//!                                   └────────────┘ ◀─back-off───┘  Err: per-key back-off
//! ```
//!
//! - a key is never reconciled twice at once, and is queued once however often it changes;
//! - a reconcile that fails is retried after a per-key exponential back-off, reset by the
//!   next success; one that asks is requeued after its delay;
//! - each reconcile runs in a span with the controller and the key, and queue depth,
//!   outcomes and latency are counted ([`metrics`]);
//! - a key whose last reconcile wrote at revision `r` is reconciled again only once the
//!   caches it reads show `r` ([`Reconciler::caught_up`]), so a pod just created is never
//!   created twice.
//! - [`writes::Writes`] gathers what one pass wrote into its answer.

pub mod backoff;
pub mod key;
pub mod metrics;
pub mod queue;
pub mod writes;

pub use key::ObjectKey;

use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use skiff_proto::objects::{ApiError, InformerEvent};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use self::backoff::KeyBackoff;
use self::metrics::Figures;
use self::queue::WorkQueue;
use super::feed;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Action {
    requeue_after: Option<Duration>,
    wrote: u64,
}

impl Action {
    /// Nothing more until something changes.
    pub fn done() -> Self {
        Self::default()
    }

    /// Look again after `delay` even if nothing changes (time-based work).
    pub fn requeue_after(delay: Duration) -> Self {
        Self {
            requeue_after: Some(delay),
            wrote: 0,
        }
    }

    /// The reconcile wrote at store revision `revision`: the next reconcile of this key waits
    /// until the caches show it.
    pub fn wrote(mut self, revision: u64) -> Self {
        self.wrote = self.wrote.max(revision);
        self
    }

    /// The same action, requeued after `delay` unless it is requeued sooner already.
    pub fn or_requeue_after(mut self, delay: Duration) -> Self {
        self.requeue_after = Some(self.requeue_after.map_or(delay, |d| d.min(delay)));
        self
    }

    /// When to look again, if at all.
    pub fn delay(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Why a reconcile failed; every error is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A call to the object API failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A call to the object API failed.
    #[error(transparent)]
    Client(#[from] skiff_proto::ClientError),
    /// A call failed after other calls of the same reconcile wrote, the last at `wrote`.
    #[error("{source} (after writing at revision {wrote})")]
    AfterWrite {
        /// The revision of the last write that succeeded.
        wrote: u64,
        /// The call that failed.
        #[source]
        source: ApiError,
    },
}

impl ReconcileError {
    /// `source` failed after writes up to revision `wrote` (0: none) succeeded: the next
    /// reconcile of the key still waits for the caches to show them.
    pub fn after_write(wrote: u64, source: ApiError) -> Self {
        if wrote == 0 {
            Self::Api(source)
        } else {
            Self::AfterWrite { wrote, source }
        }
    }

    fn wrote(&self) -> u64 {
        match self {
            Self::AfterWrite { wrote, .. } => *wrote,
            _ => 0,
        }
    }
}

/// A controller: a reconcile function over keys.
pub trait Reconciler: Send + Sync + 'static {
    /// What one reconcile is about (an object's namespace and name, usually).
    type Key: Clone + Eq + Hash + Ord + Debug + Display + Send + Sync + 'static;

    /// The controller's name, in spans and figures.
    const NAME: &'static str;

    /// Bring the object of `key` to its wanted state (level-triggered: from the caches).
    fn reconcile(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Action, ReconcileError>> + Send;

    /// Every key there is (at start, and after a re-list or a missed event).
    fn all_keys(&self) -> Vec<Self::Key>;

    /// Wait until the caches this controller reads show store revision `revision`, or give
    /// up after `timeout`.
    fn caught_up(&self, revision: u64, timeout: Duration) -> impl Future<Output = ()> + Send {
        let _ = (revision, timeout);
        async {}
    }
}

/// Settings of a runner.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Keys reconciled at once.
    pub workers: usize,
    /// First back-off of a failing key.
    pub backoff_base: Duration,
    /// Longest back-off.
    pub backoff_cap: Duration,
    /// Longest wait for the caches to show a key's last write.
    pub own_writes_wait: Duration,
    /// Every key is reconciled again this often (jittered), a safety net for what no event
    /// brings back (a write that failed unseen, an owner of a kind not watched); `None`: never.
    pub resync: Option<Duration>,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            workers: 16,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
            own_writes_wait: Duration::from_secs(5),
            resync: Some(Duration::from_secs(600)),
        }
    }
}

struct State<K> {
    queue: WorkQueue<K>,
    backoff: KeyBackoff<K>,
    /// Revision of each key's last write, until the caches show it.
    last_write: HashMap<K, u64>,
}

struct Shared<K> {
    state: Mutex<State<K>>,
    wake: Notify,
    figures: Figures,
    /// Workers that may wait for a key.
    workers: usize,
}

impl<K: Clone + Eq + Hash + Ord> Shared<K> {
    fn with<T>(&self, f: impl FnOnce(&mut State<K>) -> T) -> T {
        // A panic while holding the lock leaves a consistent queue: each step is one call.
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let out = f(&mut state);
        self.figures.depth.set(state.queue.depth() as i64);
        out
    }

    fn add(&self, key: K) {
        if self.with(|s| s.queue.add(key)) {
            self.wake.notify_one();
        }
    }

    fn add_all(&self, keys: Vec<K>) {
        if keys.is_empty() {
            return;
        }
        let added = self.with(|s| keys.into_iter().filter(|k| s.queue.add(k.clone())).count());
        // A worker per new key, at most all of them; keys queued already need none.
        for _ in 0..added.min(self.workers) {
            self.wake.notify_one();
        }
    }

    /// The next key to reconcile, waiting for one (or for a delayed one to come due).
    async fn next(&self) -> K {
        loop {
            // Registered before the queue is looked at, so an add in between is not missed.
            let mut notified = std::pin::pin!(self.wake.notified());
            notified.as_mut().enable();
            let (key, due) = self.with(|s| {
                let due = s.queue.promote_due(Instant::now());
                (s.queue.take(), due)
            });
            if let Some(key) = key {
                // Other workers may have more to take.
                if self.with(|s| s.queue.ready_len()) > 0 {
                    self.wake.notify_one();
                }
                return key;
            }
            match due {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// A cloneable way to queue keys of a running controller.
pub struct QueueHandle<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for QueueHandle<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> QueueHandle<K> {
    /// Queue `key` now.
    pub fn add(&self, key: K) {
        self.shared.add(key);
    }

    /// Queue `key` after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        self.shared
            .with(|s| s.queue.add_at(key, Instant::now() + delay));
        self.shared.wake.notify_one();
    }
}

/// One controller's runner: its queue, its workers and the event sources feeding it.
pub struct Runner<R: Reconciler> {
    reconciler: Arc<R>,
    shared: Arc<Shared<R::Key>>,
    settings: RunnerSettings,
    sources: Vec<BoxFuture<'static, ()>>,
}

impl<R: Reconciler> Runner<R> {
    /// A runner of `reconciler` counting into `figures`.
    pub fn new(reconciler: R, figures: Figures, settings: RunnerSettings) -> Self {
        Self {
            reconciler: Arc::new(reconciler),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: WorkQueue::default(),
                    backoff: KeyBackoff::new(settings.backoff_base, settings.backoff_cap),
                    last_write: HashMap::new(),
                }),
                wake: Notify::new(),
                figures,
                workers: settings.workers.max(1),
            }),
            settings,
            sources: Vec::new(),
        }
    }

    /// A handle to queue keys by hand.
    pub fn handle(&self) -> QueueHandle<R::Key> {
        QueueHandle {
            shared: self.shared.clone(),
        }
    }

    /// The reconciler.
    pub fn reconciler(&self) -> Arc<R> {
        self.reconciler.clone()
    }

    /// Reconcile the keys `map` gives for each object an informer reports: for a change,
    /// of both its new and its previous state (a pod whose labels changed concerns the
    /// Services it left as well as those it joined). A re-list, or events missed because
    /// this runner fell behind, queue every key.
    pub fn watches<K, F>(self, events: feed::Receiver<InformerEvent<K>>, map: F) -> Self
    where
        K: Send + Sync + 'static,
        F: Fn(&K) -> Vec<R::Key> + Send + Sync + 'static,
    {
        self.watches_changes(events, move |object: &K, previous: Option<&K>| {
            let mut keys = map(object);
            if let Some(p) = previous {
                keys.extend(map(p));
            }
            keys
        })
    }

    /// Reconcile the keys `map` gives for each change an informer reports, given the object
    /// and its previous state (`None` when it is new or deleted): for a kind whose changes
    /// concern a controller only when some fields change (a Node's labels and taints for
    /// DaemonSets, not its heartbeats). A re-list, or missed events, queue every key.
    pub fn watches_changes<K, F>(
        mut self,
        mut events: feed::Receiver<InformerEvent<K>>,
        map: F,
    ) -> Self
    where
        K: Send + Sync + 'static,
        F: Fn(&K, Option<&K>) -> Vec<R::Key> + Send + Sync + 'static,
    {
        let shared = self.shared.clone();
        let reconciler = self.reconciler.clone();
        self.sources.push(
            async move {
                loop {
                    match events.recv().await {
                        Ok(InformerEvent::Applied { object, previous }) => {
                            shared.add_all(map(&object, previous.as_deref()));
                        }
                        Ok(InformerEvent::Deleted(object)) => shared.add_all(map(&object, None)),
                        Ok(InformerEvent::Synced) | Err(feed::RecvError::Lagged) => {
                            shared.add_all(reconciler.all_keys());
                        }
                        Err(feed::RecvError::Closed) => return,
                    }
                }
            }
            .boxed(),
        );
        self
    }

    /// Run until aborted: every key once, then whatever the sources queue.
    pub async fn run(self) {
        let Self {
            reconciler,
            shared,
            settings,
            sources,
        } = self;
        shared.add_all(reconciler.all_keys());
        let resync = settings.resync.map(|period| {
            let (reconciler, shared) = (reconciler.clone(), shared.clone());
            async move {
                loop {
                    let jitter = rand::random::<f64>() * 0.2 + 0.9;
                    tokio::time::sleep(period.mul_f64(jitter)).await;
                    shared.add_all(reconciler.all_keys());
                }
            }
            .boxed()
        });
        let workers = (0..settings.workers.max(1)).map(|_| {
            let (reconciler, shared, settings) =
                (reconciler.clone(), shared.clone(), settings.clone());
            async move {
                loop {
                    let key = shared.next().await;
                    reconcile_one(&*reconciler, &shared, &settings, key).await;
                }
            }
            .boxed()
        });
        futures::future::join_all(sources.into_iter().chain(resync).chain(workers)).await;
    }
}

async fn reconcile_one<R: Reconciler>(
    reconciler: &R,
    shared: &Shared<R::Key>,
    settings: &RunnerSettings,
    key: R::Key,
) {
    let span = tracing::info_span!("reconcile", controller = R::NAME, key = %key);
    async {
        if let Some(revision) = shared.with(|s| s.last_write.get(&key).copied()) {
            reconciler
                .caught_up(revision, settings.own_writes_wait)
                .await;
        }
        let started = Instant::now();
        let result = reconciler.reconcile(&key).await;
        shared
            .figures
            .latency
            .observe(started.elapsed().as_secs_f64());
        let now = Instant::now();
        shared.with(|s| {
            match &result {
                Ok(action) => {
                    shared.figures.successes.inc();
                    s.backoff.reset(&key);
                    if action.wrote > 0 {
                        s.last_write.insert(key.clone(), action.wrote);
                    } else {
                        s.last_write.remove(&key);
                    }
                    if let Some(delay) = action.requeue_after {
                        s.queue.add_at(key.clone(), now + delay);
                    }
                }
                Err(e) => {
                    shared.figures.errors.inc();
                    if e.wrote() > 0 {
                        s.last_write.insert(key.clone(), e.wrote());
                    }
                    let delay = s.backoff.failed(key.clone());
                    let failures = s.backoff.failures(&key);
                    if failures > 3 {
                        tracing::warn!(error = %e, failures, retry_in = ?delay, "reconcile failed");
                    } else {
                        tracing::debug!(error = %e, failures, retry_in = ?delay, "reconcile failed");
                    }
                    s.queue.add_at(key.clone(), now + delay);
                }
            }
            s.queue.done(&key);
        });
        shared.wake.notify_one();
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod runner_test;
