//! One reconcile pass of a pod worker: sandbox, volumes, init containers in order, then each
//! container (start, probe, restart with back-off), then the status if it changed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::config_sources;
use super::hooks;
use super::logs;
use super::probes::{self, Kind};
use super::pull_secrets;
use super::security_context;
use super::service_links;
use super::slot::{container_id, Slot};
use super::status::{self, ContainerView, Observed, PodView};
use super::termination;
use super::volumes;
use super::Worker;
use super::START_TIME;
use super::{PodApi, WorkerEnv};
use crate::cni::{PodNetwork, PodNetworking};
use crate::runtime::oci_spec::{self, BindMount, HostNamespaces, SpecInput};
use crate::runtime::{labels, ContainerRuntime, CreateSpec, ProcessState, PullPolicy};

/// How often a quiet pod is looked at again.
const RESYNC: Duration = Duration::from_secs(2);
/// How often ConfigMap and Secret volumes are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(30);
/// A container that ran this long before exiting restarts without back-off.
const STABLE_RUN: i64 = 600;

enum Progress {
    /// Running (or finished for good): later containers may go on.
    Settled,
    /// Not there yet: init containers after it wait.
    Waiting,
}

type Quantity = k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// cpu in millicores.
/// The kubelet's words for a pod stopped at its `activeDeadlineSeconds`.
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// The pod's grace period to stop a container in (its `terminationGracePeriodSeconds`,
/// Kubernetes' 30 s without one).
fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

fn quantity_millis(q: Option<&Quantity>) -> Option<i64> {
    q.and_then(|q| skiff_proto::quantity::parse(&q.0).ok())
        .and_then(|q| i64::try_from(q.millis).ok())
}

/// memory in bytes.
fn quantity_bytes(q: Option<&Quantity>) -> Option<i64> {
    q.and_then(|q| skiff_proto::quantity::parse(&q.0).ok())
        .and_then(|q| i64::try_from(q.units_ceil()).ok())
}

impl<E: WorkerEnv> Worker<E> {
    /// One pass; returns how long until the next one is due.
    pub(super) async fn sync(&mut self, pod: &Pod) -> Duration {
        let Some(spec) = pod.spec.clone() else {
            return RESYNC;
        };
        let restart_policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        if !self.started_once && !self.adopted_running() {
            if let Ok(permit) = self.ctx.start_gate.clone().acquire_owned().await {
                self.start_permit = Some(permit);
            }
        }
        let (restart_policy, deadline) = match self.past_deadline(pod, &spec).await {
            Ok(left) => (restart_policy, left),
            // Its containers are stopped: nothing restarts or starts any more.
            Err(()) => ("Never".to_string(), None),
        };
        let wake = self.sync_pass(pod, &spec, restart_policy).await;
        self.started_once = true;
        match deadline {
            Some(left) => wake.min(left),
            None => wake,
        }
    }

