//! The scheduler: places pods that have no node. For each pod it filters the nodes
//! ([`filters`]), scores the rest (least allocated, spreading an owner's pods, preferred
//! affinity) and binds it by setting `spec.nodeName` with compare-and-swap.
//!
//! ```text
//!  pod / node changes ──▶ cache (nodes + what is placed) ──┐
//!          │                                               ▼
//!          └──pending pods──▶ queue (priority, age) ──▶ filter, score ──▶ assume ──▶ bind
//!                                   ▲  unschedulable aside: retried when a node       │
//!                                   │  changes, or after a while                       │
//!                                   └──────────────── bind failed ◀────────────────────┘
//! ```
//!
//! A pod's volume claims narrow its nodes to those its volumes are on ([`volumes`]); a claim
//! waiting for its first consumer is told the chosen node before the pod is bound.
//!
//! Its cache follows the changes ([`cache`]), so a pass costs what changed, not the whole
//! cluster. Placements are assumed at once, so it never waits for its binds to come back;
//! binds go out concurrently and the store coalesces them into few Raft entries. A pod that
//! fits nowhere gets `PodScheduled=False` and an Event saying why; a pod placed, a
//! `Scheduled` Event once the binds pause ([`reports`]). Its queue depth and the latency of
//! each attempt are counted with the controllers' figures.

pub mod cache;
pub mod filters;
pub mod node_info;
pub mod queue;
pub mod reports;
pub mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use skiff_proto::objects::{Api, InformerEvent};
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

use crate::controllers::context::Ctx;
use crate::controllers::feed;
use crate::controllers::ownership::{controller_uid, created_at};
use crate::controllers::runner::metrics::Figures;
use crate::controllers::runner::ObjectKey;
use cache::SchedulerCache;
use filters::{preferred_weight, reasons, unschedulable_message, Ask};
use node_info::NodeInfo;
use queue::SchedulingQueue;
use reports::Reports;

/// The scheduler's name, in spans and figures.
pub const NAME: &str = "scheduler";
/// Binds in flight at once.
const MAX_BINDS_IN_FLIGHT: usize = 256;
/// How often a pod that fit nowhere is tried again when nothing changed.
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(5);
/// An assumed placement the caches never confirm is forgotten after this long.
const ASSUME_TTL: Duration = Duration::from_secs(30);

fn is_pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty)
        && p.metadata.deletion_timestamp.is_none()
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == "default-scheduler")
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let mut pods = ctx.pods.subscribe();
    let mut nodes = ctx.nodes.subscribe();
    let mut claims = ctx.claims.subscribe();
    let (failed_tx, mut failed) = mpsc::unbounded_channel();
    let reports = Arc::new(Reports::default());
    let _reporter = AbortOnDrop(tokio::spawn(reports::run(ctx.clone(), reports.clone())));
    let mut s = Scheduler {
        figures: ctx.metrics.of(NAME),
        reports,
        ctx,
        cache: SchedulerCache::default(),
        queue: SchedulingQueue::default(),
        binds: Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT)),
        failed_tx,
    };
    s.rebuild();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            e = pods.recv() => s.on_pod(e),
            e = nodes.recv() => s.on_node(e),
            Ok(e) = claims.recv() => claim_changed(&mut s.queue, e),
            Some((k, uid)) = failed.recv() => s.bind_failed(&k, &uid),
            _ = tick.tick() => s.periodic(),
        }
        // What else arrived meanwhile is taken in the same batch.
        drain(&mut pods, |e| s.on_pod(e));
        drain(&mut nodes, |e| s.on_node(e));
        drain(&mut claims, |e| match e {
            Ok(e) => claim_changed(&mut s.queue, e),
            // Changes missed: any of them may have been the one a pod waits for.
            Err(_) => s.queue.nodes_changed(),
        });
        while let Ok((k, uid)) = failed.try_recv() {
            s.bind_failed(&k, &uid);
        }
        s.schedule_active().await;
        s.figures.depth.set(s.queue.len() as i64);
    }
}

/// A claim made, or bound to a volume, may let a pod waiting for it go: the pods that fit
/// nowhere are tried again. Other claim changes (statuses, annotations) wake nothing.
fn claim_changed(
    queue: &mut SchedulingQueue,
    e: InformerEvent<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
) {
    let volume = |c: &k8s_openapi::api::core::v1::PersistentVolumeClaim| {
        c.spec.as_ref().and_then(|s| s.volume_name.clone())
    };
    let wakes = match &e {
        InformerEvent::Applied { object, previous } => previous
            .as_ref()
            .is_none_or(|p| volume(p) != volume(object)),
        InformerEvent::Synced => true,
        InformerEvent::Deleted(_) => false,
    };
    if wakes {
        queue.nodes_changed();
    }
}

