//! The Raft log in an [`Engine`]: entries, vote, committed id and purge point.
//!
//! Appends are written at once (so openraft can read them back) and made durable by a
//! flusher thread that fsyncs once for every append queued behind it — group commit — and
//! only then reports them flushed. A vote is fsynced before `save_vote` returns.
//!
//! ```text
//!  append ──write──▶ engine ──┐
//!         └─callback─▶ flusher thread: drain queue ─▶ engine.sync() ─▶ callbacks
//! ```

use prometheus_client::metrics::histogram::Histogram;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};

use crate::eager_replication::{LogEvent, LogEvents};
use crate::engine::{Engine, EngineError, WriteBatch};
use crate::keyspace::{KeySpace, TypedRead};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

struct LogEntries;
impl KeySpace for LogEntries {
    const NAME: &'static str = "log-entries";
    const PREFIX: u8 = 1;
    type Key = u64;
    type Value = Entry;
}

struct VoteSpace;
impl KeySpace for VoteSpace {
    const NAME: &'static str = "log-vote";
    const PREFIX: u8 = 2;
    type Key = u64;
    type Value = Vote<NodeId>;
}

struct CommittedSpace;
impl KeySpace for CommittedSpace {
    const NAME: &'static str = "log-committed";
    const PREFIX: u8 = 3;
    type Key = u64;
    type Value = Option<LogId>;
}

struct PurgedSpace;
impl KeySpace for PurgedSpace {
    const NAME: &'static str = "log-purged";
    const PREFIX: u8 = 4;
    type Key = u64;
    type Value = LogId;
}

/// The single key of each one-value space.
const ONLY: u64 = 0;

fn read_err(e: EngineError) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, io::Error::other(e))
}

fn write_err(subject: ErrorSubject<NodeId>, e: EngineError) -> StorageError {
    StorageError::from_io_error(subject, ErrorVerb::Write, io::Error::other(e))
}

/// The Raft log store; cheap to clone (clones share the engine).
pub struct LogStore<E: Engine> {
    engine: Arc<E>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    /// Told of every append and truncation, so a leader can send before its fsync ends.
    events: Option<LogEvents>,
}

impl<E: Engine> Clone for LogStore<E> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            flusher: self.flusher.clone(),
            events: self.events.clone(),
        }
    }
}

impl<E: Engine> LogStore<E> {
    /// A log store over `engine`, with its flusher thread.
    pub fn new(engine: E) -> Self {
        Self::timed(engine, crate::stats::duration_histogram())
    }

    /// A log store over `engine` whose fsyncs are timed into `fsync`.
    pub fn timed(engine: E, fsync: Histogram) -> Self {
        let engine = Arc::new(engine);
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let flush_engine = engine.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flush_loop(flush_engine, rx, fsync))
            .expect("spawning the log flusher thread");
        Self {
            engine,
            flusher: tx,
            events: None,
        }
    }

    /// Report appends and truncations to `events` (see [`crate::eager_replication`]).
    pub fn with_events(mut self, events: LogEvents) -> Self {
        self.events = Some(events);
        self
    }

    /// Start the log of a member restored from a backup: everything up to `at` is in its
    /// snapshot (purged here and committed), and it has voted for itself in `at`'s term.
    pub fn seed_restored(&self, at: LogId, me: NodeId) -> Result<(), EngineError> {
        let mut b = WriteBatch::default();
        b.put::<PurgedSpace>(&ONLY, &at);
        b.put::<CommittedSpace>(&ONLY, &Some(at));
        b.put::<VoteSpace>(&ONLY, &Vote::new(at.leader_id.term, me));
        self.engine.write(b)?;
        self.engine.sync()
    }

    /// Make member `me` start as a follower even if it led when it stopped.
    ///
    /// openraft 0.9 resumes leadership at start when the saved vote is the member's own
    /// committed one. With [`crate::eager_replication`] a follower may hold entries of that term
    /// that this member had not fsynced when it died; resumed in the same term, it would write
    /// other entries under those very log ids, and the follower would keep its own as already
    /// held. An uncommitted vote for itself keeps the member's vote in that term (it still votes
    /// for no one else in it), but it must win a new, higher term before it leads again.
    pub fn resign_leadership(&self, me: NodeId) -> Result<(), EngineError> {
        let Some(vote) = self.engine.get_in::<VoteSpace>(&ONLY)? else {
            return Ok(());
        };
        if !vote.is_committed() || vote.leader_id().node_id != me {
            return Ok(());
        }
        let mut b = WriteBatch::default();
        b.put::<VoteSpace>(&ONLY, &Vote::new(vote.leader_id().term, me));
        self.engine.write(b)?;
        self.engine.sync()
    }
}

