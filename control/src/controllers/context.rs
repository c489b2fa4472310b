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
            quick: false,
        }
    }
}

/// Fires when a watched kind changes.
pub struct Trigger {
    receivers: Vec<watch::Receiver<u64>>,
    /// Settle only until the changes pause (see [`Trigger::quick`]).
    quick: bool,
}

impl Trigger {
    /// How long a burst of changes settles into one pass, at most.
    pub const SETTLE: Duration = Duration::from_millis(20);
    /// The pause in changes after which a quick trigger fires.
    const QUIET: Duration = Duration::from_millis(2);

    /// Fire once the changes pause for 2 ms (at most [`Trigger::SETTLE`] after the first),
    /// instead of always after 20 ms: for loops a user waits on (new pods wait for their
    /// binding). Changes that keep coming, as in a large burst, still fire every 20 ms.
    pub fn quick(mut self) -> Self {
        self.quick = true;
        self
    }

    /// How long to wait for a further change, `since_first` after the first; `None`: fire.
    fn settle_left(&self, since_first: Duration) -> Option<Duration> {
        let left = Self::SETTLE.saturating_sub(since_first);
        if left.is_zero() {
            None
        } else if self.quick {
            Some(left.min(Self::QUIET))
        } else {
            Some(left)
        }
    }

    /// Wait for the next change, or `period` (level-triggered loops also resync).
    pub async fn wait(&mut self, period: Duration) {
        let _ = tokio::time::timeout(period, self.changed()).await;
        let first = std::time::Instant::now();
        while let Some(wait) = self.settle_left(first.elapsed()) {
            self.mark_unchanged();
            if tokio::time::timeout(wait, self.changed()).await.is_err() && self.quick {
                break;
            }
        }
        self.mark_unchanged();
    }

    async fn changed(&mut self) {
        if self.receivers.is_empty() {
            return std::future::pending().await;
        }
        let _ =
            futures::future::select_all(self.receivers.iter_mut().map(|r| Box::pin(r.changed())))
                .await;
    }

    fn mark_unchanged(&mut self) {
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
            quick: false,
        }
    }

    #[test]
    fn a_quick_trigger_waits_for_a_pause_of_two_ms_and_at_most_the_settle() {
        let quick = trigger().quick();
        assert_eq!(quick.settle_left(Duration::ZERO), Some(Trigger::QUIET));
        assert_eq!(
            quick.settle_left(Duration::from_millis(19)),
            Some(Duration::from_millis(1))
        );
        assert_eq!(quick.settle_left(Trigger::SETTLE), None);
    }

    #[test]
    fn a_plain_trigger_always_settles_in_full() {
        assert_eq!(trigger().settle_left(Duration::ZERO), Some(Trigger::SETTLE));
        assert_eq!(
            trigger().settle_left(Duration::from_millis(5)),
            Some(Duration::from_millis(15))
        );
        assert_eq!(trigger().settle_left(Trigger::SETTLE), None);
    }
}
