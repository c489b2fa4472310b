//! [`Engine`] over sled 0.34.
//!
//! sled's `flush` ends in `sync_file_range`, which writes data pages back but is not a full
//! fsync (sled issue 1452): file size and other metadata may still be lost on power loss. So
//! [`SledEngine::sync`] follows the flush with `fdatasync` on sled's data file. Values stay far
//! below sled's blob threshold (the segment size is raised to keep it so), but a node holds up
//! to 16 of them and is rewritten whole, so with large values (ConfigMaps of hundreds of KiB)
//! sled writes nodes as blob files beside the data file, without an fsync of their own:
//! [`SledEngine::sync`] fsyncs the new ones before the data file, or a power cut would leave
//! the data file pointing at a blob that holds nothing.

use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{BatchOp, Engine, EngineError, RawEntry, Result, WriteBatch};

/// sled's blob threshold is a quarter of a segment; 8 MiB segments keep every value we
/// accept (1.5 MiB at most, and Raft entries bounded near that) inline in the data file.
const SEGMENT_SIZE: usize = 8 << 20;

/// Batches up to this size go through a redo record; larger ones (a snapshot install) use
/// sled's own atomic batch. Far below sled's blob threshold, so the record stays inline.
const MAX_REDO_BYTES: usize = 1 << 20;

/// The redo record's key, under a prefix byte no key space uses. It exists only while a batch
/// is being written (and after a crash cut one short), never when readers look.
const REDO_KEY: &[u8] = b"\xffredo";

/// An [`Engine`] backed by one sled database in its own directory.
#[derive(Clone)]
pub struct SledEngine {
    tree: sled::Db,
    data_file: Arc<File>,
    /// One batch at a time owns the redo record.
    redo: Arc<Mutex<()>>,
    /// sled's blob files: where they are, and the length each had when last fsynced.
    blobs: Arc<Blobs>,
}

/// sled's blob files fsynced so far.
#[derive(Debug)]
struct Blobs {
    dir: std::path::PathBuf,
    synced: Mutex<BlobsSynced>,
}

/// Blob files are written once, in one go, right after they are created: one not written to
/// for [`BLOB_SETTLED`] after an fsync is whole on disk and needs no look again.
const BLOB_SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Default)]
struct BlobsSynced {
    /// Fsynced, and not written to since.
    settled: std::collections::HashSet<std::ffi::OsString>,
    /// Fsynced recently: the length each had just before, and when.
    recent: std::collections::HashMap<std::ffi::OsString, (u64, std::time::Instant)>,
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
    EngineError::Backend(Box::new(e))
}

impl SledEngine {
    /// Open (or create) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let tree = sled::Config::new()
            .path(dir)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(64 << 20)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(backend)?;
        // Sled keeps its data in `<dir>/db`; fsync through our own handle reaches the same inode.
        let data_file = File::open(dir.join("db")).map_err(backend)?;
        let engine = Self {
            tree,
            data_file: Arc::new(data_file),
            redo: Arc::default(),
            blobs: Arc::new(Blobs {
                dir: dir.join("blobs"),
                synced: Mutex::default(),
            }),
        };
        engine.finish_interrupted_batch()?;
        Ok(engine)
    }

    /// Re-apply the batch a crash interrupted, if any.
    fn finish_interrupted_batch(&self) -> Result<()> {
        let Some(record) = self.tree.get(REDO_KEY).map_err(backend)? else {
            return Ok(());
        };
        let ops = redo::decode(&record).ok_or(EngineError::BadRedo)?;
        tracing::info!(
            ops = ops.len(),
            "finishing a write batch a crash interrupted"
        );
        self.apply_in_order(ops)?;
        self.tree.remove(REDO_KEY).map_err(backend)?;
        Ok(())
    }

    fn apply_in_order(&self, ops: Vec<BatchOp>) -> Result<()> {
        // sled's log is recovered up to its first missing write, so a crash keeps a prefix.
        for op in ops {
            match op {
                BatchOp::Put(k, v) => self.tree.insert(k, v).map(drop),
                BatchOp::Delete(k) => self.tree.remove(k).map(drop),
            }
            .map_err(backend)?;
        }
        Ok(())
    }

    /// The batch through sled's own atomic batch (which writes its io buffer twice).
    fn apply_sled_batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        let mut b = sled::Batch::default();
        for op in ops {
            match op {
                BatchOp::Put(k, v) => b.insert(k, v),
                BatchOp::Delete(k) => b.remove(k),
            }
        }
        self.tree.apply_batch(b).map_err(backend)
    }

    /// Write the redo record and only `applied` of the batch's operations, as a crash would
    /// leave them.
    #[cfg(test)]
    fn write_interrupted(&self, batch: WriteBatch, applied: usize) -> Result<()> {
        self.tree
            .insert(
                REDO_KEY,
                redo::encode(&batch.ops, redo::encoded_len(&batch.ops)),
            )
            .map_err(backend)?;
        self.apply_in_order(batch.ops.into_iter().take(applied).collect())
    }
}

