//! Skiff's node agent (`skiff node`): registers its Node and renews its Lease, runs the pods
//! bound to it on a real containerd, keeps service forwarding in nftables, wires each pod's network namespace with the standard CNI
//! plugins, keeps container logs, runs probes, and re-adopts running containers when it
//! restarts.
//!
//! - [`agent`]: the top: registration, the pod informer, one worker per pod, orphan cleanup.
//! - [`pod_worker`]: one pod's reconcile loop, its status, probes, volumes, logs, back-off.
//! - [`runtime`]: the [`runtime::ContainerRuntime`] trait and its containerd implementation.
//! - [`image`]: pulls from registries and OCI archive imports into containerd.
//! - [`proxy`]: the service proxy: ClusterIPs and NodePorts in nftables.
//! - [`cgroups`]: the pod's parent cgroup, removed with the pod.
//! - [`dns`]: the cluster DNS each agent serves, and pods' resolv.conf.
//! - [`cni`]: CNI plugin calls; the node bridge and its routes.
//! - [`pod_network`]: routes to the other nodes' pods (VXLAN or host-gw), egress masquerade.
//! - [`netns`]: the pods' named network namespaces, made in-process.
//! - [`host_ports`]: containers' `hostPort`s, DNATed on the node in nftables.
//! - [`local_path`]: the folders of `local-path` volumes, removed with their volumes.
//! - [`registration`], [`host`]: the Node object, the Lease heartbeat, host facts.
//! - [`ops`]: the operations endpoint: metrics and readiness over HTTP.
//! - [`server`]: the agent's own gRPC API (logs, exec, image import) that control nodes proxy to.

pub mod agent;
pub mod cgroups;
pub mod cni;
pub mod ctd;
pub mod dns;
pub mod error;
pub mod host;
pub mod host_ports;
pub mod image;
pub mod local_path;
pub mod netns;
pub mod ops;
pub mod pod_network;
pub mod pod_worker;
pub mod proxy;
pub mod registration;
pub mod runtime;
pub mod server;
pub mod stats;

pub use error::{Error, Result};

#[cfg(test)]
mod test_support {
    /// Fail unless the process is root: `what` (mounts, namespaces) cannot be tested
    /// otherwise. Such tests are named `..._as_root`; `make test` skips them when not root.
    pub fn require_root(what: &str) {
        use std::os::unix::fs::MetadataExt;
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        assert!(root, "testing {what} needs root");
    }
}