/// Fsync once for everything queued, then acknowledge it all: a burst of appends costs one
/// fsync instead of one each.
fn flush_loop<E: Engine>(
    engine: Arc<E>,
    rx: mpsc::Receiver<LogFlushed<TypeConfig>>,
    fsync: Histogram,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let started = std::time::Instant::now();
        let result = engine.sync().map_err(|e| e.to_string());
        fsync.observe(started.elapsed().as_secs_f64());
        for cb in waiting {
            cb.log_io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

impl<E: Engine> RaftLogReader<TypeConfig> for LogStore<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let entries = self
            .engine
            .scan_in::<LogEntries>(range.start_bound(), range.end_bound(), 0)
            .map_err(read_err)?;
        Ok(entries.into_iter().map(|(_, e)| e).collect())
    }
}

impl<E: Engine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.engine.get_in::<PurgedSpace>(&ONLY).map_err(read_err)?;
        let last = self
            .engine
            .last_in::<LogEntries>(Bound::Unbounded, Bound::Unbounded)
            .map_err(read_err)?
            .map(|(_, e)| e.log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put::<VoteSpace>(&ONLY, vote);
        self.engine
            .write(b)
            .map_err(|e| write_err(ErrorSubject::Vote, e))?;
        self.engine
            .sync()
            .map_err(|e| write_err(ErrorSubject::Vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.engine.get_in::<VoteSpace>(&ONLY).map_err(read_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced: a lost committed id only means re-applying from the state machine's
        // own last-applied id, which is always safe.
        let mut b = WriteBatch::default();
        b.put::<CommittedSpace>(&ONLY, &committed);
        self.engine
            .write(b)
            .map_err(|e| write_err(ErrorSubject::Store, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .engine
            .get_in::<CommittedSpace>(&ONLY)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut b = WriteBatch::default();
        for entry in &entries {
            b.put::<LogEntries>(&entry.log_id.index, entry);
        }
        // Any prefix of appended entries is a valid log, and none is acknowledged before the
        // flusher's sync: the entries need no atomic batch.
        self.engine
            .write_in_order(b)
            .map_err(|e| write_err(ErrorSubject::Logs, e))?;
        if cfg!(feature = "planted-bug-early-ack") {
            // Planted for the chaos suite: acknowledge before the data is durable.
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        if let Err(mpsc::SendError(cb)) = self.flusher.send(callback) {
            cb.log_io_completed(Err(io::Error::other("log flusher stopped")));
        }
        if let Some(events) = &self.events {
            events.send(LogEvent::Appended(entries));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let doomed = self
            .engine
            .scan_in::<LogEntries>(Bound::Included(&log_id.index), Bound::Unbounded, 0)
            .map_err(read_err)?;
        let mut b = WriteBatch::default();
        for (index, _) in doomed {
            b.delete::<LogEntries>(&index);
        }
        if let Some(events) = &self.events {
            events.send(LogEvent::Truncated);
        }
        self.engine
            .write(b)
            .map_err(|e| write_err(ErrorSubject::Logs, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let doomed = self
            .engine
            .scan_in::<LogEntries>(Bound::Unbounded, Bound::Included(&log_id.index), 0)
            .map_err(read_err)?;
        let mut b = WriteBatch::default();
        b.put::<PurgedSpace>(&ONLY, &log_id);
        for (index, _) in doomed {
            b.delete::<LogEntries>(&index);
        }
        self.engine
            .write(b)
            .map_err(|e| write_err(ErrorSubject::Logs, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SledEngine;

    fn store(dir: &tempfile::TempDir) -> LogStore<SledEngine> {
        LogStore::new(SledEngine::open(&dir.path().join("log")).expect("open log engine"))
    }

    #[tokio::test]
    async fn a_member_that_led_starts_as_a_candidate_of_its_term_and_other_votes_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = store(&dir);
        log.save_vote(&Vote::new_committed(7, 1))
            .await
            .expect("save vote");
        log.resign_leadership(1).expect("resign");
        assert_eq!(log.read_vote().await.expect("read"), Some(Vote::new(7, 1)));

        log.save_vote(&Vote::new_committed(8, 2))
            .await
            .expect("save vote");
        log.resign_leadership(1).expect("resign");
        assert_eq!(
            log.read_vote().await.expect("read"),
            Some(Vote::new_committed(8, 2))
        );
    }
}
