//! [`ContainerRuntime`] over containerd: containers with the runc v2 shim on overlayfs
//! snapshots, stdout and stderr appended by the shim straight to the container's log file
//! (`file://` stdio), so a container keeps logging while the agent is down or restarting.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    Info as SnapshotInfo, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, UpdateSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, ListTasksRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::{Process, Status as TaskStatus};
use containerd_client::types::Mount;
use prost_types::Any;

use super::made_ahead::MadeAheadRuntime;
use super::{
    ContainerInfo, ContainerRuntime, CreateSpec, ExecOutput, ImageInfo, ProcessState, PullPolicy,
};
use crate::ctd::Conn;
use crate::error::{Error, Result};
use crate::image::registry::Registries;
use crate::image::ImageStore;

const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RUNC_V2: &str = "io.containerd.runc.v2";
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
/// The label that makes containerd's garbage collector keep a snapshot nothing references.
const GC_ROOT: &str = "containerd.io/gc.root";

/// The runc v2 shim's options (containerd's `runtime/v2/runc/options`), only the fields we set.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    /// The OCI runtime binary the shim runs (runc when empty).
    #[prost(string, tag = "6")]
    binary_name: String,
    /// Where the OCI runtime keeps its container state (/run/containerd/runc when empty).
    #[prost(string, tag = "7")]
    root: String,
}

/// How containerd's runc v2 shim runs containers; each `None` keeps its default.
#[derive(Debug, Clone, Default)]
pub struct OciRuntime {
    /// A runc-compatible binary (such as crun) instead of runc.
    pub binary: Option<PathBuf>,
    /// The runtime's state folder. It is written on every container start, so it belongs on
    /// tmpfs: on a host whose /run is on disk the default costs file creations per start.
    pub root: Option<PathBuf>,
}

impl OciRuntime {
    /// The options every container carries, or none when all are defaults.
    fn shim_options(&self) -> Option<Any> {
        if self.binary.is_none() && self.root.is_none() {
            return None;
        }
        let text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        Some(Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: prost::Message::encode_to_vec(&RuncOptions {
                binary_name: text(&self.binary).unwrap_or_default(),
                root: text(&self.root).unwrap_or_default(),
            }),
        })
    }
}

/// containerd, in the agent's namespace.
pub struct Containerd {
    conn: Conn,
    images: ImageStore,
    exec_dir: PathBuf,
    /// The read-only root of pod sandboxes.
    sandbox_root: PathBuf,
    /// The shim's options on every container (the OCI runtime and its state folder), if not
    /// the defaults.
    runtime_options: Option<Any>,
}

impl Containerd {
    /// Connect to containerd at `socket`; exec output is staged under `state_dir`; images are
    /// pulled as `registries` says; the shim runs containers as `oci_runtime` says.
    pub async fn connect(
        socket: &Path,
        namespace: &str,
        state_dir: &Path,
        registries: Registries,
        oci_runtime: &OciRuntime,
        pull_timing: prometheus_client::metrics::histogram::Histogram,
    ) -> Result<Self> {
        let conn = Conn::connect(socket, namespace).await?;
        let exec_dir = state_dir.join("exec");
        std::fs::create_dir_all(&exec_dir).map_err(Error::io(&exec_dir))?;
        if let Some(root) = &oci_runtime.root {
            std::fs::create_dir_all(root).map_err(Error::io(root))?;
        }
        // Containers an earlier release made name the shim it ran: that stays runnable.
        super::legacy_shim::keep_runnable(&conn, &state_dir.join("oci-runtime")).await;
        let sandbox_root = super::sandbox::prepare_root(&state_dir.join("sandbox-root"))?;
        Ok(Self {
            images: ImageStore::new(conn.clone(), registries, pull_timing),
            conn,
            exec_dir,
            sandbox_root,
            runtime_options: oci_runtime.shim_options(),
        })
    }

