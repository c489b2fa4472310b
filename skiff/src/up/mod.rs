//! `skiff up`: a local HA cluster — three control nodes on loopback and one node agent — with
//! data under ./.skiff/. Without `--containerd-socket` the agent gets a private containerd
//! (own root, state and socket under ./.skiff/containerd/). Ctrl-C stops it cleanly (pods and
//! containerd too); running it again resumes from the same data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skiff_proto::config_file::ConfigFile;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Where the cluster keeps its data, logs and client config.
    #[arg(long, default_value = ".skiff")]
    pub dir: PathBuf,
    /// Number of control nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Port of the first control node; the others follow.
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

/// The private containerd's state folder: task bundles and shim files.
fn containerd_state(dir: &Path) -> PathBuf {
    dir.join("containerd/state")
}

/// Whether `path` is a mount point (it is listed in /proc/self/mountinfo).
fn is_mount_point(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|m| Path::new(m) == path)
}

/// containerd's state and the OCI runtime's go on tmpfs, as /run is on a usual host: both are
/// rewritten on every container start, and on disk each start pays for its file creations.
/// A tmpfs left mounted by a `skiff up` that was killed is reused.
fn mount_state_tmpfs(state: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(state)?;
    if is_mount_point(state) {
        return Ok(());
    }
    nix::mount::mount(
        Some("tmpfs"),
        state,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0711"),
    )
    .with_context(|| format!("mounting a tmpfs on {}", state.display()))
}

