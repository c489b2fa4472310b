//! Backups: a consistent copy of the whole store in one checked file, and a new cluster
//! started from one.
//!
//! ```text
//!  take:    linearizable read ─▶ every record but the history, under the apply lock, into a
//!           file beside the store ─▶ streamed or written out, checksum last
//!  inspect: file ─▶ checked (length, checksum) ─▶ revision, records, objects by resource
//!  restore: file ─▶ checked ─▶ empty data directory: the records as a Raft snapshot at
//!           log id (1, 1) of a new membership, the log purged up to it
//! ```
//!
//! A restored member starts as the only holder of the data: it wins the first election of
//! the new cluster, and the other members, started empty, receive the data as a Raft snapshot
//! (the log before it is gone), as any member far behind does.

pub mod format;
pub mod save;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, Membership, SnapshotMeta, StoredMembership};

use crate::engine::SledEngine;
use crate::log_store::LogStore;
use crate::node::RaftNode;
use crate::state_machine::snapshot;
use crate::types::{LogId, NodeId};
use format::{BackupHeader, FormatError};

/// What can go wrong with a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file is not a usable backup.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The file could not be read.
    #[error("reading the backup: {0}")]
    Read(String),
    /// Its records do not read.
    #[error("the backup's records do not read: {0}")]
    Records(String),
    /// The store could not be read or written.
    #[error("the store: {0}")]
    Store(String),
    /// The member could not confirm it holds every acknowledged write.
    #[error("this member cannot confirm it is current: {0}")]
    NotCurrent(String),
    /// The restore target is not an empty directory.
    #[error("{0}: not empty; a restore writes only into a new or empty data directory")]
    NotEmpty(String),
    /// The restored member is not among the new cluster's members.
    #[error("--id {id}: not among the new cluster's members ({members})")]
    UnknownMember {
        /// The member id.
        id: NodeId,
        /// The members' ids.
        members: String,
    },
}

impl From<format::VerifyError> for BackupError {
    fn from(e: format::VerifyError) -> Self {
        match e {
            format::VerifyError::Format(f) => Self::Format(f),
            format::VerifyError::Io(e) => Self::Read(e),
        }
    }
}

/// A backup being sent: the start of its file, and its records as they are captured into a
/// file beside the store (removed when this is dropped), so that the member's memory does not
/// grow with the store; [`Streamed::into_chunks`] gives the file piece by piece, its end last.
#[derive(Debug)]
pub struct Streamed {
    /// What its header says (the counts of its records are known at its end).
    pub header: BackupHeader,
    head: Vec<u8>,
    encoder: format::Encoder,
    records: CaptureFile,
    progress: tokio::sync::mpsc::UnboundedReceiver<snapshot::Capture>,
}

/// The records file of a [`Streamed`] backup, removed when dropped.
#[derive(Debug)]
struct CaptureFile(std::path::PathBuf);

impl Drop for CaptureFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Remove what backups being sent when the member stopped left in `data_dir`: none is in
/// flight at start.
pub fn remove_stale_captures(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("backup-") && name.ends_with(".capture") {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!("removing a stale backup capture {name}: {err}");
            }
        }
    }
}

/// Bytes per piece of a streamed backup.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Pieces read and hashed ahead of the sender.
const READ_AHEAD: usize = 4;

