//! Coalesces linearizable read barriers.
//!
//! A linearizable read needs a read index taken after the read arrived, confirmed by a quorum
//! of heartbeats. Callers queue; one task takes every queued caller, gets one read index for
//! all of them (each arrived before it was taken, so each is served correctly), and answers
//! them together. Callers that arrive meanwhile share the next one. Under load this turns one
//! heartbeat round per read into one per batch.

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};
use crate::types::Raft;

type Waiter = oneshot::Sender<Result<()>>;

/// Handle to the barrier task.
#[derive(Clone)]
pub struct ReadBarrier {
    tx: mpsc::Sender<Waiter>,
}

impl ReadBarrier {
    /// Start the barrier task for `raft`.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Wait until the local state machine reflects everything committed before this call.
    pub async fn wait(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

/// Commit an empty entry in the current term. A leader that resumed its term after a restart
/// (openraft does so when its vote was committed) may not yet know that entries already in
/// its log were committed before the crash; its read index would then be too low and a read
/// could miss an acknowledged write. Once an entry of its own is committed, everything
/// before it is committed too, and the read index covers it.
async fn confirm_term(raft: &Raft) -> Result<()> {
    let request = crate::types::Request {
        time_ms: crate::batcher::now_ms(),
        writes: Vec::new(),
    };
    raft.client_write(request)
        .await
        .map(|_| ())
        .map_err(StoreError::from)
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Waiter>) {
    let mut confirmed_term = None;
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let term = raft.metrics().borrow().current_term;
        if confirmed_term != Some(term) {
            match confirm_term(&raft).await {
                Ok(()) => confirmed_term = Some(term),
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(match &e {
                            StoreError::NotLeader { leader } => StoreError::NotLeader {
                                leader: leader.clone(),
                            },
                            _ => StoreError::Stopped,
                        }));
                    }
                    continue;
                }
            }
        }
        let outcome = raft.ensure_linearizable().await;
        for w in waiters {
            let _ = w.send(match &outcome {
                Ok(_) => Ok(()),
                Err(e) => Err(to_store_error(e)),
            });
        }
    }
}

fn to_store_error(
    e: &RaftError<crate::NodeId, CheckIsLeaderError<crate::NodeId, openraft::BasicNode>>,
) -> StoreError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => StoreError::NotLeader {
            leader: f
                .leader_id
                .zip(f.leader_node.as_ref().map(|n| n.addr.clone())),
        },
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => {
            StoreError::NotLeader { leader: None }
        }
        RaftError::Fatal(f) => StoreError::Fatal(f.clone()),
    }
}
