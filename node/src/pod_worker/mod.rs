//! Pod workers: one task per pod bound to this node, reconciling it against the runtime.
//! The agent hands each worker the newest version of its pod through a `watch` channel, so
//! updates coalesce (a worker busy pulling sees only the latest spec when it looks again).
//!
//! ```text
//! agent ──watch(Option<Pod>)──▶ worker: sandbox (netns + CNI) → volumes → init containers in
//!                                        order → containers (pull, create, start, probe,
//!                                        restart with back-off) → status (if changed)
//!                               on deletion: SIGTERM, grace, SIGKILL → remove containers,
//!                                        snapshots, netns, IP, files → finish the delete
//! ```
//!
//! A worker that starts for a pod whose containers already run (the agent restarted)
//! re-adopts them by their labels: same container ids, no restart.

pub mod api;
pub mod backoff;
pub mod config_sources;
pub mod context;
pub mod events;
pub mod hooks;
pub mod logs;
pub mod probes;
pub mod pull_secrets;
pub mod security_context;
pub mod service_links;
pub mod slot;
pub mod status;
mod sync;
pub mod termination;
pub mod volumes;

/// The file in a pod folder that keeps when the agent first saw the pod (its status's
/// `startTime`), for a restarted agent.
pub const START_TIME: &str = "start-time";

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;

pub use self::api::PodApi;
pub use self::context::{MadeAhead, NothingMadeAhead, WorkerCtx, WorkerEnv};
use self::slot::Slot;
use crate::cni::PodNetwork;
use crate::runtime::{labels, ContainerRuntime};

