//! Jobs and CronJobs (batch/v1): Kubernetes' defaults (one completion, a back-off limit of 6,
//! a selector generated from the Job's uid) and validation. Fields Skiff does not carry out
//! (pod failure and success policies, per-index back-off, `managedBy`) are refused with their
//! path, never stored and ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::super::error::FieldError;
use super::pod;
use super::workloads::{non_negative, validate_selector_and_template, validate_template_spec};
use crate::controllers::cronjob::schedule;

/// The label a Job's generated selector matches: the Job's uid.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label naming a pod's Job.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The older spellings of both, which Kubernetes still writes.
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

/// Largest `completions` of an Indexed Job, as Kubernetes allows.
const MAX_INDEXED_COMPLETIONS: i32 = 100_000;
/// Longest CronJob name: its Jobs add an 11-character suffix and must stay within 63.
const MAX_CRON_JOB_NAME: usize = 52;

/// Policies a Job's pods may restart with.
const JOB_RESTART_POLICIES: [&str; 2] = ["OnFailure", "Never"];

/// Defaults of a Job spec, as Kubernetes gives them (shared with CronJobs' templates).
fn default_job_spec(spec: &mut JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    if let Some(spec) = spec.template.spec.as_mut() {
        pod::default_spec(spec);
    }
}

/// The selector Kubernetes generates for a Job with uid `uid`.
fn generated_selector(uid: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(CONTROLLER_UID.into(), uid.into())])),
        match_expressions: None,
    }
}

/// Defaults of a Job: those of its spec, and unless `manualSelector` says otherwise a
/// selector of its uid, whose labels (and the Job's name) its pod template carries.
pub fn default_job(job: &mut Job) {
    let (Some(uid), Some(name)) = (job.metadata.uid.clone(), job.metadata.name.clone()) else {
        return;
    };
    let Some(spec) = job.spec.as_mut() else {
        return;
    };
    default_job_spec(spec);
    if spec.manual_selector == Some(true) {
        return;
    }
    spec.selector
        .get_or_insert_with(|| generated_selector(&uid));
    let labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    for (k, v) in [
        (CONTROLLER_UID, &uid),
        (LEGACY_CONTROLLER_UID, &uid),
        (JOB_NAME, &name),
        (LEGACY_JOB_NAME, &name),
    ] {
        labels.entry(k.into()).or_insert_with(|| v.clone());
    }
}

/// Refuse the Job fields whose behaviour Skiff does not carry out.
fn unsupported(spec: &JobSpec, path: &str, errors: &mut Vec<FieldError>) {
    for (field, set) in [
        ("podFailurePolicy", spec.pod_failure_policy.is_some()),
        ("successPolicy", spec.success_policy.is_some()),
        (
            "backoffLimitPerIndex",
            spec.backoff_limit_per_index.is_some(),
        ),
        ("maxFailedIndexes", spec.max_failed_indexes.is_some()),
        ("managedBy", spec.managed_by.is_some()),
    ] {
        if set {
            errors.push(FieldError::new(
                format!("{path}.{field}"),
                "Forbidden: not supported by Skiff",
            ));
        }
    }
}

/// Check a Job spec's counts, modes and deadlines at `path` (`spec`, or
/// `spec.jobTemplate.spec`).
fn validate_job_counts(spec: &JobSpec, path: &str, errors: &mut Vec<FieldError>) {
    non_negative(errors, &format!("{path}.parallelism"), spec.parallelism);
    non_negative(errors, &format!("{path}.completions"), spec.completions);
    non_negative(errors, &format!("{path}.backoffLimit"), spec.backoff_limit);
    if let Some(d) = spec.active_deadline_seconds.filter(|d| *d <= 0) {
        errors.push(FieldError::new(
            format!("{path}.activeDeadlineSeconds"),
            format!("Invalid value: {d}: must be greater than 0"),
        ));
    }
    non_negative(
        errors,
        &format!("{path}.ttlSecondsAfterFinished"),
        spec.ttl_seconds_after_finished,
    );
    match spec.completion_mode.as_deref() {
        Some("NonIndexed") | None => {}
        Some("Indexed") => match spec.completions {
            None => errors.push(FieldError::new(
                format!("{path}.completions"),
                "Required value: when completion mode is Indexed",
            )),
            Some(c) if c > MAX_INDEXED_COMPLETIONS => errors.push(FieldError::new(
                format!("{path}.completions"),
                format!(
                    "Invalid value: {c}: must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion mode is Indexed"
                ),
            )),
            Some(_) => {}
        },
        Some(other) => errors.push(FieldError::new(
            format!("{path}.completionMode"),
            format!("Unsupported value: {other:?}: supported values: \"NonIndexed\", \"Indexed\""),
        )),
    }
    match spec.pod_replacement_policy.as_deref() {
        Some("TerminatingOrFailed" | "Failed") | None => {}
        Some(other) => errors.push(FieldError::new(
            format!("{path}.podReplacementPolicy"),
            format!("Unsupported value: {other:?}: supported values: \"TerminatingOrFailed\", \"Failed\""),
        )),
    }
    unsupported(spec, path, errors);
}

