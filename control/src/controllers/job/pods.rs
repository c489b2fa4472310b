//! A Job's pods as the controller reads them (running, succeeded, failed, by completion
//! index) and the pods it makes from the template.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};

use crate::controllers::ownership::{is_ready, pod_from_template};

/// The annotation (and label) holding an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The variable an Indexed Job's containers read their index from.
const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// A pod's phase.
fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// An Indexed Job pod's completion index, if it carries a valid one below `completions`.
pub fn index_of(p: &Pod, completions: i32) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse::<i32>()
        .ok()
        .filter(|i| (0..completions).contains(i))
}

/// A Job's pods, sorted by what they count as.
#[derive(Debug, Default)]
pub struct Counted {
    /// Running or waiting to run, not being deleted.
    pub active: Vec<Arc<Pod>>,
    /// Being deleted and not finished (not counted as failed: with the pods that exist as
    /// the record, one deleted by hand is forgotten either way).
    pub terminating: usize,
    /// Finished with success.
    pub succeeded: usize,
    /// Failures: pods that failed, and with `OnFailure` each container restart.
    pub failed: usize,
    /// Pods that failed (what the back-off before a new pod counts).
    pub failed_pods: usize,
    /// Of the active pods, those ready.
    pub ready: usize,
    /// Indexes that a pod completed (Indexed Jobs).
    pub completed_indexes: BTreeSet<i32>,
    /// When the last failure happened (a failed pod's end), as Unix seconds.
    pub last_failure: Option<i64>,
}

/// Count `pods` of a Job whose pods restart with `restart_policy`, completing `completions`
/// indexes when Indexed.
pub fn count(pods: &[Arc<Pod>], restart_policy: &str, indexed: Option<i32>) -> Counted {
    let mut c = Counted::default();
    for p in pods {
        let deleting = p.metadata.deletion_timestamp.is_some();
        match phase(p) {
            "Succeeded" => {
                c.succeeded += 1;
                if let Some(i) = indexed.and_then(|n| index_of(p, n)) {
                    c.completed_indexes.insert(i);
                }
            }
            "Failed" => {
                c.failed += 1;
                c.failed_pods += 1;
                let ended = finished_at(p);
                c.last_failure = c.last_failure.max(ended);
            }
            // Not a failure: the Job's own deletes (suspend, deadline, excess) make these.
            _ if deleting => c.terminating += 1,
            _ => {
                if restart_policy == "OnFailure" {
                    c.failed += restarts(p);
                }
                if is_ready(p) {
                    c.ready += 1;
                }
                c.active.push(p.clone());
            }
        }
    }
    c
}

/// Container restarts of a pod (each a failure of an `OnFailure` Job).
fn restarts(p: &Pod) -> usize {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count.max(0) as usize).sum())
        .unwrap_or(0)
}

/// When a finished pod's last container ended, as Unix seconds.
fn finished_at(p: &Pod) -> Option<i64> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max()
}

/// A new pod of `job` from its template; `index` is its completion index when Indexed.
pub fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = pod_from_template(
        template,
        "batch/v1",
        "Job",
        &job.metadata,
        format!("{name}-"),
    );
    if let Some(i) = index {
        pod.metadata.generate_name = Some(format!("{name}-{i}-"));
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
            let env = EnvVar {
                name: INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
        }
    }
    pod
}

/// `indexes` as Kubernetes writes `completedIndexes`: ascending, runs as ranges (`0-2,5`).
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut runs: Vec<(i32, i32)> = Vec::new();
    for &i in indexes {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(phase: &str, index: Option<i32>, restarts: i32, deleting: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                annotations: index.map(|i| [(COMPLETION_INDEX.to_string(), i.to_string())].into()),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    restart_count: restarts,
                    state: Some(ContainerState {
                        terminated: (phase == "Failed").then(|| ContainerStateTerminated {
                            finished_at: Some(Time(jiff::Timestamp::from_second(100).unwrap())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn pods_count_as_kubernetes_counts_them() {
        let pods = [
            pod("Succeeded", Some(0), 0, false),
            pod("Succeeded", Some(0), 0, false),
            pod("Succeeded", Some(2), 0, false),
            pod("Failed", Some(1), 0, false),
            pod("Running", Some(1), 2, false),
            pod("Running", Some(3), 0, true),
        ];
        let never = count(&pods, "Never", Some(4));
        assert_eq!(
            (
                never.active.len(),
                never.succeeded,
                never.failed,
                never.terminating
            ),
            (1, 3, 1, 1)
        );
        assert_eq!(never.completed_indexes, BTreeSet::from([0, 2]));
        assert_eq!(never.last_failure, Some(100));
        // With OnFailure each restart of a running pod is a failure too.
        assert_eq!(count(&pods, "OnFailure", Some(4)).failed, 3);
    }

    #[test]
    fn indexed_pods_carry_their_index_in_name_annotation_hostname_and_env() {
        let job = Job {
            metadata: ObjectMeta {
                name: Some("sum".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::batch::v1::JobSpec {
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        };
        let p = new_pod(&job, Some(3));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("sum-3-"));
        assert_eq!(index_of(&p, 4), Some(3));
        assert_eq!(index_of(&p, 3), None);
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("sum-3"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        assert_eq!(
            p.metadata.owner_references.unwrap()[0].kind,
            "Job".to_string()
        );
        assert_eq!(
            new_pod(&job, None).metadata.generate_name.as_deref(),
            Some("sum-")
        );
    }

    #[test]
    fn completed_indexes_read_as_ranges() {
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(
            format_indexes(&BTreeSet::from([0, 1, 2, 5, 7, 8])),
            "0-2,5,7-8"
        );
    }
}