    /// Ids of containers whose main process exits, as it happens (see [`super::exits`]).
    pub fn task_exits(&self) -> tokio::sync::mpsc::Receiver<String> {
        super::exits::watch(self.conn.clone())
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// containerd's version, to report on the Node.
    pub async fn version(&self) -> Result<String> {
        Ok(format!(
            "containerd://{}",
            Self::version_of(&self.conn).await?
        ))
    }

    async fn version_of(conn: &Conn) -> Result<String> {
        let v = containerd_client::services::v1::version_client::VersionClient::new(conn.channel())
            .version(())
            .await
            .map_err(Error::containerd("version"))?
            .into_inner();
        Ok(v.version)
    }

    /// The container record of `id`: its labels, runtime spec and this agent's shim.
    fn record(
        &self,
        id: &str,
        labels: BTreeMap<String, String>,
        spec: &serde_json::Value,
    ) -> Result<Container> {
        let value = serde_json::to_vec(spec).map_err(|e| Error::InvalidSpec {
            field: "spec".into(),
            reason: e.to_string(),
        })?;
        Ok(Container {
            id: id.into(),
            labels: labels.into_iter().collect(),
            runtime: Some(Runtime {
                name: RUNC_V2.into(),
                options: self.runtime_options.clone(),
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE.into(),
                value,
            }),
            ..Default::default()
        })
    }

    fn tasks(&self) -> TasksClient<tonic::transport::Channel> {
        TasksClient::new(self.conn.channel())
    }

    async fn rootfs(
        &self,
        id: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let mut snapshots = SnapshotsClient::new(self.conn.channel());
        let prepared = snapshots
            .prepare(self.conn.req(PrepareSnapshotRequest {
                snapshotter: self.conn.snapshotter.clone(),
                key: id.into(),
                parent: parent.into(),
                labels,
            }))
            .await;
        match prepared {
            Ok(r) => Ok(r.into_inner().mounts),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(snapshots
                .mounts(self.conn.req(MountsRequest {
                    snapshotter: self.conn.snapshotter.clone(),
                    key: id.into(),
                }))
                .await
                .map_err(Error::containerd("snapshots.Mounts"))?
                .into_inner()
                .mounts),
            Err(s) => Err(Error::containerd("snapshots.Prepare")(s)),
        }
    }

    /// Remove snapshot `key` (a missing one is fine).
    async fn remove_snapshot(&self, key: &str) -> Result<()> {
        match SnapshotsClient::new(self.conn.channel())
            .remove(self.conn.req(RemoveSnapshotRequest {
                snapshotter: self.conn.snapshotter.clone(),
                key: key.into(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::containerd("snapshots.Remove")(s)),
        }
    }

    /// Create the container record and its task, on `spec.root` if it brings one.
    async fn create_on(&self, spec: &CreateSpec) -> Result<()> {
        let container = Container {
            image: spec.image.name.clone(),
            snapshotter: self.conn.snapshotter.clone(),
            snapshot_key: spec
                .root
                .as_ref()
                .map_or_else(|| spec.id.clone(), |r| r.key.clone()),
            ..self.record(&spec.id, spec.labels.clone(), &spec.spec)?
        };
        let created = ContainersClient::new(self.conn.channel())
            .create(self.conn.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await;
        match created {
            Ok(_) => {}
            // A record made by an earlier call names its own snapshot, not the root.
            Err(s) if s.code() == tonic::Code::AlreadyExists && spec.root.is_none() => {}
            Err(s) => return Err(Error::containerd("containers.Create")(s)),
        }
        // The snapshot is prepared only once the container record names it: containerd's
        // garbage collector (which any removal on the node may set off) deletes a snapshot
        // that nothing references, and did so between a prepare and the container's create.
        let mounts = match &spec.root {
            Some(root) => vec![super::root_mount::bind_of(&root.dir)],
            None => {
                self.rootfs(&spec.id, &spec.image.chain_id, HashMap::new())
                    .await?
            }
        };
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        let uri = format!("file://{}", spec.log_path.display());
        self.tasks()
            .create(self.conn.req(CreateTaskRequest {
                container_id: spec.id.clone(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                ..Default::default()
            }))
            .await
            .map_err(Error::containerd("tasks.Create"))?;
        Ok(())
    }

    async fn task(&self, id: &str) -> Result<Option<Process>> {
        match self
            .tasks()
            .get(self.conn.req(GetRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::containerd("tasks.Get")(s)),
        }
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<()> {
        match self
            .tasks()
            .kill(self.conn.req(KillRequest {
                container_id: id.into(),
                exec_id: String::new(),
                signal,
                all: true,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::containerd("tasks.Kill")(s)),
        }
    }

    async fn wait(&self, id: &str, within: Duration) -> Result<bool> {
        let mut tasks = self.tasks();
        let wait = tasks.wait(self.conn.req(WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(within, wait).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => Ok(true),
            Ok(Err(s)) => Err(Error::containerd("tasks.Wait")(s)),
            Err(_) => Ok(false),
        }
    }
}

fn cgroup_oom_killed(spec: &serde_json::Value) -> bool {
    let Some(path) = spec.pointer("/linux/cgroupsPath").and_then(|p| p.as_str()) else {
        return false;
    };
    let path = path.trim_start_matches('/');
    // cgroup v2, then v1.
    for file in [
        format!("/sys/fs/cgroup/{path}/memory.events"),
        format!("/sys/fs/cgroup/memory/{path}/memory.oom_control"),
    ] {
        if let Ok(text) = std::fs::read_to_string(&file) {
            return text
                .lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0));
        }
    }
    false
}

fn state_of(process: Option<&Process>, spec: Option<&serde_json::Value>) -> ProcessState {
    let Some(p) = process else {
        return ProcessState::NoTask;
    };
    match TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown) {
        TaskStatus::Created => ProcessState::Created,
        TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing => {
            ProcessState::Running { pid: p.pid }
        }
        TaskStatus::Stopped => ProcessState::Exited {
            code: p.exit_status as i32,
            finished_at: p.exited_at.as_ref().map(|t| t.seconds).unwrap_or(0),
            oom_killed: p.exit_status == 137 && spec.is_some_and(cgroup_oom_killed),
        },
        TaskStatus::Unknown => ProcessState::NoTask,
    }
}

fn info_of(c: &Container, process: Option<&Process>) -> ContainerInfo {
    let spec = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok());
    ContainerInfo {
        id: c.id.clone(),
        labels: c
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        created_at: c.created_at.as_ref().map(|t| t.seconds).unwrap_or(0),
        snapshot_key: c.snapshot_key.clone(),
        state: state_of(process, spec.as_ref()),
    }
}

impl ContainerRuntime for Containerd {
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        credentials: Option<&crate::image::credentials::Credentials>,
    ) -> Result<ImageInfo> {
        self.images.ensure(image, policy, credentials).await
    }

    async fn local_image(&self, image: &str, policy: PullPolicy) -> Option<ImageInfo> {
        self.images.local(image, policy).await
    }

    async fn create(&self, spec: &CreateSpec) -> Result<()> {
        let Some(root) = &spec.root else {
            return self.create_on(spec).await;
        };
        let own = CreateSpec {
            root: None,
            ..spec.clone()
        };
        if !super::root_mount::is_mounted(&root.dir) {
            // Unmounted behind the agent's back (or never visible): bound as it is, the bare
            // folder would become the container's root.
            tracing::warn!(key = %root.key, dir = %root.dir.display(), "a root made ahead is not mounted; dropping it");
            if let Err(e) = self.drop_root(&root.key, &root.dir, false).await {
                tracing::warn!(key = %root.key, error = %e, "dropping an unmounted root");
            }
            return self.create_on(&own).await;
        }
        let on_root = self.create_on(spec).await;
        // The task's bundle holds the root now (or nothing does): the agent's mount and folder
        // go. The snapshot stays with the container record, which names it.
        if let Err(e) = self.drop_root(&root.key, &root.dir, true).await {
            tracing::warn!(dir = %root.dir.display(), error = %e, "detaching a taken root");
        }
        let Err(e) = on_root else {
            return Ok(());
        };
        // A root made ahead must never keep a container from starting: what was made of it
        // goes (the root's snapshot too, named by the record or not), and the container is
        // made again on a snapshot of its own.
        tracing::warn!(container = %spec.id, key = %root.key, error = %e, "creating on a root made ahead; making the container's own");
        // The container's own snapshot has another key: a cleanup that fails here is only
        // logged, and does not stop the container.
        if let Err(e) = self.remove(&spec.id).await {
            tracing::warn!(container = %spec.id, error = %e, "removing what was made on a root");
        }
        if let Err(e) = self.remove_snapshot(&root.key).await {
            tracing::warn!(key = %root.key, error = %e, "removing a root that failed");
        }
        self.create_on(&own).await
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.tasks()
            .start(self.conn.req(StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map_err(Error::containerd("tasks.Start"))?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>> {
        let containers = ContainersClient::new(self.conn.channel())
            .list(self.conn.req(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(Error::containerd("containers.List"))?
            .into_inner()
            .containers;
        let tasks = self
            .tasks()
            .list(self.conn.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(Error::containerd("tasks.List"))?
            .into_inner()
            .tasks;
        // containerd fills a listed task's `id` with its container's id.
        let by_id: HashMap<&str, &Process> = tasks
            .iter()
            .map(|t| {
                let key = if t.container_id.is_empty() {
                    &t.id
                } else {
                    &t.container_id
                };
                (key.as_str(), t)
            })
            .collect();
        Ok(containers
            .iter()
            .map(|c| info_of(c, by_id.get(c.id.as_str()).copied()))
            .collect())
    }

    async fn list_pod(&self, uid: &str) -> Result<Vec<ContainerInfo>> {
        // containerd's filter language: quoted field path, quoted value.
        let filter = format!(
            "labels.\"{}\"==\"{}\"",
            super::labels::POD_UID,
            uid.replace('"', "")
        );
        let containers = ContainersClient::new(self.conn.channel())
            .list(self.conn.req(ListContainersRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(Error::containerd("containers.List"))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(containers.len());
        for c in &containers {
            let task = self.task(&c.id).await?;
            out.push(info_of(c, task.as_ref()));
        }
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        let got = ContainersClient::new(self.conn.channel())
            .get(self.conn.req(GetContainerRequest { id: id.into() }))
            .await;
        let container = match got {
            Ok(r) => r.into_inner().container,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(Error::containerd("containers.Get")(s)),
        };
        let Some(container) = container else {
            return Ok(None);
        };
        let task = self.task(id).await?;
        Ok(Some(info_of(&container, task.as_ref())))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let running = matches!(
            self.task(id).await?.map(|p| TaskStatus::try_from(p.status)),
            Some(Ok(TaskStatus::Running
                | TaskStatus::Paused
                | TaskStatus::Pausing))
        );
        if !running {
            return Ok(());
        }
        self.kill(id, libc::SIGTERM as u32).await?;
        if self.wait(id, grace).await? {
            return Ok(());
        }
        tracing::info!(container = %id, grace_s = grace.as_secs(), "still running after the grace period; SIGKILL");
        self.kill(id, libc::SIGKILL as u32).await?;
        if self.wait(id, Duration::from_secs(10)).await? {
            Ok(())
        } else {
            Err(Error::Timeout {
                what: format!("stopping container {id}"),
            })
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        // A container on a root made ahead runs on a snapshot of another name.
        let snapshot_key = match ContainersClient::new(self.conn.channel())
            .get(self.conn.req(GetContainerRequest { id: id.into() }))
            .await
        {
            Ok(r) => r
                .into_inner()
                .container
                .map(|c| c.snapshot_key)
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| id.to_string()),
            Err(_) => id.to_string(),
        };
        if let Some(p) = self.task(id).await? {
            if TaskStatus::try_from(p.status) != Ok(TaskStatus::Stopped) {
                self.kill(id, libc::SIGKILL as u32).await?;
                self.wait(id, Duration::from_secs(10)).await?;
            }
            match self
                .tasks()
                .delete(self.conn.req(DeleteTaskRequest {
                    container_id: id.into(),
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(Error::containerd("tasks.Delete")(s)),
            }
        }
        match ContainersClient::new(self.conn.channel())
            .delete(self.conn.req(DeleteContainerRequest { id: id.into() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Error::containerd("containers.Delete")(s)),
        }
        self.remove_snapshot(&snapshot_key).await
    }

    async fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> Result<ExecOutput> {
        let container = ContainersClient::new(self.conn.channel())
            .get(self.conn.req(GetContainerRequest { id: id.into() }))
            .await
            .map_err(Error::containerd("containers.Get"))?
            .into_inner()
            .container
            .unwrap_or_default();
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .unwrap_or_default();
        let mut process = spec
            .get("process")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"user": {"uid": 0, "gid": 0}, "cwd": "/"}));
        process["args"] = serde_json::json!(argv);
        process["terminal"] = serde_json::json!(false);
        let exec_id = format!("exec-{}", uuid::Uuid::new_v4().simple());
        let out_path = self.exec_dir.join(format!("{exec_id}.out"));
        let uri = format!("file://{}", out_path.display());
        let value = serde_json::to_vec(&process).map_err(|e| Error::InvalidSpec {
            field: "process".into(),
            reason: e.to_string(),
        })?;
        let mut tasks = self.tasks();
        tasks
            .exec(self.conn.req(ExecProcessRequest {
                container_id: id.into(),
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                spec: Some(Any {
                    type_url: PROCESS_TYPE.into(),
                    value,
                }),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(Error::containerd("tasks.Exec"))?;
        let result = async {
            tasks
                .start(self.conn.req(StartRequest {
                    container_id: id.into(),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(Error::containerd("tasks.Start (exec)"))?;
            let mut waiter = tasks.clone();
            let wait = waiter.wait(self.conn.req(WaitRequest {
                container_id: id.into(),
                exec_id: exec_id.clone(),
            }));
            match tokio::time::timeout(timeout, wait).await {
                Ok(Ok(r)) => Ok(r.into_inner().exit_status as i32),
                Ok(Err(s)) => Err(Error::containerd("tasks.Wait (exec)")(s)),
                Err(_) => {
                    let _ = tasks
                        .kill(self.conn.req(KillRequest {
                            container_id: id.into(),
                            exec_id: exec_id.clone(),
                            signal: libc::SIGKILL as u32,
                            all: false,
                        }))
                        .await;
                    Err(Error::Timeout {
                        what: format!("exec {argv:?} in {id}"),
                    })
                }
            }
        }
        .await;
        let _ = tasks
            .delete_process(self.conn.req(DeleteProcessRequest {
                container_id: id.into(),
                exec_id: exec_id.clone(),
            }))
            .await;
        let output = std::fs::read(&out_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        Ok(ExecOutput {
            exit_code: result?,
            output,
        })
    }
}

impl MadeAheadRuntime for Containerd {
    async fn prepare_root(&self, key: &str, image: &ImageInfo, dir: &Path) -> Result<()> {
        // A gc root: no container names the snapshot until one takes it.
        let labels = HashMap::from([(GC_ROOT.to_string(), jiff::Timestamp::now().to_string())]);
        let mounts = self.rootfs(key, &image.chain_id, labels).await?;
        if let Err(e) = super::root_mount::mount_all(&mounts, dir) {
            let _ = self.drop_root(key, dir, false).await;
            return Err(e);
        }
        Ok(())
    }

    async fn snapshots_named(&self, prefix: &str) -> Result<Vec<String>> {
        let mut stream = SnapshotsClient::new(self.conn.channel())
            .list(self.conn.req(ListSnapshotsRequest {
                snapshotter: self.conn.snapshotter.clone(),
                filters: vec![],
            }))
            .await
            .map_err(Error::containerd("snapshots.List"))?
            .into_inner();
        let mut keys = Vec::new();
        while let Some(page) = stream
            .message()
            .await
            .map_err(Error::containerd("snapshots.List"))?
        {
            keys.extend(
                page.info
                    .into_iter()
                    .map(|i| i.name)
                    .filter(|n| n.starts_with(prefix)),
            );
        }
        Ok(keys)
    }

    async fn unpin_root(&self, key: &str) -> Result<()> {
        let updated = SnapshotsClient::new(self.conn.channel())
            .update(self.conn.req(UpdateSnapshotRequest {
                snapshotter: self.conn.snapshotter.clone(),
                info: Some(SnapshotInfo {
                    name: key.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{GC_ROOT}")],
                }),
            }))
            .await;
        match updated {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::containerd("snapshots.Update")(s)),
        }
    }

    async fn drop_root(&self, key: &str, dir: &Path, keep_snapshot: bool) -> Result<()> {
        super::root_mount::detach(dir)?;
        if !keep_snapshot {
            self.remove_snapshot(key).await?;
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(dir)(e)),
        }
    }

    async fn create_sandbox(&self, id: &str, netns: &Path) -> Result<()> {
        let spec = super::sandbox::spec(id, &self.sandbox_root, netns);
        let labels = BTreeMap::from([(
            super::labels::KIND.to_string(),
            super::sandbox::KIND.to_string(),
        )]);
        let container = self.record(id, labels, &spec)?;
        ContainersClient::new(self.conn.channel())
            .create(self.conn.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(Error::containerd("containers.Create (sandbox)"))?;
        // No rootfs mounts (the spec names its own root) and no stdio: it never runs.
        let created = self
            .tasks()
            .create(self.conn.req(CreateTaskRequest {
                container_id: id.into(),
                ..Default::default()
            }))
            .await;
        if let Err(s) = created {
            let _ = self.remove(id).await;
            return Err(Error::containerd("tasks.Create (sandbox)")(s));
        }
        Ok(())
    }
}
