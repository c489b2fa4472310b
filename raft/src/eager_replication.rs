//! Sends a leader's new log entries to its followers while its own fsync is still running.
//!
//! openraft 0.9 waits for the leader's log flush before it starts replicating an append, so a
//! write paid two fsyncs one after the other: the leader's, then a follower's. Raft needs the
//! leader to count itself towards a quorum only after its own flush; it may send earlier (the
//! Raft paper, §10.2.1; etcd does). This module sends earlier.
//!
//! For each append made while this member leads, it sends an ordinary AppendEntries — the
//! leader's own entries, under its own committed vote, after the entry that precedes them — to
//! the other voters, when all of them already hold that preceding entry. The follower persists them as it
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
//! A follower may so hold entries the leader loses in a crash. openraft 0.9 would resume a
//! restarted leader in its old term and write other entries under the same log ids, so a
//! member never resumes leadership at start ([`crate::log_store::LogStore::resign_leadership`]):
//! it must win a new term, whose entries replace any it lost.
//!
//! While any of them has an eager request in flight, no new one is sent: under load openraft's
//! own batches carry the entries, and the extra copy would only cost CPU.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::AppendEntriesRequest;
use openraft::{BasicNode, RaftMetrics, Vote};
use tokio::sync::mpsc;

use crate::network::{self, PeerChannels};
use crate::types::{Entry, LogId, NodeId, Raft, TypeConfig};

/// How long an eager request may take before it is given up on; openraft's own request
/// carries the entries anyway.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

type Metrics = RaftMetrics<NodeId, BasicNode>;

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

/// The id of the entry before `first`, if `last` (the end of the log as last seen) is it.
fn predecessor(last: Option<LogId>, first: &LogId) -> Option<LogId> {
    last.filter(|l| l.index + 1 == first.index)
}

/// What to send for one append: the request's vote and commit id, and its receivers.
#[derive(Debug, PartialEq)]
struct Plan {
    vote: Vote<NodeId>,
    leader_commit: Option<LogId>,
    /// The other voters (id, address); all hold `prev`.
    targets: Vec<(NodeId, String)>,
}

/// Whom to send `entries` (following `prev`) to, judged from member `me`'s metrics: nobody
/// unless `me` leads, by a committed vote, the very term the entries were written in, and
/// every other voter holds `prev`. All voters or none: followers whose logs differ when the
/// leader dies make the one with the shorter log campaign in vain first (measured: failover
/// from ~450 ms to ~900 ms in half the cases). Learners are left to openraft.
fn plan(m: &Metrics, me: NodeId, prev: LogId, entries: &[Entry]) -> Option<Plan> {
    let leader_id = entries.first()?.log_id.leader_id;
    if leader_id.node_id != me || !m.vote.is_committed() || *m.vote.leader_id() != leader_id {
        return None;
    }
    let replication = m.replication.as_ref()?;
    let membership = m.membership_config.membership();
    let mut targets = Vec::new();
    for id in membership.voter_ids().filter(|id| *id != me) {
        let matched = replication.get(&id)?.as_ref()?;
        if matched.index < prev.index {
            return None;
        }
        targets.push((id, membership.get_node(&id)?.addr.clone()));
    }
    (!targets.is_empty()).then_some(Plan {
        vote: m.vote,
        // Applied is committed, and no later than `prev`: a follower may commit that far.
        leader_commit: m.last_applied,
        targets,
    })
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
                    // Only an append that continues the log as last seen has a known predecessor.
                    let prev = predecessor(self.last.replace(end.log_id), &first.log_id);
                    if let Some(prev) = prev {
                        self.send(prev, entries);
                    }
                }
            }
        }
    }

    /// Send `entries`, which follow `prev`, to each follower that holds `prev`, if this member
    /// leads the term the entries were written in.
    fn send(&mut self, prev: LogId, entries: Vec<Entry>) {
        let Some(plan) = plan(&self.raft.metrics().borrow(), self.id, prev, &entries) else {
            return;
        };
        let Plan {
            vote,
            leader_commit,
            targets,
        } = plan;
        // All or none here too: a follower still busy with the last eager request gets this
        // append from openraft, and so must the others.
        let flags: Vec<Arc<AtomicBool>> = targets
            .iter()
            .map(|(id, _)| self.in_flight.entry(*id).or_default().clone())
            .collect();
        if flags.iter().any(|busy| busy.load(Ordering::Acquire)) {
            return;
        }
        for busy in &flags {
            busy.store(true, Ordering::Release);
        }
        let targets: Vec<(NodeId, String, Arc<AtomicBool>)> = targets
            .into_iter()
            .zip(flags)
            .map(|((id, addr), busy)| (id, addr, busy))
            .collect();
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, EntryPayload, Membership, StoredMembership};

    use super::*;

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn entry(term: u64, node: NodeId, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, node, index),
            payload: EntryPayload::Blank,
        }
    }

    /// Member 1 leading term 3 of members 1-3; follower 2 has matched up to 9, follower 3 up to 7.
    fn leader_metrics() -> Metrics {
        let mut m = Metrics::new_initial(1);
        m.vote = Vote::new_committed(3, 1);
        m.last_applied = Some(log_id(3, 1, 8));
        let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
            .map(|i| (i, BasicNode::new(format!("127.0.0.1:700{i}"))))
            .collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m.replication = Some(BTreeMap::from([
            (1, Some(log_id(3, 1, 9))),
            (2, Some(log_id(3, 1, 9))),
            (3, Some(log_id(3, 1, 7))),
        ]));
        m
    }

    #[test]
    fn a_leader_sends_its_new_entries_to_all_voters_once_all_hold_the_entry_before_them() {
        let mut m = leader_metrics();
        assert_eq!(plan(&m, 1, log_id(3, 1, 9), &[entry(3, 1, 10)]), None);
        m.replication = Some(BTreeMap::from([
            (1, Some(log_id(3, 1, 9))),
            (2, Some(log_id(3, 1, 9))),
            (3, Some(log_id(3, 1, 9))),
        ]));
        assert_eq!(
            plan(&m, 1, log_id(3, 1, 9), &[entry(3, 1, 10)]),
            Some(Plan {
                vote: Vote::new_committed(3, 1),
                leader_commit: Some(log_id(3, 1, 8)),
                targets: vec![
                    (2, "127.0.0.1:7002".to_string()),
                    (3, "127.0.0.1:7003".to_string())
                ],
            })
        );
    }

    #[test]
    fn entries_of_another_term_or_leader_or_an_uncommitted_vote_are_not_sent() {
        let m = leader_metrics();
        assert_eq!(plan(&m, 1, log_id(2, 1, 9), &[entry(2, 1, 10)]), None);
        assert_eq!(plan(&m, 1, log_id(3, 2, 9), &[entry(3, 2, 10)]), None);
        let mut candidate = leader_metrics();
        candidate.vote = Vote::new(3, 1);
        assert_eq!(
            plan(&candidate, 1, log_id(3, 1, 9), &[entry(3, 1, 10)]),
            None
        );
        let mut follower = leader_metrics();
        follower.replication = None;
        assert_eq!(
            plan(&follower, 1, log_id(3, 1, 9), &[entry(3, 1, 10)]),
            None
        );
    }

    #[test]
    fn only_an_append_that_continues_the_log_as_last_seen_has_a_predecessor() {
        let first = log_id(3, 1, 10);
        assert_eq!(
            predecessor(Some(log_id(3, 1, 9)), &first),
            Some(log_id(3, 1, 9))
        );
        assert_eq!(predecessor(Some(log_id(3, 1, 12)), &first), None);
        assert_eq!(predecessor(None, &first), None);
    }
}
