//! The pod worker on an in-memory runtime, network and control plane: create, restart with
//! back-off, a failing probe, deletion, re-adoption and a failed pull. No root, no
//! containerd: `make test` runs these anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use skiff_proto::objects::ApiError;

use super::api::{PodApi, SourceData};
use super::backoff::BackoffPolicy;
use super::config_sources::{ConfigError, SourceKind};
use super::slot::container_id;
use super::{NothingMadeAhead, PodHandle, WorkerCtx, WorkerEnv, START_TIME};
use crate::cni::{PodNetwork, PodNetworking};
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{labels, ContainerInfo, ProcessState};

/// Namespaces as files in a folder, addresses counted up.
struct FakeNetwork {
    dir: PathBuf,
    next: AtomicU32,
}

impl PodNetworking for FakeNetwork {
    async fn setup(&self, name: &str) -> crate::error::Result<PodNetwork> {
        let netns = self.dir.join(name);
        std::fs::write(&netns, b"").map_err(crate::error::Error::io(&netns))?;
        Ok(PodNetwork {
            netns,
            ip: format!("10.88.0.{}", 2 + self.next.fetch_add(1, Ordering::SeqCst)),
            cni_id: None,
            sandbox: None,
            host: false,
        })
    }

    async fn teardown_pod(&self, name: &str, _pod_dir: &Path) -> crate::error::Result<()> {
        let _ = std::fs::remove_file(self.dir.join(name));
        Ok(())
    }

    async fn release(&self, name: &str, _net: &PodNetwork) -> crate::error::Result<()> {
        let _ = std::fs::remove_file(self.dir.join(name));
        Ok(())
    }
}

/// Records what the workers tell the control plane.
#[derive(Default)]
struct FakeApi {
    statuses: Mutex<Vec<PodStatus>>,
    deleted: Mutex<Vec<String>>,
}

impl FakeApi {
    fn last_status(&self) -> Option<PodStatus> {
        self.statuses.lock().unwrap().last().cloned()
    }

    fn saw(&self, f: impl Fn(&PodStatus) -> bool) -> bool {
        self.statuses.lock().unwrap().iter().any(f)
    }
}

impl PodApi for FakeApi {
    async fn source_data(
        &self,
        _namespace: &str,
        _kind: SourceKind,
        _name: &str,
    ) -> Result<Option<SourceData>, ConfigError> {
        Ok(None)
    }

    async fn claim_folder(
        &self,
        _namespace: &str,
        claim: &str,
    ) -> Result<std::path::PathBuf, ConfigError> {
        Err(ConfigError(format!("claim {claim:?} is not bound")))
    }

    async fn update_status(&self, pod: &Pod) -> Result<(), ApiError> {
        if let Some(s) = &pod.status {
            self.statuses.lock().unwrap().push(s.clone());
        }
        Ok(())
    }

    async fn finish_delete(&self, namespace: &str, name: &str, _uid: &str) -> Result<(), ApiError> {
        self.deleted
            .lock()
            .unwrap()
            .push(format!("{namespace}/{name}"));
        Ok(())
    }

    async fn record_event(
        &self,
        _event: &crate::pod_worker::events::PodEvent,
        _node: &str,
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

struct Fake;

impl WorkerEnv for Fake {
    type Runtime = FakeRuntime;
    type Network = FakeNetwork;
    type Api = FakeApi;
}

struct Node {
    ctx: Arc<WorkerCtx<Fake>>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let netns = dir.path().join("netns");
        std::fs::create_dir_all(&netns).expect("netns folder");
        let runtime = FakeRuntime::default();
        runtime.add_image("busybox:1");
        let ctx = Arc::new(WorkerCtx {
            runtime: Arc::new(runtime),
            network: FakeNetwork {
                dir: netns,
                next: AtomicU32::new(0),
            },
            api: FakeApi::default(),
            node_name: "n1".into(),
            host_ip: "192.0.2.1".into(),
            pods_dir: dir.path().join("pods"),
            pod_start: crate::stats::AgentStats::default().pod_start,
            backoff: BackoffPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(400),
            },
            log_max_bytes: 1 << 20,
            start_gate: Arc::new(tokio::sync::Semaphore::new(2)),
            made_ahead: Arc::new(NothingMadeAhead),
            resolv_conf: dir.path().join("resolv.conf"),
            dns: None,
            services: None,
        });
        Self { ctx, _dir: dir }
    }

