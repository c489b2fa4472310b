//! A pod's status from what the worker observed of its containers: a pure function, with the
//! kubelet's rules for the phase and the conditions.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What a container is doing, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Not running: being created, pulling, or backing off.
    Waiting {
        /// `ContainerCreating`, `ErrImagePull`, `ImagePullBackOff`, `CrashLoopBackOff`, …
        reason: String,
        /// Details.
        message: String,
    },
    /// Running.
    Running {
        /// Unix seconds.
        started_at: i64,
        /// Its readiness probe passes (or it has none).
        ready: bool,
        /// Its startup probe passed (or it has none).
        started: bool,
    },
    /// Exited.
    Terminated {
        /// Exit code.
        code: i32,
        /// `Completed`, `Error`, `OOMKilled`.
        reason: String,
        /// Unix seconds.
        started_at: i64,
        /// Unix seconds.
        finished_at: i64,
        /// `containerd://…`.
        container_id: String,
        /// What it left at its termination message path.
        message: Option<String>,
    },
}

/// One container as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Its name.
    pub name: String,
    /// Image as the spec names it.
    pub image: String,
    /// Digest of the image in use.
    pub image_id: String,
    /// `containerd://…` of the current container.
    pub container_id: Option<String>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Now.
    pub state: Observed,
    /// The previous run's end, if it restarted.
    pub last_terminated: Option<Observed>,
}

/// The observed pod.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    /// Init containers, in order.
    pub init: Vec<ContainerView>,
    /// Containers.
    pub containers: Vec<ContainerView>,
    /// `Always`, `OnFailure` or `Never`.
    pub restart_policy: String,
    /// The pod's address.
    pub pod_ip: Option<String>,
    /// The node's address.
    pub host_ip: Option<String>,
    /// When the agent started on it (Unix seconds).
    pub start_time: Option<i64>,
    /// A reason the pod as a whole is stuck (as sandbox creation failing).
    pub pending_message: Option<String>,
    /// Why the pod failed as a whole (reason, message), whatever its containers say.
    pub failed: Option<(String, String)>,
}

fn time(secs: i64) -> Option<Time> {
    jiff::Timestamp::from_second(secs).ok().map(Time)
}

