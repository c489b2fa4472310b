//! [`Engine`] over sled 0.34.
//!
//! sled's `flush` ends in `sync_file_range`, which writes data pages back but is not a full
//! fsync (sled issue 1452): file size and other metadata may still be lost on power loss. So
//! [`SledEngine::sync`] follows the flush with `fdatasync` on sled's data file. That file is
//! the only one sled writes for us: values are kept in pieces small enough that sled never
//! writes a node as a blob file of its own ([`pieces`] says why that matters).
//!
//! sled recovers a prefix of its writes after a crash, so a change made of several writes is
//! made in an order whose every prefix can be finished or undone: a batch through its redo
//! record ([`redo`]), a value to or from pieces through its intent ([`pieces::Intent`]).

mod migrate;
mod pieces;
mod redo;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pieces::{Head, Intent, Stored, FIRST_INTERNAL, PIECE};

use super::{BatchOp, Engine, EngineError, RawEntry, Result, WriteBatch};

/// sled's blob threshold is a quarter of a segment (2 MiB): a leaf node of ~19 inline values
/// or pieces of 64 KiB, with keys up to [`MAX_KEY`], stays far below it.
const SEGMENT_SIZE: usize = 8 << 20;

/// The longest key a caller may write (the API's keys are at most 4 KiB, and key spaces add a
/// few bytes): an index node of 257 such keys stays under sled's blob threshold too.
const MAX_KEY: usize = 6 << 10;

/// Batches up to this size go through a redo record; larger ones (a snapshot install) use
/// sled's own atomic batch.
const MAX_REDO_BYTES: usize = 1 << 20;

/// The redo record's key, among the engine's own keys. It exists only while a batch is being
/// written (and after a crash cut one short), never when readers look.
const REDO_KEY: &[u8] = b"\xffredo";

/// An [`Engine`] backed by one sled database in its own directory.
#[derive(Clone)]
pub struct SledEngine {
    tree: sled::Db,
    data_file: Arc<File>,
    /// One batch at a time owns the redo record.
    redo: Arc<Mutex<()>>,
    /// The keys whose value is in pieces. Held by every write, so that a key's head, its
    /// pieces and this set change together.
    in_pieces: Arc<Mutex<HashSet<Vec<u8>>>>,
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
    EngineError::Backend(Box::new(e))
}

fn corrupt(e: pieces::BadValue) -> EngineError {
    EngineError::Corrupt(Box::new(e))
}

/// The page cache of a store opened with [`SledEngine::open`].
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

fn sled_config(dir: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .segment_size(SEGMENT_SIZE)
        .cache_capacity(cache_bytes)
        .flush_every_ms(Some(1000))
}

/// How long an open waits for sled's lock on its files before it gives up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Open sled in `sled_dir`, waiting briefly for its lock: a store closed a moment ago in this
/// process is still held while sled's io threads finish writing its last buffers (they own a
/// handle of the file, and its lock, until their task ends). Another process holding the
/// store keeps it past the wait, and the open fails naming the lock. sled reports the lock
/// only in its message (`vendor/sled/src/config.rs`, `try_lock`), hence the text match; the
/// unit test below fails if that text changes.
fn open_waiting_for_lock(sled_dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled_config(sled_dir, cache_bytes).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            opened => return opened.map_err(backend),
        }
    }
}

/// Writes staged into one sled batch, with each touched key's head as of those writes
/// (`None`: the value is inline or gone).
#[derive(Default)]
struct Staged {
    batch: sled::Batch,
    heads: HashMap<Vec<u8>, Option<Head>>,
}

