//! The ReplicationController controller: a ReplicationController is kept as the ReplicaSet it
//! amounts to, one whose selector is its equality selector ([`replicaset::sync`] does the
//! work); its pods' controller references name the ReplicationController, and its status
//! reports the same counts.
//!
//! Keyed by ReplicationController; a pod's change reaches its controller, or, for an orphan,
//! the ReplicationControllers of its namespace that select it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, ReplicationControllerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use skiff_proto::objects::Api;

use super::context::Ctx;
use super::replicaset::owners_of_pod;
use super::replicaset::sync::{sync, Owner};
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};
use crate::objects::selectors::Selector;

/// The controller's name.
pub const NAME: &str = "replicationcontroller";

/// How ReplicationControllers' controller references name them.
const OWNER: Owner<'static> = Owner {
    api_version: "v1",
    kind: "ReplicationController",
};

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let pods_ctx = ctx.clone();
    Runner::new(
        ReplicationControllerController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(
        ctx.replicationcontrollers.subscribe(),
        |rc: &ReplicationController| vec![ObjectKey::of(rc)],
    )
    .watches(ctx.pods.subscribe(), move |p: &Pod| {
        owners_of_pod(&pods_ctx.replicationcontrollers, OWNER.kind, p, |rc| {
            Selector::from_label_selector("spec.selector", &selector_of(rc)).ok()
        })
    })
    .run()
    .await
}

fn selector_of(rc: &ReplicationController) -> LabelSelector {
    LabelSelector {
        match_labels: rc.spec.as_ref().and_then(|s| s.selector.clone()),
        match_expressions: None,
    }
}

/// The ReplicaSet a ReplicationController amounts to.
fn as_replica_set(rc: &ReplicationController) -> ReplicaSet {
    ReplicaSet {
        metadata: rc.metadata.clone(),
        spec: rc.spec.as_ref().map(|s| ReplicaSetSpec {
            replicas: s.replicas,
            min_ready_seconds: s.min_ready_seconds,
            selector: selector_of(rc),
            template: s.template.clone(),
        }),
        status: None,
    }
}

/// A ReplicaSet's counts as a ReplicationController's status, its conditions kept.
fn status_of(counts: ReplicaSetStatus, rc: &ReplicationController) -> ReplicationControllerStatus {
    ReplicationControllerStatus {
        replicas: counts.replicas,
        ready_replicas: counts.ready_replicas,
        available_replicas: counts.available_replicas,
        fully_labeled_replicas: counts.fully_labeled_replicas,
        observed_generation: counts.observed_generation,
        conditions: rc.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

/// Reconciles one ReplicationController.
pub struct ReplicationControllerController {
    ctx: Arc<Ctx>,
}

impl Reconciler for ReplicationControllerController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(rc) = self
            .ctx
            .replicationcontrollers
            .get(&key.namespace, &key.name)
        else {
            return Ok(Action::done()); // gone: the garbage collector takes its pods
        };
        let Some(synced) = sync(&self.ctx, &as_replica_set(&rc), &OWNER).await else {
            return Ok(Action::done());
        };
        let status = status_of(synced.status.clone(), &rc);
        let mut write = Ok(());
        if rc.status.as_ref() != Some(&status) {
            let mut next = (*rc).clone();
            next.status = Some(status);
            let api: Api<ReplicationController> = Api::new(self.ctx.client.clone(), &key.namespace);
            write = api.update_status(&next).await.map(|_| ());
        }
        synced.outcome(write)
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.replicationcontrollers.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.pods.wait_for(revision, timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ReplicationControllerSpec;

    use super::*;

    #[test]
    fn a_replication_controller_is_kept_as_a_replica_set_with_its_equality_selector() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let rc = ReplicationController {
            spec: Some(ReplicationControllerSpec {
                replicas: Some(3),
                selector: Some(labels.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rs = as_replica_set(&rc);
        let spec = rs.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.selector.match_labels, Some(labels));
        assert_eq!(spec.selector.match_expressions, None);
    }
}
