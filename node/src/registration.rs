//! The node's registration and heartbeat: its Node object (capacity from the host,
//! addresses, conditions, versions), the pod CIDR the control plane hands it, and the Lease
//! it renews every couple of seconds so the node lifecycle controller knows it is alive.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use serde_json::json;
use skiff_proto::objects::Api;
use skiff_proto::Client;

use crate::error::Error;
use crate::host::HostInfo;

/// What the Node says about this agent.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// Node address.
    pub ip: String,
    /// The agent's API port (logs, exec).
    pub agent_port: u16,
    /// The host.
    pub host: HostInfo,
    /// containerd's version string.
    pub runtime_version: String,
    /// Pods it takes.
    pub max_pods: u32,
    /// How its pods reach other nodes' (`vxlan`, `host-gw`), published for operators.
    pub pod_network: String,
    /// Where it keeps the folders of `local-path` volumes.
    pub local_path_root: String,
}

/// The annotation that names a node's pod network mode.
pub const POD_NETWORK_ANNOTATION: &str = "skiff.dev/pod-network";
pub use skiff_proto::kinds::LOCAL_PATH_ROOT_ANNOTATION;

impl NodeFacts {
    /// What the node publishes in its annotations.
    fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (POD_NETWORK_ANNOTATION.to_string(), self.pod_network.clone()),
            (
                LOCAL_PATH_ROOT_ANNOTATION.to_string(),
                self.local_path_root.clone(),
            ),
        ])
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// `status_of(f)`, keeping the conditions others report on the node (the pod network's
/// `NetworkUnavailable`) that it does not set itself.
fn status_keeping(f: &NodeFacts, current: Option<&NodeStatus>) -> NodeStatus {
    let mut status = status_of(f);
    let ours: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.clone())
        .collect();
    let kept = current
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| !ours.contains(&c.type_))
        .cloned();
    status.conditions.get_or_insert_with(Vec::new).extend(kept);
    status
}

fn status_of(f: &NodeFacts) -> NodeStatus {
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(f.host.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", f.host.memory_kib)),
        ),
        ("pods".to_string(), Quantity(f.max_pods.to_string())),
    ]);
    let condition = |t: &str, s: &str, reason: &str, message: &str| NodeCondition {
        type_: t.into(),
        status: s.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now()),
        last_transition_time: Some(now()),
    };
    NodeStatus {
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(vec![
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "skiff node agent is posting ready status",
            ),
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no memory pressure",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "no PID pressure",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: f.ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: f.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(f.agent_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: match std::env::consts::ARCH {
                "x86_64" => "amd64".into(),
                "aarch64" => "arm64".into(),
                a => a.into(),
            },
            operating_system: "linux".into(),
            os_image: f.host.os_image.clone(),
            kernel_version: f.host.kernel.clone(),
            kubelet_version: format!("skiff-{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            container_runtime_version: f.runtime_version.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Register the Node (or report it Ready again) and wait for its pod CIDR.
/// Wait until a control node answers, and refuse to go on when one belongs to another cluster
/// than `expected`: an agent started for one cluster must never register with another that
/// happens to listen at its endpoints.
pub async fn check_cluster(
    endpoints: &[String],
    expected: &str,
    credentials: Option<&skiff_proto::tls::Credentials>,
) -> Result<(), Error> {
    let mut waited = 0u32;
    loop {
        let mut answered = false;
        for endpoint in endpoints {
            let Ok(status) = Client::status_of(endpoint, credentials).await else {
                continue;
            };
            if status.cluster_id != expected {
                return Err(Error::WrongCluster {
                    endpoint: endpoint.clone(),
                    expected: expected.to_string(),
                    found: status.cluster_id,
                });
            }
            answered = true;
        }
        if answered {
            return Ok(());
        }
        if waited.is_multiple_of(20) {
            tracing::warn!(?endpoints, "no control node answers yet; waiting");
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn register(client: &Client, f: &NodeFacts) -> String {
    let api: Api<Node> = Api::new(client.clone(), "");
    let node = Node {
        metadata: ObjectMeta {
            name: Some(f.name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), f.name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
            ])),
            annotations: Some(f.annotations()),
            ..Default::default()
        },
        spec: None,
        status: Some(status_of(f)),
    };
    let mut logged = false;
    loop {
        let registered = match api.create(&node).await {
            Ok(n) => Ok(n),
            Err(_) => match api.get(&f.name).await {
                Ok(mut current) => {
                    let published = current.metadata.annotations.clone().unwrap_or_default();
                    let ours = f.annotations();
                    if ours.iter().any(|(k, v)| published.get(k) != Some(v)) {
                        let patch = serde_json::json!({"metadata": {"annotations": ours}});
                        if let Err(e) = api.patch(&f.name, &patch).await {
                            tracing::warn!(node = %f.name, error = %e, "publishing the node's annotations");
                        }
                    }
                    current.status = Some(status_keeping(f, current.status.as_ref()));
                    current.metadata.resource_version = None;
                    api.update_status(&current).await
                }
                Err(e) => Err(e),
            },
        };
        match registered {
            Ok(n) => {
                if let Some(cidr) = n.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
                    tracing::info!(node = %f.name, pod_cidr = %cidr, "registered");
                    return cidr;
                }
                if !logged {
                    tracing::info!(node = %f.name, "registered; waiting for the control plane to assign a pod CIDR");
                    logged = true;
                }
                // The assignment arrives on the Node; look again shortly.
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if let Ok(n) = api.get(&f.name).await {
                        if let Some(cidr) = n.spec.and_then(|s| s.pod_cidr) {
                            tracing::info!(node = %f.name, pod_cidr = %cidr, "registered");
                            return cidr;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node = %f.name, error = %e, "registering; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Renew the node's Lease every `every`, and its Ready condition every tenth time, forever.
pub async fn heartbeat(client: Client, f: NodeFacts, lease_namespace: String, every: Duration) {
    let leases: Api<Lease> = Api::new(client.clone(), &lease_namespace);
    let nodes: Api<Node> = Api::new(client.clone(), "");
    let mut round: u64 = 0;
    loop {
        let renew_time = MicroTime(jiff::Timestamp::now());
        let patch = json!({"spec": {"renewTime": renew_time, "holderIdentity": f.name}});
        if let Err(e) = leases.patch(&f.name, &patch).await {
            tracing::debug!(node = %f.name, error = %e, "renewing the lease; creating it");
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(f.name.clone()),
                    namespace: Some(lease_namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(f.name.clone()),
                    lease_duration_seconds: Some(10),
                    renew_time: Some(renew_time),
                    ..Default::default()
                }),
            };
            if let Err(e) = leases.create(&lease).await {
                tracing::warn!(node = %f.name, error = %e, "renewing the node lease");
            }
        }
        if round.is_multiple_of(10) && round > 0 {
            if let Ok(mut n) = nodes.get(&f.name).await {
                n.status = Some(status_keeping(&f, n.status.as_ref()));
                n.metadata.resource_version = None;
                if let Err(e) = nodes.update_status(&n).await {
                    tracing::debug!(node = %f.name, error = %e, "reporting node status");
                }
            }
        }
        round += 1;
        tokio::time::sleep(every).await;
    }
}
