//! `skiff up`: a local HA cluster — three control nodes on loopback and one node agent — with
//! data under ./.skiff/. Without `--containerd-socket` the agent gets a private containerd
//! (own root, state and socket under ./.skiff/containerd/). It supervises what it starts
//! (restarting a process that exits) and checks first that nothing else has its ports or its
//! node network, so several run side by side with `--base-port`. Ctrl-C stops it cleanly (pods
//! and containerd too); running it again resumes from the same data.

mod containerd;
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
    /// Number of control nodes.
    #[arg(long, default_value_t = 3)]
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
    /// Name of the local node.
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
    if args.nodes == 0 {
        anyhow::bail!("--nodes: need at least 1");
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
    let claims = ports::claims(args.base_port, args.nodes, !args.no_node)?;
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
    let member_ids: Vec<u64> = (1..=args.nodes).collect();
    let node_name = (!args.no_node).then_some(args.node_name.as_str());
    let admin = pki::prepare(&dir, &cluster, &member_ids, node_name, args.cert_validity)
        .context("preparing the cluster's certificates")?;
    let key_file = encryption_key(&dir)?;
    let exe = std::env::current_exe().context("locating the skiff binary")?;
    let addrs: Vec<(u64, String)> = claims
        .iter()
        .zip(1..=args.nodes)
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
            "--listen".into(),
            addr.into(),
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
            return Err(e);
        }
    };

    // The node: a private containerd unless one was named, and the agent.
    let mut containerd = None;
    let mut agent = None;
    if let (Some(net), Some(agent_port)) = (&net, claims.last().filter(|_| !args.no_node)) {
        let socket = match &args.containerd_socket {
            Some(s) => s.clone(),
            None => {
                let (child, socket) = containerd::start(&dir).await?;
                containerd = Some(child);
                socket
            }
        };
        let mut node_args: Vec<std::ffi::OsString> = vec![
            "node".into(),
            "--name".into(),
            args.node_name.clone().into(),
            "--endpoints".into(),
            endpoints.join(",").into(),
            "--cluster-id".into(),
            cluster.clone().into(),
            "--containerd-socket".into(),
            socket.into(),
            "--data-dir".into(),
            dir.join("node").into(),
            "--oci-runtime".into(),
            args.oci_runtime.clone().into(),
            "--agent-port".into(),
            agent_port.port.to_string().into(),
            "--bridge".into(),
            net.bridge.clone().into(),
            "--proxy-table".into(),
            net.proxy_table.clone().into(),
            // One node has no peers: no tunnel device on the developer's machine.
            "--pod-network".into(),
            "host-gw".into(),
            "--cluster-cidr".into(),
            net.cluster_cidr.clone().into(),
            "--service-cidr".into(),
            net.service_cidr.clone().into(),
        ];
        if containerd.is_some() {
            // The private containerd's state is a tmpfs: the runtime's state goes there too.
            node_args.push("--oci-runtime-root".into());
            node_args.push(containerd::state(&dir).join("runc").into());
        }
        agent = Some(Supervised::start(Spec {
            name: "the node agent".into(),
            program: exe.clone(),
            args: node_args,
            log: dir.join("node.log"),
            own_group: false,
        })?);
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
            match &net {
                None => "none (--no-node)".to_string(),
                Some(net) => format!(
                    "{} (pods in {}, services in {}; log: {})",
                    args.node_name,
                    net.cluster_cidr,
                    net.service_cidr,
                    dir.join("node.log").display()
                ),
            }
        ),
        None => println!(
            "Started {} control nodes, but no leader yet; logs are in {}",
            members.len(),
            dir.display()
        ),
    }

    let failed = supervise(&mut members, &mut agent, &mut containerd).await;
    if let Some(mut a) = agent.take() {
        println!("stopping the node agent...");
        a.stop(Duration::from_secs(10)).await;
    }
    if let Some(c) = containerd.take() {
        containerd::stop(c, &dir).await;
        // Its pods are gone: so goes the node's share of the host network, which another
        // cluster on this host may take until this one runs again.
        if let Some(net) = &net {
            network::remove(net);
        }
    }
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

/// Keep everything running until Ctrl-C (or SIGTERM); the error of a process that keeps
/// failing ends it too.
async fn supervise(
    members: &mut [Supervised],
    agent: &mut Option<Supervised>,
    containerd: &mut Option<Supervised>,
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
                let all = members.iter_mut().chain(agent.iter_mut()).chain(containerd.iter_mut());
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
