//! `skiff up`: a local HA cluster — three control nodes on loopback and one node agent — with
//! data under ./.skiff/. Without `--containerd-socket` the agent gets a private containerd
//! (own root, state and socket under ./.skiff/containerd/). With `--nodes N` (N ≥ 2) each node
//! is a network namespace acting as a host, with its own agent and containerd, on a bridge of
//! the cluster's ([`hosts`]), as kind's multi-node clusters. It supervises what it starts
//! (restarting a process that exits) and checks first that nothing else has its ports or its
//! node network, so several run side by side with `--base-port`. Ctrl-C stops it cleanly (pods
//! and containerd too); running it again resumes from the same data.

mod containerd;
mod hosts;
mod network;
mod pki;
mod ports;
mod supervisor;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use skiff_proto::config_file::ConfigFile;
use tokio::signal::unix::{signal, SignalKind};

use supervisor::{Spec, Supervised, Tended};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Where the cluster keeps its data, logs and client config.
    #[arg(long, default_value = ".skiff")]
    pub dir: PathBuf,
    /// Number of control nodes (Raft members).
    #[arg(long, default_value_t = 3)]
    pub members: u64,
    /// Number of worker nodes. One runs in this host's network; two or more each run in a
    /// network namespace of their own acting as a host, joined by the VXLAN pod network.
    #[arg(long, default_value_t = 1)]
    pub nodes: u64,
    /// Port of the first control node; the other control nodes and then the node agent take
    /// the ports that follow.
    #[arg(long, default_value_t = 7401)]
    pub base_port: u16,
    /// Use this containerd instead of starting a private one.
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// Run no node agent (control plane only).
    #[arg(long)]
    pub no_node: bool,
    /// Name of the local node (with `--nodes N`, N ≥ 2: `NAME-1` ... `NAME-N`).
    #[arg(long, default_value = "local")]
    pub node_name: String,
    /// The OCI runtime the node's containers run with (`runc`, `crun` or a path).
    #[arg(long, default_value = "runc")]
    pub oci_runtime: String,
    /// How long the control nodes' and the agent's certificates are valid (`365d`, `90s`);
    /// they renew themselves, without a restart, when a third is left.
    #[arg(long, default_value = "365d", value_parser = skiff_proto::duration::parse)]
    pub cert_validity: std::time::Duration,
}

/// The Debian packages a node needs, by the program that shows each is there.
const NODE_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/containerd", "containerd"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
];

fn missing_node_packages(private_containerd: bool) -> Vec<&'static str> {
    NODE_PACKAGES
        .iter()
        .filter(|(path, pkg)| {
            let needed = private_containerd || *pkg == "containernetworking-plugins";
            needed && !Path::new(path).exists() && !on_path(path)
        })
        .map(|(_, pkg)| *pkg)
        .collect()
}

fn on_path(path: &str) -> bool {
    let name = Path::new(path).file_name().unwrap_or_default();
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
        .unwrap_or(false)
}

fn cluster_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("cluster-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = format!("skiff-local-{}", uuid::Uuid::new_v4().simple());
            std::fs::write(&path, &id).with_context(|| path.display().to_string())?;
            Ok(id)
        }
    }
}