impl SledEngine {
    /// Open (or create) the store under `dir`. A store written before values were kept in
    /// pieces is copied into the current layout first, once.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`SledEngine::open`], with a page cache of `cache_bytes` (sled's count of the pages
    /// it holds; what they take in memory is somewhat more).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let store = migrate::open_layout(dir)?;
        Self::open_sled(&store, cache_bytes)
    }

    /// Fails when another process holds the store under `dir` open; changes nothing.
    pub fn check_not_open(dir: &Path) -> Result<()> {
        match migrate::sled_dir(dir) {
            Some(sled_dir) => sled_config(&sled_dir, DEFAULT_CACHE_BYTES)
                .open()
                .map(drop)
                .map_err(backend),
            None => Ok(()),
        }
    }

    /// Open sled's files in `sled_dir`, which hold the current format.
    fn open_sled(sled_dir: &Path, cache_bytes: u64) -> Result<Self> {
        let tree = open_waiting_for_lock(sled_dir, cache_bytes)?;
        // Sled keeps its data in `db`; fsync through our own handle reaches the same inode.
        let data_file = File::open(sled_dir.join("db")).map_err(backend)?;
        let engine = Self {
            tree,
            data_file: Arc::new(data_file),
            redo: Arc::default(),
            in_pieces: Arc::default(),
        };
        engine.finish_intents()?;
        let mut in_pieces = engine.lock_in_pieces();
        for item in engine.tree.range(pieces::marker_range()) {
            let (marker, _) = item.map_err(backend)?;
            in_pieces.insert(pieces::key_behind(&marker).to_vec());
        }
        drop(in_pieces);
        engine.finish_interrupted_batch()?;
        Ok(engine)
    }

    /// Finish each change to or from pieces that a crash cut short if its head was written,
    /// undo it if not.
    fn finish_intents(&self) -> Result<()> {
        let intents: Vec<_> = self
            .tree
            .range(pieces::intent_range())
            .collect::<std::result::Result<_, _>>()
            .map_err(backend)?;
        for (intent_key, intent) in intents {
            let key = pieces::key_behind(&intent_key);
            let intent = Intent::decode(&intent).map_err(corrupt)?;
            let now = self.head_of(key)?;
            let done = match intent.new {
                Some(new) => now == Some(new),
                None => now != intent.old,
            };
            let (keep, drop) = if done {
                (intent.new, intent.old)
            } else {
                (intent.old, intent.new)
            };
            tracing::info!(
                key = %String::from_utf8_lossy(key),
                done,
                "finishing a change of a large value a crash interrupted"
            );
            if let Some(drop) = drop {
                self.remove_pieces(key, drop)?;
            }
            match keep {
                Some(_) => self.tree.insert(pieces::marker_key(key), &[][..]),
                None => self.tree.remove(pieces::marker_key(key)),
            }
            .map_err(backend)?;
            self.tree.remove(&intent_key).map_err(backend)?;
        }
        Ok(())
    }

    /// Re-apply the batch a crash interrupted, if any.
    fn finish_interrupted_batch(&self) -> Result<()> {
        let Some(record) = self.get(REDO_KEY)? else {
            return Ok(());
        };
        let ops = redo::decode(&record).ok_or(EngineError::BadRedo)?;
        tracing::info!(
            ops = ops.len(),
            "finishing a write batch a crash interrupted"
        );
        self.apply_in_order(ops)?;
        self.apply_in_order(vec![BatchOp::Delete(REDO_KEY.to_vec())])
    }

    fn lock_in_pieces(&self) -> MutexGuard<'_, HashSet<Vec<u8>>> {
        self.in_pieces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse keys the engine keeps for itself and keys long enough to grow a node past
    /// sled's blob threshold.
    fn check_keys(ops: &[BatchOp]) -> Result<()> {
        for op in ops {
            let key = match op {
                BatchOp::Put(k, _) | BatchOp::Delete(k) => k,
            };
            if key.first() >= Some(&FIRST_INTERNAL) {
                return Err(EngineError::RefusedKey {
                    len: key.len(),
                    reason: "keys from byte 0xfc up are the engine's own",
                });
            }
            if key.len() > MAX_KEY {
                return Err(EngineError::RefusedKey {
                    len: key.len(),
                    reason: "longer than the engine keeps (6 KiB)",
                });
            }
        }
        Ok(())
    }

    fn apply_in_order(&self, ops: Vec<BatchOp>) -> Result<()> {
        let mut in_pieces = self.lock_in_pieces();
        for op in ops {
            self.apply_one(&mut in_pieces, op)?;
        }
        Ok(())
    }

    /// One put or delete, in writes whose every prefix a crash may keep: a value inline over
    /// one inline is one write; a change to or from pieces records its intent, writes the new
    /// pieces, then the key (the point from which it is done), then removes the old pieces
    /// and the intent.
    fn apply_one(&self, in_pieces: &mut HashSet<Vec<u8>>, op: BatchOp) -> Result<()> {
        let (key, value) = op.into_parts();
        let old = match in_pieces.contains(&key) {
            true => self.head_of(&key)?,
            false => None,
        };
        let new = self.head_for(value.as_deref())?;
        let tree = &self.tree;
        if old.is_none() && new.is_none() {
            return match value {
                Some(v) => tree.insert(key, pieces::inline(&v)).map(drop),
                None => tree.remove(key).map(drop),
            }
            .map_err(backend);
        }
        let intent_key = pieces::intent_key(&key);
        tree.insert(intent_key.as_slice(), Intent { new, old }.encode())
            .map_err(backend)?;
        if let (Some(head), Some(value)) = (new, &value) {
            for (index, piece) in pieces::split(value) {
                tree.insert(pieces::piece_key(&key, head.gen, index), piece)
                    .map_err(backend)?;
            }
            tree.insert(pieces::marker_key(&key), &[][..])
                .map_err(backend)?;
        }
        match (new, value) {
            (Some(head), _) => tree.insert(key.as_slice(), head.encode()),
            (None, Some(v)) => tree.insert(key.as_slice(), pieces::inline(&v)),
            (None, None) => tree.remove(key.as_slice()),
        }
        .map_err(backend)?;
        if new.is_none() {
            tree.remove(pieces::marker_key(&key)).map_err(backend)?;
        }
        if let Some(old) = old {
            self.remove_pieces(&key, old)?;
        }
        tree.remove(intent_key).map_err(backend)?;
        note_head(in_pieces, key, new);
        Ok(())
    }

    /// The head a write of `value` stores: a fresh one when the value goes in pieces, `None`
    /// when it is inline or removed.
    fn head_for(&self, value: Option<&[u8]>) -> Result<Option<Head>> {
        let len = match value {
            Some(v) if v.len() > PIECE => v.len(),
            _ => return Ok(None),
        };
        if len as u64 > pieces::MAX_VALUE {
            return Err(EngineError::RefusedValue { len });
        }
        Ok(Some(Head {
            gen: self.tree.generate_id().map_err(backend)?,
            len: len as u64,
        }))
    }

    fn remove_pieces(&self, key: &[u8], head: Head) -> Result<()> {
        for index in 0..head.count() {
            self.tree
                .remove(pieces::piece_key(key, head.gen, index))
                .map_err(backend)?;
        }
        Ok(())
    }

    /// The batch through sled's own atomic batch (which writes its io buffer twice).
    fn apply_sled_batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        let mut in_pieces = self.lock_in_pieces();
        let mut staged = Staged::default();
        for op in ops {
            self.stage(&in_pieces, &mut staged, op)?;
        }
        self.tree.apply_batch(staged.batch).map_err(backend)?;
        for (key, head) in staged.heads {
            note_head(&mut in_pieces, key, head);
        }
        Ok(())
    }

    /// Add `op`'s sled writes to `staged`: the value inline or its pieces and head, and the
    /// removal of the pieces it replaces. The batch is atomic, so no intent is needed.
    fn stage(&self, in_pieces: &HashSet<Vec<u8>>, staged: &mut Staged, op: BatchOp) -> Result<()> {
        let (key, value) = op.into_parts();
        let old = match staged.heads.get(&key) {
            Some(head) => *head,
            None if in_pieces.contains(&key) => self.head_of(&key)?,
            None => None,
        };
        let new = self.head_for(value.as_deref())?;
        let batch = &mut staged.batch;
        if let Some(old) = old {
            for index in 0..old.count() {
                batch.remove(pieces::piece_key(&key, old.gen, index));
            }
        }
        match (new, value) {
            (Some(head), Some(value)) => {
                for (index, piece) in pieces::split(&value) {
                    batch.insert(pieces::piece_key(&key, head.gen, index), piece);
                }
                batch.insert(key.as_slice(), head.encode());
                batch.insert(pieces::marker_key(&key), &[][..]);
            }
            (_, Some(value)) => {
                batch.insert(key.as_slice(), pieces::inline(&value));
                batch.remove(pieces::marker_key(&key));
            }
            (_, None) => {
                batch.remove(key.as_slice());
                batch.remove(pieces::marker_key(&key));
            }
        }
        staged.heads.insert(key, new);
        Ok(())
    }

    /// The head stored at `key`, if its value is in pieces.
    fn head_of(&self, key: &[u8]) -> Result<Option<Head>> {
        let Some(stored) = self.tree.get(key).map_err(backend)? else {
            return Ok(None);
        };
        match pieces::decode(&stored).map_err(corrupt)? {
            Stored::InPieces(head) => Ok(Some(head)),
            Stored::Inline(_) => Ok(None),
        }
    }

    /// The value of `key` as stored: `stored` is what its key held when read. `None` when a
    /// writer removed the key meanwhile.
    fn value_of(&self, key: &[u8], mut stored: sled::IVec) -> Result<Option<Vec<u8>>> {
        loop {
            let head = match pieces::decode(&stored).map_err(corrupt)? {
                Stored::Inline(value) => return Ok(Some(value.to_vec())),
                Stored::InPieces(head) => head,
            };
            match self.read_pieces(key, head)? {
                Ok(value) => return Ok(Some(value)),
                // A writer may have replaced the value (and removed these pieces) since its
                // head was read; only a head that still names them makes the loss real.
                Err(bad) => match self.tree.get(key).map_err(backend)? {
                    Some(now) if now != stored => stored = now,
                    Some(_) => return Err(corrupt(bad)),
                    None => return Ok(None),
                },
            }
        }
    }

    /// The pieces `head` names, joined; `Err` when one is missing or the wrong length.
    fn read_pieces(
        &self,
        key: &[u8],
        head: Head,
    ) -> Result<std::result::Result<Vec<u8>, pieces::BadValue>> {
        let count = head.count();
        let first = pieces::piece_key(key, head.gen, 0);
        let last = pieces::piece_key(key, head.gen, count - 1);
        let mut value = Vec::with_capacity(head.len as usize);
        let mut index = 0;
        for item in self.tree.range(first..=last) {
            let (_, piece) = item.map_err(backend)?;
            let want = if index + 1 == count {
                head.len as usize - PIECE * (count as usize - 1)
            } else {
                PIECE
            };
            if piece.len() != want {
                return Ok(Err(pieces::BadValue::Piece { index, count }));
            }
            value.extend_from_slice(&piece);
            index += 1;
        }
        if index != count {
            return Ok(Err(pieces::BadValue::Piece { index, count }));
        }
        Ok(Ok(value))
    }

    /// Write the redo record and only `applied` of the batch's operations, as a crash would
    /// leave them.
    #[cfg(test)]
    fn write_interrupted(&self, batch: WriteBatch, applied: usize) -> Result<()> {
        let record = redo::encode(&batch.ops, redo::encoded_len(&batch.ops));
        self.apply_in_order(vec![BatchOp::Put(REDO_KEY.to_vec(), record)])?;
        self.apply_in_order(batch.ops.into_iter().take(applied).collect())
    }
}

