//! One pass over a Job: count its pods, decide whether it completed or failed, keep
//! `parallelism` pods running (after a back-off once pods failed), and report the status.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_proto::objects::{Api, DeleteParams};
use skiff_proto::pb::delete_object_request::Propagation;

use super::pods::{self, count, index_of, new_pod, Counted};
use super::status::{self, Outcome};
use crate::controllers::cache::controlled_by;
use crate::controllers::context::Ctx;
use crate::controllers::events::Involved;
use crate::controllers::ownership::revision_of;
use crate::controllers::replicaset::deletion_rank;
use crate::controllers::runner::writes::Writes;
use crate::controllers::runner::{Action, ReconcileError};

/// The first wait before a pod replaces a failed one, doubled per failure (Kubernetes').
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest such wait.
const BACKOFF_MAX: Duration = Duration::from_secs(360);
/// Component name on Events.
const COMPONENT: &str = "job-controller";

fn involved(job: &Job) -> Involved {
    Involved {
        kind: "Job".into(),
        api_version: "batch/v1".into(),
        namespace: job.metadata.namespace.clone().unwrap_or_default(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
    }
}

/// How long to wait, from the last failure, before a pod replaces one of `failed_pods`.
fn backoff(failed_pods: usize) -> Duration {
    let doublings = failed_pods.saturating_sub(1).min(16) as u32;
    (BACKOFF_BASE * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

/// Run one pass over `job`.
pub async fn sync(ctx: &Ctx, job: &Job) -> Result<Action, ReconcileError> {
    let Some(spec) = job.spec.as_ref() else {
        return Ok(Action::done());
    };
    // One being deleted is the garbage collector's: its pods go with it.
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::done());
    }
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let owned = controlled_by(&ctx.pods, &ns, &uid);
    let pods_api: Api<Pod> = Api::new(ctx.client.clone(), &ns);
    let now = jiff::Timestamp::now();
    let mut writes = Writes::default();
    let old = job.status.clone().unwrap_or_default();
    let mut next = old.clone();

    if let Some(ended) = status::finished_at(&old) {
        let running: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| crate::controllers::ownership::is_active(p))
            .cloned()
            .collect();
        delete_pods(&pods_api, &running, &mut writes).await;
        return after_finish(ctx, job, ended, now, writes).await;
    }

    let restart_policy = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Never".into());
    let indexed =
        (spec.completion_mode.as_deref() == Some("Indexed")).then(|| spec.completions.unwrap_or(0));
    let counted = count(&owned, &restart_policy, indexed);
    let suspended = spec.suspend == Some(true);
    let succeeded = if indexed.is_some() {
        counted.completed_indexes.len()
    } else {
        counted.succeeded
    };
    if !suspended && next.start_time.is_none() {
        next.start_time = Some(Time(now));
    }

    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0) as usize;
    let deadline = spec
        .active_deadline_seconds
        .zip(next.start_time.as_ref())
        .filter(|_| !suspended)
        .map(|(secs, start)| start.0.as_second() + secs);
    let done = match spec.completions {
        Some(n) => succeeded >= n.max(0) as usize,
        None => succeeded > 0 && counted.active.is_empty(),
    };
    let ended: Option<Outcome> = if counted.failed > backoff_limit {
        Some(status::BACKOFF_LIMIT)
    } else if deadline.is_some_and(|d| now.as_second() >= d) {
        Some(status::DEADLINE)
    } else if done {
        Some(status::COMPLETE)
    } else {
        None
    };

    let mut active = counted.active.len();
    if let Some(outcome) = ended {
        active -= delete_pods(&pods_api, &counted.active, &mut writes).await;
        status::set_condition(&mut next, &outcome, true, now);
        if outcome.type_ == "Complete" {
            next.completion_time = Some(Time(now));
        }
        let kind = if outcome.type_ == "Complete" {
            "Normal"
        } else {
            "Warning"
        };
        let reason = if outcome.type_ == "Complete" {
            "Completed"
        } else {
            outcome.reason
        };
        ctx.recorder
            .record(&involved(job), kind, reason, outcome.message, COMPONENT);
    } else if suspended {
        active -= delete_pods(&pods_api, &counted.active, &mut writes).await;
        if !status::is(&old, "Suspended") {
            ctx.recorder.record(
                &involved(job),
                "Normal",
                "Suspended",
                "Job suspended",
                COMPONENT,
            );
        }
        status::set_condition(&mut next, &status::SUSPENDED, true, now);
    } else {
        if status::is(&old, "Suspended") {
            // Resumed: the deadline counts from now.
            next.start_time = Some(Time(now));
            ctx.recorder.record(
                &involved(job),
                "Normal",
                "Resumed",
                "Job resumed",
                COMPONENT,
            );
        }
        status::set_condition(&mut next, &status::SUSPENDED, false, now);
        active = keep_running(ctx, job, &counted, indexed, &pods_api, now, &mut writes).await;
        if let Some(d) = deadline {
            writes.again_in(Duration::from_secs((d - now.as_second()).max(0) as u64 + 1));
        }
    }

    next.active = Some(active as i32);
    next.ready = Some(counted.ready as i32);
    next.succeeded = Some(succeeded as i32);
    next.failed = Some(counted.failed as i32);
    next.terminating = Some(counted.terminating as i32);
    if indexed.is_some() {
        next.completed_indexes = Some(pods::format_indexes(&counted.completed_indexes));
    }
    if next != old {
        let mut updated = job.clone();
        updated.status = Some(next);
        let api: Api<Job> = Api::new(ctx.client.clone(), &ns);
        writes.note(api.update_status(&updated).await, |_| 0);
    }
    writes.outcome()
}

