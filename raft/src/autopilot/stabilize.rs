//! A new member is promoted to voter only once it has kept up for a while, as Nomad's
//! autopilot waits out `server_stabilization_time`: a member that caught up once but keeps
//! falling behind or dropping out would, as a voter, weaken the quorum it joined.

use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::node::RaftNode;
use crate::types::NodeId;

/// Log entries a member may trail the leader by and still count as keeping up.
pub const MAX_TRAILING_ENTRIES: u64 = 1_000;

/// How long past the window a member may take to have one stable stretch of it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Wait until learner `id` has, for `window` without a break, answered the leader and trailed
/// its log by at most [`MAX_TRAILING_ENTRIES`]; a lapse starts the window again.
pub async fn wait_stable(node: &RaftNode, id: NodeId, window: Duration) -> Result<(), StoreError> {
    let started = Instant::now();
    // From the first check that saw it keeping up; `None` while it does not.
    let mut stable_since: Option<Instant> = None;
    // A member that answered within the longest election timeout is in contact: heartbeats go
    // out several times in that span.
    let contact_within = node.config().election_timeout.1;
    loop {
        let now = Instant::now();
        let (leads, last, matched) = {
            let m = node.raft().metrics().borrow().clone();
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index);
            (
                m.current_leader == Some(node.id()),
                m.last_log_index.unwrap_or(0),
                matched,
            )
        };
        if !leads {
            return Err(StoreError::NotLeader {
                leader: node.leader(),
            });
        }
        let answering = node
            .contact()
            .last_answer(id)
            .is_some_and(|t| now.duration_since(t) <= contact_within);
        let keeping_up = matched.is_some_and(|m| m + MAX_TRAILING_ENTRIES >= last);
        if !(answering && keeping_up) {
            stable_since = None;
        } else if now.duration_since(*stable_since.get_or_insert(now)) >= window {
            return Ok(());
        }
        if now.duration_since(started) > window + GIVE_UP_AFTER {
            return Err(StoreError::Unstable { id, window });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
