//! The Raft figures of one member, read from openraft's metrics at each scrape: term,
//! leadership, log and apply indexes, and each follower's replication lag on the leader.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use skiff_raft::RaftNode;

/// A follower, by member id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabel {
    /// The follower's member id.
    pub follower: String,
}

/// The gauges, set from openraft's metrics when scraped.
#[derive(Default)]
pub struct RaftFigures {
    term: Gauge,
    is_leader: Gauge,
    leader: Gauge,
    last_log_index: Gauge,
    applied_index: Gauge,
    follower_lag: Family<FollowerLabel, Gauge>,
}

impl RaftFigures {
    /// Families registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let me = Self::default();
        registry.register("skiff_raft_term", "The current Raft term", me.term.clone());
        registry.register(
            "skiff_raft_is_leader",
            "1 if this member leads, else 0",
            me.is_leader.clone(),
        );
        registry.register(
            "skiff_raft_leader",
            "The member id of the known leader (0: none)",
            me.leader.clone(),
        );
        registry.register(
            "skiff_raft_last_log_index",
            "The index of the last entry in this member's log",
            me.last_log_index.clone(),
        );
        registry.register(
            "skiff_raft_applied_index",
            "The index of the last entry applied to this member's state machine",
            me.applied_index.clone(),
        );
        registry.register(
            "skiff_raft_follower_lag_entries",
            "On the leader: entries each follower has yet to receive",
            me.follower_lag.clone(),
        );
        me
    }

    /// Set the gauges from `node`'s metrics now.
    pub fn update(&self, node: &RaftNode) {
        let m = node.raft().metrics().borrow().clone();
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(gauge(m.current_term));
        self.is_leader
            .set(i64::from(m.current_leader == Some(node.id())));
        self.leader.set(gauge(m.current_leader.unwrap_or(0)));
        let last = m.last_log_index.unwrap_or(0);
        self.last_log_index.set(gauge(last));
        self.applied_index
            .set(gauge(m.last_applied.map(|l| l.index).unwrap_or(0)));
        self.follower_lag.clear();
        if let Some(replication) = &m.replication {
            for (id, matched) in replication {
                if *id == node.id() {
                    continue;
                }
                let at = matched.map(|l| l.index).unwrap_or(0);
                self.follower_lag
                    .get_or_create(&FollowerLabel {
                        follower: id.to_string(),
                    })
                    .set(gauge(last.saturating_sub(at)));
            }
        }
    }
}