    /// `Ok(time left)` before the pod's `activeDeadlineSeconds` (counted from its start
    /// time), `Ok(None)` without one; past it, its containers are stopped once and `Err`.
    async fn past_deadline(
        &mut self,
        pod: &Pod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
    ) -> Result<Option<Duration>, ()> {
        if self.deadline_exceeded {
            return Err(());
        }
        let Some(deadline) = spec.active_deadline_seconds else {
            return Ok(None);
        };
        // A pod that finished keeps how it finished.
        let phase = self.last_status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return Ok(None);
        }
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second())
            .unwrap_or(self.start_time);
        let active = jiff::Timestamp::now().as_second() - started;
        if active < deadline {
            return Ok(Some(Duration::from_secs((deadline - active) as u64)));
        }
        tracing::info!(
            deadline,
            "past its activeDeadlineSeconds; stopping its containers"
        );
        self.deadline_exceeded = true;
        self.event("Warning", "DeadlineExceeded", DEADLINE_MESSAGE.to_string());
        let grace = grace_of(pod);
        let runtime = self.ctx.runtime.clone();
        let running: Vec<String> = self
            .slots
            .values()
            .filter_map(|s| s.current.clone())
            .collect();
        let stops = running.iter().map(|id| runtime.stop(id, grace));
        for (id, r) in running.iter().zip(futures::future::join_all(stops).await) {
            if let Err(e) = r {
                tracing::warn!(container = %id, error = %e, "stopping at the deadline");
            }
        }
        Err(())
    }

    /// Whether re-adopted containers already run: such a pod needs no turn at the gate.
    fn adopted_running(&self) -> bool {
        !self.slots.is_empty() && self.slots.values().all(|s| s.current.is_some())
    }

    async fn sync_pass(
        &mut self,
        pod: &Pod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        restart_policy: String,
    ) -> Duration {
        if let Err(message) = self.ensure_sandbox(pod).await {
            self.start_permit = None;
            self.pending_message = Some(message);
            self.report(
                pod,
                &spec.init_containers.clone().unwrap_or_default(),
                &spec.containers,
                &restart_policy,
            )
            .await;
            return Duration::from_secs(2);
        }
        self.pending_message = None;
        let init = spec.init_containers.clone().unwrap_or_default();
        let mut initialized = true;
        for c in &init {
            let key = format!("init/{}", c.name);
            if self.slots.get(&key).is_some_and(Slot::succeeded) {
                continue;
            }
            // Init containers restart on failure unless the policy is Never.
            let policy = if restart_policy == "Never" {
                "Never"
            } else {
                "OnFailure"
            };
            match self.sync_container(pod, c, &key, policy, "init").await {
                Progress::Settled if self.slots.get(&key).is_some_and(Slot::succeeded) => {}
                _ => {
                    initialized = false;
                    break;
                }
            }
        }
        if initialized {
            for c in &spec.containers {
                let key = format!("app/{}", c.name);
                self.sync_container(pod, c, &key, &restart_policy, "app")
                    .await;
            }
        }
        // The status write is the control plane's work: the next pod may start meanwhile.
        self.start_permit = None;
        self.rotate_logs();
        self.report(pod, &init, &spec.containers, &restart_policy)
            .await;
        self.next_wake()
    }

    fn next_wake(&self) -> Duration {
        time_to_next_pass(self.slots.values(), Instant::now())
    }

    async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        if !self.started_once {
            // Once per worker, for a restarted agent to read back; later passes would only
            // rewrite the same value.
            if let Err(e) = std::fs::write(self.dir.join(START_TIME), self.start_time.to_string()) {
                tracing::warn!(error = %e, "recording the pod's start time");
            }
        }
        if self.net.is_none() {
            let on_host = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
            let net = if on_host {
                PodNetwork::on_host(&self.ctx.host_ip)
            } else {
                match self.ctx.made_ahead.take_sandbox(&self.sandbox, &self.dir) {
                    Some(net) => net,
                    None => self
                        .ctx
                        .network
                        .setup(&self.sandbox)
                        .await
                        .map_err(|e| format!("creating the pod sandbox: {e}"))?,
                }
            };
            if let Err(e) = net.write_record(&self.dir) {
                // The record is what says this network is the pod's: without it a restarted
                // agent would take it for one no pod uses and release it under the running
                // pod. Give it up now; the next pass tries again.
                if let Some(id) = &net.sandbox {
                    if let Err(e) = self.ctx.runtime.remove(id).await {
                        tracing::warn!(sandbox = %id, error = %e, "removing an unrecorded sandbox");
                    }
                }
                let released = match net.host {
                    true => Ok(()),
                    false => self.ctx.network.release(&self.sandbox, &net).await,
                };
                if let Err(e) = released {
                    tracing::warn!(error = %e, "releasing an unrecorded pod network");
                }
                return Err(format!(
                    "recording the pod network in {}: {e}",
                    self.dir.display()
                ));
            }
            tracing::info!(ip = %net.ip, netns = %net.netns.display(), "pod network ready");
            self.write_etc_files(pod, &net)
                .map_err(|e| format!("writing /etc files: {e}"))?;
            self.net = Some(net);
        }
        let stale = self
            .volumes
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > VOLUME_REFRESH);
        if stale {
            let (ctx, dir) = (self.ctx.clone(), self.dir.clone());
            let prepared = volumes::prepare(&ctx.api, pod, &dir);
            match gate_released_if_slow(&mut self.start_permit, prepared).await {
                Ok(v) => self.volumes = Some((v, Instant::now())),
                // Running containers keep what they have while the control plane is away.
                Err(e) if self.volumes.is_some() => {
                    tracing::warn!(error = %e.0, "refreshing volumes; keeping the current contents");
                    if let Some(v) = &mut self.volumes {
                        v.1 = Instant::now();
                    }
                }
                Err(e) => {
                    self.event(
                        "Warning",
                        "FailedMount",
                        format!("MountVolume.SetUp failed: {}", e.0),
                    );
                    return Err(e.0);
                }
            }
        }
        Ok(())
    }

    /// The shim the pod's containers share (one per pod, as the CRI does): a warm sandbox's,
    /// or else one named after the pod, started by its first container.
    fn shim_group(&self) -> String {
        self.net
            .as_ref()
            .and_then(|n| n.sandbox.clone())
            .unwrap_or_else(|| format!("skiff-pod-{}", self.uid))
    }

    /// The pod's host name: its own (`hostname`, else its name), or the node's for a pod on
    /// the node's network, which shares the node's host name as Kubernetes' do.
    fn hostname(&self, pod: &Pod) -> String {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network) == Some(true) {
            if let Ok(node) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                return node.trim().to_string();
            }
        }
        spec.and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| self.name.clone())
    }

    fn write_etc_files(&self, pod: &Pod, net: &PodNetwork) -> std::io::Result<()> {
        let etc = self.dir.join("etc");
        std::fs::create_dir_all(&etc)?;
        let hostname = self.hostname(pod);
        // With a subdomain (and a cluster domain), the pod's own name is fully qualified
        // too, as the kubelet writes it: `10.244.1.5  web-0.web.ns.svc.cluster.local web-0`.
        let names = match (
            pod.spec.as_ref().and_then(|s| s.subdomain.as_deref()),
            &self.ctx.dns,
        ) {
            (Some(sub), Some(dns)) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                format!("{hostname}.{sub}.{ns}.svc.{} {hostname}", dns.domain)
            }
            _ => hostname.clone(),
        };
        let hosts = if net.host {
            // The node's own names, as the kubelet gives a pod on the node's network.
            std::fs::read_to_string("/etc/hosts")?
        } else {
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{names}\n",
                net.ip
            )
        };
        std::fs::write(etc.join("hosts"), hosts)?;
        std::fs::write(etc.join("hostname"), format!("{hostname}\n"))?;
        let host = std::fs::read_to_string(&self.ctx.resolv_conf).unwrap_or_default();
        std::fs::write(
            etc.join("resolv.conf"),
            crate::dns::resolv_conf::for_pod(pod, &host, self.ctx.dns.as_ref()),
        )?;
        Ok(())
    }

    fn etc_mounts(&self) -> Vec<BindMount> {
        ["hosts", "hostname", "resolv.conf"]
            .iter()
            .map(|f| BindMount {
                host_path: self.dir.join("etc").join(f),
                container_path: format!("/etc/{f}"),
                read_only: false,
            })
            .collect()
    }

    async fn sync_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        key: &str,
        policy: &str,
        kind: &str,
    ) -> Progress {
        let runtime = self.ctx.runtime.clone();
        let now = Instant::now();
        let mut slot = self.slots.remove(key).unwrap_or_default();
        let progress = 'done: {
            if let Some(id) = slot.current.clone() {
                let info = match runtime.inspect(&id).await {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::warn!(container = %id, error = %e, "inspecting");
                        break 'done Progress::Waiting;
                    }
                };
                match info.map(|i| i.state) {
                    Some(ProcessState::Running { .. }) => {
                        slot.terminated = None;
                        slot.waiting = None;
                        if slot.probes.is_empty() && has_probes(c) {
                            slot.probes = probes::probes_of(c, now);
                        }
                        if self.run_probes(c, &id, &mut slot).await {
                            tracing::info!(container = %c.name, "liveness probe failed; restarting");
                            self.event(
                                "Normal",
                                "Killing",
                                format!(
                                    "Container {} failed liveness probe, will be restarted",
                                    c.name
                                ),
                            );
                            if let Err(e) = runtime.stop(&id, grace_of(pod)).await {
                                tracing::warn!(container = %id, error = %e, "stopping after a failed liveness probe");
                            }
                        }
                        break 'done Progress::Settled;
                    }
                    Some(ProcessState::Created) => {
                        // Created but never started (the agent stopped in between).
                        if let Err(e) = runtime.start(&id).await {
                            slot.waiting = Some(("RunContainerError".into(), e.to_string()));
                        }
                        break 'done Progress::Waiting;
                    }
                    Some(ProcessState::Exited {
                        code,
                        finished_at,
                        oom_killed,
                    }) => {
                        let reason = if oom_killed {
                            "OOMKilled"
                        } else if code == 0 {
                            "Completed"
                        } else {
                            "Error"
                        };
                        let container_id = format!("containerd://{id}");
                        // Read once per container: it is done, its message does not change.
                        let message = match &slot.terminated {
                            Some(Observed::Terminated {
                                container_id: seen,
                                message,
                                ..
                            }) if *seen == container_id => message.clone(),
                            _ => termination::message(&self.dir, c, slot.attempt, code),
                        };
                        slot.terminated = Some(Observed::Terminated {
                            code,
                            reason: reason.into(),
                            started_at: slot.started_at,
                            finished_at,
                            container_id,
                            message,
                        });
                        slot.probes.clear();
                        let restart = match policy {
                            "Always" => true,
                            "OnFailure" => code != 0,
                            _ => false,
                        };
                        if !restart {
                            break 'done Progress::Settled;
                        }
                        if slot.crash_armed_for.as_deref() != Some(id.as_str()) {
                            if finished_at - slot.started_at > STABLE_RUN {
                                slot.crash.reset();
                            }
                            slot.crash.fail(&self.ctx.backoff, now);
                            slot.crash_armed_for = Some(id.clone());
                            self.event(
                                "Warning",
                                "BackOff",
                                format!(
                                    "Back-off restarting failed container {} in pod {}",
                                    c.name, self.name
                                ),
                            );
                        }
                        if !slot.crash.ready(now) {
                            let left = slot.crash.until.map(|u| u - now).unwrap_or_default();
                            slot.waiting = Some((
                                "CrashLoopBackOff".into(),
                                format!(
                                    "back-off {}s restarting failed container={} pod={}",
                                    left.as_secs().max(1),
                                    c.name,
                                    self.name
                                ),
                            ));
                            break 'done Progress::Waiting;
                        }
                        if let Err(e) = runtime.remove(&id).await {
                            tracing::warn!(container = %id, error = %e, "removing the exited container");
                            break 'done Progress::Waiting;
                        }
                        slot.last_terminated = slot.terminated.take();
                        slot.current = None;
                        slot.attempt += 1;
                        logs::prune(&self.dir, &c.name, slot.attempt.saturating_sub(1));
                        termination::remove(&self.dir, &c.name, slot.attempt - 1);
                    }
                    Some(ProcessState::NoTask) | None => {
                        // Its task or the container itself was lost: replace it.
                        let _ = runtime.remove(&id).await;
                        slot.current = None;
                        slot.attempt += 1;
                    }
                }
            }
            if self.deadline_exceeded {
                break 'done Progress::Settled; // past its deadline, nothing starts
            }
            self.create_container(pod, c, &mut slot, kind, now).await
        };
        self.slots.insert(key.to_string(), slot);
        progress
    }

    async fn create_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        slot: &mut Slot,
        kind: &str,
        now: Instant,
    ) -> Progress {
        let runtime = self.ctx.runtime.clone();
        let image_name = c.image.clone().unwrap_or_default();
        // A create or start that failed waits out its back-off, keeping its reason.
        if !slot.crash.ready(now) && slot.waiting.is_some() {
            return Progress::Waiting;
        }
        if !slot.pull.ready(now) {
            let message = slot
                .waiting
                .as_ref()
                .map(|w| w.1.clone())
                .unwrap_or_default();
            slot.waiting = Some(("ImagePullBackOff".into(), message));
            return Progress::Waiting;
        }
        let policy = PullPolicy::from_spec(c.image_pull_policy.as_deref(), &image_name);
        let pulled = match runtime.local_image(&image_name, policy).await {
            Some(image) => {
                if slot.attempt == 0 {
                    self.event(
                        "Normal",
                        "Pulled",
                        format!("Container image {image_name:?} already present on machine"),
                    );
                }
                Ok(image)
            }
            None => {
                // A pull waits on the registry, not the CPU: the next pod takes the turn.
                self.start_permit = None;
                self.event("Normal", "Pulling", format!("Pulling image {image_name:?}"));
                let (credentials, problems) =
                    pull_secrets::credentials_for(&self.ctx.api, pod, &image_name).await;
                if !problems.is_empty() {
                    self.event(
                        "Warning",
                        "FailedToRetrieveImagePullSecret",
                        format!(
                            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                            problems.join("; ")
                        ),
                    );
                }
                let started = Instant::now();
                let r = runtime
                    .ensure_image(&image_name, policy, credentials.as_ref())
                    .await;
                if r.is_ok() {
                    self.event(
                        "Normal",
                        "Pulled",
                        format!(
                            "Successfully pulled image {image_name:?} in {:.3}s",
                            started.elapsed().as_secs_f64()
                        ),
                    );
                }
                r
            }
        };
        let image = match pulled {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(container = %c.name, error = %e, "image");
                self.event(
                    "Warning",
                    "Failed",
                    format!("Failed to pull image {image_name:?}: {e}"),
                );
                slot.pull.fail(&self.ctx.backoff, now);
                let reason = if matches!(e, crate::error::Error::ImageNeverPulled { .. }) {
                    "ErrImageNeverPull"
                } else {
                    "ErrImagePull"
                };
                slot.waiting = Some((reason.into(), e.to_string()));
                return Progress::Waiting;
            }
        };
        slot.pull.reset();
        slot.image_id = image.digest.clone();
        let ip = self.net.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        let ctx = self.ctx.clone();
        let links = match &ctx.services {
            Some(services)
                if pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false) =>
            {
                service_links::variables(services.iter(), &self.namespace)
            }
            _ => Vec::new(),
        };
        let env_of = config_sources::environment(&ctx.api, pod, c, &ip, &ctx.host_ip, links);
        let env = match gate_released_if_slow(&mut self.start_permit, env_of).await {
            Ok(e) => e,
            Err(e) => {
                slot.waiting = Some(("CreateContainerConfigError".into(), e.0));
                return Progress::Waiting;
            }
        };
        let vols = self
            .volumes
            .as_ref()
            .map(|v| v.0.clone())
            .unwrap_or_default();
        let mut mounts = self.etc_mounts();
        match volumes::mounts_for(c, &vols) {
            Ok(m) => mounts.extend(m),
            Err(e) => {
                slot.waiting = Some(("CreateContainerConfigError".into(), e.0));
                return Progress::Waiting;
            }
        }
        match termination::prepare(&self.dir, c, slot.attempt) {
            Ok(Some(host_path)) => mounts.push(BindMount {
                host_path,
                container_path: c.termination_message_path.clone().unwrap_or_default(),
                read_only: false,
            }),
            Ok(None) => {}
            Err(e) => {
                slot.waiting = Some((
                    "CreateContainerConfigError".into(),
                    format!("termination message file: {e}"),
                ));
                return Progress::Waiting;
            }
        }
        let resources = c.resources.clone().unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let id = container_id(&self.uid, &c.name, slot.attempt);
        let hostname = self.hostname(pod);
        let security = match security_context::effective(pod, c, &image) {
            Ok(s) => s,
            Err(e) => {
                slot.waiting = Some(("CreateContainerConfigError".into(), e.0));
                return Progress::Waiting;
            }
        };
        let input = SpecInput {
            security,
            command: c.command.clone(),
            args: c.args.clone(),
            env,
            working_dir: c.working_dir.clone(),
            hostname,
            netns_path: self
                .net
                .as_ref()
                .map(|n| n.netns.clone())
                .unwrap_or_default(),
            host: HostNamespaces {
                network: self.net.as_ref().is_some_and(|n| n.host),
                pid: pod.spec.as_ref().and_then(|s| s.host_pid) == Some(true),
                ipc: pod.spec.as_ref().and_then(|s| s.host_ipc) == Some(true),
            },
            mounts,
            cgroups_path: format!("{}/{id}", crate::cgroups::pod_parent(&self.uid)),
            cpu_limit_millis: quantity_millis(limits.get("cpu")),
            cpu_request_millis: quantity_millis(requests.get("cpu")),
            memory_limit_bytes: quantity_bytes(limits.get("memory")),
            shim_group: Some(self.shim_group()),
        };
        let log_path: PathBuf = logs::path(&self.dir, &c.name, slot.attempt);
        let spec = CreateSpec {
            id: id.clone(),
            labels: BTreeMap::from([
                (labels::POD.to_string(), self.key.clone()),
                (labels::POD_UID.to_string(), self.uid.clone()),
                (labels::CONTAINER.to_string(), c.name.clone()),
                (labels::ATTEMPT.to_string(), slot.attempt.to_string()),
                (labels::KIND.to_string(), kind.to_string()),
                (labels::IMAGE.to_string(), image_name.clone()),
                (labels::LOG.to_string(), log_path.display().to_string()),
            ]),
            spec: oci_spec::build(&input, &image),
            root: self.ctx.made_ahead.take_root(&image),
            image,
            log_path,
        };
        if let Err(e) = runtime.create(&spec).await {
            tracing::warn!(container = %id, error = %e, "creating");
            self.event("Warning", "Failed", format!("Error: {e}"));
            let _ = runtime.remove(&id).await;
            slot.crash.fail(&self.ctx.backoff, now);
            slot.waiting = Some(("CreateContainerError".into(), e.to_string()));
            return Progress::Waiting;
        }
        self.event("Normal", "Created", format!("Created container {}", c.name));
        if let Err(e) = runtime.start(&id).await {
            tracing::warn!(container = %id, error = %e, "starting");
            self.event("Warning", "Failed", format!("Error: {e}"));
            let _ = runtime.remove(&id).await;
            slot.crash.fail(&self.ctx.backoff, now);
            slot.waiting = Some(("RunContainerError".into(), e.to_string()));
            return Progress::Waiting;
        }
        tracing::info!(container = %id, attempt = slot.attempt, "started");
        self.event("Normal", "Started", format!("Started container {}", c.name));
        if c.lifecycle.as_ref().is_some_and(|l| l.post_start.is_some()) {
            // A hook may take a while: the next pod's start need not wait for it.
            self.start_permit = None;
            let ip = self.net.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
            if let Err(message) = hooks::post_start(c, &id, &ip, &*runtime).await {
                tracing::warn!(container = %id, %message, "postStart hook failed; stopping the container");
                self.event(
                    "Warning",
                    "FailedPostStartHook",
                    format!("PostStartHook failed: {message}"),
                );
                self.event(
                    "Normal",
                    "Killing",
                    format!("FailedPostStartHook: stopping container {}", c.name),
                );
                if let Err(e) = runtime.stop(&id, grace_of(pod)).await {
                    tracing::warn!(container = %id, error = %e, "stopping after a failed postStart hook");
                }
            }
        }
        slot.current = Some(id);
        slot.waiting = None;
        slot.terminated = None;
        slot.started_at = jiff::Timestamp::now().as_second();
        slot.started_instant = Some(now);
        slot.probes = probes::probes_of(c, now);
        Progress::Settled
    }

    /// Run the due probes; returns whether liveness failed.
    async fn run_probes(&self, c: &Container, id: &str, slot: &mut Slot) -> bool {
        let ip = self.net.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        let started = slot.started();
        let mut liveness_failed = false;
        for i in 0..slot.probes.len() {
            let now = Instant::now();
            let (kind, due) = (slot.probes[i].kind, slot.probes[i].due(now));
            // Liveness and readiness wait for the startup probe.
            if !due || (kind != Kind::Startup && !started) {
                continue;
            }
            let spec = slot.probes[i].spec.clone();
            let (ok, message) = probes::run(&spec, c, id, &ip, self.ctx.runtime.as_ref()).await;
            let changed = slot.probes[i].record(ok, message.clone(), Instant::now());
            if !ok {
                let probe = match kind {
                    Kind::Liveness => "Liveness",
                    Kind::Readiness => "Readiness",
                    Kind::Startup => "Startup",
                };
                self.event(
                    "Warning",
                    "Unhealthy",
                    format!("{probe} probe failed: {message}"),
                );
            }
            if changed {
                tracing::info!(container = %c.name, probe = ?kind, passing = ok, message = %message, "probe verdict changed");
            }
            if kind == Kind::Liveness && !slot.probes[i].passing {
                liveness_failed = true;
            }
            if kind == Kind::Startup && !slot.probes[i].passing && !ok {
                let threshold = spec.failure_threshold.unwrap_or(3).max(1);
                if slot.probes[i].failures() >= threshold {
                    liveness_failed = true;
                }
            }
        }
        liveness_failed
    }

    fn rotate_logs(&self) {
        for (key, slot) in &self.slots {
            let Some(name) = key.split_once('/').map(|(_, n)| n) else {
                continue;
            };
            if slot.current.is_some() {
                let file = logs::path(&self.dir, name, slot.attempt);
                if let Err(e) = logs::rotate_if_large(&file, self.ctx.log_max_bytes) {
                    tracing::warn!(file = %file.display(), error = %e, "rotating a log");
                }
            }
        }
    }

    fn view_of(&self, c: &Container, key: &str) -> ContainerView {
        let slot = self.slots.get(key);
        let state = match slot {
            None => Observed::Waiting {
                reason: if key.starts_with("app/") {
                    "PodInitializing"
                } else {
                    "Waiting"
                }
                .into(),
                message: String::new(),
            },
            Some(s) => {
                if let Some((reason, message)) = &s.waiting {
                    Observed::Waiting {
                        reason: reason.clone(),
                        message: message.clone(),
                    }
                } else if let Some(t) = &s.terminated {
                    t.clone()
                } else if s.current.is_some() {
                    Observed::Running {
                        started_at: s.started_at,
                        ready: s.ready(),
                        started: s.started(),
                    }
                } else {
                    Observed::Waiting {
                        reason: "ContainerCreating".into(),
                        message: String::new(),
                    }
                }
            }
        };
        ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: slot.map(|s| s.image_id.clone()).unwrap_or_default(),
            container_id: slot
                .and_then(|s| s.current.as_ref())
                .map(|id| format!("containerd://{id}")),
            restart_count: slot.map(|s| s.attempt as i32).unwrap_or(0),
            state,
            last_terminated: slot.and_then(|s| s.last_terminated.clone()),
        }
    }

    async fn report(
        &mut self,
        pod: &Pod,
        init: &[Container],
        containers: &[Container],
        policy: &str,
    ) {
        let view = PodView {
            init: init
                .iter()
                .map(|c| self.view_of(c, &format!("init/{}", c.name)))
                .collect(),
            containers: containers
                .iter()
                .map(|c| self.view_of(c, &format!("app/{}", c.name)))
                .collect(),
            restart_policy: policy.into(),
            pod_ip: self.net.as_ref().map(|n| n.ip.clone()),
            host_ip: Some(self.ctx.host_ip.clone()),
            start_time: Some(self.start_time),
            pending_message: self.pending_message.clone(),
            failed: self
                .deadline_exceeded
                .then(|| ("DeadlineExceeded".to_string(), DEADLINE_MESSAGE.to_string())),
        };
        let next = status::pod_status(&view, self.last_status.as_ref());
        if self
            .last_status
            .as_ref()
            .is_some_and(|prev| status::same(prev, &next))
        {
            return;
        }
        let mut obj = pod.clone();
        obj.metadata.resource_version = None;
        obj.status = Some(next.clone());
        match self.ctx.api.update_status(&obj).await {
            Ok(_) => {
                tracing::debug!(phase = ?next.phase, "status reported");
                if next.phase.as_deref() == Some("Running") {
                    if let Some(seen) = self.seen_at.take() {
                        self.ctx.pod_start.observe(seen.elapsed().as_secs_f64());
                    }
                }
                self.last_status = Some(next);
            }
            Err(e) => tracing::warn!(error = %e, "reporting status; will retry"),
        }
    }
}

