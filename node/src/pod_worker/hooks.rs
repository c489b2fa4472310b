//! Lifecycle hooks (exec in the container, an HTTP GET to the pod, or a sleep). A container's
//! `postStart` handler runs as soon as it has started, before it counts as running; if it
//! fails, the container is stopped and restarted as its restart policy says. Its `preStop`
//! handler runs before the container is asked to stop, within the pod's grace period; the
//! container then gets what is left of it (at least 2 s, as the kubelet gives). A preStop
//! hook that fails is logged and the stop goes on, as in Kubernetes.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use super::probes;
use crate::runtime::ContainerRuntime;

/// What a container is left of the grace period after its hook ran for `spent`.
pub fn grace_left(grace: Duration, spent: Duration) -> Duration {
    grace.saturating_sub(spent).max(Duration::from_secs(2))
}

/// Run `container`'s preStop handler, if it has one, in container `id` of the pod at
/// `pod_ip`, for at most `grace`; how long it took.
pub async fn pre_stop<R: ContainerRuntime>(
    container: &Container,
    id: &str,
    pod_ip: &str,
    runtime: &R,
    grace: Duration,
) -> Duration {
    let started = Instant::now();
    let Some(handler) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    else {
        return Duration::ZERO;
    };
    if let Err(message) = run(handler, container, id, pod_ip, runtime, grace).await {
        tracing::warn!(container = %container.name, %message, "preStop hook failed");
    }
    started.elapsed()
}

/// The longest a postStart hook may run: the kubelet sets none, but a hook that never ends
/// would hold the container out of service for good.
const POST_START_BUDGET: Duration = Duration::from_secs(120);

/// Run `container`'s postStart handler, if it has one, in container `id` of the pod at
/// `pod_ip`; why it failed, if it did.
pub async fn post_start<R: ContainerRuntime>(
    container: &Container,
    id: &str,
    pod_ip: &str,
    runtime: &R,
) -> Result<(), String> {
    let Some(handler) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
    else {
        return Ok(());
    };
    run(handler, container, id, pod_ip, runtime, POST_START_BUDGET).await
}

async fn run<R: ContainerRuntime>(
    handler: &LifecycleHandler,
    container: &Container,
    id: &str,
    pod_ip: &str,
    runtime: &R,
    budget: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &handler.sleep {
        let secs = Duration::from_secs(sleep.seconds.max(0) as u64);
        tokio::time::sleep(secs.min(budget)).await;
        return Ok(());
    }
    // An exec or HTTP handler is a probe that runs once, with the grace period as its
    // timeout.
    let probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        timeout_seconds: Some(budget.as_secs().clamp(1, i32::MAX as u64) as i32),
        ..Default::default()
    };
    let (ok, message) = probes::run(&probe, container, id, pod_ip, runtime).await;
    if ok {
        Ok(())
    } else {
        Err(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_keeps_what_the_hook_left_of_the_grace_at_least_two_seconds() {
        let s = Duration::from_secs;
        assert_eq!(grace_left(s(30), s(5)), s(25));
        assert_eq!(grace_left(s(3), s(5)), s(2));
    }
}
