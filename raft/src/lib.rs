//! Skiff's replicated state store: openraft 0.9 over sled.
//!
//! ```text
//!   client write ─▶ [store::Store] batcher ─▶ openraft ─▶ log_store (sled, fsync) ─▶ peers
//!                                                │ committed
//!                                                ▼
//!                             state_machine (sled: kv, history, applied) ─▶ watch feed
//! ```
//!
//! - [`engine`]: the narrow storage seam (sled behind it).
//! - [`keyspace`]: typed key spaces over an engine.
//! - [`log_store`]: the Raft log.
//! - [`autopilot`]: new members promoted once stable, dead ones removed.
//! - [`handover`]: a leader hands leadership to another voter before it stops.
//! - [`eager_replication`]: a leader's appends sent to followers before its own fsync ends.
//! - [`state_machine`]: MVCC key-value state, snapshots, watch.
//! - [`mvcc`]: the data model (transactions, key-values, events).

pub mod autopilot;
pub mod backup;
pub mod batcher;
pub mod disk;
pub mod eager_replication;
pub mod engine;
pub mod error;
pub mod forwarder;
pub mod grpc;
pub mod handover;
pub mod keyspace;
pub mod log_store;
pub mod mvcc;
pub mod network;
pub mod node;
pub mod read_barrier;
pub mod state_machine;
pub mod stats;
pub mod types;
pub mod versions;

pub use error::{Result, StoreError};
pub use node::{NodeConfig, RaftNode};
pub use types::{NodeId, Request, RequestId, Response, TypeConfig, Write};
