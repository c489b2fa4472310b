//! One member of the store: openraft wired to the sled log store, the state machine, the
//! peer network and the write batcher. The gRPC services are built on top of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers, SnapshotPolicy};

use crate::autopilot::contact::PeerContact;
use crate::batcher::Batcher;
use crate::eager_replication;
use crate::engine::SledEngine;
use crate::error::{Result, StoreError};
use crate::forwarder::Forwarder;
use crate::handover::HandoverError;
use crate::log_store::LogStore;
use crate::mvcc::TxnResult;
use crate::network::{Network, PeerChannels};
use crate::read_barrier::ReadBarrier;
use crate::state_machine::{SmShared, StateMachineConfig, StateMachineStore};
use crate::stats::RaftStats;
use crate::types::{NodeId, Raft, Write};

/// How long a call waits for an election to produce a leader before giving up.
pub const LEADER_WAIT: Duration = Duration::from_secs(3);

/// The log's page cache. Entries are written, replicated and applied within moments of each
/// other, and sled keeps the pages it writes; only a follower far behind reads older ones (from
/// the system's file cache then). A cache the size of the state's held mostly entries nobody
/// would read again.
const LOG_CACHE_BYTES: u64 = 16 << 20;

/// Settings of a member.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's id.
    pub id: NodeId,
    /// The address peers and clients reach this member at.
    pub addr: String,
    /// Where the log, state and snapshot live.
    pub data_dir: PathBuf,
    /// Members of other clusters are refused.
    pub cluster_id: String,
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// Election timeout range; a follower that hears nothing for a random time in it campaigns.
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot (and purge the log behind it) after this many entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so briefly lagging members need no snapshot.
    pub keep_behind_snapshot: u64,
    /// Revisions of history kept for watchers.
    pub history_revisions: u64,
    /// The state store's page cache, in bytes (sled's count of its pages).
    pub state_cache_bytes: u64,
    /// The member's credentials: Raft and forwarded requests to peers go over mutual TLS.
    pub tls: Option<skiff_proto::tls::LiveCredentials>,
    /// Backups taken while it leads (none when the interval is zero).
    pub backups: crate::backup::schedule::Schedule,
    /// Promotion of new members and removal of dead ones.
    pub autopilot: crate::autopilot::AutopilotConfig,
}

impl NodeConfig {
    /// Defaults for member `id` at `addr` with data in `data_dir`.
    pub fn new(id: NodeId, addr: String, data_dir: PathBuf, cluster_id: String) -> Self {
        Self {
            id,
            addr,
            cluster_id,
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(120), Duration::from_millis(240)),
            snapshot_every: 100_000,
            keep_behind_snapshot: 1_000,
            history_revisions: StateMachineConfig::default().history_revisions,
            state_cache_bytes: crate::engine::DEFAULT_CACHE_BYTES,
            tls: None,
            backups: crate::backup::schedule::Schedule {
                interval: Duration::ZERO,
                retention: 5,
                dir: data_dir.join("backups"),
            },
            autopilot: Default::default(),
            data_dir,
        }
    }
}

struct Inner {
    config: NodeConfig,
    raft: Raft,
    sm: Arc<SmShared<SledEngine>>,
    batcher: Batcher,
    reads: ReadBarrier,
    forwarder: Forwarder,
    channels: PeerChannels,
    /// When each peer last answered.
    contact: PeerContact,
    /// Open while proposals may be made; a handover closes it.
    write_gate: Arc<tokio::sync::RwLock<()>>,
    stats: RaftStats,
}

/// A running member; cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

