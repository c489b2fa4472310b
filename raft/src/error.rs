//! Errors of the store as its callers (the gRPC services) see them.

use openraft::error::{ChangeMembershipError, ClientWriteError, Fatal, InitializeError};
use openraft::BasicNode;

use crate::engine::EngineError;
use crate::types::NodeId;

/// Errors of [`crate::node::RaftNode`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// This member is not the leader; `leader` is the one it knows, if any. Retry there.
    #[error("not the leader (leader: {})", match leader { Some((id, addr)) => format!("{id} at {addr}"), None => "unknown".into() })]
    NotLeader {
        /// The leader's id and address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// The local store failed.
    #[error(transparent)]
    Storage(#[from] EngineError),
    /// Raft has stopped on this member (shut down or a fatal storage error).
    #[error("raft stopped")]
    Fatal(#[source] Fatal<NodeId>),
    /// A membership change was refused (for example, one is already in progress).
    #[error("membership change refused")]
    Membership(#[source] ChangeMembershipError<NodeId>),
    /// Initialising the cluster was refused (it already has state).
    #[error("cannot initialise")]
    Initialize(#[source] InitializeError<NodeId, BasicNode>),
    /// The write batcher has stopped (the member is shutting down).
    #[error("the write path is stopped")]
    Stopped,
    /// Leadership was not handed over.
    #[error("leadership not handed over")]
    Handover(#[source] crate::handover::HandoverError),
    /// A new member did not keep up with the leader long enough to be promoted.
    #[error(
        "member {id} did not keep up with the leader for {window:?} in a row; it stays a learner"
    )]
    Unstable {
        /// The member.
        id: NodeId,
        /// How long it had to keep up.
        window: std::time::Duration,
    },
    /// The named member is not part of the cluster.
    #[error("member {0} is not in the cluster")]
    UnknownMember(NodeId),
}

/// Result of store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<openraft::error::RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> for StoreError {
    fn from(e: openraft::error::RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Self {
        match e {
            openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                StoreError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                }
            }
            openraft::error::RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                StoreError::Membership(c)
            }
            openraft::error::RaftError::Fatal(f) => StoreError::Fatal(f),
        }
    }
}
