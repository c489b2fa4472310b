//! Hollow nodes: a simulator of many nodes in one process, for tests and scale benchmarks.
//! Each registers a Node, renews its Lease, and reports the pods bound to it as Running and
//! Ready without running anything; a pod being deleted is finished at once. A pod that runs
//! to completion (restart policy Never or OnFailure: a Job's) "runs" for
//! [`RUN_SECONDS`] seconds (0 when not annotated) and exits with [`EXIT_CODE`] (0 when not
//! annotated). It is not a node agent: no container runs anywhere.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Node,
    NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use serde_json::json;
use skiff_proto::objects::{Api, Informer, InformerEvent, Selection};
use skiff_proto::Client;
use tokio::sync::Semaphore;

/// Annotation: how long a run-to-completion pod runs on a hollow node, in seconds.
pub const RUN_SECONDS: &str = "hollow.skiff.dev/run-seconds";
/// Annotation: the exit code it ends with (non-zero: the pod fails).
pub const EXIT_CODE: &str = "hollow.skiff.dev/exit-code";

/// Settings of a set of hollow nodes.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// How many nodes.
    pub count: usize,
    /// Node names are `{prefix}-{i}`.
    pub prefix: String,
    /// Allocatable cpu of each node.
    pub cpu: String,
    /// Allocatable memory of each node.
    pub memory: String,
    /// Pods each node takes.
    pub pods: u32,
    /// How often leases are renewed.
    pub renew_every: Duration,
    /// Namespace of the leases.
    pub lease_namespace: String,
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn node_object(name: &str, i: usize, cfg: &HollowConfig) -> Node {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(cfg.cpu.clone())),
        ("memory".to_string(), Quantity(cfg.memory.clone())),
        ("pods".to_string(), Quantity(cfg.pods.to_string())),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), name.to_string()),
                ("skiff.dev/hollow".to_string(), "true".to_string()),
            ])),
            // Volumes are provisioned for hollow nodes, never written.
            annotations: Some(BTreeMap::from([(
                skiff_proto::kinds::LOCAL_PATH_ROOT_ANNOTATION.to_string(),
                format!("/var/lib/skiff-hollow/{name}/local-path"),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                message: Some("hollow node (simulated)".into()),
                last_heartbeat_time: Some(now()),
                last_transition_time: Some(now()),
            }]),
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: format!("10.250.{}.{}", (i / 250) % 250, i % 250 + 1),
            }]),
            node_info: Some(NodeSystemInfo {
                kubelet_version: "skiff-hollow".into(),
                container_runtime_version: "none (simulated)".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn register(
    client: &Client,
    name: &str,
    i: usize,
    cfg: &HollowConfig,
) -> Result<(), skiff_proto::objects::ApiError> {
    let api: Api<Node> = Api::new(client.clone(), "");
    let node = node_object(name, i, cfg);
    match api.create(&node).await {
        Ok(_) => Ok(()),
        Err(_) => {
            // Registered before: report Ready again.
            let mut current = api.get(name).await?;
            current.status = node.status;
            current.metadata.resource_version = None;
            api.update_status(&current).await.map(|_| ())
        }
    }
}

async fn renew(client: &Client, name: &str, cfg: &HollowConfig) {
    let api: Api<Lease> = Api::new(client.clone(), &cfg.lease_namespace);
    let renew_time = MicroTime(jiff::Timestamp::now());
    let patch = json!({"spec": {"renewTime": renew_time, "holderIdentity": name}});
    if api.patch(name, &patch).await.is_err() {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(cfg.lease_namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.into()),
                lease_duration_seconds: Some(10),
                renew_time: Some(renew_time),
                ..Default::default()
            }),
        };
        let _ = api.create(&lease).await;
    }
}

