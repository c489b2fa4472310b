//! The private containerd of a `skiff up` node: its state on tmpfs, its config, and at the end
//! its pods stopped and its mounts removed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::Command;

use super::supervisor::{Spec, Supervised};

/// The private containerd's state folder: task bundles and shim files.
pub fn state(dir: &Path) -> PathBuf {
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

/// Start a private containerd under `dir`, supervised; returns it and its socket once the
/// socket is there.
pub async fn start(dir: &Path) -> anyhow::Result<(Supervised, PathBuf)> {
    let root = dir.join("containerd");
    std::fs::create_dir_all(&root)?;
    mount_state_tmpfs(&state(dir))?;
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
    let log = root.join("containerd.log");
    let child = Supervised::start(Spec {
        name: "containerd".into(),
        program: "containerd".into(),
        args: vec!["--config".into(), config.into()],
        log: log.clone(),
        own_group: true,
    })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        if Instant::now() > deadline {
            anyhow::bail!("containerd did not start; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, socket))
}

/// Stop the private containerd and what runs through it: the pods' containers first (they
/// would outlive it in their shims), their network namespaces, then containerd and its mounts.
pub async fn stop(mut containerd: Supervised, dir: &Path) {
    stop_pods(dir).await;
    remove_pod_namespaces(&dir.join("node"));
    containerd.stop(Duration::from_secs(10)).await;
    let _ = nix::mount::umount2(&state(dir), nix::mount::MntFlags::MNT_DETACH);
    unmount_runtime_pins(&dir.join("node").join("oci-runtime"));
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
