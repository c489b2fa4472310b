//! A Job's conditions: how it finished (Complete or Failed, with the reason), whether it is
//! suspended, and when.

use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How a Job ended, or why it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `Complete`, `Failed` or `Suspended`.
    pub type_: &'static str,
    /// Why, as Kubernetes names it (`BackoffLimitExceeded`, ...).
    pub reason: &'static str,
    /// For people.
    pub message: &'static str,
}

/// Every pod needed succeeded.
pub const COMPLETE: Outcome = Outcome {
    type_: "Complete",
    reason: "CompletionsReached",
    message: "Reached expected number of succeeded pods",
};
/// Pods failed more often than `backoffLimit` allows.
pub const BACKOFF_LIMIT: Outcome = Outcome {
    type_: "Failed",
    reason: "BackoffLimitExceeded",
    message: "Job has reached the specified backoff limit",
};
/// The Job ran longer than `activeDeadlineSeconds`.
pub const DEADLINE: Outcome = Outcome {
    type_: "Failed",
    reason: "DeadlineExceeded",
    message: "Job was active longer than specified deadline",
};
/// `suspend` is set.
pub const SUSPENDED: Outcome = Outcome {
    type_: "Suspended",
    reason: "JobSuspended",
    message: "Job suspended",
};

/// The condition of `type_` if it is True.
fn true_condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// When the Job finished (Complete or Failed), if it has.
pub fn finished_at(status: &JobStatus) -> Option<jiff::Timestamp> {
    ["Complete", "Failed"].iter().find_map(|t| {
        let c = true_condition(status, t)?;
        Some(
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .or(status.completion_time.as_ref().map(|t| t.0))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        )
    })
}

/// Set condition `type_` to `value` (True or False), with `reason` and `message`; its
/// transition time moves only when its status changes.
pub fn set_condition(status: &mut JobStatus, outcome: &Outcome, value: bool, now: jiff::Timestamp) {
    let wanted = if value { "True" } else { "False" };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == outcome.type_) {
        Some(c) if c.status == wanted => {}
        Some(c) => {
            c.status = wanted.into();
            c.reason = Some(outcome.reason.into());
            c.message = Some(outcome.message.into());
            c.last_probe_time = Some(Time(now));
            c.last_transition_time = Some(Time(now));
        }
        None if !value => {}
        None => conditions.push(JobCondition {
            type_: outcome.type_.into(),
            status: wanted.into(),
            reason: Some(outcome.reason.into()),
            message: Some(outcome.message.into()),
            last_probe_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        }),
    }
}

/// Whether `status` shows condition `type_` True.
pub fn is(status: &JobStatus, type_: &str) -> bool {
    true_condition(status, type_).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_moves_its_time_only_when_it_turns() {
        let t1 = jiff::Timestamp::from_second(100).unwrap();
        let t2 = jiff::Timestamp::from_second(200).unwrap();
        let mut s = JobStatus::default();
        set_condition(&mut s, &SUSPENDED, false, t1);
        assert!(
            s.conditions.as_ref().unwrap().is_empty(),
            "False is not added"
        );
        set_condition(&mut s, &SUSPENDED, true, t1);
        set_condition(&mut s, &SUSPENDED, true, t2);
        assert!(is(&s, "Suspended"));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(c.last_transition_time.as_ref().unwrap().0, t1);
        set_condition(&mut s, &SUSPENDED, false, t2);
        assert!(!is(&s, "Suspended"));
        assert_eq!(finished_at(&s), None);
        set_condition(&mut s, &BACKOFF_LIMIT, true, t2);
        assert_eq!(finished_at(&s), Some(t2));
    }
}