/// Validate a Job.
pub fn validate_job(job: &Job) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &job.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    validate_job_counts(spec, "spec", &mut errors);
    let Some(selector) = &spec.selector else {
        errors.push(FieldError::new("spec.selector", "Required value"));
        return errors;
    };
    if spec.manual_selector != Some(true) {
        let uid = job.metadata.uid.as_deref().unwrap_or("");
        if *selector != generated_selector(uid) {
            errors.push(FieldError::new(
                "spec.selector",
                "Invalid value: `selector` not auto-generated (set `manualSelector: true` to choose it)",
            ));
        }
    }
    validate_selector_and_template(
        selector,
        Some(&spec.template),
        &JOB_RESTART_POLICIES,
        &mut errors,
    );
    errors
}

/// What of a Job may not change once it exists: its selector, pod template, completion count
/// and mode. The changes found, by field.
pub fn immutable_job_changes(current: &Job, next: &Job) -> Vec<FieldError> {
    let (Some(a), Some(b)) = (&current.spec, &next.spec) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let mut check = |field: &str, same: bool| {
        if !same {
            errors.push(FieldError::new(field, "Invalid value: field is immutable"));
        }
    };
    check("spec.selector", a.selector == b.selector);
    check("spec.template", a.template == b.template);
    check("spec.completions", a.completions == b.completions);
    check(
        "spec.completionMode",
        a.completion_mode == b.completion_mode,
    );
    errors
}

/// Defaults of a CronJob.
pub fn default_cron_job(cj: &mut CronJob) {
    let Some(spec) = cj.spec.as_mut() else {
        return;
    };
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".into());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if let Some(job) = spec.job_template.spec.as_mut() {
        default_job_spec(job);
    }
}

