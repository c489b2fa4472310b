//! The agent: registers the node, prepares its pod network, then keeps one worker per pod
//! bound to it, fed by an informer on `spec.nodeName=<node>`. At every (re)list it also
//! cleans up what belongs to pods that no longer exist — containers, snapshots, network
//! namespaces, addresses and files of pods deleted while the agent was away.
//!
//! ```text
//! control plane ──informer (spec.nodeName=me)──▶ agent ──▶ PodHandle per pod ──▶ worker task
//!       ▲                                          │
//!       └──── Node, Lease heartbeat ◀──────────────┘
//! ```

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skiff_proto::objects::{Informer, InformerEvent, Selection};
use skiff_proto::Client;

use crate::cni::NetworkConfig;
use crate::error::{Error, Result};
use crate::image::registry::Registries;
use crate::pod_network::{self, PodNetworkConfig};
use crate::pod_worker::backoff::BackoffPolicy;
use crate::pod_worker::{PodHandle, WorkerCtx, WorkerEnv};
use crate::registration::{self, NodeFacts};
use crate::runtime::containerd::{Containerd, OciRuntime};
use crate::runtime::made_ahead::roots::WarmRoots;
use crate::runtime::made_ahead::sandboxes::WarmSandboxes;
use crate::runtime::made_ahead::Pools;
use crate::runtime::{labels, ContainerRuntime};

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name.
    pub node_name: String,
    /// Control-plane endpoints.
    pub endpoints: Vec<String>,
    /// The cluster the agent may join: it refuses a control plane that answers with another.
    pub cluster_id: Option<String>,
    /// The node's credentials: mutual TLS to the control plane and on the agent's API.
    pub credentials: Option<skiff_proto::tls::LiveCredentials>,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// The agent's containerd namespace.
    pub containerd_namespace: String,
    /// The agent's own files (pods, logs, IPAM records).
    pub data_dir: PathBuf,
    /// Where the CNI plugins are.
    pub cni_plugin_dir: PathBuf,
    /// The pod bridge.
    pub bridge: String,
    /// The cluster's pod range.
    pub cluster_cidr: String,
    /// The cluster's service range.
    pub service_cidr: String,
    /// The node's address (detected when `None`).
    pub node_ip: Option<String>,
    /// How pod traffic crosses to other nodes.
    pub pod_network: pod_network::Mode,
    /// The VXLAN network id (clusters beside each other on one host take different ones).
    pub vxlan_vni: u32,
    /// The nftables table (family ip) of the pods' egress masquerade.
    pub egress_table: String,
    /// The cluster domain the node's DNS answers (`cluster.local`).
    pub cluster_domain: String,
    /// The node's resolv.conf: forwarded names go to its resolvers, and pods start from it.
    pub resolv_conf: PathBuf,
    /// The agent API's port, reported on the Node.
    pub agent_port: u16,
    /// Restart and pull back-off.
    pub backoff: BackoffPolicy,
    /// Log rotation size.
    pub log_max_bytes: u64,
    /// Namespace of node Leases.
    pub lease_namespace: String,
    /// Lease renewal period.
    pub heartbeat: Duration,
    /// Pods the node takes.
    pub max_pods: u32,
    /// Pods started side by side (see [`WorkerCtx::start_gate`]).
    pub parallel_pod_starts: usize,
    /// How registries are reached (plain HTTP ones, private CAs).
    pub registries: Registries,
    /// How the shim runs containers (binary and state folder).
    pub oci_runtime: OciRuntime,
    /// Pod sandboxes (network and shim) kept ready ahead of time (0: none).
    pub warm_sandboxes: usize,
    /// Container roots of the last image started kept ready ahead of time (0: none).
    pub warm_roots: usize,
    /// What the agent times (pod starts, image pulls).
    pub stats: crate::stats::AgentStats,
}

/// The agent's workers run on containerd, the CNI plugins and the object API.
pub struct AgentEnv;

impl WorkerEnv for AgentEnv {
    type Runtime = Containerd;
    type Network = NetworkConfig;
    type Api = Client;
}

/// A running agent: what its API server needs.
pub struct Agent {
    /// The worker context (runtime, client, folders).
    pub ctx: Arc<WorkerCtx<AgentEnv>>,
    /// Pods bound here, as last seen.
    pub pods: Informer<Pod>,
    /// The control plane.
    pub client: Client,
    /// The Service and Endpoints informers, until the proxy takes them.
    pub service_watch: Option<crate::proxy::ServiceWatch>,
}

