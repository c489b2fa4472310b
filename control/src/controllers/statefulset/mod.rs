//! The StatefulSet controller: pods with stable identities `SET-0..N-1`, made in order and
//! removed in reverse (OrderedReady) or all at once (Parallel), each known by its name in
//! the governing headless Service and mounting its own claims, which outlive it (or not, as
//! `persistentVolumeClaimRetentionPolicy` says); a template change rolls out from the
//! highest ordinal down to the partition, one pod at a time, or on delete; each template run
//! is kept as a ControllerRevision.
//!
//! Keyed by StatefulSet; a pod's or revision's change reaches its controlling set.
//!
//! - [`identity`]: names, ordinals, the pods and claims made; [`revisions`]: the templates
//!   run; [`sync`]: one pass.

pub mod identity;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::Pod;

use super::cache;
use super::context::Ctx;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The controller's name.
pub const NAME: &str = "statefulset";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    Runner::new(
        StatefulSetController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.statefulsets.subscribe(), |s: &StatefulSet| {
        vec![ObjectKey::of(s)]
    })
    .watches(ctx.pods.subscribe(), |p: &Pod| {
        cache::controller_key(p, "StatefulSet")
            .into_iter()
            .collect()
    })
    .watches(ctx.revisions.subscribe(), |r: &ControllerRevision| {
        cache::controller_key(r, "StatefulSet")
            .into_iter()
            .collect()
    })
    .run()
    .await
}

/// Reconciles one StatefulSet.
pub struct StatefulSetController {
    ctx: Arc<Ctx>,
}

impl Reconciler for StatefulSetController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(sts) = self.ctx.statefulsets.get(&key.namespace, &key.name) else {
            return Ok(Action::done()); // gone: the garbage collector takes its pods
        };
        sync::sync(&self.ctx, &sts).await
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.statefulsets.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.pods.wait_for(revision, timeout).await;
        self.ctx.revisions.wait_for(revision, timeout).await;
        self.ctx.claims.wait_for(revision, timeout).await;
    }
}
