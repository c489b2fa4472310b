//! What the scheduler tells about pods, written one at a time beside the placements so it
//! never floods the store that the binds and the users' writes need:
//!
//! - why pods fit nowhere: `PodScheduled=False` and a `FailedScheduling` Event;
//! - where pods were placed: a `Scheduled` Event each, as Kubernetes' scheduler writes, held
//!   back while placements go on (a burst of ten thousand binds would otherwise share the
//!   store with ten thousand Event writes) and written once the binds pause (one every
//!   50 ms meanwhile, so a steady stream of placements does not hold them back for good).
//!
//! Pending reports are kept by pod, not as copies of pods: a pod reported again before its
//! turn keeps its place with the newer reason, and the report is written from the pod as
//! the cache holds it then (a pod bound meanwhile is not reported at all). Ten thousand
//! pods waiting for nodes cost ten thousand names, not ten thousand decoded pods.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_proto::objects::Api;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::is_pending;
use crate::controllers::context::Ctx;
use crate::controllers::events::Involved;
use crate::controllers::runner::ObjectKey;

/// `Scheduled` Events wait until no pod was placed for this long...
const PLACEMENTS_PAUSE: Duration = Duration::from_millis(500);
/// ...but one is written at least this often meanwhile, so a steady stream of placements
/// does not hold them back for good (20 a second: a small share of a burst's binds).
const TRICKLE: Duration = Duration::from_millis(50);
/// At most this many placements wait to be told; past it the oldest are not (Kubernetes'
/// event broadcaster drops events too when it cannot keep up).
const MAX_PLACED: usize = 65_536;

/// A pod placed on a node, to be told in a `Scheduled` Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    key: ObjectKey,
    uid: String,
    node: String,
}

/// The next report to write.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    Unschedulable(ObjectKey, String),
    Scheduled(Placed),
}

#[derive(Default)]
struct Pending {
    order: VecDeque<ObjectKey>,
    reasons: HashMap<ObjectKey, String>,
    placed: VecDeque<Placed>,
    last_placed: Option<Instant>,
    last_told: Option<Instant>,
    dropped: u64,
}

/// The reports waiting to be written.
#[derive(Default)]
pub struct Reports {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Reports {
    fn with<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        match self.pending.lock() {
            Ok(mut p) => f(&mut p),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Report that pod `key` fits nowhere, for `reason`.
    pub fn add(&self, key: ObjectKey, reason: String) {
        self.with(|p| {
            if p.reasons.insert(key.clone(), reason).is_none() {
                p.order.push_back(key);
            }
        });
        self.wake.notify_one();
    }

    /// Tell that pod `key` (`uid`) was placed on `node`.
    pub fn placed(&self, key: ObjectKey, uid: String, node: String) {
        let first = self.with(|p| {
            if p.placed.len() >= MAX_PLACED {
                p.placed.pop_front();
                p.dropped += 1;
                if p.dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped = p.dropped,
                        "too many Scheduled Events waiting; the oldest are not written"
                    );
                }
            }
            p.placed.push_back(Placed { key, uid, node });
            p.last_placed = Some(Instant::now());
            p.placed.len() == 1
        });
        // The writer already waits for the ones queued before.
        if first {
            self.wake.notify_one();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.with(|p| p.order.len() + p.placed.len())
    }

    /// The next report due, or how long until a held-back one is.
    fn pop(&self) -> Result<Report, Option<Duration>> {
        self.with(|p| {
            while let Some(key) = p.order.pop_front() {
                if let Some(reason) = p.reasons.remove(&key) {
                    return Ok(Report::Unschedulable(key, reason));
                }
            }
            if p.placed.is_empty() {
                return Err(None);
            }
            let left = |since: Option<Instant>, hold: Duration| {
                since.map_or(Duration::ZERO, |at| hold.saturating_sub(at.elapsed()))
            };
            let wait = left(p.last_placed, PLACEMENTS_PAUSE).min(left(p.last_told, TRICKLE));
            if !wait.is_zero() {
                return Err(Some(wait));
            }
            p.last_told = Some(Instant::now());
            p.placed.pop_front().map(Report::Scheduled).ok_or(None)
        })
    }