    fn runtime(&self) -> &FakeRuntime {
        &self.ctx.runtime
    }

    fn api(&self) -> &FakeApi {
        &self.ctx.api
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx.pods_dir.join(UID)
    }
}

const UID: &str = "0f8e2c1a-1111-2222-3333-444455556666";

fn pod(container: serde_json::Value) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": UID, "resourceVersion": "5"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
                     "containers": [container]}
        }))
        .expect("pod"),
    )
}

fn plain() -> serde_json::Value {
    serde_json::json!({"name": "c", "image": "busybox:1"})
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn running(s: &PodStatus) -> bool {
    s.phase.as_deref() == Some("Running")
        && s.container_statuses
            .iter()
            .flatten()
            .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
}

fn restarts(s: &PodStatus) -> i32 {
    s.container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum()
}

fn waiting_reason(s: &PodStatus) -> Option<String> {
    s.container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
}

#[tokio::test]
async fn a_new_pod_gets_its_container_started_and_reports_running() {
    let node = Node::new();
    let _h = PodHandle::spawn(node.ctx.clone(), pod(plain()));
    until("the pod reports Running", || {
        node.api().last_status().is_some_and(|s| running(&s))
    })
    .await;
    let containers = node.runtime().containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let c = &containers[0];
    assert_eq!(c.id, container_id(UID, "c", 0));
    assert_eq!(c.label(labels::POD), "default/web");
    assert_eq!(c.label(labels::POD_UID), UID);
    assert!(matches!(c.state, ProcessState::Running { .. }));
    let status = node.api().last_status().expect("a status");
    assert_eq!(status.pod_ip.as_deref(), Some("10.88.0.2"));
    assert!(
        PodNetwork::read_record(&node.pod_dir()).is_some(),
        "the network is recorded for a restarted agent"
    );
}

#[tokio::test]
async fn a_crashing_container_restarts_with_a_growing_back_off_reported_as_crash_loop() {
    let node = Node::new();
    let h = PodHandle::spawn(node.ctx.clone(), pod(plain()));
    let mut starts: Vec<Instant> = Vec::new();
    for attempt in 0..3u32 {
        let id = container_id(UID, "c", attempt);
        until("the container runs", || {
            node.runtime().started().contains(&id)
        })
        .await;
        starts.push(Instant::now());
        node.runtime().exit(&id, 1);
        h.container_exited(&id);
    }
    until("the third restart is counted", || {
        node.api().saw(|s| restarts(s) >= 2)
    })
    .await;
    // 100 ms after the first crash, 200 after the second: each wait at least its back-off.
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");
    assert!(
        node.api()
            .saw(|s| waiting_reason(s).as_deref() == Some("CrashLoopBackOff")),
        "the back-off is reported as CrashLoopBackOff"
    );
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let node = Node::new();
    let probed = serde_json::json!({"name": "c", "image": "busybox:1",
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 1}});
    let _h = PodHandle::spawn(node.ctx.clone(), pod(probed));
    let first = container_id(UID, "c", 0);
    until("the container runs", || {
        node.runtime().started().contains(&first)
    })
    .await;
    node.runtime().set_exec_exit("c", 1);
    until("a second container is started", || {
        node.runtime()
            .started()
            .contains(&container_id(UID, "c", 1))
    })
    .await;
    assert_eq!(
        node.runtime().stopped().first(),
        Some(&first),
        "the failing one was stopped"
    );
}

#[tokio::test]
async fn a_deleted_pod_stops_and_removes_its_containers_and_finishes_the_delete() {
    let node = Node::new();
    let p = pod(plain());
    let h = PodHandle::spawn(node.ctx.clone(), p.clone());
    until("the pod reports Running", || {
        node.api().last_status().is_some_and(|s| running(&s))
    })
    .await;
    let mut deleting = (*p).clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    deleting.metadata.deletion_grace_period_seconds = Some(1);
    h.update(Some(Arc::new(deleting)));
    until("the worker has finished", || h.is_finished()).await;
    assert!(node.runtime().containers().is_empty(), "containers removed");
    assert_eq!(node.runtime().stopped(), vec![container_id(UID, "c", 0)]);
    assert!(!node.pod_dir().exists(), "the pod's folder is gone");
    assert_eq!(*node.api().deleted.lock().unwrap(), vec!["default/web"]);
    let netns: Vec<_> = std::fs::read_dir(&node.ctx.network.dir)
        .expect("netns folder")
        .collect();
    assert!(netns.is_empty(), "the network is released");
}

