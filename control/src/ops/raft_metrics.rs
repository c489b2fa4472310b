//! The Raft figures of one member, read from openraft's metrics at each scrape: term,
//! leadership, log and apply indexes, and each follower's replication lag on the leader; and
//! its data on disk: the data directory, the last Raft snapshot, the newest scheduled backup.

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
    snapshot_index: Gauge,
    snapshot_bytes: Gauge,
    data_bytes: Gauge,
    newest_backup: Gauge,
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
        registry.register(
            "skiff_raft_snapshot_index",
            "The last log index this member's Raft snapshot covers",
            me.snapshot_index.clone(),
        );
        registry.register(
            "skiff_raft_snapshot_bytes",
            "The size of this member's Raft snapshot file",
            me.snapshot_bytes.clone(),
        );
        registry.register(
            "skiff_store_data_bytes",
            "The size of this member's data directory (log, store, snapshot)",
            me.data_bytes.clone(),
        );
        registry.register(
            "skiff_backup_newest_timestamp_seconds",
            "When the newest scheduled backup on this member was taken (0: none)",
            me.newest_backup.clone(),
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
        self.snapshot_index
            .set(gauge(m.snapshot.map(|l| l.index).unwrap_or(0)));
        let config = node.config();
        let snapshot = std::fs::metadata(config.data_dir.join("snapshot.bin"));
        self.snapshot_bytes
            .set(gauge(snapshot.map(|s| s.len()).unwrap_or(0)));
        self.data_bytes
            .set(gauge(skiff_raft::disk::usage(&config.data_dir).data_bytes));
        self.newest_backup
            .set(skiff_raft::backup::schedule::newest_at(&config.backups.dir).unwrap_or(0));
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

/// The store's own timings and counts ([`skiff_raft::stats::RaftStats`]), registered in
/// `registry` as they are.
pub fn register_stats(registry: &mut Registry, stats: &skiff_raft::stats::RaftStats) {
    registry.register(
        "skiff_raft_leader_changes",
        "Times this member saw the leader change",
        stats.leader_changes.clone(),
    );
    registry.register(
        "skiff_raft_proposal_duration_seconds",
        "A batch of writes proposed by the leader until committed and applied",
        stats.proposal.clone(),
    );
    registry.register(
        "skiff_raft_log_fsync_duration_seconds",
        "One fsync of the Raft log",
        stats.log_fsync.clone(),
    );
    registry.register(
        "skiff_raft_snapshot_duration_seconds",
        "A Raft snapshot from the capture of its records until written to disk",
        stats.snapshot.clone(),
    );
}