fn running_status(pod: &Pod, host_ip: &str, pod_ip: String) -> PodStatus {
    let condition = |t: &str| PodCondition {
        type_: t.into(),
        status: "True".into(),
        last_transition_time: Some(now()),
        ..Default::default()
    };
    PodStatus {
        phase: Some("Running".into()),
        host_ip: Some(host_ip.into()),
        pod_ip: Some(pod_ip),
        start_time: Some(now()),
        conditions: Some(vec![
            condition("PodScheduled"),
            condition("Initialized"),
            condition("ContainersReady"),
            condition("Ready"),
        ]),
        container_statuses: Some(
            pod.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    ready: true,
                    started: Some(true),
                    restart_count: 0,
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(now()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Whether a pod runs to completion rather than forever.
fn runs_to_completion(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .is_some_and(|r| r != "Always")
}

fn is_finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn annotation(p: &Pod, key: &str) -> Option<i64> {
    p.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// How long until a run-to-completion pod that started at `started` (Unix seconds) ends.
fn time_left(p: &Pod) -> Duration {
    let run = annotation(p, RUN_SECONDS).unwrap_or(0).max(0);
    let started = p
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0);
    let left = started + run * 1000 - jiff::Timestamp::now().as_millisecond();
    Duration::from_millis(left.max(0) as u64)
}

/// The status of a pod whose containers all exited with `code`.
fn finished_status(pod: &Pod, code: i32) -> PodStatus {
    let mut status = pod.status.clone().unwrap_or_default();
    status.phase = Some(if code == 0 { "Succeeded" } else { "Failed" }.into());
    for c in status.conditions.iter_mut().flatten() {
        if c.type_ == "Ready" || c.type_ == "ContainersReady" {
            c.status = "False".into();
            c.reason = Some("PodCompleted".into());
            c.last_transition_time = Some(now());
        }
    }
    for c in status.container_statuses.iter_mut().flatten() {
        c.ready = false;
        c.started = Some(false);
        let started_at = c
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone());
        c.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                started_at,
                finished_at: Some(now()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    status
}

fn is_running_ready(p: &Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Run `cfg.count` hollow nodes against `client` until the process ends.
pub async fn run(client: Client, cfg: HollowConfig) {
    tracing::warn!(count = cfg.count, prefix = %cfg.prefix, "hollow nodes: a simulator; pods are reported Running but no container runs");
    let names: Vec<String> = (0..cfg.count)
        .map(|i| format!("{}-{i}", cfg.prefix))
        .collect();
    let mine: Arc<HashSet<String>> = Arc::new(names.iter().cloned().collect());
    let limit = Arc::new(Semaphore::new(256));
    let mut joins = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (client, cfg, name, limit) = (client.clone(), cfg.clone(), name.clone(), limit.clone());
        joins.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            while let Err(e) = register(&client, &name, i, &cfg).await {
                tracing::debug!(node = %name, error = %e, "registering; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            renew(&client, &name, &cfg).await;
        }));
    }
    for j in joins {
        let _ = j.await;
    }
    tracing::info!(count = cfg.count, "hollow nodes registered");

    // Leases: renewals spread evenly over the period.
    {
        let (client, cfg, names) = (client.clone(), cfg.clone(), names.clone());
        tokio::spawn(async move {
            let step = cfg.renew_every / (names.len().max(1) as u32);
            loop {
                let round = tokio::time::Instant::now();
                for name in &names {
                    let (client, cfg, name) = (client.clone(), cfg.clone(), name.clone());
                    tokio::spawn(async move { renew(&client, &name, &cfg).await });
                    tokio::time::sleep(step).await;
                }
                tokio::time::sleep_until(round + cfg.renew_every).await;
            }
        });
    }

    // Pods bound here: report them Running; finish their deletion.
    let (pods, mut events) = Informer::<Pod>::start(client.clone(), Selection::default());
    let ip_counter = Arc::new(AtomicU32::new(1));
    let in_flight: Arc<std::sync::Mutex<HashSet<(String, String)>>> = Arc::default();
    loop {
        let Some(event) = events.recv().await else {
            return;
        };
        let todo: Vec<Arc<Pod>> = match event {
            InformerEvent::Synced => pods.list(),
            InformerEvent::Applied { object: p, .. } => vec![p],
            InformerEvent::Deleted(_) => continue,
        };
        for pod in todo {
            let Some(node) = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| mine.contains(n))
            else {
                continue;
            };
            let key = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            let deleting = pod.metadata.deletion_timestamp.is_some();
            let finishing = !deleting && is_running_ready(&pod) && runs_to_completion(&pod);
            if !deleting && (is_finished(&pod) || (is_running_ready(&pod) && !finishing)) {
                continue;
            }
            if let Ok(mut f) = in_flight.lock() {
                if !f.insert(key.clone()) {
                    continue;
                }
            }
            let (client, limit, in_flight, ip_counter) = (
                client.clone(),
                limit.clone(),
                in_flight.clone(),
                ip_counter.clone(),
            );
            tokio::spawn(async move {
                let api: Api<Pod> = Api::new(client.clone(), &key.0);
                if deleting {
                    let _permit = limit.acquire().await;
                    let params = skiff_proto::objects::DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    let _ = api.delete(&key.1, &params).await;
                } else {
                    let running = if finishing {
                        Some((*pod).clone())
                    } else {
                        let _permit = limit.acquire().await;
                        let n = ip_counter.fetch_add(1, Ordering::Relaxed);
                        // Distinct per node (and so per hollow-node process): a /16 from the name.
                        let h = node
                            .bytes()
                            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                        let pod_ip =
                            format!("10.{}.{}.{}", 128 + h % 120, (n >> 8) & 0xff, n & 0xff);
                        let host_ip = format!("10.250.0.{}", 1 + node.len() % 250);
                        let mut next = (*pod).clone();
                        next.status = Some(running_status(&pod, &host_ip, pod_ip));
                        match api.update_status(&next).await {
                            Ok(reported) => Some(reported),
                            Err(e) => {
                                tracing::debug!(pod = %key.1, error = %e, "reporting Running failed; will retry on the next change");
                                None
                            }
                        }
                    };
                    // A pod that runs to completion ends in this same task: the change that
                    // reported it Running may arrive while the task is still in flight.
                    if let Some(pod) = running.filter(runs_to_completion) {
                        tokio::time::sleep(time_left(&pod)).await;
                        let _permit = limit.acquire().await;
                        let code = annotation(&pod, EXIT_CODE).unwrap_or(0) as i32;
                        let mut next = pod.clone();
                        next.status = Some(finished_status(&pod, code));
                        // Whatever changed while it ran, it ended now.
                        next.metadata.resource_version = None;
                        if let Err(e) = api.update_status(&next).await {
                            tracing::debug!(pod = %key.1, error = %e, "reporting the end failed; will retry on the next change");
                        }
                    }
                }
                if let Ok(mut f) = in_flight.lock() {
                    f.remove(&key);
                }
            });
        }
    }
}