/// Keep the pods `job` wants running: create the missing (after the back-off when pods
/// failed), delete the excess. The count active afterwards.
async fn keep_running(
    ctx: &Ctx,
    job: &Job,
    counted: &Counted,
    indexed: Option<i32>,
    pods_api: &Api<Pod>,
    now: jiff::Timestamp,
    writes: &mut Writes,
) -> usize {
    let Some(spec) = job.spec.as_ref() else {
        return counted.active.len();
    };
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
    let replace_after_termination = spec.pod_replacement_policy.as_deref() == Some("Failed");
    let mut active: Vec<Arc<Pod>> = counted.active.clone();

    // Indexed: one pod per index still to complete; duplicates and pods of done indexes go.
    let mut pending: Vec<i32> = Vec::new();
    let mut excess: Vec<Arc<Pod>> = Vec::new();
    let want = match indexed {
        Some(n) => {
            let mut held = BTreeSet::new();
            active.sort_by_key(|p| std::cmp::Reverse(deletion_rank(p)));
            active.retain(|p| match index_of(p, n) {
                Some(i) if !counted.completed_indexes.contains(&i) && held.insert(i) => true,
                _ => {
                    excess.push(p.clone());
                    false
                }
            });
            pending = (0..n)
                .filter(|i| !counted.completed_indexes.contains(i) && !held.contains(i))
                .collect();
            parallelism.min(n as usize - counted.completed_indexes.len())
        }
        None => match spec.completions {
            Some(n) => parallelism.min((n.max(0) as usize).saturating_sub(counted.succeeded)),
            // A work queue: once one pod succeeded, no new pods.
            None if counted.succeeded > 0 => 0,
            None => parallelism,
        },
    };
    let busy = active.len()
        + if replace_after_termination {
            counted.terminating
        } else {
            0
        };
    if busy > want {
        active.sort_by_key(|p| deletion_rank(p));
        let n = (busy - want).min(active.len());
        excess.extend(active.drain(..n));
    }
    let deleted = delete_pods(pods_api, &excess, writes).await;
    let mut running = counted.active.len() - deleted;
    if busy >= want {
        return running;
    }
    if counted.failed_pods > 0 {
        let wait = backoff(counted.failed_pods);
        let since = counted.last_failure.unwrap_or(0);
        let ready_at = since + wait.as_secs() as i64;
        if now.as_second() < ready_at {
            writes.again_in(Duration::from_secs((ready_at - now.as_second()) as u64));
            return running;
        }
    }
    let missing = want - busy;
    let indexes: Vec<Option<i32>> = match indexed {
        Some(_) => pending.into_iter().take(missing).map(Some).collect(),
        None => vec![None; missing],
    };
    let creates = indexes.into_iter().map(|index| {
        let pod = new_pod(job, index);
        let api = pods_api.clone();
        async move { api.create(&pod).await }
    });
    // Creates go out together, so the store coalesces them into few Raft entries.
    for r in futures::future::join_all(creates).await {
        let name = r.as_ref().ok().and_then(|p| p.metadata.name.clone());
        if writes.note(r, |p| revision_of(&p.metadata)) {
            running += 1;
            if let Some(n) = name {
                ctx.recorder.record(
                    &involved(job),
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {n}"),
                    COMPONENT,
                );
            }
        }
    }
    running
}

/// Delete `pods`; how many went.
async fn delete_pods(api: &Api<Pod>, pods: &[Arc<Pod>], writes: &mut Writes) -> usize {
    let deletes = pods.iter().map(|p| {
        let name = p.metadata.name.clone().unwrap_or_default();
        async move { api.delete(&name, &DeleteParams::default()).await }
    });
    let mut gone = 0;
    for r in futures::future::join_all(deletes).await {
        if writes.note(r, |_| 0) {
            gone += 1;
        }
    }
    gone
}

/// A finished Job: removed once `ttlSecondsAfterFinished` has passed since it `ended`.
async fn after_finish(
    ctx: &Ctx,
    job: &Job,
    ended: jiff::Timestamp,
    now: jiff::Timestamp,
    mut writes: Writes,
) -> Result<Action, ReconcileError> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return writes.outcome();
    };
    let expires = ended.as_second() + i64::from(ttl);
    if now.as_second() < expires {
        writes.again_in(Duration::from_secs((expires - now.as_second()) as u64 + 1));
        return writes.outcome();
    }
    tracing::info!("finished longer than its ttlSecondsAfterFinished; deleting");
    let api: Api<Job> = Api::new(
        ctx.client.clone(),
        job.metadata.namespace.as_deref().unwrap_or(""),
    );
    let params = DeleteParams {
        uid: job.metadata.uid.clone().unwrap_or_default(),
        propagation: Propagation::Background,
        ..Default::default()
    };
    writes.note(
        api.delete(job.metadata.name.as_deref().unwrap_or(""), &params)
            .await,
        |_| 0,
    );
    writes.outcome()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_per_failure_up_to_six_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(80));
        assert_eq!(backoff(9), Duration::from_secs(360));
        assert_eq!(backoff(1000), Duration::from_secs(360));
    }
}
