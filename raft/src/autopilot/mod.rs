//! The leader's autopilot, after Nomad's: members promoted only once stable
//! ([`stabilize`]), dead voters removed when that keeps the cluster's fault tolerance
//! ([`dead`]), and a removed member kept from coming back with stale data ([`removal`]).
//!
//! ```text
//!  every second, while leading:  silent_for(voter) = now - max(last answer, leading since)
//!                                dead::to_remove(...) ─▶ remove (one at a time)
//! ```

pub mod contact;
pub mod dead;
pub mod removal;
pub mod stabilize;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::node::RaftNode;

/// The autopilot's settings.
#[derive(Debug, Clone)]
pub struct AutopilotConfig {
    /// Remove a voter that has not answered the leader for this long (`None`: never).
    pub dead_member_timeout: Option<Duration>,
    /// How long a new member must keep up before it is promoted to voter.
    pub stabilization: Duration,
}

impl Default for AutopilotConfig {
    fn default() -> Self {
        Self {
            dead_member_timeout: None,
            stabilization: Duration::from_secs(10),
        }
    }
}

const TICK: Duration = Duration::from_secs(1);

/// Remove dead voters while this member leads, per its `dead_member_timeout`; returns at once
/// when that is off.
pub async fn run(node: RaftNode) {
    let Some(timeout) = node.config().autopilot.dead_member_timeout else {
        return;
    };
    // A new leader has heard from nobody yet: it counts silence from its election on.
    let mut leading_since: Option<(u64, Instant)> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let m = node.raft().metrics().borrow().clone();
        if m.current_leader != Some(node.id()) {
            leading_since = None;
            continue;
        }
        let since = match leading_since {
            Some((term, at)) if term == m.current_term => at,
            _ => {
                let now = Instant::now();
                leading_since = Some((m.current_term, now));
                now
            }
        };
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            continue; // a change is under way
        }
        let voters: BTreeSet<_> = membership.voter_ids().collect();
        let now = Instant::now();
        let silent_for = |id| {
            let heard = node
                .contact()
                .last_answer(id)
                .map_or(since, |t| t.max(since));
            now.duration_since(heard)
        };
        let Some(dead) = dead::to_remove(node.id(), &voters, silent_for, timeout) else {
            continue;
        };
        tracing::warn!(
            member = dead,
            silent = ?silent_for(dead),
            "removing a member that has not answered for longer than --dead-member-timeout"
        );
        match node.remove(dead).await {
            Ok(()) => tracing::warn!(member = dead, "dead member removed"),
            Err(e) => tracing::warn!(member = dead, "dead member not removed: {e}"),
        }
    }
}