/// Hand `f` every change already waiting in `rx`.
fn drain<T>(rx: &mut feed::Receiver<T>, mut f: impl FnMut(Result<T, feed::RecvError>)) {
    loop {
        match rx.try_recv() {
            Ok(e) => f(Ok(e)),
            Err(feed::TryRecvError::Lagged) => f(Err(feed::RecvError::Lagged)),
            Err(feed::TryRecvError::Empty | feed::TryRecvError::Closed) => return,
        }
    }
}

/// Aborts its task when dropped (the scheduler's own helpers end with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Scheduler {
    ctx: Arc<Ctx>,
    reports: Arc<Reports>,
    cache: SchedulerCache,
    queue: SchedulingQueue,
    binds: Arc<Semaphore>,
    failed_tx: mpsc::UnboundedSender<(ObjectKey, String)>,
    figures: Figures,
}

impl Scheduler {
    /// Start again from the caches.
    fn rebuild(&mut self) {
        let nodes = self.ctx.nodes.list();
        self.cache
            .rebuild(nodes.iter().map(|n| &**n), self.ctx.pods.iter());
        // An assumption holds only for a pod still waiting for its bind.
        for key in self.cache.assumed() {
            let waiting = self
                .ctx
                .pods
                .get(&key.namespace, &key.name)
                .is_some_and(|p| is_pending(&p));
            if !waiting {
                self.cache.forget(&key);
            }
        }
        self.queue.clear();
        for p in self.ctx.pods.iter() {
            self.consider(&p);
        }
    }

    /// Queue `p` if it waits for a node (and no placement of ours is on its way).
    fn consider(&mut self, p: &Pod) {
        let key = ObjectKey::of(p);
        if is_pending(p) && !self.cache.is_assumed(&key) {
            let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            self.queue.add(key, priority, created_at(&p.metadata));
        } else {
            self.queue.remove(&key);
        }
    }

    fn on_pod(&mut self, e: Result<InformerEvent<Pod>, feed::RecvError>) {
        match e {
            Ok(InformerEvent::Applied { object, .. }) => {
                self.cache.pod_applied(&object);
                self.consider(&object);
            }
            Ok(InformerEvent::Deleted(p)) => {
                self.cache.pod_deleted(&p);
                self.queue.remove(&ObjectKey::of(&*p));
            }
            Ok(InformerEvent::Synced) | Err(feed::RecvError::Lagged) => self.rebuild(),
            Err(feed::RecvError::Closed) => {}
        }
    }

    fn on_node(&mut self, e: Result<InformerEvent<Node>, feed::RecvError>) {
        match e {
            Ok(InformerEvent::Applied { object, .. }) => self.cache.node_applied(&object),
            Ok(InformerEvent::Deleted(n)) => self.cache.node_deleted(&n),
            Ok(InformerEvent::Synced) | Err(feed::RecvError::Lagged) => self.rebuild(),
            Err(feed::RecvError::Closed) => return,
        }
        self.queue.nodes_changed();
    }

    /// The bind of pod `key` of uid `uid` failed: its assumption goes, unless the name is a
    /// newer pod's by now.
    fn bind_failed(&mut self, key: &ObjectKey, uid: &str) {
        let now = self.ctx.pods.get(&key.namespace, &key.name);
        if now
            .as_ref()
            .is_some_and(|p| p.metadata.uid.as_deref() != Some(uid))
        {
            return;
        }
        self.cache.forget(key);
        if let Some(p) = now {
            self.consider(&p);
        }
    }

    fn periodic(&mut self) {
        for key in self.cache.expire(ASSUME_TTL) {
            if let Some(p) = self.ctx.pods.get(&key.namespace, &key.name) {
                self.consider(&p);
            }
        }
        self.queue.retry_older_than(RETRY_UNSCHEDULABLE);
    }

    /// Try every active pod once.
    async fn schedule_active(&mut self) {
        let mut feasible = Vec::new();
        while let Some(key) = self.queue.pop() {
            let Some(pod) = self.ctx.pods.get(&key.namespace, &key.name) else {
                self.queue.remove(&key);
                continue;
            };
            if !is_pending(&pod) {
                self.queue.remove(&key);
                continue;
            }
            let started = Instant::now();
            let span = tracing::debug_span!("schedule", pod = %key);
            let placed = self
                .attempt(&key, &pod, &mut feasible)
                .instrument(span)
                .await;
            self.figures
                .latency
                .observe(started.elapsed().as_secs_f64());
            if placed {
                self.figures.successes.inc();
            } else {
                self.figures.errors.inc();
            }
        }
    }

