//! Snapshots of the state machine: every record of the engine but the watch history, captured
//! at one applied log id, serialised, kept in one file beside the engine and streamed by
//! openraft in chunks.
//!
//! The watch history stays out: it is most of the store (each change with the value before
//! it), and capturing it held apply up for a second at 10,000 pods. A member that installs a
//! snapshot (one that fell behind the leader's log) keeps history only from the snapshot's
//! revision on; a watcher asking it for older revisions gets EXPIRED and lists again, as from
//! any member whose history is compacted. Members that restart keep their own history.

use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftSnapshotBuilder;
use openraft::{ErrorSubject, ErrorVerb, Snapshot, SnapshotMeta};
use serde::{Deserialize, Serialize};

use super::spaces::{AppliedSpace, HistorySpace, APPLIED_KEY};
use super::{Published, SmShared};
use crate::engine::{Engine, WriteBatch};
use crate::keyspace::KeySpace;
use crate::types::{NodeId, StorageError, TypeConfig};

/// The serialised body of a snapshot.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotBody {
    pub(crate) pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
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
    captured: Result<Captured, String>,
    started: std::time::Instant,
}

/// Every record as a serialised [`SnapshotBody`], and the applied state among them.
struct Captured {
    body: Vec<u8>,
    state: super::AppliedState,
}

/// Serialise every record of `engine` into one buffer, in [`SnapshotBody`]'s bincode layout:
/// the pair count, then each key and value as a length and its bytes. Written record by
/// record, so the store is never held twice in small pieces (a copy of each record, then the
/// serialised form).
fn serialise_records<E: Engine>(engine: &E) -> Result<Captured, String> {
    let mut body = 0u64.to_le_bytes().to_vec();
    let (count, state) = serialise_pairs_into(engine, &mut body)?;
    body[..8].copy_from_slice(&count.to_le_bytes());
    Ok(Captured { body, state })
}

/// Write every record but the history to `out` as the pairs of a snapshot body (each key
/// and value as a length and its bytes; the body's count before them is the caller's), and
/// return their count and the applied state among them.
fn serialise_pairs_into<E: Engine, W: std::io::Write>(
    engine: &E,
    out: &mut W,
) -> Result<(u64, super::AppliedState), String> {
    let (mut count, mut state, mut failed) = (0u64, None, None);
    let applied_key = AppliedSpace::raw_key(&APPLIED_KEY);
    let mut visit = |k: &[u8], v: &[u8]| {
        if failed.is_some() {
            return;
        }
        if k == applied_key.as_slice() {
            match bincode::deserialize::<super::AppliedState>(v) {
                Ok(s) => state = Some(s),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        let pair = (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v));
        if let Err(e) = bincode::serialize_into(&mut *out, &pair) {
            failed = Some(e.to_string());
        }
        count += 1;
    };
    // The history is most of the store and no part of a snapshot: never read it.
    let history = vec![HistorySpace::PREFIX];
    let after_history = vec![HistorySpace::PREFIX + 1];
    engine
        .for_each_in(Bound::Unbounded, Bound::Excluded(history), &mut visit)
        .map_err(|e| e.to_string())?;
    engine
        .for_each_in(Bound::Included(after_history), Bound::Unbounded, &mut visit)
        .map_err(|e| e.to_string())?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((count, state.unwrap_or_default()))
}

/// Every record but the history, serialised as a snapshot's body, with the applied state it
/// is of (a recovery).
pub(crate) fn capture_body<E: Engine>(
    shared: &SmShared<E>,
) -> Result<(Vec<u8>, super::AppliedState), String> {
    let _guard = shared.state();
    serialise_records(&shared.engine).map(|c| (c.body, c.state))
}

/// How far a capture into a file has got, told as it goes (see [`capture_pairs_to_file`]).
#[derive(Debug)]
pub(crate) enum Capture {
    /// Taken at this applied state; the records follow.
    Started(super::AppliedState),
    /// The file holds this many bytes of pairs, readable now.
    Written(u64),
    /// Done: the file holds `records` pairs in `bytes`.
    Done {
        /// Pairs written.
        records: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// It stopped.
    Failed(String),
}

/// Every record but the history, as the pairs of a snapshot body, into the new file `path`,
/// telling `progress` the applied state they are of, then how many bytes are written as they
/// are (a reader follows behind and sends them on), then the count. Writes wait while it is
/// taken; memory does not grow with the store. If nobody listens any more it stops writing,
/// but the engine's scan cannot be broken off: writes wait until it has passed over the rest
/// of the store, no longer than a whole capture.
pub(crate) fn capture_pairs_to_file<E: Engine>(
    shared: &SmShared<E>,
    path: &Path,
    progress: &tokio::sync::mpsc::UnboundedSender<Capture>,
) {
    let started = std::time::Instant::now();
    let captured = (|| {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let told = Told {
            file,
            written: 0,
            progress,
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, told);
        let guard = shared.state();
        progress
            .send(Capture::Started(guard.clone()))
            .map_err(|_| "nobody waits for the backup".to_string())?;
        let (records, _) = serialise_pairs_into(&shared.engine, &mut out)?;
        drop(guard);
        let told = out.into_inner().map_err(|e| e.error().to_string())?;
        Ok::<_, String>((records, told.written))
    })();
    // A send fails only when nobody listens any more: there is no one left to tell.
    let _ = progress.send(match captured {
        Ok((records, bytes)) => {
            // Writes waited this long.
            tracing::info!(
                records,
                bytes,
                took_ms = started.elapsed().as_millis() as u64,
                "backup captured"
            );
            Capture::Done { records, bytes }
        }
        Err(e) => Capture::Failed(e),
    });
}

/// A file that tells how much of it is written after each write.
struct Told<'a> {
    file: std::fs::File,
    written: u64,
    progress: &'a tokio::sync::mpsc::UnboundedSender<Capture>,
}

impl std::io::Write for Told<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = io::Write::write(&mut self.file, buf)?;
        self.written += n as u64;
        self.progress
            .send(Capture::Written(self.written))
            .map_err(|_| io::Error::other("nobody waits for the backup"))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::Write::flush(&mut self.file)
    }
}

