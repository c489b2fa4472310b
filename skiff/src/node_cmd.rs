//! `skiff node`: the node agent. Runs the pods bound to this node on containerd.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use skiff_node::agent::{self, AgentConfig};
use skiff_node::image::registry::Registries;
use skiff_node::pod_worker::backoff::BackoffPolicy;
use skiff_node::runtime::containerd::OciRuntime;
use skiff_proto::tls::holder::Holder;
use skiff_proto::tls::live::keep_renewed;
use skiff_proto::tls::{Credentials, LiveCredentials};

/// Warm sandboxes hold addresses of the node's pod range (a /24 by default: 254).
const MAX_WARM_SANDBOXES: usize = 64;
/// The most `--warm-roots` a node keeps.
const MAX_WARM_ROOTS: usize = 256;

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's name (defaults to the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Control-plane endpoints, HOST:PORT,...
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// A join token (`skiffctl token create`, or the node token `skiff control --init` prints):
    /// the node pins the cluster's CA by it and gets its own certificate, once.
    #[arg(long)]
    pub token: Option<String>,
    /// The cluster this node joins: a control plane that answers with another cluster id is
    /// refused (the agent exits) instead of joined.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// containerd's socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd_socket: PathBuf,
    /// The agent's containerd namespace (several agents may share one containerd).
    #[arg(long, default_value = "skiff")]
    pub containerd_namespace: String,
    /// The agent's files: pod folders, logs, IP allocations.
    #[arg(long, default_value = "/var/lib/skiff/node")]
    pub data_dir: PathBuf,
    /// Where the CNI plugins are (Debian's containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_plugin_dir: PathBuf,
    /// The pod bridge.
    #[arg(long, default_value = "skiff0")]
    pub bridge: String,
    /// The cluster's pod range (routed to the bridge, never off the node).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The cluster's service range (routed to the bridge, never off the node).
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// The node's address, published as its InternalIP and used by the other nodes to reach
    /// its pods (default: the address of the default route's interface).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// How pod traffic crosses to other nodes: `vxlan` (encapsulated; works across routed
    /// networks) or `host-gw` (a route per node via its address; nodes on one L2 segment).
    #[arg(long, default_value = "vxlan")]
    pub pod_network: skiff_node::pod_network::Mode,
    /// The VXLAN network id; the device is `skiff.<VNI>` (UDP port 8472). Clusters beside each
    /// other on one host take different ones.
    #[arg(long, default_value_t = 1)]
    pub vxlan_vni: u32,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` over plain HTTP on this
    /// address (host:port); none when not given.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// The cluster domain the node's DNS answers.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The resolv.conf whose resolvers get the names outside the cluster domain, and which
    /// pods with `dnsPolicy: Default` get (as the kubelet's flag).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Port of the agent's API (logs, exec), reported on the Node.
    #[arg(long, default_value_t = 10250)]
    pub agent_port: u16,
    /// First restart / pull back-off, in milliseconds (doubles up to --backoff-max-ms).
    #[arg(long, default_value_t = 10_000)]
    pub backoff_initial_ms: u64,
    /// Longest restart / pull back-off, in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    pub backoff_max_ms: u64,
    /// The largest image archive `skiffctl image import` may send to this node.
    #[arg(long, default_value_t = 4 << 30)]
    pub max_image_import_bytes: u64,
    /// Rotate a container's log past this many bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub log_max_bytes: u64,
    /// Lease renewal period in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub heartbeat_ms: u64,
    /// Pods this node takes.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Pods started side by side; later ones wait their turn, first come first served.
    /// Default: two per CPU.
    #[arg(long)]
    pub parallel_pod_starts: Option<usize>,
    /// Pod sandboxes to keep ready ahead of time, made while no pod is starting: a network
    /// namespace wired by the CNI plugins, held by a sandbox container whose shim runs. A pod
    /// start that takes one skips the plugins and the shim's start-up. Each holds an address
    /// of the node's pod range and a shim process.
    #[arg(long, default_value_t = 0)]
    pub warm_sandboxes: usize,
    /// Container roots to keep ready ahead of time, made while no pod is starting: snapshots
    /// of the image this node last started a container of, prepared and mounted. A container
    /// of that image that takes one skips the snapshot's preparation and the root's mount.
    /// Each holds a snapshot (an empty upper folder) and a mount.
    #[arg(long, default_value_t = 0)]
    pub warm_roots: usize,
    /// The shim containerd starts for containers: `runc-v2`, containerd's own, the only one
    /// (`auto` is taken for it, as earlier releases accepted it).
    #[arg(long, default_value = "runc-v2")]
    pub shim: String,
    /// The OCI runtime the containerd shim runs containers with: `runc`, `crun`, or a path to
    /// another runc-compatible binary. A bare name is looked up in PATH.
    #[arg(long, default_value = "runc")]
    pub oci_runtime: String,
    /// Where the OCI runtime keeps its container state (default: the shim's
    /// /run/containerd/runc). It is written on every container start: keep it on tmpfs.
    #[arg(long)]
    pub oci_runtime_root: Option<PathBuf>,
    /// A registry (HOST:PORT) to pull from over plain HTTP; loopback ones always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// HOST[:PORT]=FILE: trust the CA bundle (PEM) in FILE for that registry, beside the
    /// system's roots (a private registry's own CA). The file is read at each pull. A
    /// registry given a CA is reached over TLS, on loopback too.
    #[arg(long = "registry-ca", value_parser = registry_ca)]
    pub registry_cas: Vec<(String, PathBuf)>,
    /// Run no service proxy (ClusterIP/NodePort forwarding in nftables).
    #[arg(long)]
    pub no_proxy: bool,
    /// The nftables table (family ip) the service proxy owns.
    #[arg(long, default_value = "skiff")]
    pub proxy_table: String,
    /// Run inside this network namespace (`ip netns` name): for several nodes on one machine.
    #[arg(long)]
    pub netns: Option<String>,
}

/// `--registry-ca HOST[:PORT]=FILE`; the file must be readable now (it is read again at each
/// pull).
fn registry_ca(value: &str) -> Result<(String, PathBuf), String> {
    let (host, file) = value
        .split_once('=')
        .filter(|(h, f)| !h.is_empty() && !f.is_empty())
        .ok_or_else(|| format!("{value:?} is not HOST[:PORT]=FILE"))?;
    let path = PathBuf::from(file);
    std::fs::metadata(&path).map_err(|e| format!("{file}: {e}"))?;
    Ok((host.to_string(), path))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "node".into())
}

/// Join the network namespace `name` for the whole process. Must run before any thread is
/// started: threads made later inherit it, threads made before do not.
pub fn join_netns(name: &str) -> anyhow::Result<()> {
    let path = PathBuf::from("/run/netns").join(name);
    let file = std::fs::File::open(&path)
        .map_err(|e| anyhow::anyhow!("--netns {name}: {}: {e}", path.display()))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| anyhow::anyhow!("--netns {name}: joining: {e}"))?;
    Ok(())
}

/// Check `--shim`: containerd's runc v2 shim is the one shim.
fn check_shim(value: &str) -> anyhow::Result<()> {
    match value {
        "runc-v2" | "auto" => Ok(()),
        other => anyhow::bail!(
            "--shim {other}: only runc-v2 (containerd's own shim) is supported; skiff-shim was removed (docs/BENCHMARKS.md says why)"
        ),
    }
}

/// The `--oci-runtime` binary as the shim should run it: `None` for the shim's default (runc
/// from PATH), else an absolute path that exists, so a typo fails here and not at the first pod.
fn resolve_oci_runtime(value: &str) -> anyhow::Result<Option<PathBuf>> {
    if value == "runc" {
        return Ok(None);
    }
    let path = if value.contains('/') {
        Some(PathBuf::from(value))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(value))
                .find(|p| p.is_file())
        })
    };
    match path {
        Some(p) if p.is_file() => {
            if p.file_name().is_some_and(|n| n == "crun") {
                refuse_crun_on_hybrid_cgroups()?;
            }
            Ok(Some(p))
        }
        _ if value == "crun" => {
            anyhow::bail!("--oci-runtime crun: not found in PATH (Debian: apt-get install crun)")
        }
        _ => anyhow::bail!("--oci-runtime {value}: no such executable"),
    }
}

/// crun 1.8 refuses to create any container on a host that mounts cgroup v1 hierarchies and
/// also has controllers on the cgroup2 one ("hybrid mode"); say so at start, not at every pod.
fn refuse_crun_on_hybrid_cgroups() -> anyhow::Result<()> {
    let controllers = skiff_node::cgroups::hybrid_controllers();
    if !controllers.is_empty() {
        anyhow::bail!(
            "--oci-runtime crun: this host mounts cgroups in hybrid mode with controllers ({}) \
             on the cgroup2 hierarchy at /sys/fs/cgroup/unified, which crun refuses; \
             use --oci-runtime runc, boot with unified cgroups (systemd.unified_cgroup_hierarchy=1), \
             or move those controllers to cgroup v1 (e.g. `mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb`)",
            controllers.join(" ")
        );
    }
    Ok(())
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    for (flag, v) in [
        ("--cluster-cidr", &args.cluster_cidr),
        ("--service-cidr", &args.service_cidr),
    ] {
        v.parse::<skiff_proto::cidr::Cidr>()
            .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    }
    check_shim(&args.shim)?;
    if args.parallel_pod_starts == Some(0) {
        anyhow::bail!("--parallel-pod-starts must be at least 1");
    }
    if args.warm_sandboxes > MAX_WARM_SANDBOXES {
        anyhow::bail!(
            "--warm-sandboxes must be at most {MAX_WARM_SANDBOXES}: each holds an address of the node's pod range, which its pods need"
        );
    }
    if args.warm_roots > MAX_WARM_ROOTS {
        anyhow::bail!(
            "--warm-roots must be at most {MAX_WARM_ROOTS}: each holds a snapshot and a mount"
        );
    }
    if args.backoff_initial_ms == 0 || args.backoff_max_ms < args.backoff_initial_ms {
        anyhow::bail!("--backoff-initial-ms must be > 0 and at most --backoff-max-ms");
    }
    if let Some(root) = args.oci_runtime_root.as_ref().filter(|r| !r.is_absolute()) {
        anyhow::bail!(
            "--oci-runtime-root {}: must be an absolute path",
            root.display()
        );
    }
    // What the flags say is checked first: a wrong value is named before a missing part.
    if !args.containerd_socket.exists() {
        anyhow::bail!(
            "--containerd-socket: {} does not exist; is containerd running? (Debian: apt-get install containerd runc)",
            args.containerd_socket.display()
        );
    }
    if !args.cni_plugin_dir.join("bridge").exists() {
        anyhow::bail!(
            "--cni-plugin-dir: no bridge plugin in {} (Debian: apt-get install containernetworking-plugins)",
            args.cni_plugin_dir.display()
        );
    }
    let oci_runtime = OciRuntime {
        binary: resolve_oci_runtime(&args.oci_runtime)?,
        root: args.oci_runtime_root.clone(),
    };
    let name = args.name.clone().unwrap_or_else(host_name);
    if let Some(token) = &args.token {
        crate::join::node(token, &args.endpoints, &args.data_dir, &name).await?;
    }
    let pki = args.data_dir.join("pki");
    let credentials = skiff_proto::tls::Credentials::load(&pki, "node")
        .and_then(|c| c.map(LiveCredentials::new).transpose())
        .map_err(|e| anyhow::anyhow!("the node's credentials in {}: {e}", pki.display()))?;
    let server_tls = credentials
        .as_ref()
        .map(|c| c.server_tls(false))
        .transpose()?;
    if credentials.is_none() {
        tracing::warn!(
            pki = %pki.display(),
            "no node credentials: talking plaintext to the control plane and serving the agent API to anyone"
        );
    }
    let stats = skiff_node::stats::AgentStats::default();
    let cfg = AgentConfig {
        node_name: name.clone(),
        endpoints: args.endpoints.clone(),
        cluster_id: args.cluster_id.clone(),
        credentials: credentials.clone(),
        containerd_socket: args.containerd_socket.clone(),
        containerd_namespace: args.containerd_namespace.clone(),
        data_dir: args.data_dir.clone(),
        cni_plugin_dir: args.cni_plugin_dir.clone(),
        bridge: args.bridge.clone(),
        cluster_cidr: args.cluster_cidr.clone(),
        service_cidr: args.service_cidr.clone(),
        node_ip: args.node_ip.clone(),
        pod_network: args.pod_network,
        vxlan_vni: args.vxlan_vni,
        egress_table: format!("{}_egress", args.proxy_table),
        cluster_domain: args.cluster_domain.clone(),
        resolv_conf: args.resolv_conf.clone(),
        agent_port: args.agent_port,
        backoff: BackoffPolicy {
            initial: Duration::from_millis(args.backoff_initial_ms),
            max: Duration::from_millis(args.backoff_max_ms),
        },
        log_max_bytes: args.log_max_bytes,
        lease_namespace: "skiff-system".into(),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        max_pods: args.max_pods,
        parallel_pod_starts: args
            .parallel_pod_starts
            .unwrap_or_else(default_parallel_pod_starts),
        warm_sandboxes: args.warm_sandboxes,
        warm_roots: args.warm_roots,
        stats: stats.clone(),
        registries: Registries {
            insecure: args.insecure_registries.clone(),
            cas: args.registry_cas.clone(),
        },
        oci_runtime,
    };
    tracing::info!(node = %name, endpoints = ?args.endpoints, "node agent starting");
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.agent_port))
        .await
        .map_err(|e| anyhow::anyhow!("--agent-port {}: {e}", args.agent_port))?;
    let (mut agent, events) = agent::start(cfg).await?;
    let service_watch = agent.service_watch.take();
    if let (Some(addr), Some(watch)) = (&args.metrics_listen, &service_watch) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
        let ops = skiff_node::ops::AgentOps::new(
            agent.pods.clone(),
            watch.services.clone(),
            watch.endpoints.clone(),
            &stats,
        );
        tokio::spawn(skiff_proto::ops_http::serve(
            listener,
            std::sync::Arc::new(ops),
        ));
    }
    let agent = std::sync::Arc::new(agent);
    if let Some(live) = &credentials {
        tokio::spawn(keep_renewed(
            live.clone(),
            renew_node_certificate(agent.client.clone(), name.clone(), pki.clone()),
        ));
    }
    let api = {
        let agent = agent.clone();
        let max_import = args.max_image_import_bytes;
        tokio::spawn(async move {
            skiff_node::server::serve(agent, listener, server_tls, max_import).await
        })
    };
    match service_watch {
        Some(watch) if !args.no_proxy => {
            tokio::spawn(skiff_node::proxy::run(
                watch,
                skiff_node::proxy::ProxyConfig {
                    table: args.proxy_table.clone(),
                    cluster_cidr: args.cluster_cidr.clone(),
                    sync_timing: stats.proxy_sync.clone(),
                },
            ));
        }
        Some(watch) => watch.drain(),
        None => {}
    }
    if !args.no_proxy {
        tokio::spawn(skiff_node::host_ports::run(
            agent.pods.clone(),
            format!("{}_hostports", args.proxy_table),
        ));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = agent.run(events) => {}
        r = api => anyhow::bail!("the agent API stopped: {r:?}"),
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Pods keep running while the agent is away; a restarted agent re-adopts them.
    tracing::info!(node = %name, "node agent stopping; pods keep running");
    Ok(())
}

/// A node's certificate renewal: a new key, signed by the cluster as the node's own (it asks
/// with its current certificate), kept in `pki` for the next start, and presented from the
/// next connection on.
fn renew_node_certificate(
    client: skiff_proto::Client,
    name: String,
    pki: PathBuf,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Credentials>> + Send>> {
    move || {
        let (client, name, pki) = (client.clone(), name.clone(), pki.clone());
        Box::pin(async move {
            let (key, csr) = skiff_proto::tls::signing_request(&Holder::Node(name))?;
            let signed = client.issue_certificate(&csr).await?;
            let credentials = Credentials {
                ca: signed.ca_pem,
                cert: signed.certificate_pem,
                key,
            };
            credentials.save(&pki, "node")?;
            Ok(credentials)
        })
    }
}

/// Two pod starts per CPU: a start is mostly CPU (crun, the shim, containerd) with short waits
/// (fsyncs, the control plane's replies) that a second start fills. On 2 CPUs, 4 gave a lower
/// median than 3 and no worse than 5 or 8 in bursts of 30 (docs/BENCHMARKS.md).
fn default_parallel_pod_starts() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_runtime_names_resolve_or_fail_naming_the_flag() {
        assert_eq!(resolve_oci_runtime("runc").expect("runc"), None);
        let sh = resolve_oci_runtime("sh").expect("sh is in PATH");
        assert!(sh.is_some_and(|p| p.is_absolute() && p.ends_with("sh")));
        let err = resolve_oci_runtime("/nonexistent/runtime")
            .expect_err("a missing binary")
            .to_string();
        assert!(err.contains("--oci-runtime /nonexistent/runtime"), "{err}");
        let err = resolve_oci_runtime("no-such-runtime-here")
            .expect_err("not in PATH")
            .to_string();
        assert!(err.contains("no such executable"), "{err}");
    }

    #[test]
    fn only_containerds_own_shim_is_accepted_and_others_are_refused_naming_the_flag() {
        assert!(check_shim("runc-v2").is_ok());
        assert!(check_shim("auto").is_ok());
        let err = check_shim("/usr/lib/skiff/skiff-shim")
            .expect_err("skiff-shim is gone")
            .to_string();
        assert!(
            err.contains("--shim /usr/lib/skiff/skiff-shim") && err.contains("runc-v2"),
            "{err}"
        );
    }
}