/// Validate a CronJob: its schedule and time zone, policies and Job template.
pub fn validate_cron_job(cj: &CronJob) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(name) = cj
        .metadata
        .name
        .as_deref()
        .filter(|n| n.len() > MAX_CRON_JOB_NAME)
    {
        errors.push(FieldError::new(
            "metadata.name",
            format!("Invalid value: {name:?}: must be no more than {MAX_CRON_JOB_NAME} characters"),
        ));
    }
    let Some(spec) = &cj.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    if let Err(e) = schedule::Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        errors.push(FieldError::new(e.field(), e.to_string()));
    }
    match spec.concurrency_policy.as_deref() {
        Some("Allow" | "Forbid" | "Replace") | None => {}
        Some(other) => errors.push(FieldError::new(
            "spec.concurrencyPolicy",
            format!(
                "Unsupported value: {other:?}: supported values: \"Allow\", \"Forbid\", \"Replace\""
            ),
        )),
    }
    if let Some(d) = spec.starting_deadline_seconds.filter(|d| *d < 0) {
        errors.push(FieldError::new(
            "spec.startingDeadlineSeconds",
            format!("Invalid value: {d}: must be greater than or equal to 0"),
        ));
    }
    non_negative(
        &mut errors,
        "spec.successfulJobsHistoryLimit",
        spec.successful_jobs_history_limit,
    );
    non_negative(
        &mut errors,
        "spec.failedJobsHistoryLimit",
        spec.failed_jobs_history_limit,
    );
    let Some(job) = &spec.job_template.spec else {
        errors.push(FieldError::new("spec.jobTemplate.spec", "Required value"));
        return errors;
    };
    validate_job_counts(job, "spec.jobTemplate.spec", &mut errors);
    if job.selector.is_some() || job.manual_selector.is_some() {
        errors.push(FieldError::new(
            "spec.jobTemplate.spec.selector",
            "Forbidden: a CronJob's Jobs get their selector generated",
        ));
    }
    validate_template_spec(
        &job.template,
        "spec.jobTemplate.spec.template",
        &JOB_RESTART_POLICIES,
        &mut errors,
    );
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::objects::error::Result;
    use crate::objects::kinds::Registry;

    fn admit_as(resource: &str, obj: Value) -> Result<Value> {
        Registry::builtin(Default::default())
            .resolve(resource)?
            .admit(obj)
    }

    fn job(spec: Value) -> Value {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox:1.36"}]}});
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "pi", "uid": "u-1"}, "spec": spec})
    }

    #[test]
    fn a_job_gets_kubernetes_defaults_and_a_selector_of_its_uid() {
        let j = admit_as("jobs", job(json!({}))).unwrap();
        let spec = &j["spec"];
        assert_eq!(
            (
                &spec["completions"],
                &spec["parallelism"],
                &spec["backoffLimit"]
            ),
            (&json!(1), &json!(1), &json!(6))
        );
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(
            spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u-1"
        );
        let labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        // Defaulting twice changes nothing: re-applying stays "unchanged".
        assert_eq!(admit_as("jobs", j.clone()).unwrap(), j);
        // A work queue: parallelism without completions keeps completions unset.
        let q = admit_as("jobs", job(json!({"parallelism": 3}))).unwrap();
        assert!(q["spec"]["completions"].is_null());
    }

    #[test]
    fn job_fields_skiff_cannot_honour_or_get_wrong_are_refused_by_path() {
        for (spec, field, says) in [
            (
                json!({"completionMode": "Indexed", "completions": null, "parallelism": 2}),
                "spec.completions",
                "Required value",
            ),
            (
                json!({"backoffLimit": -1}),
                "spec.backoffLimit",
                "greater than or equal to 0",
            ),
            (
                json!({"activeDeadlineSeconds": 0}),
                "spec.activeDeadlineSeconds",
                "greater than 0",
            ),
            (
                json!({"podFailurePolicy": {"rules": []}}),
                "spec.podFailurePolicy",
                "not supported",
            ),
            (
                json!({"completionMode": "Sometimes"}),
                "spec.completionMode",
                "Unsupported value",
            ),
            (
                json!({"selector": {"matchLabels": {"a": "b"}}}),
                "spec.selector",
                "not auto-generated",
            ),
        ] {
            let e = admit_as("jobs", job(spec.clone()))
                .expect_err("refused")
                .to_string();
            assert!(e.contains(field) && e.contains(says), "{spec}: {e}");
        }
        let mut always = job(json!({}));
        always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let e = admit_as("jobs", always).expect_err("refused").to_string();
        assert!(
            e.contains("spec.template.spec.restartPolicy") && e.contains("\"OnFailure\""),
            "{e}"
        );
    }

    #[test]
    fn a_jobs_template_and_completions_do_not_change_but_its_parallelism_does() {
        let registry = Registry::builtin(Default::default());
        let jobs = registry.resolve("jobs").unwrap();
        let current = jobs.admit(job(json!({"completions": 4}))).unwrap();
        let mut wider = current.clone();
        wider["spec"]["parallelism"] = json!(3);
        assert!(jobs
            .check_update(&current, &jobs.admit(wider).unwrap())
            .is_ok());
        let mut other = current.clone();
        other["spec"]["completions"] = json!(5);
        other["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:1.37");
        let e = jobs
            .check_update(&current, &jobs.admit(other).unwrap())
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("spec.completions")
                && e.contains("spec.template")
                && e.contains("immutable"),
            "{e}"
        );
    }

    #[test]
    fn a_cron_job_gets_defaults_and_its_schedule_and_zone_are_checked() {
        let cj = |schedule: &str, zone: Value| {
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
                   "metadata": {"name": "nightly"},
                   "spec": {"schedule": schedule, "timeZone": zone,
                            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                                "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}})
        };
        let ok = admit_as("cronjobs", cj("0 3 * * *", json!("Europe/Paris"))).unwrap();
        assert_eq!(ok["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(ok["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(ok["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(ok["spec"]["jobTemplate"]["spec"]["backoffLimit"], 6);
        let e = admit_as("cronjobs", cj("0 3 * *", Value::Null))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("spec.schedule") && e.contains("5 fields"), "{e}");
        let e = admit_as("cronjobs", cj("0 3 * * *", json!("Nowhere/Special")))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("spec.timeZone"), "{e}");
        let mut long = cj("0 3 * * *", Value::Null);
        long["metadata"]["name"] = json!("n".repeat(53));
        let e = admit_as("cronjobs", long).expect_err("refused").to_string();
        assert!(e.contains("metadata.name") && e.contains("52"), "{e}");
    }
}