/// The agent's handle on one worker.
pub struct PodHandle {
    uid: String,
    tx: watch::Sender<Option<Arc<Pod>>>,
    /// Wakes the worker for a pass now (one of its containers exited).
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl PodHandle {
    /// Start a worker for `pod`.
    pub fn spawn<E: WorkerEnv>(ctx: Arc<WorkerCtx<E>>, pod: Arc<Pod>) -> Self {
        let (tx, rx) = watch::channel(Some(pod.clone()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let worker = Worker::new(ctx, &pod);
        let uid = worker.uid.clone();
        let span = tracing::info_span!("pod", pod = %worker.key);
        let task = tokio::spawn(tracing::Instrument::instrument(
            worker.run(rx, wake.clone()),
            span,
        ));
        Self {
            uid,
            tx,
            wake,
            task,
        }
    }

    /// If container `id` is this pod's, have the worker look at once (it exited).
    pub fn container_exited(&self, id: &str) {
        if slot::is_container_of(&self.uid, id) {
            self.wake.notify_one();
        }
    }

    /// Hand the worker a newer version of its pod; `None` = the pod is gone from the API.
    pub fn update(&self, pod: Option<Arc<Pod>>) {
        let _ = self.tx.send(pod);
    }

    /// Whether the worker has finished (the pod is cleaned up).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Whether `next` differs from `current` only in what the worker need not act on at once:
/// its status (mostly the worker's own report coming back) and bookkeeping such as the
/// resource version. A status someone else changed is put right at the next pass.
fn only_status_changed(current: &Pod, next: &Pod) -> bool {
    let (a, b) = (&current.metadata, &next.metadata);
    current.spec == next.spec
        && a.deletion_timestamp == b.deletion_timestamp
        && a.deletion_grace_period_seconds == b.deletion_grace_period_seconds
        && a.labels == b.labels
        && a.annotations == b.annotations
}

/// The uid-derived name of a pod's network namespace.
pub fn sandbox_name(uid: &str) -> String {
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect();
    format!("skiff-{short}")
}

struct Worker<E: WorkerEnv> {
    ctx: Arc<WorkerCtx<E>>,
    uid: String,
    namespace: String,
    name: String,
    key: String,
    dir: PathBuf,
    sandbox: String,
    net: Option<PodNetwork>,
    volumes: Option<(BTreeMap<String, PathBuf>, Instant)>,
    /// By `init/NAME` or `app/NAME`.
    slots: BTreeMap<String, Slot>,
    start_time: i64,
    last_status: Option<PodStatus>,
    pending_message: Option<String>,
    adopted: bool,
    /// Held from the first sync until the pod's containers have been started once.
    start_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The first start is over (successful or not): later syncs skip the gate.
    started_once: bool,
    /// The pod ran past its `activeDeadlineSeconds`: stopped, and Failed for good.
    deadline_exceeded: bool,
    /// When this agent first saw the pod; `None` once its start was timed (or it was found
    /// running, after an agent restart).
    seen_at: Option<Instant>,
    /// How often each (reason, message) was recorded as an Event.
    event_counts: std::sync::Mutex<BTreeMap<(&'static str, String), u32>>,
}

impl<E: WorkerEnv> Worker<E> {
    fn new(ctx: Arc<WorkerCtx<E>>, pod: &Pod) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        Self {
            dir: ctx.pods_dir.join(&uid),
            sandbox: sandbox_name(&uid),
            key: format!("{namespace}/{name}"),
            ctx,
            uid,
            namespace,
            name,
            net: None,
            volumes: None,
            slots: BTreeMap::new(),
            start_time: jiff::Timestamp::now().as_second(),
            last_status: pod.status.clone(),
            pending_message: None,
            adopted: false,
            event_counts: Default::default(),
            start_permit: None,
            started_once: false,
            deadline_exceeded: false,
            seen_at: Some(Instant::now()),
        }
    }

    async fn run(
        mut self,
        mut rx: watch::Receiver<Option<Arc<Pod>>>,
        wake: Arc<tokio::sync::Notify>,
    ) {
        let mut pod = rx.borrow_and_update().clone();
        loop {
            let Some(current) = pod.clone() else {
                // Gone from the API (deleted while this agent was away, or force-deleted).
                self.terminate(Duration::from_secs(2), None).await;
                return;
            };
            if current.metadata.deletion_timestamp.is_some() {
                let grace = current
                    .metadata
                    .deletion_grace_period_seconds
                    .or_else(|| current.spec.as_ref()?.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(0) as u64;
                self.terminate(Duration::from_secs(grace), Some(&current))
                    .await;
                return;
            }
            if !self.adopted {
                self.adopt().await;
                self.adopted = true;
            }
            let d = self.sync(&current).await;
            let due = tokio::time::Instant::now() + d;
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The agent is stopping: leave everything running.
                            return;
                        }
                        pod = rx.borrow_and_update().clone();
                        if pod.as_deref().is_none_or(|p| !only_status_changed(&current, p)) {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(due) => break,
                    _ = wake.notified() => break,
                }
            }
        }
    }

    /// Take over containers of this pod that already exist (the agent restarted).
    async fn adopt(&mut self) {
        if !self.dir.exists() {
            // Nothing of this pod's was made here: its folder is made before its first
            // container and removed after its last. A new pod thus costs containerd no
            // listing (which reads every container record of the namespace).
            return;
        }
        let mut mine: Vec<_> = match self.ctx.runtime.list_pod(&self.uid).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "listing containers to re-adopt");
                return;
            }
        };
        mine.sort_by_key(|c| c.attempt());
        let any_running = mine
            .iter()
            .any(|c| matches!(c.state, crate::runtime::ProcessState::Running { .. }));
        if any_running {
            // Started before this agent did: its start is not this agent's to time.
            self.seen_at = None;
        }
        for c in mine {
            let key = format!("{}/{}", c.label(labels::KIND), c.label(labels::CONTAINER));
            let slot = self.slots.entry(key).or_default();
            if let Some(older) = slot.current.replace(c.id.clone()) {
                let _ = self.ctx.runtime.remove(&older).await;
            }
            slot.attempt = c.attempt();
            slot.started_at = c.created_at;
            slot.started_instant = Some(Instant::now());
            tracing::info!(container = %c.id, state = ?c.state, "re-adopted");
        }
        if let Some(net) = PodNetwork::read_record(&self.dir) {
            if net.host {
                self.net = Some(PodNetwork::on_host(&self.ctx.host_ip));
            } else if net.netns.exists() {
                self.net = Some(net);
            } else if !any_running {
                // The namespace went with the containers (a reboot, or `skiff up`
                // stopped): release the address it had before the pod is wired again, or
                // it would stay taken.
                tracing::info!(ip = %net.ip, "the pod's network namespace is gone; wiring it again");
                if let Err(e) = self.ctx.release_sandbox(&self.uid, &self.dir).await {
                    tracing::warn!(error = %e, "releasing the old address");
                }
            }
        }
        if let Ok(bytes) = std::fs::read(self.dir.join(START_TIME)) {
            if let Ok(t) = String::from_utf8_lossy(&bytes).trim().parse() {
                self.start_time = t;
            }
        }
    }