/// Put every record of `body` but the history into `batch`, with the applied state they are
/// of at `meta`: history ends at the snapshot (older members' snapshots carried it).
fn put_records(
    batch: &mut WriteBatch,
    body: SnapshotBody,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
) -> Result<super::AppliedState, StorageError> {
    let mut state: super::AppliedState = Default::default();
    for (k, v) in body.pairs {
        put_record(batch, &mut state, k.into_vec(), v.into_vec())?;
    }
    finish_records(batch, &mut state, meta);
    Ok(state)
}

/// One record of a snapshot body into `batch`: the history stays out, the applied state is
/// kept aside for [`finish_records`].
fn put_record(
    batch: &mut WriteBatch,
    state: &mut super::AppliedState,
    k: Vec<u8>,
    v: Vec<u8>,
) -> Result<(), StorageError> {
    if k.first() == Some(&HistorySpace::PREFIX) {
        return Ok(());
    }
    if k == AppliedSpace::raw_key(&APPLIED_KEY) {
        *state = bincode::deserialize(&v).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    } else {
        batch.put_raw(k, v);
    }
    Ok(())
}

/// The applied state of records put at `meta`: history ends at the snapshot.
fn finish_records(
    batch: &mut WriteBatch,
    state: &mut super::AppliedState,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
) {
    state.last_applied = meta.last_log_id;
    state.membership = meta.last_membership.clone();
    state.compacted = state.compacted.max(state.revision);
    batch.put::<AppliedSpace>(&APPLIED_KEY, state);
}

/// Where the pairs of a snapshot body lie in a file: from `offset`, `len` bytes, `records`
/// pairs (a backup's records).
#[derive(Debug, Clone)]
pub(crate) struct PairsInFile<'a> {
    /// The file.
    pub path: &'a Path,
    /// Where the pairs start.
    pub offset: u64,
    /// Their bytes.
    pub len: u64,
    /// How many pairs.
    pub records: u64,
}

/// Records put into the store per write while seeding from a file: memory stays bounded by
/// this, not by the store.
const SEED_BATCH_BYTES: usize = 16 << 20;