/// Error opening a member.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The Raft settings are inconsistent.
    #[error("invalid raft settings")]
    Config(#[source] openraft::ConfigError),
    /// The data directory could not be opened.
    #[error("opening {path}")]
    Storage {
        /// What was being opened.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: crate::engine::EngineError,
    },
    /// openraft refused to start.
    #[error("starting raft")]
    Raft(#[source] openraft::error::Fatal<NodeId>),
    /// The member's credentials could not be used.
    #[error("the member's credentials")]
    Tls(#[source] skiff_proto::tls::TlsError),
}

impl RaftNode {
    /// Open the member's data and start Raft. The gRPC server is started by the caller.
    pub async fn open(config: NodeConfig) -> std::result::Result<Self, OpenError> {
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            install_snapshot_timeout: 2_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_behind_snapshot,
            snapshot_max_chunk_size: 1 << 20,
            max_payload_entries: 32,
            ..Default::default()
        }
        .validate()
        .map_err(OpenError::Config)?;

        let open = |sub: &str, cache: u64| {
            let path = config.data_dir.join(sub);
            SledEngine::open_with_cache(&path, cache)
                .map_err(|source| OpenError::Storage { path, source })
        };
        crate::backup::remove_stale_captures(&config.data_dir);
        let (log_events, log_events_rx) = eager_replication::channel();
        let stats = RaftStats::default();
        let log = LogStore::timed(open("log", LOG_CACHE_BYTES)?, stats.log_fsync.clone())
            .with_events(log_events);
        log.resign_leadership(config.id)
            .map_err(|source| OpenError::Storage {
                path: config.data_dir.join("log"),
                source,
            })?;
        let sm = StateMachineStore::open(
            open("state", config.state_cache_bytes)?,
            config.data_dir.join("snapshot.bin"),
            StateMachineConfig {
                history_revisions: config.history_revisions,
                snapshot_duration: stats.snapshot.clone(),
            },
        )
        .map_err(|source| OpenError::Storage {
            path: config.data_dir.join("state"),
            source,
        })?;
        let shared = sm.shared();
        let channels = PeerChannels::new(config.tls.as_ref()).map_err(OpenError::Tls)?;
        let contact = PeerContact::default();
        let network = Network::new(config.cluster_id.clone(), channels.clone(), contact.clone());
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(OpenError::Raft)?;
        eager_replication::start(
            log_events_rx,
            raft.clone(),
            config.id,
            config.cluster_id.clone(),
            channels.clone(),
        );
        let write_gate = Arc::new(tokio::sync::RwLock::new(()));
        let batcher = Batcher::start(raft.clone(), write_gate.clone(), stats.proposal.clone());
        tokio::spawn(count_leader_changes(
            raft.metrics(),
            stats.leader_changes.clone(),
        ));
        let reads = ReadBarrier::start(raft.clone());
        let forwarder = Forwarder::start(config.cluster_id.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                raft,
                sm: shared,
                batcher,
                reads,
                forwarder,
                channels,
                contact,
                write_gate,
                stats,
            }),
        })
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.inner.config.id
    }

    /// This member's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The openraft handle.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The applied state, for local (stale) reads and watches.
    pub fn state(&self) -> &Arc<SmShared<SledEngine>> {
        &self.inner.sm
    }

    /// Channels to peers, shared with request forwarding.
    pub fn channels(&self) -> &PeerChannels {
        &self.inner.channels
    }

    /// The store's timings and counts.
    pub fn stats(&self) -> &RaftStats {
        &self.inner.stats
    }

    /// When each peer last answered this member's Raft RPCs.
    pub fn contact(&self) -> &PeerContact {
        &self.inner.contact
    }

    /// The current leader's id and address, as this member knows it.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// The leader, waiting up to [`LEADER_WAIT`] for an election to produce one.
    pub async fn wait_leader(&self) -> Option<(NodeId, String)> {
        if let Some(l) = self.leader() {
            return Some(l);
        }
        let _ = self
            .inner
            .raft
            .wait(Some(LEADER_WAIT))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await;
        self.leader()
    }

    /// Whether the cluster has been initialised on this member's disk.
    pub async fn is_initialized(&self) -> Result<bool> {
        self.inner
            .raft
            .is_initialized()
            .await
            .map_err(StoreError::Fatal)
    }

    /// Initialise a new cluster with `members` as voters. Refused if this member has state.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<()> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        self.inner
            .raft
            .initialize(nodes)
            .await
            .map_err(|e| match e {
                RaftError::APIError(e) => StoreError::Initialize(e),
                RaftError::Fatal(f) => StoreError::Fatal(f),
            })
    }

    /// Apply a write through Raft (leader only) and return its result.
    pub async fn write(&self, write: Write) -> Result<TxnResult> {
        self.inner.batcher.write(write).await
    }

    /// Apply a write from any member: proposed here when this member leads, else forwarded
    /// to the leader (batched with other forwarded writes). If leadership moves meanwhile,
    /// the write follows it; its request id keeps it from being applied twice.
    pub async fn propose(&self, write: Write) -> Result<TxnResult> {
        let mut last = StoreError::NotLeader { leader: None };
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            let Some(leader) = self.wait_leader().await else {
                return Err(StoreError::NotLeader { leader: None });
            };
            let result = if leader.0 == self.id() {
                self.write(write.clone()).await
            } else {
                let ch = self
                    .channels()
                    .get(&leader.1)
                    .map_err(|_| StoreError::NotLeader {
                        leader: Some(leader.clone()),
                    })?;
                self.inner.forwarder.forward(ch, write.clone()).await
            };
            match result {
                Err(e @ StoreError::NotLeader { .. }) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// Wait until a read of the local state is linearizable (leader only).
    pub async fn read_barrier(&self) -> Result<()> {
        self.inner.reads.wait().await
    }

    /// Wait until a read of the local state is linearizable, on any member: the leader takes
    /// a read barrier; a follower asks the leader for its revision after one and waits until
    /// it has applied that far, so the read itself is served here.
    pub async fn linearizable_read(&self) -> Result<()> {
        let Some(leader) = self.wait_leader().await else {
            return Err(StoreError::NotLeader { leader: None });
        };
        if leader.0 == self.id() {
            return self.read_barrier().await;
        }
        let not_leader = || StoreError::NotLeader {
            leader: Some(leader.clone()),
        };
        let ch = self.channels().get(&leader.1).map_err(|_| not_leader())?;
        let payload = bincode::serialize(&()).map_err(|_| not_leader())?;
        let reply = skiff_proto::pb::raft_client::RaftClient::new(ch)
            .read_index(crate::network::raft_request(
                self.config().cluster_id.clone(),
                payload,
            ))
            .await
            .map_err(|_| not_leader())?
            .into_inner();
        let revision: u64 = bincode::deserialize(&reply.payload).map_err(|_| not_leader())?;
        if self.state().wait_revision(revision, LEADER_WAIT).await {
            Ok(())
        } else {
            Err(not_leader())
        }
    }

    /// Add `id` at `addr` as a learner and wait until it has caught up.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<()> {
        self.inner
            .raft
            .add_learner(id, BasicNode::new(addr), true)
            .await?;
        Ok(())
    }

    /// Make learner `id` a voter.
    pub async fn promote(&self, id: NodeId) -> Result<()> {
        self.inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await?;
        Ok(())
    }

    /// Remove `id`, voter or learner, from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<()> {
        let membership = self.inner.raft.metrics().borrow().membership_config.clone();
        let m = membership.membership();
        let change = if m.voter_ids().any(|v| v == id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if m.get_node(&id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(StoreError::UnknownMember(id));
        };
        self.inner.raft.change_membership(change, false).await?;
        Ok(())
    }

    /// Hand leadership to voter `to`, or to the voter furthest along; returns the new leader.
    /// See [`crate::handover`].
    pub async fn hand_over(&self, to: Option<NodeId>) -> Result<NodeId, HandoverError> {
        crate::handover::hand_over(self, &self.inner.write_gate, to).await
    }

    /// Stop Raft on this member.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
    }
}

/// Count each change of the leader this member knows, for as long as Raft runs.
async fn count_leader_changes(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    changes: prometheus_client::metrics::counter::Counter,
) {
    // As etcd's leader_changes_seen_total: the first leader seen counts, and an interval with
    // no leader known does not (the same leader found again is no change).
    let mut last_leader = None;
    loop {
        let now = metrics.borrow_and_update().current_leader;
        if now.is_some() && now != last_leader {
            changes.inc();
            last_leader = now;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