/// How often supervised processes are looked at.
const TEND_EVERY: Duration = Duration::from_millis(250);

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.members == 0 {
        anyhow::bail!("--members: need at least 1");
    }
    if args.nodes == 0 && !args.no_node {
        anyhow::bail!("--nodes: need at least 1 (or --no-node for the control plane alone)");
    }
    if args.nodes > 1 && args.containerd_socket.is_some() {
        anyhow::bail!("--containerd-socket: each of several nodes runs a containerd of its own");
    }
    let private_containerd = args.containerd_socket.is_none();
    if !args.no_node {
        let missing = missing_node_packages(private_containerd);
        if !missing.is_empty() {
            anyhow::bail!(
                "the node agent needs Debian packages that are not installed: apt-get install -y {} \
                 (or run `skiff up --no-node` for the control plane alone)",
                missing.join(" ")
            );
        }
    }
    let claims = ports::claims(args.base_port, args.members, !args.no_node)?;
    ports::check_free(&claims, args.base_port)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let net = if args.no_node {
        None
    } else {
        Some(network::load_or_choose(&dir, &network::Host::read()?)?)
    };
    let cluster = cluster_id(&dir)?;
    let member_ids: Vec<u64> = (1..=args.members).collect();
    // Several nodes: their hosts (namespaces on a LAN of the cluster's) are made first.
    let several = net.as_ref().filter(|_| args.nodes > 1);
    let hosts = match several {
        Some(net) => {
            let names: Vec<String> = (1..=args.nodes)
                .map(|i| format!("{}-{i}", args.node_name))
                .collect();
            let range = hosts::Hosts::range_of(net);
            let lan = hosts::Hosts::plan(net, &names).lan;
            if let Some(r) = network::Host::read()?.routed_elsewhere(range, &lan) {
                anyhow::bail!(
                    "the nodes' LAN {range} overlaps {}, routed to {} on this host; stop what uses it",
                    r.dst,
                    r.dev
                );
            }
            Some(hosts::Hosts::create(net, &names).context("making the nodes' hosts")?)
        }
        None => None,
    };
    let node_credentials: Vec<pki::NodeCredentials> = match (&hosts, args.no_node) {
        (_, true) => Vec::new(),
        (Some(h), _) => h
            .nodes
            .iter()
            .map(|n| pki::NodeCredentials {
                name: n.name.clone(),
                pki: node_dir(&dir, &n.name).join("node").join("pki"),
                addresses: vec![n.ip.into()],
            })
            .collect(),
        (None, false) => vec![pki::NodeCredentials {
            name: args.node_name.clone(),
            pki: dir.join("node").join("pki"),
            addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        }],
    };
    let admin = pki::prepare(
        &dir,
        &cluster,
        &member_ids,
        &node_credentials,
        args.cert_validity,
    )
    .context("preparing the cluster's certificates")?;
    let key_file = encryption_key(&dir)?;
    let exe = std::env::current_exe().context("locating the skiff binary")?;
    let addrs: Vec<(u64, String)> = claims
        .iter()
        .zip(1..=args.members)
        .map(|(c, id)| (id, format!("127.0.0.1:{}", c.port)))
        .collect();
    let initial = addrs
        .iter()
        .map(|(i, a)| format!("{i}={a}"))
        .collect::<Vec<_>>()
        .join(",");

    let mut members = Vec::new();
    for (id, addr) in &addrs {
        let mut control_args: Vec<std::ffi::OsString> = vec![
            "control".into(),
            "--id".into(),
            id.to_string().into(),
            "--data-dir".into(),
            dir.join(format!("control-{id}")).into(),
            "--initial-cluster".into(),
            initial.clone().into(),
            "--cluster-id".into(),
            cluster.clone().into(),
            "--encryption-key-file".into(),
            key_file.clone().into(),
            "--cert-validity".into(),
            humantime::format_duration(args.cert_validity)
                .to_string()
                .into(),
        ];
        match &hosts {
            // Agents in namespaces of their own reach the members on the LAN.
            Some(_) => control_args.extend([
                "--listen".into(),
                addr.replace("127.0.0.1", "0.0.0.0").into(),
                "--advertise".into(),
                addr.into(),
            ]),
            None => control_args.extend(["--listen".into(), addr.into()]),
        }
        if let Some(net) = &net {
            control_args.extend([
                "--cluster-cidr".into(),
                net.cluster_cidr.clone().into(),
                "--service-cidr".into(),
                net.service_cidr.clone().into(),
            ]);
        }
        members.push(Supervised::start(Spec {
            name: format!("control node {id} ({addr})"),
            program: exe.clone(),
            args: control_args,
            log: dir.join(format!("control-{id}.log")),
            own_group: false,
        })?);
    }
    let endpoints: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
    let config_path = dir.join("config.json");
    ConfigFile::single("local", endpoints.clone(), Some(admin.clone())).save(&config_path)?;

    let leader = match wait_until_up(&mut members, &endpoints, &cluster, &admin).await {
        Ok(leader) => leader,
        Err(e) => {
            stop_members(&mut members).await;
            if let Some(h) = &hosts {
                h.remove();
            }
            return Err(e);
        }
    };

    // The nodes: each a private containerd (unless one was named) and an agent.
    let mut containerds: Vec<(Supervised, PathBuf)> = Vec::new();
    let mut agents: Vec<Supervised> = Vec::new();
    if let (Some(net), Some(agent_port)) = (&net, claims.last().filter(|_| !args.no_node)) {
        let started = start_nodes(
            &args,
            &dir,
            net,
            hosts.as_ref(),
            agent_port.port,
            &endpoints,
            &cluster,
            &exe,
            &mut containerds,
            &mut agents,
        )
        .await;
        if let Err(e) = started {
            stop_nodes(&mut agents, &mut containerds, Some(net), hosts.as_ref()).await;
            stop_members(&mut members).await;
            return Err(e);
        }
    }
    match leader {
        Some(id) => println!(
            "Skiff is up: {} control nodes on {} (leader: {id}); data in {}\n\
             Client config: {} (skiffctl finds it from this directory)\n\
             Node: {}\n\
             Try: skiffctl cluster status   ·   Ctrl-C stops the cluster",
            members.len(),
            endpoints.join(", "),
            dir.display(),
            config_path.display(),
            match (&net, &hosts) {
                (None, _) => "none (--no-node)".to_string(),
                (Some(net), None) => format!(
                    "{} (pods in {}, services in {}; log: {})",
                    args.node_name,
                    net.cluster_cidr,
                    net.service_cidr,
                    dir.join("node.log").display()
                ),
                (Some(net), Some(h)) => format!(
                    "{} on the LAN {}/24 (pods in {}, services in {}; logs: {})",
                    h.nodes
                        .iter()
                        .map(|n| format!("{} ({})", n.name, n.ip))
                        .collect::<Vec<_>>()
                        .join(", "),
                    h.gateway,
                    net.cluster_cidr,
                    net.service_cidr,
                    dir.join("nodes/*.log").display()
                ),
            }
        ),
        None => println!(
            "Started {} control nodes, but no leader yet; logs are in {}",
            members.len(),
            dir.display()
        ),
    }

    let failed = supervise(&mut members, &mut agents, &mut containerds).await;
    stop_nodes(&mut agents, &mut containerds, net.as_ref(), hosts.as_ref()).await;
    stop_members(&mut members).await;
    match failed {
        Some(e) => Err(e.context("stopped the cluster")),
        None => {
            println!(
                "stopped; data kept in {} (run `skiff up` again to resume)",
                dir.display()
            );
            Ok(())
        }
    }
}

