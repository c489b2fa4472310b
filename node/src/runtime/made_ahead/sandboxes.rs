//! Pod sandboxes made ahead of time: while the node is idle, network namespaces wired by the
//! CNI plugins, each held by a sandbox container with its shim running
//! (`runtime::sandbox`), waiting for a pod. A pod start that takes one renames the namespace
//! to the pod's and its containers join the sandbox's shim: it skips the three plugin
//! processes and the shim's start-up. The pool is filled again only once no pod is starting,
//! so a burst of starts does not share the CPU with it. Off unless `--warm-sandboxes N` asks
//! for N. On a burst of three images it lowers the p50 by a third (docs/BENCHMARKS.md).
//!
//! A warm sandbox's name is its namespace's, its CNI container id and its sandbox container's
//! id. The pod records it (`PodNetwork::cni_id`, `PodNetwork::sandbox`): its address is
//! released by that id and its sandbox container removed with the pod. The pod worker takes
//! one through `crate::pod_worker::MadeAhead` and works the same without.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::quiet::Quiet;
use super::MadeAheadRuntime;
use crate::cni::{NetworkConfig, PodNetwork};
use crate::runtime::{labels, sandbox};

/// The node's warm pod sandboxes.
pub struct WarmSandboxes<R> {
    runtime: Arc<R>,
    network: NetworkConfig,
    /// The pods' folders: their network records name the warm sandboxes pods took.
    pods_dir: PathBuf,
    target: usize,
    /// `<prefix for the agent><this run>-`: names stay unique across restarts, since a pod
    /// keeps the name of the sandbox it took.
    prefix: String,
    ready: Mutex<Vec<PodNetwork>>,
    quiet: Quiet,
    next: AtomicU64,
    wanted: Notify,
}

/// The name prefix of the warm sandboxes of the agent whose CNI records are in `ipam_dir`:
/// agents sharing a host (as in tests) keep apart.
pub fn prefix_for(ipam_dir: &Path) -> String {
    format!("skiff-warm-{:08x}-", path_hash(ipam_dir))
}

/// A short hash of `path` that names one agent's things among those of agents sharing a host.
pub fn path_hash(path: &Path) -> u32 {
    // FNV-1a: stable across builds, unlike std's hasher, so a newer agent finds an older one's.
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    hash as u32
}

/// Remove the warm namespaces of the agent whose CNI records are in `ipam_dir` (only the
/// namespaces: the agent releases their addresses and containers when it starts again).
pub fn remove_namespaces(ipam_dir: &Path) {
    for name in crate::netns::names_with_prefix(&prefix_for(ipam_dir)) {
        let _ = crate::netns::delete(&name);
    }
}

