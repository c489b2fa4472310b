//! Handing leadership to another voter, so that a leader's planned stop costs no election
//! timeout.
//!
//! openraft 0.9 has no leader transfer; this builds one from ordinary Raft. The leader holds
//! new proposals back (the write gate), waits until the chosen voter holds its whole log, stops
//! its heartbeats and asks the voter to campaign. The voter's election is at a higher term
//! with a log as long as anyone's, so the old leader grants it: its own leader lease (the time
//! within which a member refuses to vote away from a leader it has heard) ran out once
//! `election_timeout_max` had passed since it was elected. In a cluster of three, the old
//! leader and the voter are a majority and the voter wins in one round trip; in a larger one
//! the others grant once their lease has run out, which the stopped heartbeats make happen
//! within `election_timeout_max`. Writes held back meanwhile then find a follower and follow
//! the new leader, as after any election.
//!
//! ```text
//!  leader:  close gate ─▶ wait voter caught up ─▶ heartbeats off ─▶ Campaign ─▶ voter elected
//!           ◀─ reopen gate, heartbeats on ◀──────────────── (old leader now a follower)
//! ```

use std::time::Duration;

use tokio::sync::RwLock;

use crate::network::{raft_client, raft_request};
use crate::node::RaftNode;
use crate::types::{LogId, NodeId};

/// Why leadership was not handed over. The cluster keeps its leader (or, if the voter's
/// election failed half-way, elects one as after any leader loss).
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// Only the leader hands leadership over.
    #[error("this member is not the leader")]
    NotLeader,
    /// There is no other voter to take over.
    #[error("there is no other voter to hand leadership to")]
    NoOtherVoter,
    /// The chosen member cannot lead.
    #[error("member {0} is not a voter of the cluster")]
    NotAVoter(NodeId),
    /// The chosen voter did not catch up with the leader's log in time.
    #[error(
        "member {id} did not catch up with the leader's log (it holds {matched} of {last} entries)"
    )]
    NotCaughtUp {
        /// The voter.
        id: NodeId,
        /// The last index it holds, as the leader knows.
        matched: u64,
        /// The leader's last index.
        last: u64,
    },
    /// The voter could not be asked to campaign.
    #[error("asking member {id} to campaign: {reason}")]
    Campaign {
        /// The voter.
        id: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// No new leader was seen in time.
    #[error("no new leader within {0:?}")]
    NoNewLeader(Duration),
}

/// What a campaign request carries: the last log entry of the leader that sent it. The voter
/// campaigns only if it holds it, so it cannot lose for a shorter log.
pub(crate) type CampaignRequest = LogId;

/// Hand leadership to `to`, or to the voter furthest along when `None`; returns the new
/// leader. `gate` is the write gate the batcher passes each proposal through.
pub(crate) async fn hand_over(
    node: &RaftNode,
    gate: &RwLock<()>,
    to: Option<NodeId>,
) -> Result<NodeId, HandoverError> {
    let raft = node.raft();
    let timeout = node.config().election_timeout.1 * 4;
    let metrics = raft.metrics().borrow().clone();
    if metrics.current_leader != Some(node.id()) {
        return Err(HandoverError::NotLeader);
    }
    let membership = metrics.membership_config.membership().clone();
    let target = match to {
        Some(id) if id == node.id() => return Ok(id),
        Some(id) if membership.voter_ids().any(|v| v == id) => id,
        Some(id) => return Err(HandoverError::NotAVoter(id)),
        None => membership
            .voter_ids()
            .filter(|v| *v != node.id())
            .max_by_key(|v| matched(node, *v))
            .ok_or(HandoverError::NoOtherVoter)?,
    };
    let addr = membership
        .get_node(&target)
        .map(|n| n.addr.clone())
        .ok_or(HandoverError::NotAVoter(target))?;

    // Nothing new is proposed from here on: the proposal in flight finishes first.
    let _closed = gate.write().await;
    tracing::info!(to = target, "handing leadership over");
    let last = caught_up(node, target, timeout).await?;
    let _quiet = HeartbeatsOff::new(raft);
    campaign(node, target, &addr, last, timeout).await
}

/// The leader's heartbeats, off while this lives: on again however the handover ends, also
/// when its caller gives up on it (a dropped future), or a later term of this member would
/// lead without them.
struct HeartbeatsOff<'a>(&'a crate::types::Raft);

impl<'a> HeartbeatsOff<'a> {
    fn new(raft: &'a crate::types::Raft) -> Self {
        raft.runtime_config().heartbeat(false);
        Self(raft)
    }
}

impl Drop for HeartbeatsOff<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

/// The last log index `id` holds, as this leader knows.
fn matched(node: &RaftNode, id: NodeId) -> u64 {
    node.raft()
        .metrics()
        .borrow()
        .replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .map(|l| l.index)
        .unwrap_or(0)
}

/// Wait until `target` holds this leader's last entry; returns that entry's id.
async fn caught_up(
    node: &RaftNode,
    target: NodeId,
    timeout: Duration,
) -> Result<LogId, HandoverError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (last, held) = {
            let m = node.raft().metrics().borrow().clone();
            if m.current_leader != Some(node.id()) {
                return Err(HandoverError::NotLeader);
            }
            let held = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&target).cloned().flatten());
            (m.last_log_index.unwrap_or(0), held)
        };
        // What the leader counts as matched is a prefix of its own log.
        match held {
            Some(held) if held.index >= last => return Ok(held),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(HandoverError::NotCaughtUp {
                    id: target,
                    matched: held.map(|l| l.index).unwrap_or(0),
                    last,
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Ask `target` to campaign, then wait until this member sees another leader.
async fn campaign(
    node: &RaftNode,
    target: NodeId,
    addr: &str,
    last: LogId,
    timeout: Duration,
) -> Result<NodeId, HandoverError> {
    let failed = |reason: String| HandoverError::Campaign { id: target, reason };
    let channel = node
        .channels()
        .get(addr)
        .map_err(|e| failed(e.to_string()))?;
    let payload = bincode::serialize(&last).map_err(|e| failed(e.to_string()))?;
    raft_client(channel)
        .campaign(raft_request(node.config().cluster_id.clone(), payload))
        .await
        .map_err(|s| failed(s.message().to_string()))?;
    let new_leader = node
        .raft()
        .wait(Some(timeout))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != m.id),
            "another member leads",
        )
        .await
        .map_err(|_| HandoverError::NoNewLeader(timeout))?;
    let leader = new_leader
        .current_leader
        .ok_or(HandoverError::NoNewLeader(timeout))?;
    tracing::info!(leader, "leadership handed over");
    Ok(leader)
}