#[tokio::test]
async fn a_restarted_agent_re_adopts_running_containers_without_restarting_them() {
    let node = Node::new();
    // What the previous agent left: the pod's folder, its network and its running container.
    let dir = node.pod_dir();
    std::fs::create_dir_all(&dir).expect("pod folder");
    std::fs::write(dir.join(START_TIME), "1700000000").expect("start time");
    let net = node
        .ctx
        .network
        .setup(&super::sandbox_name(UID))
        .await
        .expect("network");
    net.write_record(&dir).expect("record");
    let id = container_id(UID, "c", 0);
    node.runtime().insert(ContainerInfo {
        id: id.clone(),
        labels: BTreeMap::from([
            (labels::POD.to_string(), "default/web".to_string()),
            (labels::POD_UID.to_string(), UID.to_string()),
            (labels::CONTAINER.to_string(), "c".to_string()),
            (labels::KIND.to_string(), "app".to_string()),
            (labels::ATTEMPT.to_string(), "0".to_string()),
        ]),
        created_at: 1_700_000_000,
        snapshot_key: id.clone(),
        state: ProcessState::Running { pid: 42 },
    });
    let _h = PodHandle::spawn(node.ctx.clone(), pod(plain()));
    until("the pod reports Running", || {
        node.api().last_status().is_some_and(|s| running(&s))
    })
    .await;
    assert!(node.runtime().started().is_empty(), "nothing was started");
    assert_eq!(node.runtime().containers().len(), 1);
    let status = node.api().last_status().expect("a status");
    let c = &status
        .container_statuses
        .as_ref()
        .expect("container statuses")[0];
    assert_eq!(
        c.container_id.as_deref(),
        Some(format!("containerd://{id}").as_str())
    );
    assert_eq!(c.restart_count, 0);
    assert_eq!(status.pod_ip, Some(net.ip), "the same address");
    let started = status.start_time.expect("a start time");
    assert_eq!(
        started.0.as_second(),
        1_700_000_000,
        "the first agent's start time"
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_reported_and_retried_with_back_off() {
    let node = Node::new();
    node.runtime().fail_pulls("registry.example/missing:1");
    let missing = serde_json::json!({"name": "c", "image": "registry.example/missing:1"});
    let _h = PodHandle::spawn(node.ctx.clone(), pod(missing));
    until("the pull error is reported", || {
        node.api()
            .saw(|s| waiting_reason(s).as_deref() == Some("ErrImagePull"))
    })
    .await;
    until("the back-off is reported", || {
        node.api()
            .saw(|s| waiting_reason(s).as_deref() == Some("ImagePullBackOff"))
    })
    .await;
    assert!(
        node.runtime().containers().is_empty(),
        "no container without its image"
    );
    assert_eq!(
        node.api().last_status().and_then(|s| s.phase),
        Some("Pending".into())
    );
}

#[tokio::test]
async fn a_network_whose_record_cannot_be_written_is_given_up_and_no_container_starts() {
    let node = Node::new();
    // The record's path taken by a folder: the write fails.
    std::fs::create_dir_all(node.pod_dir().join(PodNetwork::RECORD)).expect("a folder in the way");
    let _h = PodHandle::spawn(node.ctx.clone(), pod(plain()));
    until("the pod says why it waits", || {
        node.api().saw(|s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("recording the pod network"))
        })
    })
    .await;
    let netns: Vec<_> = std::fs::read_dir(&node.ctx.network.dir)
        .expect("netns folder")
        .collect();
    assert!(netns.is_empty(), "the unrecorded network was released");
    assert!(
        node.runtime().started().is_empty(),
        "no container without a recorded network"
    );
}