impl<R: MadeAheadRuntime> WarmSandboxes<R> {
    /// A pool of `target` sandboxes on `network` and `runtime` for pods whose folders are in
    /// `pods_dir`; [`WarmSandboxes::keep_filled`] fills it.
    pub fn new(runtime: Arc<R>, network: NetworkConfig, pods_dir: PathBuf, target: usize) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Self {
            prefix: format!("{}{run:x}-", prefix_for(&network.ipam_dir)),
            runtime,
            pods_dir,
            network,
            target,
            ready: Mutex::new(Vec::new()),
            quiet: Quiet::default(),
            next: AtomicU64::new(0),
            wanted: Notify::new(),
        }
    }

    /// How many are ready.
    pub fn ready(&self) -> usize {
        self.ready.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// A ready sandbox, its namespace renamed to `name`; `None` when none is ready.
    pub fn take(&self, name: &str) -> Option<PodNetwork> {
        if crate::netns::path(name).exists() {
            // The pod has a namespace already (an agent stopped before recording it): wiring
            // that one again keeps a single namespace per pod.
            return None;
        }
        loop {
            let warm = self.ready.lock().ok()?.pop()?;
            self.quiet.took();
            self.wanted.notify_one();
            let warm_name = warm.netns.file_name()?.to_string_lossy().into_owned();
            match crate::netns::rename(&warm_name, name) {
                Ok(netns) => {
                    tracing::debug!(warm = %warm_name, ip = %warm.ip, "took a warm sandbox");
                    return Some(PodNetwork {
                        netns,
                        cni_id: Some(warm_name),
                        ..warm
                    });
                }
                Err(e) => {
                    tracing::warn!(warm = %warm_name, error = %e, "a warm sandbox could not be taken; removing it");
                    let (runtime, network) = (self.runtime.clone(), self.network.clone());
                    tokio::spawn(async move {
                        if warm.sandbox.is_some() {
                            let _ = runtime.remove(&warm_name).await;
                        }
                        let _ = network.teardown(&warm_name, None).await;
                    });
                }
            }
        }
    }

    /// Release what an earlier run of the agent left, then keep `target` sandboxes ready,
    /// making them only while no pod start holds a turn at `gate` (of `gate_size` turns).
    pub async fn keep_filled(self: Arc<Self>, gate: Arc<Semaphore>, gate_size: usize) {
        self.release_left_over().await;
        if self.target == 0 {
            return;
        }
        loop {
            while self.ready() >= self.target {
                self.wanted.notified().await;
            }
            self.quiet.wait(&gate, gate_size).await;
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}{n}", self.prefix);
            match self.make(&name).await {
                Ok(net) => {
                    if let Ok(mut r) = self.ready.lock() {
                        r.push(net);
                    }
                }
                Err(e) => {
                    tracing::warn!(warm = %name, error = %e, "making a warm sandbox");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }

    /// A wired namespace and, in it, a sandbox container. Without the container the network
    /// still serves: the pod's containers then start a shim of their own.
    async fn make(&self, name: &str) -> crate::error::Result<PodNetwork> {
        let mut net = self.network.setup(name).await?;
        match self.runtime.create_sandbox(name, &net.netns).await {
            Ok(()) => net.sandbox = Some(name.to_string()),
            Err(e) => {
                tracing::warn!(warm = %name, error = %e, "making a sandbox container; the network is kept without it")
            }
        }
        tracing::debug!(warm = %name, ip = %net.ip, shim = net.sandbox.is_some(), "warm sandbox ready");
        Ok(net)
    }

    /// Sandbox containers, namespaces and addresses of warm sandboxes an earlier run made and
    /// no pod took.
    async fn release_left_over(&self) {
        let agent_prefix = prefix_for(&self.network.ipam_dir);
        let records: Vec<PodNetwork> = std::fs::read_dir(&self.pods_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|pod| PodNetwork::read_record(&pod.path()))
            .collect();
        let taken: Vec<String> = records.iter().filter_map(|r| r.cni_id.clone()).collect();
        let taken_sandboxes: Vec<&str> = records
            .iter()
            .filter_map(|r| r.sandbox.as_deref())
            .collect();
        match self.runtime.list().await {
            Ok(containers) => {
                for c in containers {
                    let warm = c.label(labels::KIND) == sandbox::KIND
                        && c.id.starts_with(&agent_prefix)
                        && !taken_sandboxes.contains(&c.id.as_str());
                    if warm {
                        tracing::info!(warm = %c.id, "removing a sandbox container left by an earlier run");
                        if let Err(e) = self.runtime.remove(&c.id).await {
                            tracing::warn!(warm = %c.id, error = %e, "removing a left-over sandbox container");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing containers for left-over sandboxes"),
        }
        let mut ids = crate::netns::names_with_prefix(&agent_prefix);
        // A namespace removed without its address (`skiff up` stopping) leaves the address
        // recorded under the warm id in host-local's folder: `<dir>/<network>/<ip>` holding
        // the id on its first line.
        let records = self.network.ipam_dir.join(crate::cni::NETWORK_NAME);
        for file in std::fs::read_dir(&records).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(file.path()) else {
                continue;
            };
            let id = text.lines().next().unwrap_or("").trim();
            let known = ids.iter().chain(&taken).any(|i| i == id);
            if id.starts_with(&agent_prefix) && !known {
                ids.push(id.to_string());
            }
        }
        for id in ids {
            tracing::info!(warm = %id, "releasing a warm network left by an earlier run");
            if let Err(e) = self.network.teardown(&id, None).await {
                tracing::warn!(warm = %id, error = %e, "releasing a left-over warm network");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_with_their_own_records_have_their_own_prefix() {
        let a = prefix_for(Path::new("/var/lib/skiff/node-a/cni"));
        let b = prefix_for(Path::new("/var/lib/skiff/node-b/cni"));
        assert_ne!(a, b);
        assert_eq!(a, prefix_for(Path::new("/var/lib/skiff/node-a/cni")));
        assert!(a.starts_with("skiff-warm-") && a.ends_with('-'));
    }
}
