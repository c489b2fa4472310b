//! Forwards client writes from a follower to the leader, batched.
//!
//! A follower that receives writes queues them; one task sends everything queued as a single
//! `ForwardWrites` RPC to the leader (a few in flight at once), and the leader proposes them
//! through its own batcher. One RPC per batch instead of one per write keeps the follower →
//! leader hop cheap under load. A failed RPC fails its writes as "no leader": the client
//! retries them with the same request ids, so none is applied twice.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::Channel;

use crate::error::{Result, StoreError};
use crate::mvcc::TxnResult;
use crate::types::Write;

/// Most writes in one forwarded batch.
const MAX_BATCH: usize = 1024;
/// Forwarded batches in flight at once.
const MAX_IN_FLIGHT: usize = 2;

/// The outcome of one forwarded write, as the leader reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardOutcome {
    /// Applied.
    Applied(TxnResult),
    /// The receiver is not the leader (or lost leadership); retry.
    NotLeader,
    /// The receiver could not serve it; retry.
    Unavailable(String),
}

impl From<Result<TxnResult>> for ForwardOutcome {
    fn from(r: Result<TxnResult>) -> Self {
        match r {
            Ok(t) => ForwardOutcome::Applied(t),
            Err(StoreError::NotLeader { .. }) => ForwardOutcome::NotLeader,
            Err(e) => ForwardOutcome::Unavailable(e.to_string()),
        }
    }
}

struct Pending {
    write: Write,
    leader: Channel,
    reply: oneshot::Sender<Result<TxnResult>>,
}

/// Handle to the forwarding task.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Pending>,
}

impl Forwarder {
    /// Start forwarding for cluster `cluster_id`.
    pub fn start(cluster_id: String) -> Self {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(run(cluster_id, rx));
        Self { tx }
    }

    /// Send `write` to the leader at `leader` and wait for its result.
    pub async fn forward(&self, leader: Channel, write: Write) -> Result<TxnResult> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                write,
                leader,
                reply,
            })
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

async fn run(cluster_id: String, mut rx: mpsc::Receiver<Pending>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let cluster_id = cluster_id.clone();
        tokio::spawn(async move {
            send_batch(cluster_id, batch).await;
            drop(permit);
        });
    }
}

async fn send_batch(cluster_id: String, batch: Vec<Pending>) {
    // Writes queued while the leader changed may name different leaders; the batch goes to
    // the leader of its first write, and a wrong one answers NotLeader.
    let leader = batch[0].leader.clone();
    let (writes, replies): (Vec<Write>, Vec<_>) =
        batch.into_iter().map(|p| (p.write, p.reply)).unzip();
    let outcome = async {
        let payload = bincode::serialize(&writes).map_err(|e| e.to_string())?;
        let mut client = crate::network::raft_client(leader);
        let reply = client
            .forward_writes(crate::network::raft_request(cluster_id, payload))
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        bincode::deserialize::<Vec<ForwardOutcome>>(&reply.payload).map_err(|e| e.to_string())
    }
    .await;
    match outcome {
        Ok(results) if results.len() == replies.len() => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(match r {
                    ForwardOutcome::Applied(t) => Ok(t),
                    ForwardOutcome::NotLeader | ForwardOutcome::Unavailable(_) => {
                        Err(StoreError::NotLeader { leader: None })
                    }
                });
            }
        }
        other => {
            tracing::debug!(error = ?other.err(), "forwarding writes to the leader failed");
            for reply in replies {
                let _ = reply.send(Err(StoreError::NotLeader { leader: None }));
            }
        }
    }
}
