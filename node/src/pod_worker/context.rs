//! What every pod worker of a node shares, and the surfaces it runs against: a container
//! runtime (its core trait only), the pod network and the control plane, bundled as a
//! [`WorkerEnv`] so the agent runs workers on containerd, CNI and the object API while unit
//! tests run the same workers in memory. Things made ahead of time reach a worker only
//! through [`MadeAhead`], which it works the same without.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::api::PodApi;
use super::backoff::BackoffPolicy;
use crate::cni::{PodNetwork, PodNetworking};
use crate::runtime::{ContainerRuntime, ImageInfo, PreparedRoot};

/// The surfaces the workers of a node run against.
pub trait WorkerEnv: Send + Sync + 'static {
    /// The container runtime.
    type Runtime: ContainerRuntime;
    /// The pod network.
    type Network: PodNetworking;
    /// The control plane.
    type Api: PodApi;
}

/// Things made ahead of time that a pod start may take (see `crate::runtime::made_ahead`);
/// each `None` has the worker make its own.
pub trait MadeAhead: Send + Sync + 'static {
    /// A wired sandbox for the pod whose namespace is to be `name` and whose folder is
    /// `pod_dir`.
    fn take_sandbox(&self, name: &str, pod_dir: &Path) -> Option<PodNetwork> {
        let _ = (name, pod_dir);
        None
    }

    /// A root for a container of `image`.
    fn take_root(&self, image: &ImageInfo) -> Option<PreparedRoot> {
        let _ = image;
        None
    }
}

/// Nothing made ahead.
pub struct NothingMadeAhead;

impl MadeAhead for NothingMadeAhead {}

/// What every worker of the agent shares.
pub struct WorkerCtx<E: WorkerEnv> {
    /// The container runtime.
    pub runtime: Arc<E::Runtime>,
    /// Pod networking.
    pub network: E::Network,
    /// The control plane.
    pub api: E::Api,
    /// This node's name.
    pub node_name: String,
    /// This node's address.
    pub host_ip: String,
    /// Per-pod folders (logs, volumes, network record), by uid.
    pub pods_dir: PathBuf,
    /// Restart and pull back-off.
    pub backoff: BackoffPolicy,
    /// A container log is rotated past this size.
    pub log_max_bytes: u64,
    /// Admission for a pod's first start (network, containers). Starting is CPU-bound
    /// (CNI plugins, shim, runc): with every pod of a burst started at once they share the
    /// CPU and all finish late together; taken in turn (the semaphore is fair), the first
    /// ones run within a start's time and the last no later than before.
    pub start_gate: Arc<tokio::sync::Semaphore>,
    /// Each pod's start (first seen until Running) is timed into this.
    pub pod_start: prometheus_client::metrics::histogram::Histogram,
    /// Things made ahead of time.
    pub made_ahead: Arc<dyn MadeAhead>,
    /// The node's resolv.conf, the base of pods' own.
    pub resolv_conf: PathBuf,
    /// The node's cluster DNS, if it serves one.
    pub dns: Option<crate::dns::resolv_conf::PodDns>,
    /// The cluster's Services, for the service links in pods' environment.
    pub services: Option<skiff_proto::informer::Informer<k8s_openapi::api::core::v1::Service>>,
}

impl<E: WorkerEnv> WorkerCtx<E> {
    /// Remove the sandbox of the pod `uid` whose folder is `pod_dir`, as its network record
    /// names it: the sandbox container (if one was made ahead), the address and the network
    /// namespace. Missing parts are fine.
    pub async fn release_sandbox(&self, uid: &str, pod_dir: &Path) -> crate::error::Result<()> {
        let record = PodNetwork::read_record(pod_dir);
        if record.as_ref().is_some_and(|n| n.host) {
            return Ok(());
        }
        let container = match record.and_then(|n| n.sandbox) {
            Some(id) => self.runtime.remove(&id).await,
            None => Ok(()),
        };
        // The network goes even if the container could not: a restarted agent removes
        // sandbox containers that no pod's record names.
        let network = self
            .network
            .teardown_pod(&super::sandbox_name(uid), pod_dir)
            .await;
        container.and(network)
    }
}