/// Earlier releases' agents pinned binaries read-only under their data folder; with the
/// private containerd gone no shim calls them any more.
fn unmount_runtime_pins(pins: &Path) {
    for pin in std::fs::read_dir(pins).into_iter().flatten().flatten() {
        let _ = nix::mount::umount2(&pin.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The pods' network namespaces go with their containers, as at a reboot. A later `skiff up`
/// wires each pod again (the agent releases the address it had first).
fn remove_pod_namespaces(node_dir: &Path) {
    for pod in std::fs::read_dir(node_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let uid = pod.file_name().to_string_lossy().into_owned();
        if let Err(e) = skiff_node::netns::delete(&skiff_node::pod_worker::sandbox_name(&uid)) {
            eprintln!("removing the network namespace of pod {uid}: {e}");
        }
    }
    skiff_node::runtime::made_ahead::sandboxes::remove_namespaces(&node_dir.join("cni"));
}

/// Start a private containerd under `dir`; returns it and its socket.
async fn start_containerd(dir: &Path) -> anyhow::Result<(Child, PathBuf)> {
    let root = dir.join("containerd");
    std::fs::create_dir_all(&root)?;
    mount_state_tmpfs(&containerd_state(dir))?;
    let socket = root.join("containerd.sock");
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n",
            root.display(),
            socket.display()
        ),
    )?;
    let _ = std::fs::remove_file(&socket);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("containerd.log"))?;
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        // A group of its own: Ctrl-C in the terminal reaches the whole foreground group, and
        // containerd must outlive it until `stop_pods` has stopped the containers through it.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting containerd")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        if Instant::now() > deadline {
            anyhow::bail!(
                "containerd did not start; see {}",
                root.join("containerd.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, socket))
}

struct Member {
    id: u64,
    addr: String,
    child: Child,
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
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let cluster = cluster_id(&dir)?;
    let exe = std::env::current_exe().context("locating the skiff binary")?;
    let addrs: Vec<(u64, String)> = (1..=args.nodes)
        .map(|i| {
            (
                i,
                format!("127.0.0.1:{}", u64::from(args.base_port) + i - 1),
            )
        })
        .collect();
    let initial = addrs
        .iter()
        .map(|(i, a)| format!("{i}={a}"))
        .collect::<Vec<_>>()
        .join(",");

    let mut members = Vec::new();
    for (id, addr) in &addrs {
        let log_path = dir.join(format!("control-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(&exe)
            .arg("control")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(dir.join(format!("control-{id}")))
            .args([
                "--listen",
                addr,
                "--initial-cluster",
                &initial,
                "--cluster-id",
                &cluster,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting control node {id}"))?;
        members.push(Member {
            id: *id,
            addr: addr.clone(),
            child,
        });
    }
    let endpoints: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
    let config_path = dir.join("config.json");
    ConfigFile::single("local", endpoints.clone()).save(&config_path)?;

    let leader = wait_for_leader(&endpoints, Duration::from_secs(30)).await;

    // The node: a private containerd unless one was named, and the agent.
    let mut containerd = None;
    let mut agent = None;
    if !args.no_node {
        let socket = match &args.containerd_socket {
            Some(s) => s.clone(),
            None => {
                let (child, socket) = start_containerd(&dir).await?;
                containerd = Some(child);
                socket
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))?;
        let mut node = Command::new(&exe);
        node.arg("node")
            .args(["--name", &args.node_name])
            .args(["--endpoints", &endpoints.join(",")])
            .arg("--containerd-socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("node"))
            .args(["--oci-runtime", &args.oci_runtime]);
        if containerd.is_some() {
            // The private containerd's state is a tmpfs: the runtime's state goes there too.
            node.arg("--oci-runtime-root")
                .arg(containerd_state(&dir).join("runc"));
        }
        let child = node
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the node agent")?;
        agent = Some(child);
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
            if args.no_node {
                "none (--no-node)".to_string()
            } else {
                format!(
                    "{} (log: {})",
                    args.node_name,
                    dir.join("node.log").display()
                )
            }
        ),
        None => println!(
            "Started {} control nodes, but no leader yet; logs are in {}",
            members.len(),
            dir.display()
        ),
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Some(a) = &mut agent {
                    if let Ok(Some(status)) = a.try_wait() {
                        eprintln!("the node agent exited: {status}; see {}", dir.join("node.log").display());
                        agent = None;
                    }
                }
                for m in &mut members {
                    if let Ok(Some(status)) = m.child.try_wait() {
                        eprintln!("control node {} ({}) exited: {status}; see {}", m.id, m.addr, dir.join(format!("control-{}.log", m.id)).display());
                    }
                }
            }
        }
    }
    if let Some(mut a) = agent.take() {
        println!("stopping the node agent...");
        stop_child(&mut a, "the node agent").await;
    }
    if let Some(mut c) = containerd.take() {
        // The private containerd's pods go with it: stop their containers first.
        stop_pods(&dir).await;
        remove_pod_namespaces(&dir.join("node"));
        stop_child(&mut c, "containerd").await;
        let _ = nix::mount::umount2(&containerd_state(&dir), nix::mount::MntFlags::MNT_DETACH);
        unmount_runtime_pins(&dir.join("node").join("oci-runtime"));
    }
    println!("stopping {} control nodes...", members.len());
    for m in &members {
        if let Some(pid) = m.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for m in &mut members {
        match tokio::time::timeout(Duration::from_secs(10), m.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("control node {} did not stop in 10 s; killing it", m.id);
                let _ = m.child.kill().await;
            }
        }
    }
    println!(
        "stopped; data kept in {} (run `skiff up` again to resume)",
        dir.display()
    );
    Ok(())
}

async fn stop_child(child: &mut Child, what: &str) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        eprintln!("{what} did not stop in 10 s; killing it");
        let _ = child.kill().await;
    }
}

/// Kill the containers of the private containerd (they would outlive it in their shims).
async fn stop_pods(dir: &Path) {
    let socket = dir.join("containerd/containerd.sock");
    let sock = socket.display().to_string();
    let ctr = |args: Vec<String>| {
        let sock = sock.clone();
        async move {
            Command::new("ctr")
                .args(["-a", &sock, "-n", "skiff"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .await
        }
    };
    let Ok(out) = ctr(vec!["tasks".into(), "ls".into(), "-q".into()]).await else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return;
    }
    println!("stopping {} containers...", ids.len());
    for id in &ids {
        let _ = ctr(vec![
            "tasks".into(),
            "kill".into(),
            "-a".into(),
            "-s".into(),
            "SIGKILL".into(),
            id.clone(),
        ])
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let _ = ctr(vec![
            "tasks".into(),
            "delete".into(),
            "-f".into(),
            id.clone(),
        ])
        .await;
    }
}

async fn wait_for_leader(endpoints: &[String], within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for e in endpoints {
            if let Ok(st) = skiff_proto::Client::status_of(e).await {
                if st.leader != 0 {
                    return Some(st.leader);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
