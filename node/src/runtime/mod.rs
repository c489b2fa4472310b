//! The container runtime behind the pod workers. [`ContainerRuntime`] is the narrow surface a
//! pod worker needs (images, create, start, inspect, stop, remove, exec);
//! [`containerd::Containerd`] implements it over containerd's gRPC API, in the agent's own
//! containerd namespace, and [`fake::FakeRuntime`] in memory for unit tests. Things made
//! ahead of time are an extension ([`made_ahead`]) the pod worker does not depend on.
//!
//! ```text
//! pod worker ──ContainerRuntime──▶ Containerd ──gRPC (unix socket)──▶ containerd ──▶ runc shim
//!                                      │
//!                                      └── images: pull/import → content store → snapshots
//! made_ahead ──SandboxRuntime (ContainerRuntime + sandboxes)──▶ Containerd
//! ```

pub mod containerd;
pub mod exits;
#[cfg(test)]
pub mod fake;
pub mod legacy_shim;
pub mod made_ahead;
pub mod oci_spec;
pub mod root_mount;
pub mod sandbox;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;

/// Labels the agent puts on its containers, so a restarted agent re-adopts them.
pub mod labels {
    /// The pod's namespace/name.
    pub const POD: &str = "skiff.dev/pod";
    /// The pod's uid.
    pub const POD_UID: &str = "skiff.dev/pod-uid";
    /// The container's name in the pod spec.
    pub const CONTAINER: &str = "skiff.dev/container";
    /// How many times this container had been restarted before this one started.
    pub const ATTEMPT: &str = "skiff.dev/attempt";
    /// `init` for an init container, `sandbox` for a pod sandbox (see [`super::sandbox`]).
    pub const KIND: &str = "skiff.dev/kind";
    /// The image reference the container was created from.
    pub const IMAGE: &str = "skiff.dev/image";
    /// The container's log file.
    pub const LOG: &str = "skiff.dev/log";
}

/// When an image is pulled (Kubernetes' `imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time a container starts.
    Always,
    /// Pull when not present.
    IfNotPresent,
    /// Never pull; fail when absent.
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: `Always` for `:latest` or no tag, otherwise `IfNotPresent`.
    pub fn from_spec(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => Self::Always,
            Some("Never") => Self::Never,
            Some("IfNotPresent") => Self::IfNotPresent,
            _ => {
                let last = image.rsplit('/').next().unwrap_or(image);
                if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
                    Self::IfNotPresent
                } else {
                    Self::Always
                }
            }
        }
    }
}

/// What the runtime knows of a pulled image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// The name it is recorded under.
    pub name: String,
    /// Digest of its manifest (`imageID`).
    pub digest: String,
    /// The snapshot of its top layer, the parent of container snapshots.
    pub chain_id: String,
    /// `Entrypoint` of its config.
    pub entrypoint: Vec<String>,
    /// `Cmd` of its config.
    pub cmd: Vec<String>,
    /// `Env` of its config (`K=V`).
    pub env: Vec<String>,
    /// `WorkingDir` of its config.
    pub working_dir: String,
    /// `User` of its config (`uid`, `uid:gid`; empty: root).
    pub user: String,
}

/// A container to create.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    /// containerd container id.
    pub id: String,
    /// Labels (see [`labels`]).
    pub labels: BTreeMap<String, String>,
    /// The image to run.
    pub image: ImageInfo,
    /// The OCI runtime spec (JSON), from [`oci_spec`].
    pub spec: serde_json::Value,
    /// Where stdout and stderr go.
    pub log_path: PathBuf,
    /// A root made ahead for this image (see [`made_ahead::roots`]); `None` has the runtime
    /// prepare one.
    pub root: Option<PreparedRoot>,
}

/// A container root made ahead of time: a snapshot of an image's top layer, prepared for
/// writing and mounted at `dir`. A container created on it uses the snapshot as its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRoot {
    /// The snapshot's key.
    pub key: String,
    /// Where it is mounted.
    pub dir: PathBuf,
}

/// A container's process state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    /// Created, not started.
    Created,
    /// Running.
    Running {
        /// Its pid on the host.
        pid: u32,
    },
    /// Exited.
    Exited {
        /// Exit code.
        code: i32,
        /// When, as Unix seconds.
        finished_at: i64,
        /// Killed by the kernel's OOM killer.
        oom_killed: bool,
    },
    /// The container exists but has no task (it never started, or its task was lost).
    NoTask,
}

/// A container the runtime holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// containerd container id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// When it was created, as Unix seconds.
    pub created_at: i64,
    /// The key of the snapshot it runs on.
    pub snapshot_key: String,
    /// Its process state.
    pub state: ProcessState,
}

impl ContainerInfo {
    /// A label's value, or "".
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }

    /// The restart attempt this container is.
    pub fn attempt(&self) -> u32 {
        self.label(labels::ATTEMPT).parse().unwrap_or(0)
    }
}

/// What an exec returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i32,
    /// stdout and stderr, interleaved.
    pub output: Vec<u8>,
}

/// The runtime surface a pod worker needs.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Make `image` present according to `policy`, pulling with `credentials` if given; the
    /// pull happens under a containerd lease, so a half-pulled image is neither collected
    /// mid-pull nor left behind.
    fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        credentials: Option<&crate::image::credentials::Credentials>,
    ) -> impl Future<Output = Result<ImageInfo>> + Send;

    /// `image` if it is here already and `policy` allows using it without a pull; `None`
    /// means [`ContainerRuntime::ensure_image`] is needed.
    fn local_image(
        &self,
        image: &str,
        policy: PullPolicy,
    ) -> impl Future<Output = Option<ImageInfo>> + Send;

    /// Create a container and its task (not started).
    fn create(&self, spec: &CreateSpec) -> impl Future<Output = Result<()>> + Send;

    /// Start a created container.
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Every container of the agent's namespace, with its state.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send;

    /// The containers of one pod (by the [`labels::POD_UID`] label), with their state. Cheap
    /// for a new pod: it asks for that pod's containers only, not for every task on the node.
    fn list_pod(&self, uid: &str) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send;

    /// One container, if it exists.
    fn inspect(&self, id: &str) -> impl Future<Output = Result<Option<ContainerInfo>>> + Send;

    /// SIGTERM, then SIGKILL after `grace` if it still runs.
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Remove a container, its task and the snapshot it runs on (it must not run).
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Run `argv` in a running container; `timeout` bounds it.
    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput>> + Send;
}
