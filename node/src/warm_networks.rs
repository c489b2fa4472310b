//! Pod networks made ahead of time: network namespaces wired by the CNI plugins while the
//! node is idle, each waiting for a pod. A pod start that takes one renames it to the pod's
//! namespace and skips the three plugin processes, about a fifth of the CPU a pod start costs
//! here. The pool is filled again only once no pod is starting, so a burst of starts does not
//! share the CPU with it. Off unless `--warm-networks N` asks for N.
//!
//! A warm namespace is wired under its own name as the CNI container id; the pod keeps that id
//! in its network record (`PodNetwork::cni_id`), and its address is released by it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use crate::cni::{NetworkConfig, PodNetwork};

/// How long after the last pod start the pool waits before filling up.
const QUIET: Duration = Duration::from_secs(1);

/// The node's warm pod networks.
pub struct WarmNetworks {
    network: NetworkConfig,
    /// The pods' folders: their network records name the warm networks pods took.
    pods_dir: PathBuf,
    target: usize,
    /// `<prefix for the agent><this run>-`: names stay unique across restarts, since a pod
    /// keeps the name of the network it took as its CNI id.
    prefix: String,
    ready: Mutex<Vec<PodNetwork>>,
    last_take: Mutex<Option<Instant>>,
    next: AtomicU64,
    wanted: Notify,
}

/// The name prefix of the warm namespaces of the agent whose CNI records are in `ipam_dir`:
/// agents sharing a host (as in tests) keep apart.
pub fn prefix_for(ipam_dir: &Path) -> String {
    // FNV-1a: stable across builds, unlike std's hasher, so a newer agent finds an older one's.
    let hash = ipam_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("skiff-warm-{:08x}-", hash as u32)
}

/// Remove the warm namespaces of the agent whose CNI records are in `ipam_dir` (only the
/// namespaces: the agent releases their addresses when it starts again).
pub fn remove_namespaces(ipam_dir: &Path) {
    for name in crate::netns::names_with_prefix(&prefix_for(ipam_dir)) {
        let _ = crate::netns::delete(&name);
    }
}

impl WarmNetworks {
    /// A pool of `target` networks on `network`; [`WarmNetworks::keep_filled`] fills it.
    pub fn new(network: NetworkConfig, pods_dir: PathBuf, target: usize) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Self {
            prefix: format!("{}{run:x}-", prefix_for(&network.ipam_dir)),
            pods_dir,
            network,
            target,
            ready: Mutex::new(Vec::new()),
            last_take: Mutex::new(None),
            next: AtomicU64::new(0),
            wanted: Notify::new(),
        }
    }

    /// How many are ready.
    pub fn ready(&self) -> usize {
        self.ready.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// A ready network, renamed to namespace `name`; `None` when none is ready.
    pub fn take(&self, name: &str) -> Option<PodNetwork> {
        if crate::netns::path(name).exists() {
            // The pod has a namespace already (an agent stopped before recording it): wiring
            // that one again keeps a single namespace per pod.
            return None;
        }
        loop {
            let warm = self.ready.lock().ok()?.pop()?;
            if let Ok(mut t) = self.last_take.lock() {
                *t = Some(Instant::now());
            }
            self.wanted.notify_one();
            let warm_name = warm.netns.file_name()?.to_string_lossy().into_owned();
            match crate::netns::rename(&warm_name, name) {
                Ok(netns) => {
                    tracing::debug!(warm = %warm_name, ip = %warm.ip, "took a warm network");
                    return Some(PodNetwork {
                        netns,
                        ip: warm.ip,
                        cni_id: Some(warm_name),
                    });
                }
                Err(e) => {
                    tracing::warn!(warm = %warm_name, error = %e, "a warm network could not be taken; removing it");
                    let network = self.network.clone();
                    tokio::spawn(async move {
                        let _ = network.teardown(&warm_name, None).await;
                    });
                }
            }
        }
    }

    /// Release what an earlier run of the agent left, then keep `target` networks ready,
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
            while !self.node_is_quiet(&gate, gate_size) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}{n}", self.prefix);
            match self.network.setup(&name).await {
                Ok(net) => {
                    tracing::debug!(warm = %name, ip = %net.ip, "warm network ready");
                    if let Ok(mut r) = self.ready.lock() {
                        r.push(net);
                    }
                }
                Err(e) => {
                    tracing::warn!(warm = %name, error = %e, "making a warm network");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }

    fn node_is_quiet(&self, gate: &Semaphore, gate_size: usize) -> bool {
        let recent_take = self
            .last_take
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() < QUIET);
        !recent_take && gate.available_permits() >= gate_size
    }

    /// Namespaces and addresses of warm networks an earlier run made and no pod took.
    async fn release_left_over(&self) {
        let agent_prefix = prefix_for(&self.network.ipam_dir);
        let taken: Vec<String> = std::fs::read_dir(&self.pods_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|pod| PodNetwork::read_record(&pod.path())?.cni_id)
            .collect();
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
