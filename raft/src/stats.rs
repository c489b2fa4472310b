//! Timings and counts of the store's own work, kept as `prometheus-client` metrics so that the
//! member's `/metrics` serves them as they are: how long a proposal takes to be committed and
//! applied, a log fsync, a snapshot's capture and write, and how often leadership moved.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// The store's figures; cheap to clone (the metrics are shared).
#[derive(Clone, Debug)]
pub struct RaftStats {
    /// A batch of writes proposed by this leader until committed and applied.
    pub proposal: Histogram,
    /// One fsync of the log (covering every append queued meanwhile).
    pub log_fsync: Histogram,
    /// A Raft snapshot from the capture of its records until written to disk.
    pub snapshot: Histogram,
    /// Times this member saw the leader change (to another member or to none known).
    pub leader_changes: Counter,
}

/// Buckets from 0.25 ms to ~8 s: fsyncs and proposals take around a millisecond on fast
/// disks, snapshots of large stores seconds.
pub fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for RaftStats {
    fn default() -> Self {
        Self {
            proposal: duration_histogram(),
            log_fsync: duration_histogram(),
            snapshot: duration_histogram(),
            leader_changes: Counter::default(),
        }
    }
}
