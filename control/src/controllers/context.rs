//! What every controller shares: a client of this control node, informer caches of the kinds
//! they reconcile, change signals, settings and the event recorder.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use skiff_proto::objects::{Informer, InformerEvent, Selection};
use skiff_proto::Client;
use tokio::sync::watch;

use super::events::EventRecorder;

/// Timing settings of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A node whose Lease is older than this turns `Ready=Unknown` and is tainted NoExecute.
    pub node_grace: Duration,
    /// Pods on such a node without their own toleration are evicted after this long.
    pub eviction_toleration: Duration,
    /// Events older than this are removed.
    pub event_ttl: Duration,
    /// Namespace of node Leases.
    pub lease_namespace: String,
    /// The cluster's pod range; each node gets a block of it.
    pub cluster_cidr: String,
    /// Prefix length of each node's block.
    pub node_cidr_prefix: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_grace: Duration::from_secs(10),
            eviction_toleration: Duration::from_secs(5),
            event_ttl: Duration::from_secs(3600),
            lease_namespace: "skiff-system".into(),
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_prefix: 24,
        }
    }
}

/// Kinds whose changes controllers wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Pods.
    Pods,
    /// Nodes.
    Nodes,
    /// ReplicaSets.
    ReplicaSets,
    /// Deployments.
    Deployments,
    /// Services.
    Services,
    /// Endpoints.
    Endpoints,
    /// Leases.
    Leases,
}

/// Shared state of the controllers of one leadership term.
pub struct Ctx {
    /// A client of this control node.
    pub client: Client,
    /// Pods of every namespace.
    pub pods: Informer<Pod>,
    /// Nodes.
    pub nodes: Informer<Node>,
    /// ReplicaSets.
    pub replicasets: Informer<ReplicaSet>,
    /// Deployments.
    pub deployments: Informer<Deployment>,
    /// Services.
    pub services: Informer<Service>,
    /// Endpoints.
    pub endpoints: Informer<Endpoints>,
    /// Node leases.
    pub leases: Informer<Lease>,
    /// Settings.
    pub settings: Settings,
    /// Where controllers record Events.
    pub recorder: EventRecorder,
    signals: Vec<(Kind, watch::Sender<u64>)>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // The informers end when their event receivers, held by these tasks, are dropped.
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn start_one<K>(
    client: &Client,
    kind: Kind,
    signals: &mut Vec<(Kind, watch::Sender<u64>)>,
    synced: &mut Vec<tokio::sync::oneshot::Receiver<()>>,
    tasks: &mut Vec<tokio::task::AbortHandle>,
) -> Informer<K>
where
    K: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (informer, mut events) = Informer::<K>::start(client.clone(), Selection::default());
    let (tx, _) = watch::channel(0u64);
    let signal = tx.clone();
    let (sync_tx, sync_rx) = tokio::sync::oneshot::channel();
    synced.push(sync_rx);
    let task = tokio::spawn(async move {
        let mut sync_tx = Some(sync_tx);
        while let Some(e) = events.recv().await {
            if matches!(e, InformerEvent::Synced) {
                if let Some(s) = sync_tx.take() {
                    let _ = s.send(());
                }
            }
            signal.send_modify(|n| *n += 1);
        }
    });
    tasks.push(task.abort_handle());
    signals.push((kind, tx));
    informer
}

impl Ctx {
    /// Start the informers and wait until each has listed once.
    pub async fn start(client: Client, settings: Settings) -> Arc<Self> {
        let mut signals = Vec::new();
        let mut synced = Vec::new();
        let mut tasks = Vec::new();
        let pods = start_one(&client, Kind::Pods, &mut signals, &mut synced, &mut tasks);
        let nodes = start_one(&client, Kind::Nodes, &mut signals, &mut synced, &mut tasks);
        let replicasets = start_one(
            &client,
            Kind::ReplicaSets,
            &mut signals,
            &mut synced,
            &mut tasks,
        );
        let deployments = start_one(
            &client,
            Kind::Deployments,
            &mut signals,
            &mut synced,
            &mut tasks,
        );
        let services = start_one(
            &client,
            Kind::Services,
            &mut signals,
            &mut synced,
            &mut tasks,
        );
        let endpoints = start_one(
            &client,
            Kind::Endpoints,
            &mut signals,
            &mut synced,
            &mut tasks,
        );
        let leases = start_one(&client, Kind::Leases, &mut signals, &mut synced, &mut tasks);
        for s in synced {
            let _ = s.await;
        }
        Arc::new(Self {
            recorder: EventRecorder::new(client.clone()),
            client,
            pods,
            nodes,
            replicasets,
            deployments,
            services,
            endpoints,
            leases,
            settings,
            signals,
            tasks,
        })
    }

    /// A trigger that fires when any of `kinds` changes; a burst of changes settles for
    /// [`Trigger::SETTLE`] into one pass.
    pub fn trigger(&self, kinds: &[Kind]) -> Trigger {
        Trigger {
            receivers: self
                .signals
                .iter()
                .filter(|(k, _)| kinds.contains(k))
                .map(|(_, tx)| tx.subscribe())
                .collect(),
            first_settle: Trigger::SETTLE,
        }
    }
}

/// Fires when a watched kind changes.
pub struct Trigger {
    receivers: Vec<watch::Receiver<u64>>,
    /// How long the first change after a quiet spell settles (see [`Trigger::quick`]).
    first_settle: Duration,
}

impl Trigger {
    /// How long a burst of changes settles into one pass.
    pub const SETTLE: Duration = Duration::from_millis(20);

    /// Act on the first change after a quiet spell within a millisecond, instead of letting
    /// it settle: for loops a user waits on (a new pod waits for its binding). Changes that
    /// keep coming still settle for [`Trigger::SETTLE`], so a large burst takes as many
    /// passes as before.
    pub fn quick(mut self) -> Self {
        self.first_settle = Duration::from_millis(1);
        self
    }

    /// How long a change settles that came `quiet` after the last pass ended.
    fn settle_after(&self, quiet: Duration) -> Duration {
        if quiet >= Self::SETTLE {
            self.first_settle
        } else {
            Self::SETTLE
        }
    }

    /// Wait for the next change, or `period` (level-triggered loops also resync).
    pub async fn wait(&mut self, period: Duration) {
        let pass_ended = std::time::Instant::now();
        let changes =
            futures::future::select_all(self.receivers.iter_mut().map(|r| Box::pin(r.changed())));
        let _ = tokio::time::timeout(period, changes).await;
        tokio::time::sleep(self.settle_after(pass_ended.elapsed())).await;
        for r in &mut self.receivers {
            r.mark_unchanged();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> Trigger {
        Trigger {
            receivers: Vec::new(),
            first_settle: Trigger::SETTLE,
        }
    }

    #[test]
    fn a_quick_trigger_acts_at_once_after_a_quiet_spell_and_settles_a_burst() {
        let quick = trigger().quick();
        assert_eq!(
            quick.settle_after(Duration::from_secs(1)),
            Duration::from_millis(1)
        );
        // A change that came while the pass ran or just after: a burst goes on.
        assert_eq!(quick.settle_after(Duration::ZERO), Trigger::SETTLE);
        assert_eq!(
            quick.settle_after(Duration::from_millis(5)),
            Trigger::SETTLE
        );
    }

    #[test]
    fn a_plain_trigger_always_settles() {
        assert_eq!(
            trigger().settle_after(Duration::from_secs(1)),
            Trigger::SETTLE
        );
        assert_eq!(trigger().settle_after(Duration::ZERO), Trigger::SETTLE);
    }
}
