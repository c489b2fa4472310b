//! The replicated state machine: an MVCC key-value store in an [`Engine`].
//!
//! One global revision counts every write transaction that changed something. Each key keeps
//! its create and mod revisions and a version; each change is also kept in a history for
//! watchers, trimmed behind a retained window. The last applied log id and the membership
//! are written in the same atomic batch as the data they describe, so a crash at any point
//! leaves a state that re-applying the log brings forward exactly.
//!
//! ```text
//!  entries ─▶ Overlay (compares, ops, dedup) ─▶ one WriteBatch ─▶ engine
//!                                                   └─ after write ─▶ watch feed
//! ```

mod apply;
mod read;
mod recent_ids;
pub(crate) mod snapshot;
mod spaces;
pub mod watch;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, Snapshot, SnapshotMeta, StoredMembership,
};
use tokio::sync::{broadcast, mpsc};

pub use apply::REQUEST_ID_TTL_MS;
pub use read::RangeResult;
pub use snapshot::SnapshotBuilder;
pub use spaces::AppliedState;
use spaces::{AppliedSpace, HistorySpace, APPLIED_KEY};
pub use watch::{Published, WatchError, WatchFilter, WatchMessage};

use crate::engine::{Engine, EngineError, Result};
use crate::keyspace::TypedRead;
use crate::types::{Entry, LogId, NodeId, Response, StorageError, TypeConfig};

/// The first byte of every key-value record's key (backups count keys by it).
pub(crate) fn kv_prefix() -> u8 {
    use crate::keyspace::KeySpace;
    spaces::KvSpace::PREFIX
}

/// Live feed capacity, in applied batches. A watcher further behind re-reads history.
const FEED_CAPACITY: usize = 1024;

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct StateMachineConfig {
    /// How many revisions of history are kept for watchers.
    pub history_revisions: u64,
    /// Each snapshot's capture and write is timed into this.
    pub snapshot_duration: prometheus_client::metrics::histogram::Histogram,
}

impl Default for StateMachineConfig {
    fn default() -> Self {
        Self {
            history_revisions: 50_000,
            snapshot_duration: crate::stats::duration_histogram(),
        }
    }
}

/// State shared between the Raft-owned state machine and readers (range, watch, status).
pub struct SmShared<E: Engine> {
    engine: E,
    /// Guards the engine's consistency for readers: apply writes under the write lock.
    state: RwLock<AppliedState>,
    feed: broadcast::Sender<Arc<Published>>,
    config: StateMachineConfig,
    snapshot_path: PathBuf,
    /// Request ids the store may hold (apply's dedup lookups skip the store for the rest).
    recent_ids: Mutex<recent_ids::RecentIds>,
}

fn sm_err(verb: ErrorVerb, e: EngineError) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, io::Error::other(e))
}