/// Connect, register and prepare the host; then [`Agent::run`] drives the pods.
pub async fn start(
    cfg: AgentConfig,
) -> Result<(Agent, tokio::sync::mpsc::Receiver<InformerEvent<Pod>>)> {
    // Another cluster's control plane is refused before anything on the host is touched.
    if let Some(expected) = &cfg.cluster_id {
        let credentials = cfg.credentials.as_ref().map(|c| c.current());
        registration::check_cluster(&cfg.endpoints, expected, credentials.as_ref()).await?;
    }
    let pods_dir = cfg.data_dir.join("pods");
    std::fs::create_dir_all(&pods_dir).map_err(Error::io(&pods_dir))?;
    let runtime = Containerd::connect(
        &cfg.containerd_socket,
        &cfg.containerd_namespace,
        &cfg.data_dir,
        cfg.registries.clone(),
        &cfg.oci_runtime,
        cfg.stats.image_pull.clone(),
    )
    .await?;
    let runtime_version = runtime.version().await?;
    let client = Client::with_config(
        &cfg.endpoints,
        skiff_proto::ClientConfig {
            tls: cfg.credentials.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| Error::InvalidSpec {
        field: "--endpoints".into(),
        reason: e.to_string(),
    })?;
    let ip = match &cfg.node_ip {
        Some(ip) => ip.clone(),
        None => crate::host::primary_ipv4(&cfg.bridge).await,
    };
    let facts = NodeFacts {
        name: cfg.node_name.clone(),
        ip: ip.clone(),
        agent_port: cfg.agent_port,
        host: crate::host::read(),
        runtime_version,
        max_pods: cfg.max_pods,
        pod_network: cfg.pod_network.to_string(),
        local_path_root: crate::local_path::root(&cfg.data_dir).display().to_string(),
    };
    let pod_cidr = registration::register(&client, &facts).await;
    tokio::spawn(crate::local_path::clean_up(
        client.clone(),
        crate::local_path::root(&cfg.data_dir),
    ));
    tokio::spawn(registration::heartbeat(
        client.clone(),
        facts,
        cfg.lease_namespace.clone(),
        cfg.heartbeat,
    ));
    let mut network = NetworkConfig {
        plugin_dir: cfg.cni_plugin_dir.clone(),
        bridge: cfg.bridge.clone(),
        pod_cidr,
        cluster_cidr: cfg.cluster_cidr.clone(),
        service_cidr: cfg.service_cidr.clone(),
        ipam_dir: cfg.data_dir.join("cni"),
        mtu: None,
    };
    let across = PodNetworkConfig {
        mode: cfg.pod_network,
        node_name: cfg.node_name.clone(),
        node_ip: parse_setting("--node-ip", &ip)?,
        pod_cidr: parse_setting("spec.podCIDR", &network.pod_cidr)?,
        cluster_cidr: parse_setting("--cluster-cidr", &cfg.cluster_cidr)?,
        service_cidr: parse_setting("--service-cidr", &cfg.service_cidr)?,
        vni: cfg.vxlan_vni,
        egress_table: cfg.egress_table.clone(),
    };
    network.mtu = Some(pod_network::prepare(&across).await?);
    network.prepare_host().await?;
    tokio::spawn(pod_network::run_peers(client.clone(), across));
    let service_watch = crate::proxy::ServiceWatch::start(&client);
    let dns_address = network.gateway()?;
    crate::dns::start(
        &crate::dns::DnsConfig {
            domain: cfg.cluster_domain.clone(),
            address: dns_address,
            resolv_conf: cfg.resolv_conf.clone(),
        },
        Arc::new(crate::dns::Caches {
            services: service_watch.services.clone(),
            endpoints: service_watch.endpoints.clone(),
        }),
    )
    .await?;
    let parallel = cfg.parallel_pod_starts.max(1);
    let start_gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let runtime = Arc::new(runtime);
    // Pod folders made ahead by earlier releases hold nothing a pod needs.
    let _ = std::fs::remove_dir_all(cfg.data_dir.join("warm-pods"));
    let warm_sandboxes = Arc::new(WarmSandboxes::new(
        runtime.clone(),
        network.clone(),
        pods_dir.clone(),
        cfg.warm_sandboxes,
    ));
    tokio::spawn(
        warm_sandboxes
            .clone()
            .keep_filled(start_gate.clone(), parallel),
    );
    let warm_roots = Arc::new(WarmRoots::new(
        runtime.clone(),
        cfg.data_dir.join("warm-roots"),
        cfg.warm_roots,
    ));
    tokio::spawn(warm_roots.clone().keep_filled(start_gate.clone(), parallel));
    let ctx = Arc::new(WorkerCtx {
        runtime,
        network,
        api: client.clone(),
        node_name: cfg.node_name.clone(),
        host_ip: ip,
        pods_dir,
        backoff: cfg.backoff,
        log_max_bytes: cfg.log_max_bytes,
        start_gate,
        pod_start: cfg.stats.pod_start.clone(),
        resolv_conf: cfg.resolv_conf.clone(),
        dns: Some(crate::dns::resolv_conf::PodDns {
            nameserver: dns_address.to_string(),
            domain: cfg.cluster_domain.clone(),
        }),
        made_ahead: Arc::new(Pools {
            sandboxes: warm_sandboxes,
            roots: warm_roots,
        }),
        services: Some(service_watch.services.clone()),
    });
    let (pods, events) = Informer::<Pod>::start(
        client.clone(),
        Selection {
            fields: format!("spec.nodeName={}", cfg.node_name),
            ..Default::default()
        },
    );
    Ok((
        Agent {
            ctx,
            pods,
            client,
            service_watch: Some(service_watch),
        },
        events,
    ))
}

impl Agent {
    /// Drive pod workers from the informer's events until it ends.
    pub async fn run(&self, mut events: tokio::sync::mpsc::Receiver<InformerEvent<Pod>>) {
        let mut workers: HashMap<String, PodHandle> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut exits = self.ctx.runtime.task_exits();
        loop {
            tokio::select! {
                Some(id) = exits.recv() => {
                    for w in workers.values() {
                        w.container_exited(&id);
                    }
                }
                e = events.recv() => {
                    let Some(e) = e else { return };
                    match e {
                        InformerEvent::Synced => {
                            for pod in self.pods.list() {
                                self.dispatch(&mut workers, pod);
                            }
                            self.collect_orphans(&workers).await;
                        }
                        InformerEvent::Applied { object: pod, .. } => self.dispatch(&mut workers, pod),
                        InformerEvent::Deleted(pod) => {
                            let uid = pod.metadata.uid.clone().unwrap_or_default();
                            if let Some(w) = workers.get(&uid) {
                                w.update(None);
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    workers.retain(|_, w| !w.is_finished());
                    // A relist of the cache catches what a missed event would lose.
                    for pod in self.pods.list() {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        if !workers.contains_key(&uid) && pod.metadata.deletion_timestamp.is_none() {
                            self.dispatch(&mut workers, pod);
                        }
                    }
                }
            }
        }
    }

    fn dispatch(&self, workers: &mut HashMap<String, PodHandle>, pod: Arc<Pod>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            return;
        }
        if let Some(w) = workers.get(&uid) {
            if !w.is_finished() {
                w.update(Some(pod));
                return;
            }
            // A finished worker's pod still listed: it is being deleted; nothing more to run.
            if pod.metadata.deletion_timestamp.is_some() {
                return;
            }
        }
        workers.insert(uid, PodHandle::spawn(self.ctx.clone(), pod));
    }

    /// Remove containers, networks and folders of pods that no longer exist.
    async fn collect_orphans(&self, workers: &HashMap<String, PodHandle>) {
        let live: HashSet<String> = self
            .pods
            .list()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .chain(workers.keys().cloned())
            .collect();
        let runtime = &self.ctx.runtime;
        match runtime.list().await {
            Ok(list) => {
                for c in list {
                    let uid = c.label(labels::POD_UID);
                    if !uid.is_empty() && !live.contains(uid) {
                        tracing::info!(container = %c.id, pod = %c.label(labels::POD), "removing the container of a pod that no longer exists");
                        let _ = runtime.stop(&c.id, Duration::from_secs(2)).await;
                        if let Err(e) = runtime.remove(&c.id).await {
                            tracing::warn!(container = %c.id, error = %e, "removing an orphan");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing containers for orphans"),
        }
        let Ok(entries) = std::fs::read_dir(&self.ctx.pods_dir) else {
            return;
        };
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if live.contains(&uid) {
                continue;
            }
            tracing::info!(pod_uid = %uid, "removing the sandbox and files of a pod that no longer exists");
            if let Err(err) = self.ctx.release_sandbox(&uid, &e.path()).await {
                tracing::warn!(pod_uid = %uid, error = %err, "tearing an orphan's network down");
            }
            crate::cgroups::remove_pod_parent(&uid);
            crate::pod_worker::volumes::release(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A setting parsed, or refused naming where it came from.
fn parse_setting<T: std::str::FromStr>(field: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| Error::InvalidSpec {
        field: field.into(),
        reason: format!("{value:?}: {e}"),
    })
}
