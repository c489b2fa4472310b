//! When each peer last answered a Raft RPC of this member. A leader sends every follower a
//! heartbeat each `heartbeat` period, so on a leader this is fresh for every member that
//! answers; the autopilot reads it to tell a dead member from a live one without probes of its
//! own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::types::NodeId;

/// Last answers by peer; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct PeerContact {
    last: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl PeerContact {
    /// `peer` answered now.
    pub(crate) fn answered(&self, peer: NodeId) {
        let now = Instant::now();
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, now);
    }

    /// When `peer` last answered, if it ever did since this member started.
    pub fn last_answer(&self, peer: NodeId) -> Option<Instant> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied()
    }
}
