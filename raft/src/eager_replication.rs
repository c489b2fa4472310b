//! Sends a leader's new log entries to its followers while its own fsync is still running.
//!
//! openraft 0.9 waits for the leader's log flush before it starts replicating an append, so a
//! write paid two fsyncs one after the other: the leader's, then a follower's. Raft needs the
//! leader to count itself towards a quorum only after its own flush; it may send earlier (the
//! Raft paper, §10.2.1; etcd does). This module sends earlier.
//!
//! For each append made while this member leads, it sends an ordinary AppendEntries — the
//! leader's own entries, under its own committed vote, after the entry that precedes them — to
//! every follower that already holds that preceding entry. The follower persists them as it
//! would openraft's own request. When openraft's AppendEntries for the same entries arrives, the
//! follower already holds them durably and answers without another fsync. The replies here are
//! dropped: openraft's replication stays the only thing that moves a follower's matched index
//! and the commit index, so what counts as committed is unchanged.
//!
//! ```text
//!  append ─▶ log engine ─▶ flusher (leader fsync) ─▶ openraft replicates ─▶ follower: already held
//!     └────▶ eager task ─▶ AppendEntries ─▶ follower fsync (overlapping the leader's)
//! ```
//!
//! A follower with an eager request still in flight gets no second one: under load openraft's
//! own batches carry the entries, and the extra copy would only cost CPU.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::AppendEntriesRequest;
use tokio::sync::mpsc;

use crate::network::{self, PeerChannels};
use crate::types::{Entry, LogId, NodeId, Raft, TypeConfig};

/// How long an eager request may take before it is given up on; openraft's own request
/// carries the entries anyway.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// What the log store tells the eager sender, in the order it happened.
#[derive(Debug)]
pub(crate) enum LogEvent {
    /// Entries were written to the log (not yet flushed).
    Appended(Vec<Entry>),
    /// The log was cut back: the last appended id is no longer known to be the log's end.
    Truncated,
}

/// The log store's end of the channel.
#[derive(Clone)]
pub struct LogEvents {
    tx: mpsc::UnboundedSender<LogEvent>,
}

impl LogEvents {
    pub(crate) fn send(&self, event: LogEvent) {
        // The sender is gone only at shutdown; eager sending is an optimisation.
        let _ = self.tx.send(event);
    }
}

/// The eager sender's end of the channel, until [`start`] takes it.
pub struct LogEventsReceiver {
    rx: mpsc::UnboundedReceiver<LogEvent>,
}

/// A channel from the log store to the eager sender.
pub fn channel() -> (LogEvents, LogEventsReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (LogEvents { tx }, LogEventsReceiver { rx })
}

/// Start sending appends eagerly for member `id` of cluster `cluster_id`.
pub fn start(
    events: LogEventsReceiver,
    raft: Raft,
    id: NodeId,
    cluster_id: String,
    channels: PeerChannels,
) {
    let sender = EagerSender {
        raft,
        id,
        cluster_id,
        channels,
        in_flight: HashMap::new(),
        last: None,
    };
    tokio::spawn(sender.run(events.rx));
}

struct EagerSender {
    raft: Raft,
    id: NodeId,
    cluster_id: String,
    channels: PeerChannels,
    /// Followers with an eager request outstanding.
    in_flight: HashMap<NodeId, Arc<AtomicBool>>,
    /// The id of the last entry appended, while it is known to end the log.
    last: Option<LogId>,
}

impl EagerSender {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<LogEvent>) {
        while let Some(event) = rx.recv().await {
            match event {
                LogEvent::Truncated => self.last = None,
                LogEvent::Appended(entries) => {
                    let (Some(first), Some(end)) = (entries.first(), entries.last()) else {
                        continue;
                    };
                    let end = end.log_id;
                    let prev = self.last.replace(end);
                    // Only an append that continues the log we saw has a known predecessor.
                    match prev {
                        Some(p) if p.index + 1 == first.log_id.index => self.send(p, entries),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Send `entries`, which follow `prev`, to each follower that holds `prev`, if this member
    /// leads the term the entries were written in.
    fn send(&mut self, prev: LogId, entries: Vec<Entry>) {
        let leader_id = entries[0].log_id.leader_id;
        let (vote, leader_commit, targets) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            if leader_id.node_id != self.id
                || !m.vote.is_committed()
                || *m.vote.leader_id() != leader_id
            {
                return;
            }
            let Some(replication) = &m.replication else {
                return;
            };
            let membership = m.membership_config.membership();
            let targets: Vec<(NodeId, String)> = replication
                .iter()
                .filter(|(id, matched)| {
                    **id != self.id && matched.is_some_and(|m| m.index >= prev.index)
                })
                .filter_map(|(id, _)| Some((*id, membership.get_node(id)?.addr.clone())))
                .collect();
            // Applied is committed, and no later than `prev`: a follower may commit that far.
            (m.vote, m.last_applied, targets)
        };
        let targets: Vec<(NodeId, String, Arc<AtomicBool>)> = targets
            .into_iter()
            .filter_map(|(id, addr)| {
                let busy = self.in_flight.entry(id).or_default().clone();
                (!busy.swap(true, Ordering::AcqRel)).then_some((id, addr, busy))
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let request = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(prev),
            entries,
            leader_commit,
        };
        let payload = match bincode::serialize(&request) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "encoding an eager append");
                for (_, _, busy) in targets {
                    busy.store(false, Ordering::Release);
                }
                return;
            }
        };
        for (target, addr, busy) in targets {
            let channel = self.channels.get(&addr);
            let cluster_id = self.cluster_id.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                if let Ok(channel) = channel {
                    let sent = tokio::time::timeout(
                        SEND_TIMEOUT,
                        network::send_append(channel, cluster_id, payload),
                    )
                    .await;
                    if let Ok(Err(e)) = sent {
                        tracing::debug!(target, error = %e, "eager append not delivered");
                    }
                }
                busy.store(false, Ordering::Release);
            });
        }
    }
}
