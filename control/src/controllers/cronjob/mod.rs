//! The CronJob controller: makes a Job from the template at each scheduled time (in the
//! CronJob's `timeZone`), as `concurrencyPolicy` allows (Allow, Forbid: skip while one runs,
//! Replace: the running one is deleted), not later than `startingDeadlineSeconds`, keeps
//! the history the limits ask for, and does nothing while suspended.
//!
//! Keyed by CronJob, requeued for its next scheduled time; a Job's change reaches its
//! CronJob. The schedule survives leader changes: it is read from the CronJob's status and
//! its Jobs' names ([`sync`]).
//!
//! - [`schedule`]: the cron syntax; [`sync`]: one pass.

pub mod schedule;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};

use super::cache;
use super::context::Ctx;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The controller's name.
pub const NAME: &str = "cronjob";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    Runner::new(
        CronJobController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.cronjobs.subscribe(), |cj: &CronJob| {
        vec![ObjectKey::of(cj)]
    })
    .watches(ctx.jobs.subscribe(), |j: &Job| {
        cache::controller_key(j, "CronJob").into_iter().collect()
    })
    .run()
    .await
}

/// Reconciles one CronJob.
pub struct CronJobController {
    ctx: Arc<Ctx>,
}

impl Reconciler for CronJobController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(cj) = self.ctx.cronjobs.get(&key.namespace, &key.name) else {
            return Ok(Action::done()); // gone: the garbage collector takes its Jobs
        };
        sync::sync(&self.ctx, &cj).await
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.cronjobs.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.jobs.wait_for(revision, timeout).await;
    }
}
