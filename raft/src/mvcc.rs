//! The data model of the replicated key-value store, as etcd has it: one global revision,
//! keys with create/mod revisions and a version, and transactions of compares followed by
//! success or failure operations.

use serde::{Deserialize, Serialize};

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since its last deletion).
    pub create_revision: u64,
    /// Revision of the transaction that last changed the key.
    pub mod_revision: u64,
    /// Number of changes since creation; 1 after the create.
    pub version: u64,
}

/// A condition a transaction checks before choosing its branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key exists and was last modified at exactly this revision.
    ModRevision {
        /// Key checked.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Expected `mod_revision`; `0` means "the key is absent".
        revision: u64,
    },
    /// The key exists.
    Exists {
        /// Key checked.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// The key does not exist.
    Absent {
        /// Key checked.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set a key.
    Put {
        /// Key written.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// New value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// Key removed.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Remove every key that starts with `prefix`.
    DeletePrefix {
        /// Prefix removed.
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
    },
    /// Read a key as of the transaction (used by failure branches to report the current value).
    Get {
        /// Key read.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Set a key without reporting its previous value (etcd's put without `prev_kv`). The
    /// result, which is kept for retries and travels back through a forwarding follower, then
    /// carries no copy of the old value. Last, so entries written before it still decode.
    PutNoPrev {
        /// Key written.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// New value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

/// A compare-and-swap transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// All must hold for the success branch to run.
    pub compares: Vec<Compare>,
    /// Run when every compare holds.
    pub success: Vec<Op>,
    /// Run otherwise.
    pub failure: Vec<Op>,
}

impl Txn {
    /// A plain put, as a transaction without compares.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            success: vec![Op::Put {
                key: key.into(),
                value: value.into(),
            }],
            ..Default::default()
        }
    }
    /// A plain delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self {
            success: vec![Op::Delete { key: key.into() }],
            ..Default::default()
        }
    }
    /// A plain prefix delete.
    pub fn delete_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            success: vec![Op::DeletePrefix {
                prefix: prefix.into(),
            }],
            ..Default::default()
        }
    }
    /// Bytes of keys and values this transaction carries; bounds Raft entry sizes.
    pub fn payload_len(&self) -> usize {
        let op_len = |op: &Op| match op {
            Op::Put { key, value } | Op::PutNoPrev { key, value } => key.len() + value.len(),
            Op::Delete { key } | Op::Get { key } => key.len(),
            Op::DeletePrefix { prefix } => prefix.len(),
        };
        let cmp_len = |c: &Compare| match c {
            Compare::ModRevision { key, .. }
            | Compare::Exists { key }
            | Compare::Absent { key } => key.len() + 8,
        };
        self.compares.iter().map(cmp_len).sum::<usize>()
            + self.success.iter().map(op_len).sum::<usize>()
            + self.failure.iter().map(op_len).sum::<usize>()
    }
}

/// What one operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// A put; carries the previous value if there was one.
    Put {
        /// The key's value before the put.
        prev: Option<KeyValue>,
    },
    /// A delete or prefix delete; carries what was removed.
    Delete {
        /// The removed keys with their last values.
        prev: Vec<KeyValue>,
    },
    /// A get.
    Get {
        /// The key's value, if present.
        kv: Option<KeyValue>,
    },
}

/// The outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// The store revision after the transaction (its own revision if it wrote).
    pub revision: u64,
    /// One result per operation of the branch that ran.
    pub ops: Vec<OpResult>,
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A key was created or changed.
    Put,
    /// A key was removed.
    Delete,
}

/// One change, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete, the key with empty value and
    /// `mod_revision` set to the deleting revision.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev: Option<KeyValue>,
}
