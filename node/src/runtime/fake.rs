//! An in-memory container runtime, for unit tests of the pod worker: containers and their
//! process states in a map, with the knobs a test turns (a container exits, an image cannot
//! be pulled, an exec answers with a code). No root, no containerd.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    ContainerInfo, ContainerRuntime, CreateSpec, ExecOutput, ImageInfo, ProcessState, PullPolicy,
};
use crate::error::{Error, Result};

#[derive(Default)]
struct State {
    /// Images present, by name.
    images: BTreeMap<String, ImageInfo>,
    /// Images whose pull fails.
    unpullable: BTreeSet<String>,
    containers: BTreeMap<String, ContainerInfo>,
    /// The exit code an exec in a container of this name answers with (0 when unset).
    exec_exit: BTreeMap<String, i32>,
    /// Every container started, in order.
    started: Vec<String>,
    /// Every container stopped, in order.
    stopped: Vec<String>,
    next_pid: u32,
}

/// The runtime.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl FakeRuntime {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Make `image` present.
    pub fn add_image(&self, image: &str) {
        self.with(|s| {
            s.images.insert(
                image.to_string(),
                ImageInfo {
                    name: image.to_string(),
                    digest: format!("sha256:{:0>64}", image.len()),
                    chain_id: format!("chain-{image}"),
                    cmd: vec!["sleep".into(), "3600".into()],
                    ..Default::default()
                },
            );
        });
    }

    /// Pulls of `image` fail from now on.
    pub fn fail_pulls(&self, image: &str) {
        self.with(|s| s.unpullable.insert(image.to_string()));
    }

    /// The running container `id` exits with `code`.
    pub fn exit(&self, id: &str, code: i32) {
        self.with(|s| {
            if let Some(c) = s.containers.get_mut(id) {
                c.state = ProcessState::Exited {
                    code,
                    finished_at: now(),
                    oom_killed: false,
                };
            }
        });
    }

    /// Execs in containers named `container` (the pod spec's name) exit with `code`.
    pub fn set_exec_exit(&self, container: &str, code: i32) {
        self.with(|s| s.exec_exit.insert(container.to_string(), code));
    }

    /// Add a container as an earlier agent left it.
    pub fn insert(&self, info: ContainerInfo) {
        self.with(|s| s.containers.insert(info.id.clone(), info));
    }

    /// Every container, by id.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.with(|s| s.containers.values().cloned().collect())
    }

    /// Every container started so far, in order.
    pub fn started(&self) -> Vec<String> {
        self.with(|s| s.started.clone())
    }

    /// Every container stopped so far, in order.
    pub fn stopped(&self) -> Vec<String> {
        self.with(|s| s.stopped.clone())
    }

    fn missing(id: &str) -> Error {
        Error::InvalidSpec {
            field: "container".into(),
            reason: format!("{id} does not exist"),
        }
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        _credentials: Option<&crate::image::credentials::Credentials>,
    ) -> Result<ImageInfo> {
        if let Some(i) = self.local_image(image, policy).await {
            return Ok(i);
        }
        if policy == PullPolicy::Never {
            return Err(Error::ImageNeverPulled {
                image: image.to_string(),
            });
        }
        if self.with(|s| s.unpullable.contains(image)) {
            return Err(Error::Pull {
                image: image.to_string(),
                message: "manifest unknown".into(),
            });
        }
        self.add_image(image);
        self.with(|s| s.images.get(image).cloned())
            .ok_or_else(|| Self::missing(image))
    }

    async fn local_image(&self, image: &str, policy: PullPolicy) -> Option<ImageInfo> {
        if policy == PullPolicy::Always {
            return None;
        }
        self.with(|s| s.images.get(image).cloned())
    }

    async fn create(&self, spec: &CreateSpec) -> Result<()> {
        self.with(|s| {
            s.containers.insert(
                spec.id.clone(),
                ContainerInfo {
                    id: spec.id.clone(),
                    labels: spec.labels.clone(),
                    created_at: now(),
                    snapshot_key: spec.id.clone(),
                    state: ProcessState::Created,
                },
            );
        });
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.with(|s| {
            s.next_pid += 1;
            let pid = 1000 + s.next_pid;
            let c = s.containers.get_mut(id).ok_or_else(|| Self::missing(id))?;
            c.state = ProcessState::Running { pid };
            s.started.push(id.to_string());
            Ok(())
        })
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>> {
        Ok(self.containers())
    }

    async fn list_pod(&self, uid: &str) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .containers()
            .into_iter()
            .filter(|c| c.label(super::labels::POD_UID) == uid)
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        Ok(self.with(|s| s.containers.get(id).cloned()))
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        self.with(|s| {
            if let Some(c) = s.containers.get_mut(id) {
                if matches!(c.state, ProcessState::Running { .. }) {
                    c.state = ProcessState::Exited {
                        code: 137,
                        finished_at: now(),
                        oom_killed: false,
                    };
                    s.stopped.push(id.to_string());
                }
            }
        });
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.with(|s| s.containers.remove(id));
        Ok(())
    }

    async fn exec(&self, id: &str, _argv: &[String], _timeout: Duration) -> Result<ExecOutput> {
        self.with(|s| {
            let c = s.containers.get(id).ok_or_else(|| Self::missing(id))?;
            let name = c.label(super::labels::CONTAINER).to_string();
            Ok(ExecOutput {
                exit_code: s.exec_exit.get(&name).copied().unwrap_or(0),
                output: Vec::new(),
            })
        })
    }
}
