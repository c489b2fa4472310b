//! openraft's type configuration and the payload of a Raft entry.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::mvcc::{Txn, TxnResult};

/// Identifies a client write so a retried write is applied at most once. `0` means "no id".
pub type RequestId = u128;

/// One client write inside a Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// Dedup key; remembered by the state machine for [`crate::state_machine::REQUEST_ID_TTL_MS`].
    pub request_id: RequestId,
    /// The transaction to apply.
    pub txn: Txn,
}

/// The application data of a Raft entry: several client writes, coalesced by the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Wall-clock milliseconds on the leader when proposed. Apply uses this, never a local
    /// clock, so every member computes the same state.
    pub time_ms: u64,
    /// Writes applied in order, each with its own revision.
    pub writes: Vec<Write>,
}

/// What applying a [`Request`] produced: one result per write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Results in the order of [`Request::writes`].
    pub results: Vec<TxnResult>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request({} writes)", self.writes.len())
    }
}

/// Identifies a member of the Raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Skiff's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log entry of Skiff.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id of Skiff's Raft.
pub type LogId = openraft::LogId<NodeId>;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<NodeId>;