/// Await `work` (a call to the control plane); if it takes longer than a moment, give the
/// start gate up meanwhile, so that a slow or absent control plane cannot hold up the starts
/// of other pods.
async fn gate_released_if_slow<F: std::future::Future>(
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    work: F,
) -> F::Output {
    let mut work = std::pin::pin!(work);
    if permit.is_some() {
        if let Ok(out) = tokio::time::timeout(Duration::from_secs(1), &mut work).await {
            return out;
        }
        *permit = None;
    }
    work.await
}

fn has_probes(c: &Container) -> bool {
    c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
}

/// How long until a worker with `slots` should look again: the next probe or back-off, at
/// most the resync period, at least 50 ms (a pass is not free).
fn time_to_next_pass<'a>(slots: impl Iterator<Item = &'a Slot>, now: Instant) -> Duration {
    let mut wake = now + RESYNC;
    for s in slots {
        // A failed pull is reported as ErrImagePull for half its back-off (at most 1 s),
        // then as ImagePullBackOff until the next pull.
        if s.waiting.as_ref().is_some_and(|w| w.0 == "ErrImagePull") {
            if let Some(until) = s.pull.until.filter(|u| *u > now) {
                let half = (until - now) / 2;
                wake = wake.min(now + half.min(Duration::from_secs(1)));
            }
        }
        for p in &s.probes {
            wake = wake.min(p.next_due());
        }
        // A back-off that ran out while this pass reported (a short one does) is due
        // at once: nothing else would wake the worker before the resync.
        let backing_off = match s.waiting.as_ref().map(|w| w.0.as_str()) {
            Some("CrashLoopBackOff") => s.crash.until,
            Some("ErrImagePull" | "ImagePullBackOff") => s.pull.until,
            _ => None,
        };
        for u in [s.crash.until, s.pull.until].into_iter().flatten() {
            if u > now {
                wake = wake.min(u);
            }
        }
        if let Some(u) = backing_off {
            wake = wake.min(u.max(now));
        }
    }
    wake.saturating_duration_since(now)
        .max(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_slow_control_plane_call_gives_the_start_gate_up_and_a_quick_one_keeps_it() {
        let gate = Arc::new(tokio::sync::Semaphore::new(1));
        let mut permit = Some(gate.clone().acquire_owned().await.expect("permit"));
        assert_eq!(gate_released_if_slow(&mut permit, async { 7 }).await, 7);
        assert!(permit.is_some() && gate.available_permits() == 0);

        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire_owned().await.is_ok() }
        });
        let slow = tokio::time::sleep(Duration::from_millis(1500));
        gate_released_if_slow(&mut permit, slow).await;
        assert!(permit.is_none());
        assert!(waiting.await.expect("join"), "the next pod got its turn");
    }

    fn crashed(waiting: &str, until: Instant) -> Slot {
        Slot {
            waiting: Some((waiting.into(), String::new())),
            crash: crate::pod_worker::backoff::Backoff {
                failures: 1,
                until: Some(until),
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_back_off_that_ran_out_during_the_pass_is_due_at_once() {
        let now = Instant::now();
        let ran_out = crashed("CrashLoopBackOff", now - Duration::from_millis(1));
        assert_eq!(
            time_to_next_pass([&ran_out].into_iter(), now),
            Duration::from_millis(50)
        );
        let later = crashed("CrashLoopBackOff", now + Duration::from_millis(700));
        assert_eq!(
            time_to_next_pass([&later].into_iter(), now),
            Duration::from_millis(700)
        );
    }

    #[test]
    fn a_past_back_off_of_a_running_container_waits_for_the_resync() {
        let now = Instant::now();
        let mut running = crashed("CrashLoopBackOff", now - Duration::from_secs(5));
        running.waiting = None;
        assert_eq!(time_to_next_pass([&running].into_iter(), now), RESYNC);
    }
}
