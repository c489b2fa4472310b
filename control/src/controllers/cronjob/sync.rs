//! One pass over a CronJob: note which of its Jobs run and which finished, trim the
//! history, and start the Job of the most recent scheduled time not yet run.
//!
//! A scheduled time's Job has a name made from that time (`NAME-<minutes since 1970>`), so
//! a leader that restarts the pass after another leader's (or its own) create finds the Job
//! there: a run is never doubled, and a time missed while no leader ran is caught up (within
//! `startingDeadlineSeconds`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_proto::objects::{Api, ApiError, DeleteParams};
use skiff_proto::pb::delete_object_request::Propagation;
use skiff_proto::ClientError;

use super::schedule::Schedule;
use crate::controllers::cache::controlled_by;
use crate::controllers::context::Ctx;
use crate::controllers::events::Involved;
use crate::controllers::job::status::finished_at;
use crate::controllers::ownership::{controller_ref, created_at, revision_of};
use crate::controllers::runner::{Action, ReconcileError};

/// The annotation a Job made on schedule carries: the time it was scheduled for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Component name on Events.
const COMPONENT: &str = "cronjob-controller";

fn involved(cj: &CronJob) -> Involved {
    Involved {
        kind: "CronJob".into(),
        api_version: "batch/v1".into(),
        namespace: cj.metadata.namespace.clone().unwrap_or_default(),
        name: cj.metadata.name.clone().unwrap_or_default(),
        uid: cj.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The name of the Job scheduled for `t`.
pub fn job_name(cron_job: &str, t: jiff::Timestamp) -> String {
    format!("{cron_job}-{}", t.as_second().div_euclid(60))
}

/// A Job made from `cj`'s template for scheduled time `t`.
pub fn job_from_template(cj: &CronJob, name: String, scheduled: Option<jiff::Timestamp>) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = Some(name);
    meta.namespace = cj.metadata.namespace.clone();
    meta.owner_references = Some(vec![controller_ref("batch/v1", "CronJob", &cj.metadata)]);
    if let Some(t) = scheduled {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(SCHEDULED_AT.into(), t.to_string());
    }
    Job {
        metadata: meta,
        spec: template.spec,
        status: None,
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

/// Run one pass over `cj`.
pub async fn sync(ctx: &Ctx, cj: &CronJob) -> Result<Action, ReconcileError> {
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(Action::done());
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::done());
    }
    let schedule = match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            // Admission refuses these; one stored before a rule changed waits for a fix.
            ctx.recorder.record(
                &involved(cj),
                "Warning",
                "InvalidSchedule",
                &e.to_string(),
                COMPONENT,
            );
            return Ok(Action::done());
        }
    };
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::new(ctx.client.clone(), &ns);
    let mut jobs = controlled_by(&ctx.jobs, &ns, &uid);
    jobs.sort_by_key(|j| created_at(&j.metadata));
    let now = jiff::Timestamp::now();
    let old = cj.status.clone().unwrap_or_default();
    let mut next = old.clone();
    let mut last = 0;
    let mut failed: Option<ApiError> = None;

    let (done, mut running): (Vec<Arc<Job>>, Vec<Arc<Job>>) = jobs
        .iter()
        .cloned()
        .partition(|j| j.status.as_ref().and_then(finished_at).is_some());
    if let Some(t) = done
        .iter()
        .filter(|j| succeeded(j))
        .filter_map(|j| j.status.as_ref().and_then(finished_at))
        .max()
    {
        if next.last_successful_time.as_ref().is_none_or(|l| l.0 < t) {
            next.last_successful_time = Some(Time(t));
        }
    }
    trim_history(ctx, cj, &done, &jobs_api, &mut failed).await;

    let mut again = schedule.next_after(now).map(|t| {
        Duration::from_millis((t.as_millisecond() - now.as_millisecond()).max(0) as u64 + 100)
    });
    if spec.suspend != Some(true) {
        let since = next
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(|| {
                jiff::Timestamp::from_second(created_at(&cj.metadata)).unwrap_or(now)
            });
        let since = match spec.starting_deadline_seconds {
            Some(d) => since.max(jiff::Timestamp::from_second(now.as_second() - d).unwrap_or(now)),
            None => since,
        };
        if let Some(t) = schedule.last_at_or_before(now).filter(|t| *t > since) {
            let job_name = job_name(&name, t);
            let ran = jobs
                .iter()
                .any(|j| j.metadata.name.as_deref() == Some(job_name.as_str()));
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if ran {
                next.last_schedule_time = Some(Time(t));
            } else if policy == "Forbid" && !running.is_empty() {
                tracing::debug!(scheduled = %t, "a run is still active and the policy is Forbid; skipped");
                // Looked at again when the running Job finishes, and at the next time.
            } else {
                if policy == "Replace" {
                    for j in std::mem::take(&mut running) {
                        delete_job(ctx, cj, &jobs_api, &j, &mut failed).await;
                    }
                }
                let job = job_from_template(cj, job_name.clone(), Some(t));
                match jobs_api.create(&job).await {
                    Ok(made) => {
                        last = last.max(revision_of(&made.metadata));
                        ctx.recorder.record(
                            &involved(cj),
                            "Normal",
                            "SuccessfulCreate",
                            &format!("Created job {job_name}"),
                            COMPONENT,
                        );
                        running.push(Arc::new(made));
                        next.last_schedule_time = Some(Time(t));
                    }
                    // Made already, by an earlier pass whose answer was lost.
                    Err(ApiError::Client(ClientError::Rejected(s)))
                        if s.code() == tonic::Code::AlreadyExists =>
                    {
                        next.last_schedule_time = Some(Time(t));
                        again = Some(Duration::from_millis(500));
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
    }
    let active: Vec<ObjectReference> = running.iter().map(|j| reference(j)).collect();
    next.active = (!active.is_empty()).then_some(active);
    if next != old {
        let mut updated = cj.clone();
        updated.status = Some(next);
        let api: Api<CronJob> = Api::new(ctx.client.clone(), &ns);
        if let Err(e) = api.update_status(&updated).await {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        return Err(ReconcileError::after_write(last, e));
    }
    let action = Action::done().wrote(last);
    Ok(match again {
        Some(d) => action.or_requeue_after(d),
        None => action,
    })
}

/// Delete the oldest finished Jobs past the history limits.
async fn trim_history(
    ctx: &Ctx,
    cj: &CronJob,
    done: &[Arc<Job>],
    api: &Api<Job>,
    failed: &mut Option<ApiError>,
) {
    let Some(spec) = cj.spec.as_ref() else {
        return;
    };
    for (keep, ok) in [
        (spec.successful_jobs_history_limit.unwrap_or(3), true),
        (spec.failed_jobs_history_limit.unwrap_or(1), false),
    ] {
        let mut of_kind: Vec<&Arc<Job>> = done.iter().filter(|j| succeeded(j) == ok).collect();
        of_kind.sort_by_key(|j| j.status.as_ref().and_then(finished_at));
        let excess = of_kind.len().saturating_sub(keep.max(0) as usize);
        for j in of_kind.into_iter().take(excess) {
            delete_job(ctx, cj, api, j, failed).await;
        }
    }
}

async fn delete_job(
    ctx: &Ctx,
    cj: &CronJob,
    api: &Api<Job>,
    job: &Job,
    failed: &mut Option<ApiError>,
) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        uid: job.metadata.uid.clone().unwrap_or_default(),
        propagation: Propagation::Background,
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => ctx.recorder.record(
            &involved(cj),
            "Normal",
            "SuccessfulDelete",
            &format!("Deleted job {name}"),
            COMPONENT,
        ),
        Err(ApiError::Client(ClientError::Rejected(s))) if s.code() == tonic::Code::NotFound => {}
        Err(e) => {
            failed.get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_time_names_its_job() {
        let t: jiff::Timestamp = "2026-12-06T10:05:00Z".parse().unwrap();
        assert_eq!(
            job_name("backup", t),
            format!("backup-{}", t.as_second() / 60)
        );
        let cj = CronJob {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("backup".into()),
                namespace: Some("ops".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(k8s_openapi::api::batch::v1::CronJobStatus::default()),
        };
        let j = job_from_template(&cj, job_name("backup", t), Some(t));
        assert_eq!(j.metadata.namespace.as_deref(), Some("ops"));
        assert_eq!(
            j.metadata.annotations.unwrap()[SCHEDULED_AT],
            "2026-12-06T10:05:00Z"
        );
        assert_eq!(j.metadata.owner_references.unwrap()[0].kind, "CronJob");
    }
}