/// [`seed`] from the pairs of a body in a file, read twice in pieces (the records into
/// `engine` in bounded batches; beside that, on a second thread, copied into the Raft
/// snapshot at `snapshot_path`): memory does not grow with the store.
pub(crate) fn seed_from_file<E: Engine>(
    engine: &E,
    snapshot_path: &Path,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    pairs: &PairsInFile<'_>,
) -> Result<super::AppliedState, StorageError> {
    use std::io::Seek;
    let read_err = |e: &dyn std::fmt::Display| snap_err(ErrorVerb::Read, e);
    let open = || -> io::Result<io::Take<io::BufReader<std::fs::File>>> {
        let mut f = std::fs::File::open(pairs.path)?;
        f.seek(io::SeekFrom::Start(pairs.offset))?;
        Ok(io::Read::take(
            io::BufReader::with_capacity(1 << 20, f),
            pairs.len,
        ))
    };
    // The Raft snapshot file holds the same body after its meta, as `persist_at` writes it;
    // it is put in place only once the store holds the records too.
    let tmp = snapshot_path.with_extension("tmp");
    let copy = || -> io::Result<()> {
        let mut out = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        bincode::serialize_into(&mut out, meta).map_err(io::Error::other)?;
        // The body's length, then the body: the pairs' count, then the pairs.
        io::Write::write_all(&mut out, &(pairs.len + 8).to_le_bytes())?;
        io::Write::write_all(&mut out, &pairs.records.to_le_bytes())?;
        io::copy(&mut open()?, &mut out)?;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    };
    let put_in_place = || -> io::Result<()> {
        std::fs::rename(&tmp, snapshot_path)?;
        if let Some(dir) = snapshot_path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    let load = || -> Result<super::AppliedState, StorageError> {
        let mut input = open().map_err(|e| read_err(&e))?;
        let mut state: super::AppliedState = Default::default();
        let (mut batch, mut batch_bytes) = (WriteBatch::default(), 0usize);
        for _ in 0..pairs.records {
            let (k, v): (serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
                bincode::deserialize_from(&mut input).map_err(|e| read_err(&e))?;
            batch_bytes += k.len() + v.len();
            put_record(&mut batch, &mut state, k.into_vec(), v.into_vec())?;
            if batch_bytes >= SEED_BATCH_BYTES {
                engine
                    .write(std::mem::take(&mut batch))
                    .map_err(|e| snap_err(ErrorVerb::Write, e))?;
                batch_bytes = 0;
            }
        }
        finish_records(&mut batch, &mut state, meta);
        engine
            .write(batch)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        engine.sync().map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(state)
    };
    // The copy is disk work and the load mostly the engine's: side by side, the restore takes
    // about as long as the load alone.
    let loaded = std::thread::scope(|scope| {
        let copied = scope.spawn(copy);
        let state = load();
        let copied = copied
            .join()
            .map_err(|_| snap_err(ErrorVerb::Write, "the snapshot copy panicked"))
            .and_then(|c| c.map_err(|e| snap_err(ErrorVerb::Write, e)));
        state.and_then(|s| copied.map(|()| s))
    });
    match loaded {
        Ok(state) => {
            put_in_place().map_err(|e| snap_err(ErrorVerb::Write, e))?;
            Ok(state)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Seed the empty `engine` with the records of snapshot body `data` as the state at `meta`,
/// and keep that snapshot at `snapshot_path` for the followers that will need it (a restore).
/// The state's revision is the records'.
pub(crate) fn seed<E: Engine>(
    engine: &E,
    snapshot_path: &Path,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    data: &[u8],
) -> Result<super::AppliedState, StorageError> {
    let body: SnapshotBody =
        bincode::deserialize(data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let mut batch = WriteBatch::default();
    let state = put_records(&mut batch, body, meta)?;
    engine
        .write(batch)
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
    engine.sync().map_err(|e| snap_err(ErrorVerb::Write, e))?;
    persist_at(snapshot_path, meta, data)?;
    Ok(state)
}

impl<E: Engine> SnapshotBuilder<E> {
    /// Serialise every record now, under the read lock, so the snapshot is of one applied
    /// state even though applying goes on while it is written out.
    pub(crate) fn capture(shared: Arc<SmShared<E>>) -> Self {
        let started = std::time::Instant::now();
        let captured = {
            let _guard = shared.state();
            serialise_records(&shared.engine)
        };
        Self {
            shared,
            captured,
            started,
        }
    }
}

impl<E: Engine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<E> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let empty = Captured {
            body: Vec::new(),
            state: Default::default(),
        };
        let Captured { body, state } = std::mem::replace(&mut self.captured, Ok(empty))
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let snapshot_id = match state.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, body.len()),
            None => format!("0-0-{}", body.len()),
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
        persist(&self.shared, &meta, &body)?;
        self.shared
            .config
            .snapshot_duration
            .observe(self.started.elapsed().as_secs_f64());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(io::Cursor::new(body)),
        })
    }
}

/// [`StoredSnapshot`] by reference: the same bytes on disk, without copying the data.
#[derive(Serialize)]
struct StoredSnapshotRef<'a> {
    meta: &'a SnapshotMeta<NodeId, openraft::BasicNode>,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

fn persist<E: Engine>(
    shared: &SmShared<E>,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    data: &[u8],
) -> Result<(), StorageError> {
    persist_at(&shared.snapshot_path, meta, data)
}

/// Write the snapshot file atomically: temp file, fsync, rename, fsync the directory.
fn persist_at(
    path: &Path,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    data: &[u8],
) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut f = io::BufWriter::new(std::fs::File::create(&tmp)?);
        bincode::serialize_into(&mut f, &StoredSnapshotRef { meta, data })
            .map_err(io::Error::other)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
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
    let state;
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
        state = put_records(&mut batch, body, meta)?;
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
    persist(shared, meta, &data)?;
    let _ = shared.feed.send(Arc::new(Published {
        prev_revision,
        events: vec![],
        revision: state.revision,
        reset: true,
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_but_the_history_serialised_one_by_one_read_back_as_a_snapshot_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = crate::engine::SledEngine::open(dir.path()).expect("engine");
        let mut batch = WriteBatch::default();
        batch.put_raw(b"a".to_vec(), b"1".to_vec());
        batch.put_raw(b"b/c".to_vec(), vec![7; 300]);
        batch.put_raw(vec![HistorySpace::PREFIX, 0, 0, 0, 9], b"a change".to_vec());
        engine.write(batch).expect("write");
        let captured = serialise_records(&engine).expect("capture");
        let body: SnapshotBody = bincode::deserialize(&captured.body).expect("a snapshot body");
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = body
            .pairs
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b/c".to_vec(), vec![7; 300])
            ]
        );
        // The file form is the one older members wrote and read.
        let meta = SnapshotMeta::default();
        let by_ref = bincode::serialize(&StoredSnapshotRef {
            meta: &meta,
            data: &captured.body,
        })
        .expect("serialise");
        let owned: StoredSnapshot = bincode::deserialize(&by_ref).expect("read back");
        assert_eq!(owned.data, captured.body);
    }
}