/// Take a backup of `node`'s store to be sent as it is read: every write acknowledged before
/// the call is in it. Writes wait while the records are copied into a file beside the store;
/// the copy is sent on as it is written.
pub async fn take(node: &RaftNode) -> Result<Streamed, BackupError> {
    node.linearizable_read()
        .await
        .map_err(|e| BackupError::NotCurrent(e.to_string()))?;
    let shared = node.state().clone();
    let records = CaptureFile(
        node.config()
            .data_dir
            .join(format!("backup-{}.capture", rand::random::<u64>())),
    );
    let path = records.0.clone();
    let (tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    tokio::task::spawn_blocking(move || snapshot::capture_pairs_to_file(&shared, &path, &tx));
    let state = match progress.recv().await {
        Some(snapshot::Capture::Started(state)) => state,
        Some(snapshot::Capture::Failed(e)) => return Err(BackupError::Store(e)),
        other => {
            return Err(BackupError::Store(format!(
                "the capture stopped before it started: {other:?}"
            )))
        }
    };
    let header = header_of(&node.config().cluster_id, node.id(), 0, 0, &state);
    let (encoder, head) = format::Encoder::start(&header)?;
    Ok(Streamed {
        header,
        head,
        encoder,
        records,
        progress,
    })
}

impl Streamed {
    /// Keep the backup at `path` as [`save::save`] keeps one received: checked, and whole or
    /// not at all.
    pub async fn write_to(self, path: &Path) -> Result<format::VerifiedFile, save::SaveError> {
        save::save(self.into_chunks(), path).await
    }

    /// The backup file in pieces of at most [`CHUNK_BYTES`]: its start, its records as the
    /// capture writes them, then its end. A blocking thread reads and hashes the records
    /// ahead of the sender (a few pieces), so that hashing goes on while the last piece is
    /// encrypted and sent. The records file goes when the stream does, or when the receiver
    /// leaves (and the capture stops writing then, if it is still going).
    pub fn into_chunks(self) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send {
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            // A send fails only when the stream was dropped: nobody is left to tell.
            if let Err(e) = self.read_hashed(&tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
    }

    /// Send the head, the records in pieces as the capture writes them, then the end, to
    /// `tx`.
    fn read_hashed(
        self,
        tx: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    ) -> std::io::Result<()> {
        use snapshot::Capture;
        use std::io::Read;
        let Streamed {
            head,
            mut encoder,
            records,
            mut progress,
            ..
        } = self;
        let started = std::time::Instant::now();
        let gone = || std::io::Error::other("the receiver left");
        tx.blocking_send(Ok(head)).map_err(|_| gone())?;
        let mut file = std::fs::File::open(&records.0)?;
        // Bytes of the file written (readable), and sent; the count once the capture is done.
        let (mut written, mut sent, mut done) = (0u64, 0u64, None);
        let count = loop {
            while done.is_none() && written - sent < CHUNK_BYTES as u64 {
                match progress.blocking_recv() {
                    Some(Capture::Written(n)) => written = n,
                    Some(Capture::Done { records, bytes }) => {
                        (written, done) = (bytes, Some(records))
                    }
                    Some(Capture::Failed(e)) => return Err(std::io::Error::other(e)),
                    Some(Capture::Started(_)) | None => {
                        return Err(std::io::Error::other("the capture stopped"))
                    }
                }
            }
            let piece = (written - sent).min(CHUNK_BYTES as u64) as usize;
            match done {
                Some(count) if piece == 0 => break count,
                _ => {}
            }
            // Not zeroed first: zeroing a fresh piece of 1 MiB costs the allocator a madvise
            // and a page fault per page, a visible share of the member's time in a backup.
            let mut buf = Vec::with_capacity(piece);
            (&mut file).take(piece as u64).read_to_end(&mut buf)?;
            if buf.len() < piece {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            encoder.records(&buf);
            sent += piece as u64;
            tx.blocking_send(Ok(buf)).map_err(|_| gone())?;
        };
        drop(records);
        tx.blocking_send(Ok(encoder.end(count)))
            .map_err(|_| gone())?;
        tracing::info!(
            bytes = sent,
            took_ms = started.elapsed().as_millis() as u64,
            "backup sent"
        );
        Ok(())
    }
}

/// The header of a backup of `records` records in `records_bytes`, taken on member `id` at
/// `state`.
fn header_of(
    cluster_id: &str,
    id: NodeId,
    records: u64,
    records_bytes: u64,
    state: &crate::state_machine::AppliedState,
) -> BackupHeader {
    BackupHeader {
        cluster_id: cluster_id.to_string(),
        member_id: id,
        revision: state.revision,
        raft_index: state.last_applied.map_or(0, |l| l.index),
        raft_term: state.last_applied.map_or(0, |l| l.leader_id.term),
        records,
        records_bytes,
        taken_at: jiff::Timestamp::now().to_string(),
        written_by: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Its header.
    pub header: BackupHeader,
    /// Its checksum, with its algorithm (verified).
    pub checksum: String,
    /// Keys of the key-value store (objects among them).
    pub keys: u64,
    /// Records under `/registry/` by resource, as kubectl names them (`pods`,
    /// `deployments.apps`).
    pub objects: BTreeMap<String, u64>,
    /// The file's size in bytes.
    pub size: u64,
}

/// Check the backup file at `path` and count what it holds, reading it in pieces.
pub fn inspect(path: &Path) -> Result<Inspection, BackupError> {
    use std::io::{BufReader, Read, Seek, SeekFrom};
    let v = format::verify_file(path)?;
    let read = |e: &dyn std::fmt::Display| BackupError::Read(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| read(&e))?;
    let size = file.metadata().map_err(|e| read(&e))?.len();
    file.seek(SeekFrom::Start(v.pairs_at))
        .map_err(|e| read(&e))?;
    let mut pairs = BufReader::with_capacity(1 << 20, file).take(v.pairs_bytes);
    let (mut keys, mut objects) = (0, BTreeMap::<String, u64>::new());
    let kv = crate::state_machine::kv_prefix();
    for _ in 0..v.header.records {
        let (k, _): (serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
            bincode::deserialize_from(&mut pairs)
                .map_err(|e| BackupError::Records(e.to_string()))?;
        let Some(user_key) = k.strip_prefix(&[kv]) else {
            continue;
        };
        keys += 1;
        let Some(path) = user_key.strip_prefix(b"/registry/") else {
            continue;
        };
        // `/registry/{group}/{resource}/...`, named as kubectl names resources.
        let mut parts = path.split(|b| *b == b'/').map(String::from_utf8_lossy);
        if let (Some(group), Some(resource)) = (parts.next(), parts.next()) {
            let name = if group == "core" {
                resource.into_owned()
            } else {
                format!("{resource}.{group}")
            };
            *objects.entry(name).or_default() += 1;
        }
    }
    Ok(Inspection {
        header: v.header,
        checksum: v.checksum,
        keys,
        objects,
        size,
    })
}

/// What a recovery made of a member's data.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The state it holds, as a backup's header says it.
    pub header: BackupHeader,
    /// The member's address, from its last membership.
    pub addr: String,
    /// Log entries it held but had not applied, applied now.
    pub applied_from_log: u64,
}

/// Make member `id`, whose stopped data is copied in `work` (changed here), the only member of
/// its cluster `cluster_id`, into the empty directory `staging`. Every entry its log holds is
/// applied first, committed or not, as etcd's `--force-new-cluster` does: with the others
/// gone, what it logged is the most that survives. Its terms go on above its old ones, so a
/// message from an old member cannot win against it.
pub async fn recover(
    work: &Path,
    staging: &Path,
    id: NodeId,
    cluster_id: &str,
) -> Result<Recovered, BackupError> {
    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    use openraft::RaftLogReader;

    let store = |e: &dyn std::fmt::Display| BackupError::Store(e.to_string());
    let mut log = LogStore::new(SledEngine::open(&work.join("log")).map_err(|e| store(&e))?);
    let mut sm = crate::state_machine::StateMachineStore::open(
        SledEngine::open(&work.join("state")).map_err(|e| store(&e))?,
        work.join("snapshot.bin"),
        Default::default(),
    )
    .map_err(|e| store(&e))?;
    let last = log
        .get_log_state()
        .await
        .map_err(|e| store(&e))?
        .last_log_id;
    let (applied, _) = sm.applied_state().await.map_err(|e| store(&e))?;
    let from = applied.map_or(0, |l| l.index + 1);
    let mut applied_from_log = 0;
    if let Some(last) = last.filter(|l| l.index >= from) {
        let entries = log
            .try_get_log_entries(from..=last.index)
            .await
            .map_err(|e| store(&e))?;
        applied_from_log = entries.len() as u64;
        sm.apply(entries).await.map_err(|e| store(&e))?;
    }
    let (applied, membership) = sm.applied_state().await.map_err(|e| store(&e))?;
    let addr = membership
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
        .ok_or_else(|| {
            BackupError::Store(format!("member {id} is not in its own last membership"))
        })?;
    let vote_term = log
        .read_vote()
        .await
        .map_err(|e| store(&e))?
        .map_or(0, |v| v.leader_id().term);
    let term = vote_term.max(applied.map_or(0, |l| l.leader_id.term)) + 1;
    let (body, state) = snapshot::capture_body(&sm.shared()).map_err(BackupError::Store)?;
    // The body starts with its record count (bincode's length of the pairs).
    let count = body
        .get(..8)
        .and_then(|c| c.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let header = header_of(
        cluster_id,
        id,
        count,
        (body.len() as u64).saturating_sub(8),
        &state,
    );
    let checksum = format!("blake3:{}", blake3::hash(&body).to_hex());
    let members = BTreeMap::from([(id, addr.clone())]);
    let (meta, at) = new_cluster_at(staging, id, &members, term, &header, &checksum)?;
    let store = |e: &dyn std::fmt::Display| BackupError::Store(e.to_string());
    let state = SledEngine::open(&staging.join("state")).map_err(|e| store(&e))?;
    snapshot::seed(&state, &staging.join("snapshot.bin"), &meta, &body).map_err(|e| store(&e))?;
    let log = LogStore::new(SledEngine::open(&staging.join("log")).map_err(|e| store(&e))?);
    log.seed_restored(at, id).map_err(|e| store(&e))?;
    Ok(Recovered {
        header,
        addr,
        applied_from_log,
    })
}

/// Fill the empty data directory `dir` of member `id` of a new cluster of `members` with the
/// store held in the backup file at `path`, read in pieces: checked whole before anything is
/// written, then its records put into the store in bounded batches and copied into the Raft
/// snapshot. Memory does not grow with the backup.
pub fn restore_file(
    path: &Path,
    dir: &Path,
    id: NodeId,
    members: &BTreeMap<NodeId, String>,
) -> Result<BackupHeader, BackupError> {
    let v = format::verify_file(path)?;
    let (meta, at) = new_cluster_at(dir, id, members, 1, &v.header, &v.checksum)?;
    let store = |e: &dyn std::fmt::Display| BackupError::Store(e.to_string());
    let state = SledEngine::open(&dir.join("state")).map_err(|e| store(&e))?;
    let pairs = snapshot::PairsInFile {
        path,
        offset: v.pairs_at,
        len: v.pairs_bytes,
        records: v.header.records,
    };
    snapshot::seed_from_file(&state, &dir.join("snapshot.bin"), &meta, &pairs)
        .map_err(|e| BackupError::Records(e.to_string()))?;
    let log = LogStore::new(SledEngine::open(&dir.join("log")).map_err(|e| store(&e))?);
    log.seed_restored(at, id).map_err(|e| store(&e))?;
    Ok(v.header)
}

/// The Raft snapshot meta of a new cluster of `members` whose history starts at log id
/// (`term`, index 1) with the backup `header`'s data, after checking that member `id` is
/// among them and that `dir` is empty.
fn new_cluster_at(
    dir: &Path,
    id: NodeId,
    members: &BTreeMap<NodeId, String>,
    term: u64,
    header: &BackupHeader,
    checksum: &str,
) -> Result<(SnapshotMeta<NodeId, BasicNode>, LogId), BackupError> {
    if !members.contains_key(&id) {
        let ids: Vec<String> = members.keys().map(|k| k.to_string()).collect();
        return Err(BackupError::UnknownMember {
            id,
            members: ids.join(","),
        });
    }
    let not_empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if not_empty {
        return Err(BackupError::NotEmpty(dir.display().to_string()));
    }
    // The new cluster's history starts at log id (term, index 1), with these members.
    let at = LogId::new(CommittedLeaderId::new(term, id), 1);
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(i, a)| (*i, BasicNode { addr: a.clone() }))
        .collect();
    let meta = SnapshotMeta {
        last_log_id: Some(at),
        last_membership: StoredMembership::new(Some(at), Membership::new(vec![voters], nodes)),
        snapshot_id: format!("restored-{}-{checksum}", header.revision),
    };
    Ok((meta, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_refuses_a_damaged_file_or_a_used_directory_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let members = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
        let header = BackupHeader {
            cluster_id: "c".into(),
            member_id: 1,
            revision: 0,
            raft_index: 0,
            raft_term: 0,
            records: 0,
            records_bytes: 0,
            taken_at: jiff::Timestamp::now().to_string(),
            written_by: "test".into(),
        };
        let file = format::encode(&header, 0, &[]).unwrap_or_default();
        let (whole, cut_short) = (dir.path().join("whole.skiff"), dir.path().join("cut.skiff"));
        std::fs::write(&whole, &file).unwrap_or_default();
        std::fs::write(&cut_short, &file[..file.len() - 3]).unwrap_or_default();
        let target = dir.path().join("new");
        let cut = restore_file(&cut_short, &target, 1, &members);
        assert!(cut.is_err());
        assert!(
            !target.exists(),
            "a refused restore wrote {}",
            target.display()
        );
        let stranger = restore_file(&whole, &target, 7, &members)
            .map(|_| ())
            .unwrap_err();
        assert!(stranger.to_string().contains("--id 7"), "{stranger}");
        std::fs::create_dir_all(target.join("state")).unwrap_or_default();
        let used = restore_file(&whole, &target, 1, &members)
            .map(|_| ())
            .unwrap_err();
        assert!(used.to_string().contains("not empty"), "{used}");
    }
}
