//! Things made ahead of time, as an extension of the runtime that the pod worker does not
//! depend on: it takes what is ready through [`crate::pod_worker::MadeAhead`] and makes its
//! own otherwise.
//!
//! - [`sandboxes`]: pod sandboxes (a wired network namespace held by a sandbox container
//!   whose shim runs), `--warm-sandboxes N`.
//! - [`roots`]: container roots of the image started last (a snapshot prepared and
//!   mounted), `--warm-roots N`.
//! - [`quiet`]: when a pool may make more without taking the CPU from pod starts.
//!
//! Both are off by default. A special path earns its place with a measurement on a burst of
//! several images (docs/BENCHMARKS.md: each wins there by more than 10% of the p50); what
//! does not is not kept.

pub mod quiet;
pub mod roots;
pub mod sandboxes;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use super::{ContainerRuntime, ImageInfo, PreparedRoot};
use crate::cni::PodNetwork;
use crate::error::Result;
use crate::pod_worker::MadeAhead;

/// The runtime calls that pools made ahead need beyond a pod worker's.
pub trait MadeAheadRuntime: ContainerRuntime {
    /// Create pod sandbox `id` in network namespace `netns` (see [`super::sandbox`]): a
    /// container and its task, never started, whose shim the pod's containers join.
    fn create_sandbox(&self, id: &str, netns: &Path) -> impl Future<Output = Result<()>> + Send;

    /// Make a root for containers of `image` ahead of time: prepare snapshot `key` on the
    /// image and mount it at `dir` (an empty folder that exists).
    fn prepare_root(
        &self,
        key: &str,
        image: &ImageInfo,
        dir: &Path,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Undo [`MadeAheadRuntime::prepare_root`]: unmount `dir`, remove snapshot `key` unless
    /// `keep_snapshot` (a container uses it), then remove `dir`. Missing parts are fine.
    fn drop_root(
        &self,
        key: &str,
        dir: &Path,
        keep_snapshot: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The keys of the snapshots whose key starts with `prefix`.
    fn snapshots_named(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Let containerd's garbage collector treat snapshot `key` as any container's again: a
    /// root made ahead is a gc root only until a container names it.
    fn unpin_root(&self, key: &str) -> impl Future<Output = Result<()>> + Send;
}

/// The node's pools, as the pod workers take from them.
pub struct Pools<R> {
    /// Pod sandboxes.
    pub sandboxes: Arc<sandboxes::WarmSandboxes<R>>,
    /// Container roots.
    pub roots: Arc<roots::WarmRoots<R>>,
}

impl<R: MadeAheadRuntime> MadeAhead for Pools<R> {
    fn take_sandbox(&self, name: &str, _pod_dir: &Path) -> Option<PodNetwork> {
        self.sandboxes.take(name)
    }

    fn take_root(&self, image: &ImageInfo) -> Option<PreparedRoot> {
        self.roots.take(image)
    }
}