/// Record in `in_pieces` whether `key`'s value is now in pieces (it has a head).
fn note_head(in_pieces: &mut HashSet<Vec<u8>>, key: Vec<u8>, head: Option<Head>) {
    match head {
        Some(_) => in_pieces.insert(key),
        None => in_pieces.remove(&key),
    };
}

/// `end`, kept below the engine's own keys.
fn below_internal(end: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match end {
        Bound::Included(k) | Bound::Excluded(k) if k.first() >= Some(&FIRST_INTERNAL) => {
            Bound::Excluded(vec![FIRST_INTERNAL])
        }
        Bound::Unbounded => Bound::Excluded(vec![FIRST_INTERNAL]),
        end => end,
    }
}

/// Whether `start` lies among the engine's own keys, where no caller's range does.
fn starts_internal(start: &Bound<Vec<u8>>) -> bool {
    match start {
        Bound::Included(k) | Bound::Excluded(k) => k.first() >= Some(&FIRST_INTERNAL),
        Bound::Unbounded => false,
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.tree.get(key).map_err(backend)? {
            Some(stored) => self.value_of(key, stored),
            None => Ok(None),
        }
    }

    fn scan(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<RawEntry>> {
        let mut out = Vec::new();
        if starts_internal(&start) {
            return Ok(out);
        }
        for item in self.tree.range((start, below_internal(end))) {
            let (k, stored) = item.map_err(backend)?;
            if let Some(v) = self.value_of(&k, stored)? {
                out.push((k.to_vec(), v));
            }
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn for_each_in(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        if starts_internal(&start) {
            return Ok(());
        }
        for item in self.tree.range((start, below_internal(end))) {
            let (k, stored) = item.map_err(backend)?;
            match pieces::decode(&stored).map_err(corrupt)? {
                Stored::Inline(v) => visit(&k, v),
                Stored::InPieces(_) => {
                    if let Some(v) = self.value_of(&k, stored)? {
                        visit(&k, &v);
                    }
                }
            }
        }
        Ok(())
    }

    fn last(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Result<Option<RawEntry>> {
        if starts_internal(&start) {
            return Ok(None);
        }
        let mut range = self.tree.range((start, below_internal(end)));
        while let Some(item) = range.next_back() {
            let (k, stored) = item.map_err(backend)?;
            if let Some(v) = self.value_of(&k, stored)? {
                return Ok(Some((k.to_vec(), v)));
            }
        }
        Ok(None)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        Self::check_keys(&batch.ops)?;
        // One operation is atomic by itself.
        if batch.ops.len() <= 1 {
            return self.apply_in_order(batch.ops);
        }
        let len = redo::encoded_len(&batch.ops);
        if len > MAX_REDO_BYTES {
            return self.apply_sled_batch(batch.ops);
        }
        let record = redo::encode(&batch.ops, len);
        let _owner = self.redo.lock().unwrap_or_else(|p| p.into_inner());
        self.apply_in_order(vec![BatchOp::Put(REDO_KEY.to_vec(), record)])?;
        self.apply_in_order(batch.ops)?;
        self.apply_in_order(vec![BatchOp::Delete(REDO_KEY.to_vec())])
    }

    fn write_in_order(&self, batch: WriteBatch) -> Result<()> {
        Self::check_keys(&batch.ops)?;
        self.apply_in_order(batch.ops)
    }

    fn sync(&self) -> Result<()> {
        self.tree.flush().map_err(backend)?;
        self.data_file.sync_data().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ops: &[(&[u8], Option<&[u8]>)]) -> WriteBatch {
        let mut b = WriteBatch::default();
        for (k, v) in ops {
            match v {
                Some(v) => b.put_raw(k.to_vec(), v.to_vec()),
                None => b.delete_raw(k.to_vec()),
            }
        }
        b
    }

    #[test]
    fn a_batch_a_crash_interrupted_is_finished_when_the_engine_opens_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = SledEngine::open(dir.path()).expect("open");
            e.write(batch(&[
                (b"\x01a", Some(b"old")),
                (b"\x01gone", Some(b"x")),
            ]))
            .expect("write");
            let interrupted = batch(&[
                (b"\x01a", Some(b"new")),
                (b"\x01gone", None),
                (b"\x01b", Some(b"added")),
            ]);
            e.write_interrupted(interrupted, 1).expect("partial write");
            e.sync().expect("sync");
        }
        let e = SledEngine::open(dir.path()).expect("reopen");
        assert_eq!(e.get(b"\x01a").expect("get").as_deref(), Some(&b"new"[..]));
        assert_eq!(e.get(b"\x01gone").expect("get"), None);
        assert_eq!(
            e.get(b"\x01b").expect("get").as_deref(),
            Some(&b"added"[..])
        );
        assert_eq!(
            e.get(REDO_KEY).expect("get"),
            None,
            "the record is gone once finished"
        );
        let all = e.scan(Bound::Unbounded, Bound::Unbounded, 0).expect("scan");
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn an_open_waits_for_a_store_still_closing_and_gives_up_on_one_held_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SledEngine::open(dir.path()).expect("open");
        first
            .write(batch(&[(b"\x01a", Some(b"kept"))]))
            .expect("write");
        let closing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let second = SledEngine::open(dir.path()).expect("opens once the first has closed");
        closing.join().expect("closing thread");
        assert_eq!(
            second.get(b"\x01a").expect("get").as_deref(),
            Some(&b"kept"[..])
        );
        let refused = SledEngine::open(dir.path())
            .err()
            .expect("a store held open is refused after the wait");
        let why = std::error::Error::source(&refused).map(ToString::to_string);
        assert!(
            why.as_deref().is_some_and(|w| w.contains("lock")),
            "{refused}: {why:?}"
        );
    }

    #[test]
    fn a_finished_batch_leaves_no_redo_record_and_large_batches_stay_atomic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = SledEngine::open(dir.path()).expect("open");
        e.write(batch(&[(b"\x01a", Some(b"1")), (b"\x01b", Some(b"2"))]))
            .expect("write");
        assert_eq!(e.get(REDO_KEY).expect("get"), None);
        let big = vec![7u8; MAX_REDO_BYTES];
        e.write(batch(&[(b"\x01big", Some(&big)), (b"\x01a", None)]))
            .expect("large write");
        assert_eq!(
            e.get(b"\x01big").expect("get").map(|v| v.len()),
            Some(big.len())
        );
        assert_eq!(e.get(b"\x01a").expect("get"), None);
    }

    /// The engine's own keys left in the tree (markers, pieces, a redo record).
    fn internal_keys(e: &SledEngine) -> usize {
        e.tree.range(vec![FIRST_INTERNAL]..).count()
    }

    #[test]
    fn large_values_are_kept_in_pieces_and_read_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = |n: usize, b: u8| vec![b; n];
        {
            let e = SledEngine::open(dir.path()).expect("open");
            e.write(batch(&[
                (b"\x01a", Some(&big(3 * PIECE + 17, 1))),
                (b"\x01b", Some(b"small")),
                (b"\x01c", Some(&big(PIECE + 1, 3))),
            ]))
            .expect("write");
            assert_eq!(e.get(b"\x01a").expect("get"), Some(big(3 * PIECE + 17, 1)));
            let all = e.scan(Bound::Unbounded, Bound::Unbounded, 0).expect("scan");
            let lens: Vec<usize> = all.iter().map(|(_, v)| v.len()).collect();
            assert_eq!(
                lens,
                vec![3 * PIECE + 17, 5, PIECE + 1],
                "pieces never show"
            );
            let mut seen = Vec::new();
            e.for_each_in(Bound::Unbounded, Bound::Unbounded, &mut |k, v| {
                seen.push((k.to_vec(), v.len()))
            })
            .expect("for_each_in");
            assert_eq!(seen.len(), 3);
            let last = e.last(Bound::Unbounded, Bound::Unbounded).expect("last");
            assert_eq!(
                last.map(|(k, v)| (k, v.len())),
                Some((b"\x01c".to_vec(), PIECE + 1))
            );
            e.sync().expect("sync");
        }
        // Reopened: the engine still knows which values are in pieces, so a rewrite or a
        // delete removes the old pieces.
        let e = SledEngine::open(dir.path()).expect("reopen");
        e.write(batch(&[(b"\x01a", Some(&big(2 * PIECE, 2)))]))
            .expect("a smaller large value");
        assert_eq!(e.get(b"\x01a").expect("get"), Some(big(2 * PIECE, 2)));
        e.write(batch(&[(b"\x01c", Some(b"inline now"))]))
            .expect("an inline value over one in pieces");
        assert_eq!(
            e.get(b"\x01c").expect("get").as_deref(),
            Some(&b"inline now"[..])
        );
        e.write(batch(&[(b"\x01a", None)])).expect("delete");
        assert_eq!(e.get(b"\x01a").expect("get"), None);
        assert_eq!(internal_keys(&e), 0, "no piece or marker is left behind");
    }

    #[test]
    fn a_batch_too_large_for_a_redo_record_keeps_pieces_right_when_a_key_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = SledEngine::open(dir.path()).expect("open");
        e.write(batch(&[(b"\x01k", Some(&vec![1; 5 * PIECE]))]))
            .expect("write");
        let ops: Vec<(&[u8], Option<Vec<u8>>)> = vec![
            (b"\x01k", None),
            (b"\x01k", Some(vec![2; 9 * PIECE])),
            (b"\x01k", Some(vec![3; 4 * PIECE + 1])),
            (b"\x01other", Some(vec![4; 12 * PIECE])),
        ];
        let ops: Vec<(&[u8], Option<&[u8]>)> =
            ops.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        e.write(batch(&ops)).expect("a batch over the redo limit");
        assert_eq!(e.get(b"\x01k").expect("get"), Some(vec![3; 4 * PIECE + 1]));
        assert_eq!(e.get(b"\x01other").expect("get"), Some(vec![4; 12 * PIECE]));
        // Two markers, and the pieces of the two values now stored: nothing else.
        assert_eq!(internal_keys(&e), 2 + 5 + 12);
    }

    #[test]
    fn large_values_never_make_sled_write_blob_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = SledEngine::open(dir.path()).expect("open");
        for i in 0..40u8 {
            let key = format!("\x01big-{i:03}").into_bytes();
            e.write(batch(&[(&key, Some(&vec![i; 512 << 10]))]))
                .expect("write");
        }
        e.sync().expect("sync");
        let blobs = std::fs::read_dir(dir.path().join("store/blobs")).map_or(0, |d| d.count());
        assert_eq!(blobs, 0, "sled wrote nodes as blob files");
    }

    #[test]
    fn a_change_of_a_large_value_a_crash_cut_short_is_undone_before_its_key_and_finished_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = b"\x01k".to_vec();
        let a = vec![1u8; 3 * PIECE];
        let b = vec![2u8; 5 * PIECE];
        let old = {
            let e = SledEngine::open(dir.path()).expect("open");
            e.write(batch(&[(&key, Some(&a))])).expect("write");
            e.head_of(&key).expect("head").expect("in pieces")
        };
        let new = Head {
            gen: old.gen + 1000,
            len: b.len() as u64,
        };
        // What `apply_one` writes, up to `through` of its steps; then the process dies.
        let cut = |through: usize| {
            let e = SledEngine::open(dir.path()).expect("open");
            let t = &e.tree;
            let steps: Vec<Box<dyn Fn()>> = vec![
                Box::new(|| {
                    t.insert(
                        pieces::intent_key(&key),
                        Intent {
                            new: Some(new),
                            old: Some(old),
                        }
                        .encode(),
                    )
                    .map(drop)
                    .expect("intent")
                }),
                Box::new(|| {
                    for (i, p) in pieces::split(&b) {
                        t.insert(pieces::piece_key(&key, new.gen, i), p)
                            .expect("piece");
                    }
                }),
                Box::new(|| {
                    t.insert(key.as_slice(), new.encode())
                        .map(drop)
                        .expect("head")
                }),
            ];
            for step in &steps[..through] {
                step();
            }
            e.sync().expect("sync");
        };
        cut(2);
        let e = SledEngine::open(dir.path()).expect("reopen");
        assert_eq!(e.get(&key).expect("get"), Some(a.clone()), "undone");
        assert_eq!(
            internal_keys(&e),
            1 + 3,
            "the marker and the old pieces only"
        );
        drop(e);
        cut(3);
        let e = SledEngine::open(dir.path()).expect("reopen");
        assert_eq!(e.get(&key).expect("get"), Some(b.clone()), "finished");
        assert_eq!(
            internal_keys(&e),
            1 + 5,
            "the marker and the new pieces only"
        );
        // Deleted, cut once the key is gone: finished, nothing left.
        let now = e.head_of(&key).expect("head").expect("in pieces");
        e.tree
            .insert(
                pieces::intent_key(&key),
                Intent {
                    new: None,
                    old: Some(now),
                }
                .encode(),
            )
            .expect("intent");
        e.tree.remove(key.as_slice()).expect("remove");
        e.sync().expect("sync");
        drop(e);
        let e = SledEngine::open(dir.path()).expect("reopen");
        assert_eq!(e.get(&key).expect("get"), None);
        assert_eq!(internal_keys(&e), 0);
    }

    #[test]
    fn the_engines_own_keys_and_overlong_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = SledEngine::open(dir.path()).expect("open");
        for key in [&b"\xfcx"[..], REDO_KEY, &vec![1u8; MAX_KEY + 1]] {
            let err = e.write(batch(&[(key, Some(b"v"))])).unwrap_err();
            assert!(matches!(err, EngineError::RefusedKey { .. }), "{err}");
        }
        assert_eq!(internal_keys(&e), 0, "a refused write changes nothing");
    }

    #[test]
    fn a_redo_record_that_is_not_one_is_refused() {
        assert!(redo::decode(&[9, 0, 0, 0, 1, b'k']).is_none());
        assert!(redo::decode(&[1, 0, 0, 0, 5, b'k']).is_none());
        let ops = vec![
            BatchOp::Put(b"k".to_vec(), b"v".to_vec()),
            BatchOp::Delete(b"d".to_vec()),
        ];
        let back = redo::decode(&redo::encode(&ops, redo::encoded_len(&ops))).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{ops:?}"));
    }
}