    async fn next(&self) -> Report {
        loop {
            match self.pop() {
                Ok(r) => return r,
                Err(Some(wait)) => {
                    // A report of a pod that fits nowhere is not held back.
                    let _ = tokio::time::timeout(wait, self.wake.notified()).await;
                }
                Err(None) => self.wake.notified().await,
            }
        }
    }
}

/// Write the reports as they come, until aborted.
pub async fn run(ctx: Arc<Ctx>, reports: Arc<Reports>) {
    loop {
        match reports.next().await {
            Report::Unschedulable(key, reason) => {
                let Some(pod) = ctx.pods.get(&key.namespace, &key.name) else {
                    continue;
                };
                if is_pending(&pod) {
                    write(&ctx, &pod, &reason).await;
                }
            }
            Report::Scheduled(placed) => scheduled(&ctx, placed).await,
        }
    }
}

/// The `Scheduled` Event of a pod still there.
async fn scheduled(ctx: &Ctx, placed: Placed) {
    let Placed { key, uid, node } = placed;
    let there = ctx
        .pods
        .get(&key.namespace, &key.name)
        .is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
    if !there {
        return;
    }
    ctx.recorder
        .record_now(
            &Involved {
                kind: "Pod".into(),
                api_version: "v1".into(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                uid,
            },
            "Normal",
            "Scheduled",
            &format!("Successfully assigned {key} to {node}"),
            "default-scheduler",
        )
        .await;
}

async fn write(ctx: &Ctx, pod: &Pod, message: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    tracing::info!(pod = %name, namespace = %ns, %message, "pod fits no node");
    ctx.recorder.record(
        &Involved {
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespace: ns.clone(),
            name: name.clone(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        },
        "Warning",
        "FailedScheduling",
        message,
        "default-scheduler",
    );
    let mut next = pod.clone();
    let status = next.status.get_or_insert_with(Default::default);
    let mut conditions: Vec<PodCondition> = status
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "PodScheduled")
        .collect();
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        ..Default::default()
    });
    status.conditions = Some(conditions);
    let api: Api<Pod> = Api::new(ctx.client.clone(), &ns);
    if let Err(e) = api.update_status(&next).await {
        tracing::debug!(pod = %name, error = %e, "recording PodScheduled=False failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns".to_string(), name.to_string())
    }

    #[tokio::test]
    async fn a_pod_reported_again_keeps_its_place_with_the_newer_reason() {
        let r = Reports::default();
        r.add(key("a"), "no nodes".into());
        r.add(key("b"), "no nodes".into());
        r.add(key("a"), "0/3 nodes: taint".into());
        assert_eq!(r.len(), 2);
        let unschedulable = |k: &str, why: &str| Report::Unschedulable(key(k), why.to_string());
        assert_eq!(r.next().await, unschedulable("a", "0/3 nodes: taint"));
        assert_eq!(r.next().await, unschedulable("b", "no nodes"));
        assert_eq!(r.len(), 0);
        r.add(key("a"), "again".into());
        assert_eq!(r.next().await, unschedulable("a", "again"));
    }

    #[tokio::test(start_paused = true)]
    async fn placements_trickle_out_and_refusals_are_not_held_back() {
        let r = Reports::default();
        r.placed(key("a"), "ua".into(), "n1".into());
        r.placed(key("b"), "ub".into(), "n2".into());
        r.add(key("c"), "no nodes".into());
        let start = tokio::time::Instant::now();
        assert_eq!(
            r.next().await,
            Report::Unschedulable(key("c"), "no nodes".into())
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        // One trickles out at once; the next waits its turn while placements go on.
        let Report::Scheduled(first) = r.next().await else {
            panic!("a placement next");
        };
        assert_eq!((first.key, first.node), (key("a"), "n1".to_string()));
        assert_eq!(start.elapsed(), Duration::ZERO);
        let Report::Scheduled(second) = r.next().await else {
            panic!("the other placement next");
        };
        assert_eq!(second.key, key("b"));
        assert!(start.elapsed() >= TRICKLE, "{:?}", start.elapsed());
        assert_eq!(r.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_burst_the_rest_go_out_once_placements_pause() {
        let r = Reports::default();
        for i in 0..30 {
            r.placed(key(&format!("p{i}")), String::new(), "n".into());
        }
        let start = tokio::time::Instant::now();
        for _ in 0..30 {
            r.next().await;
        }
        // One every 50 ms until the pause ends, then the rest at once.
        let took = start.elapsed();
        assert!(
            took >= PLACEMENTS_PAUSE - TRICKLE && took <= PLACEMENTS_PAUSE + TRICKLE,
            "{took:?}"
        );
        assert_eq!(r.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn steady_placements_still_trickle_out() {
        let r = Arc::new(Reports::default());
        let placing = {
            let r = r.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    r.placed(key(&format!("p{i}")), String::new(), "n".into());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let start = tokio::time::Instant::now();
        let mut told = 0;
        while start.elapsed() < Duration::from_millis(900) {
            if let Report::Scheduled(_) = r.next().await {
                told += 1;
            }
        }
        // Placements every 10 ms never pause for 0.5 s; one goes out every 50 ms anyway.
        assert!((15..=20).contains(&told), "{told} told in 0.9 s");
        placing.abort();
    }

    #[test]
    fn past_the_cap_the_oldest_placements_go() {
        let r = Reports::default();
        for i in 0..MAX_PLACED + 2 {
            r.placed(key(&format!("p{i}")), String::new(), "n".into());
        }
        assert_eq!(r.len(), MAX_PLACED);
        assert_eq!(r.with(|p| p.dropped), 2);
        assert_eq!(
            r.with(|p| p.placed.front().map(|f| f.key.clone())),
            Some(key("p2"))
        );
    }
}