    /// Record an Event about this pod (written in the background; a repeat is counted on
    /// the same Event).
    fn event(&self, type_: &'static str, reason: &'static str, message: String) {
        let count = {
            let mut counts = self.event_counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry((reason, message.clone())).or_insert(0);
            *n += 1;
            *n
        };
        let event = events::PodEvent {
            namespace: self.namespace.clone(),
            pod: self.name.clone(),
            uid: self.uid.clone(),
            type_,
            reason,
            message,
            count,
        };
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = ctx.api.record_event(&event, &ctx.node_name).await {
                tracing::debug!(reason = event.reason, error = %e, "recording an event");
            }
        });
    }

    async fn terminate(&mut self, grace: Duration, pod: Option<&Pod>) {
        tracing::info!(grace_s = grace.as_secs(), "terminating");
        let runtime = &self.ctx.runtime;
        // (id, container name): the name finds the container's preStop hook.
        let running: Vec<(String, String)> = match runtime.list_pod(&self.uid).await {
            Ok(list) => list
                .into_iter()
                .map(|c| {
                    let name = c.label(crate::runtime::labels::CONTAINER).to_string();
                    (c.id, name)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing containers to stop");
                self.slots
                    .values()
                    .filter_map(|s| s.current.clone())
                    .map(|id| (id, String::new()))
                    .collect()
            }
        };
        let ids: Vec<String> = running.iter().map(|(id, _)| id.clone()).collect();
        let pod_ip = self.net.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        let containers: Vec<k8s_openapi::api::core::v1::Container> = pod
            .and_then(|p| p.spec.as_ref())
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        for (_, name) in running.iter().filter(|(_, n)| !n.is_empty()) {
            self.event("Normal", "Killing", format!("Stopping container {name}"));
        }
        let stops = running.iter().map(|(id, name)| {
            let spec = containers.iter().find(|c| &c.name == name);
            let pod_ip = pod_ip.as_str();
            async move {
                let spent = match spec {
                    Some(c) => hooks::pre_stop(c, id, pod_ip, &**runtime, grace).await,
                    None => Duration::ZERO,
                };
                runtime.stop(id, hooks::grace_left(grace, spent)).await
            }
        });
        for (id, r) in ids.iter().zip(futures::future::join_all(stops).await) {
            if let Err(e) = r {
                tracing::warn!(container = %id, error = %e, "stopping");
            }
        }
        for id in &ids {
            if let Err(e) = runtime.remove(id).await {
                tracing::warn!(container = %id, error = %e, "removing");
            }
        }
        // The pod's folder, with its network record, goes only after this.
        if let Err(e) = self.ctx.release_sandbox(&self.uid, &self.dir).await {
            tracing::warn!(error = %e, "tearing the pod network down");
        }
        crate::cgroups::remove_pod_parent(&self.uid);
        volumes::release(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(pod) = pod {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            for attempt in 0..5 {
                match self
                    .ctx
                    .api
                    .finish_delete(&self.namespace, &self.name, &uid)
                    .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "finishing the pod's deletion");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        tracing::info!("terminated and cleaned up");
    }
}

#[cfg(test)]
mod worker_test;

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                         "resourceVersion": "5", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .expect("pod")
    }

    #[test]
    fn a_status_report_coming_back_needs_no_pass() {
        let current = pod();
        let mut next = pod();
        next.metadata.resource_version = Some("6".into());
        next.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        assert!(only_status_changed(&current, &next));
    }

    #[test]
    fn a_deletion_or_a_spec_or_label_change_needs_a_pass() {
        let current = pod();
        let mut deleted = pod();
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert!(!only_status_changed(&current, &deleted));
        let mut respec = pod();
        if let Some(s) = respec.spec.as_mut() {
            s.active_deadline_seconds = Some(5);
        }
        assert!(!only_status_changed(&current, &respec));
        let mut relabelled = pod();
        relabelled.metadata.labels = None;
        assert!(!only_status_changed(&current, &relabelled));
    }
}