/// The pod phase by the kubelet's rules.
pub fn phase(view: &PodView) -> &'static str {
    for c in &view.init {
        match &c.state {
            Observed::Terminated { code: 0, .. } => {}
            Observed::Terminated { .. } if view.restart_policy == "Never" => return "Failed",
            _ => return "Pending",
        }
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.containers {
        match &c.state {
            Observed::Running { .. } => running += 1,
            Observed::Terminated { code, .. } => {
                stopped += 1;
                if *code == 0 {
                    succeeded += 1;
                }
            }
            Observed::Waiting { .. } if c.last_terminated.is_some() => stopped += 1,
            Observed::Waiting { .. } => waiting += 1,
        }
    }
    if view.containers.is_empty() || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if view.restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if view.restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

fn state_of(o: &Observed) -> ContainerState {
    match o {
        Observed::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: Some(message.clone()).filter(|m| !m.is_empty()),
            }),
            ..Default::default()
        },
        Observed::Running { started_at, .. } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(*started_at),
            }),
            ..Default::default()
        },
        Observed::Terminated {
            code,
            reason,
            started_at,
            finished_at,
            container_id,
            message,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *code,
                reason: Some(reason.clone()),
                message: message.clone(),
                started_at: time(*started_at),
                finished_at: time(*finished_at),
                container_id: Some(container_id.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    let (ready, started) = match &c.state {
        Observed::Running { ready, started, .. } => (*ready && *started, *started),
        _ => (false, false),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        ready,
        started: Some(started),
        restart_count: c.restart_count,
        state: Some(state_of(&c.state)),
        last_state: c.last_terminated.as_ref().map(state_of),
        ..Default::default()
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    prev: Option<&PodStatus>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status does.
    let last = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: if ok { None } else { reason.map(String::from) },
        last_transition_time: Some(last),
        ..Default::default()
    }
}

/// The status to report; `prev` keeps condition transition times stable.
pub fn pod_status(view: &PodView, prev: Option<&PodStatus>) -> PodStatus {
    let phase = if view.failed.is_some() {
        "Failed"
    } else {
        phase(view)
    };
    let initialized = view
        .init
        .iter()
        .all(|c| matches!(c.state, Observed::Terminated { code: 0, .. }));
    let containers_ready = !view.containers.is_empty()
        && view.containers.iter().all(|c| {
            matches!(
                c.state,
                Observed::Running {
                    ready: true,
                    started: true,
                    ..
                }
            )
        });
    let ready = containers_ready && phase == "Running";
    let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    PodStatus {
        phase: Some(phase.into()),
        reason: view.failed.as_ref().map(|f| f.0.clone()),
        message: view
            .failed
            .as_ref()
            .map(|f| f.1.clone())
            .or_else(|| view.pending_message.clone()),
        host_ip: view.host_ip.clone(),
        pod_ip: view.pod_ip.clone(),
        pod_ips: view
            .pod_ip
            .as_ref()
            .map(|ip| vec![PodIP { ip: ip.clone() }]),
        start_time: view.start_time.and_then(time),
        conditions: Some(vec![
            condition("PodScheduled", true, None, prev),
            condition(
                "Initialized",
                initialized,
                Some("ContainersNotInitialized"),
                prev,
            ),
            condition(
                "ContainersReady",
                containers_ready,
                Some(not_ready_reason),
                prev,
            ),
            condition("Ready", ready, Some(not_ready_reason), prev),
        ]),
        init_container_statuses: if view.init.is_empty() {
            None
        } else {
            Some(view.init.iter().map(container_status).collect())
        },
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        ..Default::default()
    }
}

/// Whether two statuses say the same, ignoring condition times.
pub fn same(a: &PodStatus, b: &PodStatus) -> bool {
    let strip = |s: &PodStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = None;
            c.last_probe_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: Observed, last: Option<Observed>) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "i".into(),
            image_id: String::new(),
            container_id: None,
            restart_count: 0,
            state,
            last_terminated: last,
        }
    }

    fn running(ready: bool) -> Observed {
        Observed::Running {
            started_at: 1,
            ready,
            started: true,
        }
    }

    fn exited(code: i32) -> Observed {
        Observed::Terminated {
            code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: 1,
            finished_at: 2,
            container_id: "containerd://x".into(),
            message: None,
        }
    }

    fn waiting(reason: &str) -> Observed {
        Observed::Waiting {
            reason: reason.into(),
            message: String::new(),
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let cases: Vec<(&str, Vec<ContainerView>, Vec<ContainerView>, &str)> = vec![
            (
                "Always",
                vec![],
                vec![c(waiting("ContainerCreating"), None)],
                "Pending",
            ),
            ("Always", vec![], vec![c(running(true), None)], "Running"),
            (
                "Always",
                vec![],
                vec![c(waiting("CrashLoopBackOff"), Some(exited(1)))],
                "Running",
            ),
            ("Never", vec![], vec![c(exited(0), None)], "Succeeded"),
            ("Never", vec![], vec![c(exited(1), None)], "Failed"),
            ("OnFailure", vec![], vec![c(exited(0), None)], "Succeeded"),
            (
                "Always",
                vec![c(running(false), None)],
                vec![c(waiting("PodInitializing"), None)],
                "Pending",
            ),
            (
                "Never",
                vec![c(exited(3), None)],
                vec![c(waiting("PodInitializing"), None)],
                "Failed",
            ),
        ];
        for (policy, init, containers, want) in cases {
            let view = PodView {
                init,
                containers,
                restart_policy: policy.into(),
                ..Default::default()
            };
            assert_eq!(phase(&view), want, "{policy} {view:?}");
        }
    }

    #[test]
    fn ready_needs_every_container_ready() {
        let mut view = PodView {
            containers: vec![c(running(true), None), c(running(false), None)],
            restart_policy: "Always".into(),
            ..Default::default()
        };
        let s = pod_status(&view, None);
        let ready = |s: &PodStatus| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(ready(&s), "False");
        view.containers[1].state = running(true);
        let s2 = pod_status(&view, Some(&s));
        assert_eq!(ready(&s2), "True");
        assert!(!same(&s, &s2));
        assert!(same(&s2, &pod_status(&view, Some(&s2))));
    }
}
