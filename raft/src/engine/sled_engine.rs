//! [`Engine`] over sled 0.34.
//!
//! sled's `flush` ends in `sync_file_range`, which writes data pages back but is not a full
//! fsync (sled issue 1452): file size and other metadata may still be lost on power loss. So
//! [`SledEngine::sync`] follows the flush with `fdatasync` on sled's data file. Values stay far
//! below sled's blob threshold (the segment size is raised to keep it so), because blob files
//! are written beside the data file without an fsync of their own.

use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::{BatchOp, Engine, EngineError, RawEntry, Result, WriteBatch};

/// sled's blob threshold is a quarter of a segment; 8 MiB segments keep every value we
/// accept (1.5 MiB at most, and Raft entries bounded near that) inline in the data file.
const SEGMENT_SIZE: usize = 8 << 20;

/// An [`Engine`] backed by one sled database in its own directory.
#[derive(Clone)]
pub struct SledEngine {
    tree: sled::Db,
    data_file: Arc<File>,
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
        Ok(Self {
            tree,
            data_file: Arc::new(data_file),
        })
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
        // One operation is atomic by itself. sled's batches are not free: each one rolls the
        // io buffer before and after it (a write and a thread hand-off each).
        if batch.ops.len() == 1 {
            return self.write_in_order(batch);
        }
        let mut b = sled::Batch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put(k, v) => b.insert(k, v),
                BatchOp::Delete(k) => b.remove(k),
            }
        }
        self.tree.apply_batch(b).map_err(backend)
    }

    fn write_in_order(&self, batch: WriteBatch) -> Result<()> {
        // sled's log is recovered up to its first missing write, so a crash keeps a prefix.
        for op in batch.ops {
            match op {
                BatchOp::Put(k, v) => self.tree.insert(k, v).map(drop),
                BatchOp::Delete(k) => self.tree.remove(k).map(drop),
            }
            .map_err(backend)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.tree.flush().map_err(backend)?;
        self.data_file.sync_data().map_err(backend)
    }
}
