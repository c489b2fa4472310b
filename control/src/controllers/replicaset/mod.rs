//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector, owned
//! through a controller reference; adopts matching orphans, releases pods that stopped
//! matching, deletes the least valuable pods first, and reports status ([`sync`] does the
//! work, shared with the ReplicationController controller).
//!
//! Keyed by ReplicaSet; a pod's change reaches its controlling ReplicaSet, or, for an orphan,
//! the ReplicaSets of its namespace that select it (they may adopt it).

pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use skiff_proto::informer::Cacheable;
use skiff_proto::objects::Api;

use super::cache::{self, Watched};
use super::context::Ctx;
use super::ownership::{controller_uid, is_active};
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};
use crate::objects::selectors::Selector;
pub use sync::deletion_rank;
use sync::{sync, Owner};

/// How ReplicaSets' controller references name them.
const OWNER: Owner<'static> = Owner {
    api_version: "apps/v1",
    kind: "ReplicaSet",
};

/// The controller's name.
pub const NAME: &str = "replicaset";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let pods_ctx = ctx.clone();
    Runner::new(
        ReplicaSetController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.replicasets.subscribe(), |rs: &ReplicaSet| {
        vec![ObjectKey::of(rs)]
    })
    .watches(ctx.pods.subscribe(), move |p: &Pod| {
        owners_of_pod(&pods_ctx.replicasets, OWNER.kind, p, |rs| {
            rs.spec
                .as_ref()
                .and_then(|s| Selector::from_label_selector("spec.selector", &s.selector).ok())
        })
    })
    .run()
    .await
}

/// The owners of kind `kind` a pod's change concerns: its controller, or those of its
/// namespace whose selector (`selector_of`) matches it (they may adopt it).
pub fn owners_of_pod<K: Cacheable>(
    owners: &Watched<K>,
    kind: &str,
    p: &Pod,
    selector_of: impl Fn(&K) -> Option<Selector>,
) -> Vec<ObjectKey> {
    if let Some(owner) = cache::controller_key(p, kind) {
        return vec![owner];
    }
    if controller_uid(&p.metadata).is_some() || !is_active(p) {
        return Vec::new();
    }
    let ns = p.metadata.namespace.as_deref().unwrap_or("");
    let labels = p.metadata.labels.clone().unwrap_or_default();
    owners
        .by_index(cache::NAMESPACE, ns)
        .iter()
        .filter(|o| selector_of(o).is_some_and(|sel| !sel.is_empty() && sel.matches(&labels)))
        .map(|o| ObjectKey::of(&**o))
        .collect()
}

/// Reconciles one ReplicaSet.
pub struct ReplicaSetController {
    ctx: Arc<Ctx>,
}

impl Reconciler for ReplicaSetController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(rs) = self.ctx.replicasets.get(&key.namespace, &key.name) else {
            return Ok(Action::done()); // gone: the garbage collector takes its pods
        };
        reconcile(&self.ctx, &rs).await
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.replicasets.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.pods.wait_for(revision, timeout).await;
    }
}

async fn reconcile(ctx: &Ctx, rs: &ReplicaSet) -> Result<Action, ReconcileError> {
    let Some(synced) = sync(ctx, rs, &OWNER).await else {
        return Ok(Action::done());
    };
    let mut write = Ok(());
    if rs.status.as_ref() != Some(&synced.status) {
        let mut next = rs.clone();
        next.status = Some(synced.status.clone());
        let api: Api<ReplicaSet> = Api::new(
            ctx.client.clone(),
            rs.metadata.namespace.as_deref().unwrap_or(""),
        );
        write = api.update_status(&next).await.map(|_| ());
    }
    synced.outcome(write)
}
