//! The Job controller: runs a Job's pods to completion. It keeps `parallelism` pods running
//! until `completions` succeeded (one per index, 0..completions, when Indexed, each told its
//! index through `JOB_COMPLETION_INDEX`), waits a doubling back-off before replacing failed
//! pods, fails the Job past `backoffLimit` failures or `activeDeadlineSeconds`, honours
//! `suspend`, and deletes a finished Job after `ttlSecondsAfterFinished`.
//!
//! Keyed by Job; a pod's change reaches its controlling Job. Counts are read from the pods
//! that exist (a finished pod deleted by hand is forgotten, as in Kubernetes before pod
//! tracking finalizers).
//!
//! - [`pods`]: counting pods and making them; [`status`]: conditions; [`sync`]: one pass.

pub mod pods;
pub mod status;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::cache;
use super::context::Ctx;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The controller's name.
pub const NAME: &str = "job";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    Runner::new(
        JobController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.jobs.subscribe(), |j: &Job| vec![ObjectKey::of(j)])
    .watches(ctx.pods.subscribe(), |p: &Pod| {
        cache::controller_key(p, "Job").into_iter().collect()
    })
    .run()
    .await
}

/// Reconciles one Job.
pub struct JobController {
    ctx: Arc<Ctx>,
}

impl Reconciler for JobController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(job) = self.ctx.jobs.get(&key.namespace, &key.name) else {
            return Ok(Action::done()); // gone: the garbage collector takes its pods
        };
        sync::sync(&self.ctx, &job).await
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.jobs.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.pods.wait_for(revision, timeout).await;
    }
}
