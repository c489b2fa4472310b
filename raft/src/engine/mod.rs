//! The narrow storage seam under the Raft log and the state machine.
//!
//! Raft code never touches sled directly: it sees an [`Engine`] — ordered byte keys, atomic
//! write batches and an explicit durability barrier — and typed key spaces over it
//! ([`crate::keyspace`]). Replacing sled means writing one more `Engine` impl.

mod sled_engine;

use std::ops::Bound;

pub use sled_engine::{SledEngine, DEFAULT_CACHE_BYTES};

/// Errors of a storage engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's own I/O or corruption error.
    #[error("storage engine failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored value could not be decoded: the data on disk is not what this version wrote.
    #[error("corrupt value in key space {space}")]
    Decode {
        /// The key space the value was read from.
        space: &'static str,
        /// Why decoding failed.
        #[source]
        source: bincode::Error,
    },
    /// The record of a batch a crash interrupted cannot be read back, so the batch cannot be
    /// finished.
    #[error("corrupt record of an interrupted write batch")]
    BadRedo,
    /// A stored value is damaged: its layout is not one this build writes, or a part of it
    /// is missing.
    #[error("corrupt value in the store")]
    Corrupt(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A key the engine does not take.
    #[error("refused a key of {len} bytes: {reason}")]
    RefusedKey {
        /// The key's length.
        len: usize,
        /// Why.
        reason: &'static str,
    },
    /// A value larger than the engine keeps.
    #[error("refused a value of {len} bytes: larger than the engine keeps (1 GiB)")]
    RefusedValue {
        /// The value's length.
        len: usize,
    },
    /// The store on disk is in a format this build does not read.
    #[error("the store in {dir} is in engine format {found}; this build reads format {supported}")]
    Format {
        /// The store's directory.
        dir: std::path::PathBuf,
        /// The format its directory names.
        found: String,
        /// The format this build reads.
        supported: u32,
    },
    /// A stored key does not have the layout its key space expects.
    #[error("corrupt key in key space {space}")]
    BadKey {
        /// The key space the key was read from.
        space: &'static str,
    },
}

/// Result of engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key` if present.
    Delete(Vec<u8>),
}

impl BatchOp {
    /// The key, and the value it is set to (`None`: removed).
    pub fn into_parts(self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            Self::Put(k, v) => (k, Some(v)),
            Self::Delete(k) => (k, None),
        }
    }
}

/// A set of writes applied all-or-nothing.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub(crate) ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Queue a put.
    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put(key, value));
    }
    /// Queue a delete.
    pub fn delete_raw(&mut self, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete(key));
    }
    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key and its value as stored.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// An ordered key-value engine with atomic batches and a real durability barrier. Keys from
/// byte `0xfc` up are the engine's own: writes of them are refused, and scans never show them.
pub trait Engine: Send + Sync + 'static {
    /// Read one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Keys in `[start, end)` order, at most `limit` of them (`0` = no limit).
    fn scan(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<RawEntry>>;
    /// Visit the records in `[start, end)` in key order, without copying them out first.
    fn for_each_in(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        for (k, v) in self.scan(start, end, 0)? {
            visit(&k, &v);
        }
        Ok(())
    }
    /// The last key in range, if any.
    fn last(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Result<Option<RawEntry>>;
    /// Apply a batch atomically. Not yet durable: see [`Engine::sync`].
    fn write(&self, batch: WriteBatch) -> Result<()>;
    /// Apply a batch's operations one after another, without the cost of atomicity: a crash
    /// may keep any prefix of them (never a later one without the earlier). For writes whose
    /// every prefix is a valid state, such as appending log entries. Not yet durable either.
    fn write_in_order(&self, batch: WriteBatch) -> Result<()> {
        self.write(batch)
    }
    /// Make every completed write durable against power loss (a full fsync, not only
    /// a page-cache write-back).
    fn sync(&self) -> Result<()>;
}