    /// Place one pod: assume it on the best node and bind it, or set it aside with the
    /// reasons it fits nowhere. `true` if placed.
    async fn attempt(
        &mut self,
        key: &ObjectKey,
        pod: &Arc<Pod>,
        feasible: &mut Vec<usize>,
    ) -> bool {
        let mut ask = Ask::of(pod);
        let nodes: Vec<&NodeInfo> = self.cache.nodes().values().collect();
        feasible.clear();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let claims = match volumes::ask(&self.ctx, pod) {
            Ok(v) => v,
            Err(why) => {
                counts.insert(why, nodes.len());
                volumes::VolumeAsk::default()
            }
        };
        ask.volume_nodes = claims.nodes;
        let fits_volumes = counts.is_empty();
        for (i, n) in nodes.iter().enumerate().filter(|_| fits_volumes) {
            let why = reasons(&ask, n);
            if why.is_empty() {
                feasible.push(i);
            } else {
                for r in why {
                    *counts.entry(r).or_default() += 1;
                }
            }
        }
        let owner = controller_uid(&pod.metadata);
        let total = nodes.len();
        let best = best_node(&ask, owner, &nodes, feasible).map(|i| nodes[i].name.clone());
        drop(nodes);
        let Some(node) = best else {
            let message = unschedulable_message(total, &counts);
            let before = self.queue.unschedulable(key, message.clone());
            if before.as_deref() != Some(message.as_str()) {
                self.reports.add(key.clone(), message);
            }
            return false;
        };
        self.cache.assume(pod, &node);
        self.queue.remove(key);
        let Ok(permit) = self.binds.clone().acquire_owned().await else {
            return false;
        };
        let api: Api<Pod> = Api::new(self.ctx.client.clone(), &key.namespace);
        let (key, failed) = (key.clone(), self.failed_tx.clone());
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let rv = pod.metadata.resource_version.clone();
        let client = self.ctx.client.clone();
        let select_node = claims.select_node;
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let patch = json!({"metadata": {"resourceVersion": rv}, "spec": {"nodeName": node}});
            let told = volumes::tell_claims(&client, &select_node, &node).await;
            let bound = match told {
                Ok(()) => api.patch(&key.name, &patch).await.map(drop),
                Err(e) => Err(e),
            };
            match bound {
                Ok(()) => reports.placed(key, uid, node),
                Err(e) => {
                    tracing::debug!(pod = %key, node = %node, error = %e, "bind failed; the pod goes back to the queue");
                    let _ = failed.send((key, uid));
                }
            }
            drop(permit);
        });
        true
    }
}

/// The node scores for `ask` among `feasible` (indices into `nodes`); the best index.
fn best_node(
    ask: &Ask<'_>,
    owner: Option<&str>,
    nodes: &[&NodeInfo],
    feasible: &[usize],
) -> Option<usize> {
    let max_owner = owner
        .map(|o| {
            feasible
                .iter()
                .map(|&i| nodes[i].per_owner.get(o).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let weights: Vec<i64> = feasible
        .iter()
        .map(|&i| preferred_weight(ask.pod, nodes[i]))
        .collect();
    let max_weight = weights.iter().copied().max().unwrap_or(0);
    let pod_name = ask.pod.metadata.name.as_deref().unwrap_or("");
    let mut best: Option<(i128, u64, usize)> = None;
    for (j, &i) in feasible.iter().enumerate() {
        let n = &nodes[i];
        let free = |cap: i128, used: i128, req: i128| {
            if cap <= 0 {
                0
            } else {
                ((cap - used - req).max(0) * 100) / cap
            }
        };
        let least = (free(
            n.allocatable.0,
            n.requested.cpu_millis,
            ask.requests.cpu_millis,
        ) + free(
            n.allocatable.1,
            n.requested.memory_millis,
            ask.requests.memory_millis,
        )) / 2;
        let spread = match owner {
            Some(o) if max_owner > 0 => {
                i128::from(100 * (max_owner - n.per_owner.get(o).copied().unwrap_or(0)) / max_owner)
            }
            _ => 100,
        };
        let affinity = if max_weight > 0 {
            i128::from(100 * weights[j] / max_weight)
        } else {
            0
        };
        let score = least + 2 * spread + affinity - i128::from(n.pods.min(1_000_000)) / 1000;
        // Ties broken by a hash of pod and node, so equal nodes share the load.
        let tie = pod_name
            .bytes()
            .chain(n.name.bytes())
            .fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
            });
        if best.is_none_or(|(s, t, _)| score > s || (score == s && tie > t)) {
            best = Some((score, tie, i));
        }
    }
    best.map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str) -> NodeInfo {
        let res = BTreeMap::from([
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("8Gi".into())),
            ("pods".to_string(), Quantity("110".into())),
        ]);
        NodeInfo::new(&Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(res),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn owned_pod(i: usize) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("web-{i}")),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        }
    }

    #[test]
    fn an_owners_pods_spread_evenly() {
        let mut nodes = [node("a"), node("b"), node("c")];
        let all: Vec<usize> = (0..3).collect();
        for i in 0..10 {
            let pod = owned_pod(i);
            let ask = Ask::of(&pod);
            let view: Vec<&NodeInfo> = nodes.iter().collect();
            let best = best_node(&ask, Some("owner"), &view, &all).expect("a node fits");
            nodes[best].place(&pod, Some("owner"));
        }
        let mut counts: Vec<i64> = nodes.iter().map(|n| n.pods).collect();
        counts.sort_unstable();
        assert_eq!(counts, vec![3, 3, 4]);
    }
}
