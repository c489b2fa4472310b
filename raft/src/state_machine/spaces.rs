//! The key spaces of the state machine.

use openraft::StoredMembership;
use serde::{Deserialize, Serialize};

use crate::keyspace::KeySpace;
use crate::mvcc::{Event, TxnResult};
use crate::types::{LogId, NodeId, RequestId};

/// A live key: `user key → StoredKv`.
pub(crate) struct KvSpace;
impl KeySpace for KvSpace {
    const NAME: &'static str = "kv";
    const PREFIX: u8 = 10;
    type Key = Vec<u8>;
    type Value = StoredKv;
}

/// The retained change history, one record per applied batch:
/// `last revision of the batch → [(revision, event)]`. One record per batch rather than per
/// event keeps the write cost of history to one engine insert per Raft apply.
pub(crate) struct HistorySpace;
impl KeySpace for HistorySpace {
    const NAME: &'static str = "history";
    const PREFIX: u8 = 11;
    type Key = u64;
    type Value = Vec<(u64, Event)>;
}

/// The applied state, one record written with every applied batch.
pub(crate) struct AppliedSpace;
impl KeySpace for AppliedSpace {
    const NAME: &'static str = "applied";
    const PREFIX: u8 = 12;
    type Key = u64;
    type Value = AppliedState;
}

/// Results of writes that carried a request id: `request id → (time_ms, result)`.
pub(crate) struct RequestSpace;
impl KeySpace for RequestSpace {
    const NAME: &'static str = "requests";
    const PREFIX: u8 = 13;
    type Key = RequestId;
    type Value = (u64, TxnResult);
}

/// The request ids of each applied batch, for expiry:
/// `(time_ms, log index of the batch) → [request id]`.
pub(crate) struct RequestBucketSpace;
impl KeySpace for RequestBucketSpace {
    const NAME: &'static str = "request-buckets";
    const PREFIX: u8 = 14;
    type Key = (u64, u128);
    type Value = Vec<u128>;
}

/// The single key of [`AppliedSpace`].
pub(crate) const APPLIED_KEY: u64 = 0;

/// A key's value and revisions as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredKv {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

/// What the state machine has applied, stored atomically with the data it describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    /// The last applied log id.
    pub last_applied: Option<LogId>,
    /// The last applied membership.
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    /// The store revision: how many write transactions changed something.
    pub revision: u64,
    /// History at and below this revision has been removed.
    pub compacted: u64,
}