impl<E: Engine> SmShared<E> {
    /// The applied state, read-locked: the engine does not change while it is held.
    pub fn state(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current store revision.
    pub fn revision(&self) -> u64 {
        self.state().revision
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.feed.subscribe()
    }

    /// Events of revisions `from..=to` from the retained history.
    fn history(&self, from: u64, to: u64) -> Result<Vec<(u64, crate::mvcc::Event)>> {
        let _guard = self.state();
        let mut out = Vec::new();
        // Records are keyed by their last revision: the first one at or after `from` holds it.
        let mut cursor = from;
        loop {
            let rows = self.engine.scan_in::<HistorySpace>(
                std::ops::Bound::Included(&cursor),
                std::ops::Bound::Unbounded,
                16,
            )?;
            let Some((last_key, _)) = rows.last() else {
                return Ok(out);
            };
            let last_key = *last_key;
            for (_, events) in rows {
                for (rev, ev) in events {
                    if rev > to {
                        return Ok(out);
                    }
                    if rev >= from {
                        out.push((rev, ev));
                    }
                }
            }
            if last_key >= to {
                return Ok(out);
            }
            cursor = last_key + 1;
        }
    }

    /// The events of revisions `from..=to` whose keys `filter` selects, from the retained
    /// history; [`WatchError::Expired`] when `from` is compacted. For watchers that follow a
    /// shared feed and need only the stretch before they joined it.
    pub fn history_between(
        &self,
        filter: &WatchFilter,
        from: u64,
        to: u64,
    ) -> std::result::Result<Vec<(u64, crate::mvcc::Event)>, WatchError> {
        let expired = || {
            let compacted = self.state().compacted;
            (from <= compacted).then_some(WatchError::Expired {
                requested: from,
                compacted,
            })
        };
        if let Some(e) = expired() {
            return Err(e);
        }
        let mut events = self
            .history(from, to)
            .map_err(|e| WatchError::Storage(e.to_string()))?;
        // Compaction may have run between the check and the read.
        if let Some(e) = expired() {
            return Err(e);
        }
        events.retain(|(_, e)| filter.matches(&e.kv.key));
        Ok(events)
    }

    /// Start a watch; messages arrive on the returned receiver until it is dropped.
    pub fn watch(
        self: &Arc<Self>,
        filter: WatchFilter,
        start_revision: u64,
        progress_every: Duration,
    ) -> mpsc::Receiver<std::result::Result<WatchMessage, WatchError>> {
        // Small: a watcher that does not keep up waits here, then catches up from history.
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(watch::run_watch(
            self.clone(),
            filter,
            start_revision,
            progress_every,
            tx,
        ));
        rx
    }

    /// Wait until this member has applied `revision`; `false` if `timeout` passed first.
    pub async fn wait_revision(&self, revision: u64, timeout: Duration) -> bool {
        let mut feed = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.revision() < revision {
            match tokio::time::timeout_at(deadline, feed.recv()).await {
                Err(_) => return false,
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
                Ok(_) => {}
            }
        }
        true
    }

    /// Make everything applied so far durable.
    pub fn sync(&self) -> Result<()> {
        self.engine.sync()
    }
}

/// The state machine openraft drives; readers use [`StateMachineStore::shared`].
pub struct StateMachineStore<E: Engine> {
    shared: Arc<SmShared<E>>,
}

impl<E: Engine> StateMachineStore<E> {
    /// Open the state machine over `engine`, keeping its snapshot at `snapshot_path`.
    pub fn open(engine: E, snapshot_path: PathBuf, config: StateMachineConfig) -> Result<Self> {
        let state = engine
            .get_in::<AppliedSpace>(&APPLIED_KEY)?
            .unwrap_or_default();
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let recent = recent_ids::RecentIds::load(&engine)?;
        let shared = SmShared {
            engine,
            state: RwLock::new(state),
            feed,
            config,
            snapshot_path,
            recent_ids: Mutex::new(recent),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// The handle readers share.
    pub fn shared(&self) -> Arc<SmShared<E>> {
        self.shared.clone()
    }

    fn apply_entries(&self, entries: Vec<Entry>) -> Result<Vec<Response>> {
        let sh = &self.shared;
        let start_state = sh.state().clone();
        let prev_revision = start_state.revision;
        let mut recent = sh.recent_ids.lock().unwrap_or_else(|p| p.into_inner());
        let mut overlay = apply::Overlay::new(&sh.engine, start_state, &recent);
        let mut responses = Vec::with_capacity(entries.len());
        let mut last_time = 0;
        for entry in entries {
            overlay.state.last_applied = Some(entry.log_id);
            let mut resp = Response::default();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(req) => {
                    last_time = last_time.max(req.time_ms);
                    for w in &req.writes {
                        resp.results.push(overlay.apply_write(w, req.time_ms)?);
                    }
                }
                EntryPayload::Membership(m) => {
                    overlay.state.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            responses.push(resp);
        }
        let last_index = overlay.state.last_applied.map(|l| l.index).unwrap_or(0);
        let bucket = overlay.record_batch(last_time, last_index);
        let expired_through = overlay.expire(last_time, sh.config.history_revisions)?;
        let apply::Overlay {
            mut batch,
            events,
            state,
            ..
        } = overlay;
        batch.put::<AppliedSpace>(&APPLIED_KEY, &state);
        let revision = state.revision;
        {
            let mut guard = sh.state.write().unwrap_or_else(|p| p.into_inner());
            sh.engine.write(batch)?;
            *guard = state;
        }
        if let Some((key, ids)) = bucket {
            recent.insert_bucket(key, &ids);
        }
        if let Some(key) = expired_through {
            recent.expired_through(key);
        }
        drop(recent);
        if !events.is_empty() || revision != prev_revision {
            // No receivers is fine: nobody watches.
            let _ = sh.feed.send(Arc::new(Published {
                prev_revision,
                events,
                revision,
                reset: false,
            }));
        }
        Ok(responses)
    }
}

impl<E: Engine> RaftStateMachine<TypeConfig> for StateMachineStore<E> {
    type SnapshotBuilder = SnapshotBuilder<E>;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<
        (Option<LogId>, StoredMembership<NodeId, openraft::BasicNode>),
        StorageError,
    > {
        let st = self.shared.state();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries.into_iter().collect())
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::capture(self.shared.clone())
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<io::Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<io::Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), StorageError> {
        snapshot::install(&self.shared, meta, snapshot.into_inner())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError> {
        snapshot::load_current(&self.shared)
    }
}
