//! Snapshots of the state machine: every record of the engine, captured at one applied
//! log id, serialised, kept in one file beside the engine and streamed by openraft in chunks.

use std::io::{self, Write as _};
use std::ops::Bound;
use std::sync::Arc;

use openraft::storage::RaftSnapshotBuilder;
use openraft::{ErrorSubject, ErrorVerb, Snapshot, SnapshotMeta};
use serde::{Deserialize, Serialize};

use super::spaces::{AppliedSpace, APPLIED_KEY};
use super::{Published, SmShared};
use crate::engine::{Engine, RawEntry, WriteBatch};
use crate::keyspace::KeySpace;
use crate::types::{NodeId, StorageError, TypeConfig};

/// The serialised body of a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
}

/// A snapshot as kept on disk.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::Snapshot(None),
        verb,
        io::Error::other(e.to_string()),
    )
}

/// Builds a snapshot from the records captured when openraft asked for a builder.
pub struct SnapshotBuilder<E: Engine> {
    shared: Arc<SmShared<E>>,
    pairs: Result<Vec<RawEntry>, String>,
}

impl<E: Engine> SnapshotBuilder<E> {
    /// Copy every record now, under the read lock, so the snapshot is of one applied state
    /// even though applying goes on while it is built.
    pub(crate) fn capture(shared: Arc<SmShared<E>>) -> Self {
        let pairs = {
            let _guard = shared.state();
            shared
                .engine
                .scan(Bound::Unbounded, Bound::Unbounded, 0)
                .map_err(|e| e.to_string())
        };
        Self { shared, pairs }
    }
}

impl<E: Engine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<E> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let pairs = std::mem::replace(&mut self.pairs, Ok(vec![]))
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let state = pairs
            .iter()
            .find(|(k, _)| *k == AppliedSpace::raw_key(&APPLIED_KEY))
            .map(|(_, v)| bincode::deserialize::<super::AppliedState>(v))
            .transpose()
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
            .unwrap_or_default();
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| (serde_bytes::ByteBuf::from(k), serde_bytes::ByteBuf::from(v)))
            .collect();
        let data = bincode::serialize(&SnapshotBody { pairs })
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let snapshot_id = match state.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, data.len()),
            None => format!("0-0-{}", data.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership,
            snapshot_id,
        };
        // The log is purged behind this snapshot, so what it covers must be durable first.
        self.shared
            .sync()
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        persist(
            &self.shared,
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(io::Cursor::new(data)),
        })
    }
}

/// Write the snapshot file atomically: temp file, fsync, rename, fsync the directory.
fn persist<E: Engine>(shared: &SmShared<E>, snap: &StoredSnapshot) -> Result<(), StorageError> {
    let bytes = bincode::serialize(snap).map_err(|e| snap_err(ErrorVerb::Write, e))?;
    let path = &shared.snapshot_path;
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| snap_err(ErrorVerb::Write, e))
}

/// The snapshot last built or installed, if any.
pub(crate) fn load_current<E: Engine>(
    shared: &SmShared<E>,
) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
    let bytes = match std::fs::read(&shared.snapshot_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
    };
    let snap: StoredSnapshot =
        bincode::deserialize(&bytes).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    Ok(Some(Snapshot {
        meta: snap.meta,
        snapshot: Box::new(io::Cursor::new(snap.data)),
    }))
}

/// Replace the whole state with a received snapshot, in one atomic batch.
pub(crate) fn install<E: Engine>(
    shared: &SmShared<E>,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
) -> Result<(), StorageError> {
    let body: SnapshotBody =
        bincode::deserialize(&data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let mut batch = WriteBatch::default();
    let mut state: super::AppliedState = Default::default();
    let prev_revision;
    {
        let mut guard = shared.state.write().unwrap_or_else(|p| p.into_inner());
        prev_revision = guard.revision;
        let existing = shared
            .engine
            .scan(Bound::Unbounded, Bound::Unbounded, 0)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        for (k, _) in existing {
            batch.delete_raw(k);
        }
        for (k, v) in body.pairs {
            let (k, v) = (k.into_vec(), v.into_vec());
            if k == AppliedSpace::raw_key(&APPLIED_KEY) {
                state = bincode::deserialize(&v).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            } else {
                batch.put_raw(k, v);
            }
        }
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        batch.put::<AppliedSpace>(&APPLIED_KEY, &state);
        shared
            .engine
            .write(batch)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        shared
            .engine
            .sync()
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        *guard = state.clone();
        // The store was replaced: its request ids are known again only from the store.
        let recent = super::recent_ids::RecentIds::load(&shared.engine)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        *shared.recent_ids.lock().unwrap_or_else(|p| p.into_inner()) = recent;
    }
    persist(
        shared,
        &StoredSnapshot {
            meta: meta.clone(),
            data,
        },
    )?;
    let _ = shared.feed.send(Arc::new(Published {
        prev_revision,
        events: vec![],
        revision: state.revision,
        reset: true,
    }));
    Ok(())
}
