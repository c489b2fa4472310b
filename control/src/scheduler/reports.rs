//! Why pods fit nowhere: `PodScheduled=False` and a `FailedScheduling` Event, written one
//! pod at a time beside the placements, so a burst of unplaceable pods does not flood the
//! store that the binds and the users' writes need.
//!
//! Pending reports are kept by pod, not as copies of pods: a pod reported again before its
//! turn keeps its place with the newer reason, and the report is written from the pod as
//! the cache holds it then (a pod bound meanwhile is not reported at all). Ten thousand
//! pods waiting for nodes cost ten thousand names, not ten thousand decoded pods.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_proto::objects::Api;
use tokio::sync::Notify;

use super::is_pending;
use crate::controllers::context::Ctx;
use crate::controllers::events::Involved;
use crate::controllers::runner::ObjectKey;

#[derive(Default)]
struct Pending {
    order: VecDeque<ObjectKey>,
    reasons: HashMap<ObjectKey, String>,
}

/// The reports waiting to be written.
#[derive(Default)]
pub struct Reports {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Reports {
    fn with<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        match self.pending.lock() {
            Ok(mut p) => f(&mut p),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Report that pod `key` fits nowhere, for `reason`.
    pub fn add(&self, key: ObjectKey, reason: String) {
        self.with(|p| {
            if p.reasons.insert(key.clone(), reason).is_none() {
                p.order.push_back(key);
            }
        });
        self.wake.notify_one();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.with(|p| p.order.len())
    }

    fn pop(&self) -> Option<(ObjectKey, String)> {
        self.with(|p| {
            let key = p.order.pop_front()?;
            let reason = p.reasons.remove(&key)?;
            Some((key, reason))
        })
    }

    async fn next(&self) -> (ObjectKey, String) {
        loop {
            if let Some(r) = self.pop() {
                return r;
            }
            self.wake.notified().await;
        }
    }
}

/// Write the reports as they come, until aborted.
pub async fn run(ctx: Arc<Ctx>, reports: Arc<Reports>) {
    loop {
        let (key, reason) = reports.next().await;
        let Some(pod) = ctx.pods.get(&key.namespace, &key.name) else {
            continue;
        };
        if is_pending(&pod) {
            write(&ctx, &pod, &reason).await;
        }
    }
}

async fn write(ctx: &Ctx, pod: &Pod, message: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    tracing::info!(pod = %name, namespace = %ns, %message, "pod fits no node");
    ctx.recorder.record(
        &Involved {
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespace: ns.clone(),
            name: name.clone(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        },
        "Warning",
        "FailedScheduling",
        message,
        "default-scheduler",
    );
    let mut next = pod.clone();
    let status = next.status.get_or_insert_with(Default::default);
    let mut conditions: Vec<PodCondition> = status
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "PodScheduled")
        .collect();
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        ..Default::default()
    });
    status.conditions = Some(conditions);
    let api: Api<Pod> = Api::new(ctx.client.clone(), &ns);
    if let Err(e) = api.update_status(&next).await {
        tracing::debug!(pod = %name, error = %e, "recording PodScheduled=False failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns".to_string(), name.to_string())
    }

    #[tokio::test]
    async fn a_pod_reported_again_keeps_its_place_with_the_newer_reason() {
        let r = Reports::default();
        r.add(key("a"), "no nodes".into());
        r.add(key("b"), "no nodes".into());
        r.add(key("a"), "0/3 nodes: taint".into());
        assert_eq!(r.len(), 2);
        assert_eq!(r.next().await, (key("a"), "0/3 nodes: taint".to_string()));
        assert_eq!(r.next().await, (key("b"), "no nodes".to_string()));
        assert_eq!(r.len(), 0);
        r.add(key("a"), "again".into());
        assert_eq!(r.next().await, (key("a"), "again".to_string()));
    }
}