impl Blobs {
    /// fsync every blob file written to since its last fsync, then the folder that names
    /// them. With small values there is none, and this reads an empty folder.
    fn sync_new(&self) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut settled = std::collections::HashSet::with_capacity(synced.settled.len());
        let mut recent = std::collections::HashMap::new();
        let mut any = false;
        for entry in entries {
            let name = entry?.file_name();
            if synced.settled.contains(&name) {
                settled.insert(name);
                continue;
            }
            // sled removes blobs it no longer needs at any time.
            let path = self.dir.join(&name);
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match synced.recent.get(&name) {
                // Nothing written since it was fsynced at this length.
                Some(&(at_len, at)) if at_len == len => {
                    if at.elapsed() >= BLOB_SETTLED {
                        settled.insert(name);
                    } else {
                        recent.insert(name, (at_len, at));
                    }
                    continue;
                }
                _ => {}
            }
            let at = std::time::Instant::now();
            match File::open(&path) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            any = true;
            recent.insert(name, (len, at));
        }
        if any {
            File::open(&self.dir)?.sync_all()?;
        }
        synced.settled = settled;
        synced.recent = recent;
        Ok(())
    }
}

/// The redo record: the batch's operations, length-prefixed.
mod redo {
    use super::BatchOp;

    const PUT: u8 = 1;
    const DELETE: u8 = 2;

    pub(super) fn encoded_len(ops: &[BatchOp]) -> usize {
        ops.iter()
            .map(|op| match op {
                BatchOp::Put(k, v) => 9 + k.len() + v.len(),
                BatchOp::Delete(k) => 5 + k.len(),
            })
            .sum()
    }

    /// `len` is [`encoded_len`] of `ops`.
    pub(super) fn encode(ops: &[BatchOp], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let bytes = |b: &[u8], out: &mut Vec<u8>| {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        };
        for op in ops {
            match op {
                BatchOp::Put(k, v) => {
                    out.push(PUT);
                    bytes(k, &mut out);
                    bytes(v, &mut out);
                }
                BatchOp::Delete(k) => {
                    out.push(DELETE);
                    bytes(k, &mut out);
                }
            }
        }
        out
    }

    /// `None` when the record is not what [`encode`] wrote.
    pub(super) fn decode(mut rec: &[u8]) -> Option<Vec<BatchOp>> {
        fn bytes(rec: &mut &[u8]) -> Option<Vec<u8>> {
            let (len, rest) = rec.split_first_chunk::<4>()?;
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return None;
            }
            let (b, rest) = rest.split_at(len);
            *rec = rest;
            Some(b.to_vec())
        }
        let mut ops = Vec::new();
        while let Some((&kind, rest)) = rec.split_first() {
            rec = rest;
            ops.push(match kind {
                PUT => {
                    let k = bytes(&mut rec)?;
                    BatchOp::Put(k, bytes(&mut rec)?)
                }
                DELETE => BatchOp::Delete(bytes(&mut rec)?),
                _ => return None,
            });
        }
        Some(ops)
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<RawEntry>> {
        let mut out = Vec::new();
        for item in self.tree.range((start, end)) {
            let (k, v) = item.map_err(backend)?;
            out.push((k.to_vec(), v.to_vec()));
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        for item in self.tree.iter() {
            let (k, v) = item.map_err(backend)?;
            visit(&k, &v);
        }
        Ok(())
    }

    fn last(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Result<Option<RawEntry>> {
        match self.tree.range((start, end)).next_back() {
            Some(item) => {
                let (k, v) = item.map_err(backend)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
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
        self.tree.insert(REDO_KEY, record).map_err(backend)?;
        self.apply_in_order(batch.ops)?;
        self.tree.remove(REDO_KEY).map_err(backend)?;
        Ok(())
    }

    fn write_in_order(&self, batch: WriteBatch) -> Result<()> {
        self.apply_in_order(batch.ops)
    }

    fn sync(&self) -> Result<()> {
        // Blobs first: once the data file is durable, what it points to must be.
        self.blobs.sync_new().map_err(backend)?;
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