/// Where node `name` of several keeps its containerd and agent data.
fn node_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("nodes").join(name)
}

/// The resolv.conf whose resolvers the nodes forward to: on a host whose /etc/resolv.conf
/// names a local stub (systemd-resolved's 127.0.0.53, which a node in a namespace of its own
/// cannot reach), the stub's upstream list, as the kubelet is told to use.
fn upstream_resolv_conf() -> PathBuf {
    let stub = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim_start().starts_with("nameserver 127."));
    let resolved = Path::new("/run/systemd/resolve/resolv.conf");
    if stub && resolved.exists() {
        resolved.to_path_buf()
    } else {
        PathBuf::from("/etc/resolv.conf")
    }
}

/// Start the node agents (and their containerds): one in this host's network, or one per
/// host of `hosts`.
#[allow(clippy::too_many_arguments)]
async fn start_nodes(
    args: &UpArgs,
    dir: &Path,
    net: &network::LocalNetwork,
    hosts: Option<&hosts::Hosts>,
    agent_port: u16,
    endpoints: &[String],
    cluster: &str,
    exe: &Path,
    containerds: &mut Vec<(Supervised, PathBuf)>,
    agents: &mut Vec<Supervised>,
) -> anyhow::Result<()> {
    // (name, its folder, namespace and address when it has a host of its own)
    let nodes: Vec<(String, PathBuf, Option<&hosts::NodeHost>)> = match hosts {
        None => vec![(args.node_name.clone(), dir.to_path_buf(), None)],
        Some(h) => h
            .nodes
            .iter()
            .map(|n| (n.name.clone(), node_dir(dir, &n.name), Some(n)))
            .collect(),
    };
    for (name, home, host) in nodes {
        std::fs::create_dir_all(&home)?;
        let socket = match &args.containerd_socket {
            Some(s) => s.clone(),
            None => {
                let (child, socket) = containerd::start(&home).await?;
                containerds.push((child, home.clone()));
                socket
            }
        };
        let endpoints = match hosts {
            // Reached on the LAN, not on this host's loopback.
            Some(h) => endpoints
                .iter()
                .map(|e| e.replace("127.0.0.1", &h.gateway.to_string()))
                .collect::<Vec<_>>(),
            None => endpoints.to_vec(),
        };
        let mut node_args: Vec<std::ffi::OsString> = vec![
            "node".into(),
            "--name".into(),
            name.clone().into(),
            "--endpoints".into(),
            endpoints.join(",").into(),
            "--cluster-id".into(),
            cluster.into(),
            "--containerd-socket".into(),
            socket.into(),
            "--data-dir".into(),
            home.join("node").into(),
            "--oci-runtime".into(),
            args.oci_runtime.clone().into(),
            "--agent-port".into(),
            agent_port.to_string().into(),
            "--bridge".into(),
            net.bridge.clone().into(),
            "--proxy-table".into(),
            net.proxy_table.clone().into(),
            "--cluster-cidr".into(),
            net.cluster_cidr.clone().into(),
            "--service-cidr".into(),
            net.service_cidr.clone().into(),
        ];
        match host {
            Some(h) => node_args.extend([
                "--netns".into(),
                h.netns.clone().into(),
                "--node-ip".into(),
                h.ip.to_string().into(),
                "--pod-network".into(),
                "vxlan".into(),
                "--resolv-conf".into(),
                upstream_resolv_conf().into(),
            ]),
            // One node has no peers: no tunnel device on the developer's machine.
            None => node_args.extend(["--pod-network".into(), "host-gw".into()]),
        }
        if args.containerd_socket.is_none() {
            // The private containerd's state is a tmpfs: the runtime's state goes there too.
            node_args.push("--oci-runtime-root".into());
            node_args.push(containerd::state(&home).join("runc").into());
        }
        let log = match host {
            Some(_) => dir.join("nodes").join(format!("{name}.log")),
            None => dir.join("node.log"),
        };
        agents.push(Supervised::start(Spec {
            name: format!("the node agent {name}"),
            program: exe.to_path_buf(),
            args: node_args,
            log,
            own_group: false,
        })?);
    }
    Ok(())
}

/// Stop the agents, then each private containerd and what runs through it, then the node
/// network: the bridge of a node on this host, or the hosts of several.
async fn stop_nodes(
    agents: &mut Vec<Supervised>,
    containerds: &mut Vec<(Supervised, PathBuf)>,
    net: Option<&network::LocalNetwork>,
    hosts: Option<&hosts::Hosts>,
) {
    if !agents.is_empty() {
        println!("stopping {} node agent(s)...", agents.len());
    }
    for a in agents.iter_mut() {
        a.terminate();
    }
    for mut a in agents.drain(..) {
        a.stop(Duration::from_secs(10)).await;
    }
    let private = !containerds.is_empty();
    for (c, home) in containerds.drain(..) {
        containerd::stop(c, &home).await;
    }
    match (hosts, net) {
        (Some(h), _) => h.remove(),
        // Its pods are gone: so goes the node's share of the host network, which another
        // cluster on this host may take until this one runs again.
        (None, Some(net)) if private => network::remove(net),
        _ => {}
    }
}

/// Keep everything running until Ctrl-C (or SIGTERM); the error of a process that keeps
/// failing ends it too.
async fn supervise(
    members: &mut [Supervised],
    agents: &mut [Supervised],
    containerds: &mut [(Supervised, PathBuf)],
) -> Option<anyhow::Error> {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => return Some(e.into()),
    };
    loop {
        tokio::select! {
            _ = int.recv() => return None,
            _ = term.recv() => return None,
            _ = tokio::time::sleep(TEND_EVERY) => {
                let all = members
                    .iter_mut()
                    .chain(agents.iter_mut())
                    .chain(containerds.iter_mut().map(|(c, _)| c));
                for p in all {
                    if let Err(e) = p.tend() {
                        return Some(e);
                    }
                }
            }
        }
    }
}

async fn stop_members(members: &mut [Supervised]) {
    println!("stopping {} control nodes...", members.len());
    for m in members.iter_mut() {
        m.terminate();
    }
    for m in members.iter_mut() {
        m.stop(Duration::from_secs(10)).await;
    }
}

/// Wait until one of the members started here answers as leader-aware with the cluster id
/// made here; `None` when none has within 30 s (they keep running and may elect later). An
/// answer with another cluster id comes from someone else's process, never counted as ours.
async fn wait_until_up(
    members: &mut [Supervised],
    endpoints: &[String],
    cluster: &str,
    admin: &skiff_proto::tls::Credentials,
) -> anyhow::Result<Option<u64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (m, e) in members.iter_mut().zip(endpoints) {
            if m.tend()? == Tended::Fine && !m.running() {
                continue;
            }
            if let Ok(st) = skiff_proto::Client::status_of(e, Some(admin)).await {
                if st.cluster_id == cluster && st.leader != 0 {
                    return Ok(Some(st.leader));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(None)
}

/// The key Secrets are sealed with at rest, made at the first `skiff up` in a folder and kept
/// beside the members' data directories (`.skiff/encryption.key`, owner-only).
fn encryption_key(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("encryption.key");
    if !path.exists() {
        skiff_proto::private_file::write(
            &path,
            skiff_control::objects::encryption::new_key_file_content().as_bytes(),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}
