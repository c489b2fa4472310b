//! End-to-end tests of Jobs on a real node agent: a three-node control plane, containerd,
//! and `skiff node` in a test host. Jobs run busybox pods to completion, fail, run out of
//! time, see their indexes, and are cleaned up after their TTL, as kubectl users expect.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::require_system_parts;
use skiff_e2e::node_env::world::{ok, skiffctl, wait_until, world};
use skiff_proto::objects::{Api, ApiError};
use tracing::info;

fn condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    pods.list(&format!("batch.kubernetes.io/job-name={job}"), "")
        .await
        .map(|(p, _)| p)
        .unwrap_or_default()
}

fn is_not_found<T>(r: Result<T, ApiError>) -> bool {
    matches!(r, Err(ApiError::Client(skiff_proto::ClientError::Rejected(s))) if s.code() == tonic::Code::NotFound)
}

/// The most pods of `pods` that ran at the same time, from their start and end times.
fn most_at_once(pods: &[Pod]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for p in pods {
        let Some(cs) = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
        else {
            continue;
        };
        for c in cs {
            let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                continue;
            };
            if let (Some(a), Some(b)) = (&t.started_at, &t.finished_at) {
                edges.push((a.0.as_millisecond(), 1));
                edges.push((b.0.as_millisecond(), -1));
            }
        }
    }
    // An end before a start at the same instant: a pod that replaced another is not overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_run_out_of_time_see_their_indexes_and_expire() {
    require_system_parts();
    let w = world(&[]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("jobs"), "skiff/busybox", "1");
    let jobs: Api<Job> = Api::new(client.clone(), "default");
    let pods: Api<Pod> = Api::new(client.clone(), "default");

    info!("phase: a Job without a restart policy is refused, naming the field");
    let refused = skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: bad}}\nspec:\n  template:\n    spec:\n      containers: [{{name: c, image: {image}}}]\n"
        )),
    );
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        !refused.status.success(),
        "a Job restarting Always is refused"
    );
    assert!(
        err.contains("spec.template.spec.restartPolicy") && err.contains("\"Always\""),
        "{err}"
    );
    assert!(is_not_found(jobs.get("bad").await), "nothing was stored");

    info!("phase: four Jobs at once: 5 completions by 2, a failing one, an Indexed one with a TTL, one past its deadline");
    let manifest = format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: five}}
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: work, image: {image}, command: ["sh", "-c", "echo working; sleep 1"]}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: broken}}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: work, image: {image}, command: ["sh", "-c", "echo giving up; exit 3"]}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: indexed}}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  ttlSecondsAfterFinished: 4
  template:
    spec:
      restartPolicy: OnFailure
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: work, image: {image}, command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX host=$(hostname)"]}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: slow}}
spec:
  activeDeadlineSeconds: 3
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: work, image: {image}, command: ["sleep", "300"]}}
"#
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));

    info!("phase: the Indexed Job's pods see their indexes; its status lists them");
    let done = skiffctl(
        &w.cluster,
        &[
            "wait",
            "--for=condition=complete",
            "job/indexed",
            "--timeout",
            "120s",
        ],
        None,
    );
    assert!(ok(&done).contains("job.batch/indexed condition met"));
    let indexed = jobs.get("indexed").await.expect("the indexed job");
    let status = indexed.status.clone().unwrap_or_default();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));
    let mut seen = Vec::new();
    for p in pods_of(&pods, "indexed").await {
        let name = p.metadata.name.clone().unwrap_or_default();
        let log = ok(&skiffctl(&w.cluster, &["logs", &name], None));
        let index = p.metadata.annotations.as_ref().expect("annotations")
            ["batch.kubernetes.io/job-completion-index"]
            .clone();
        assert!(
            log.contains(&format!("index={index} host=indexed-{index}")),
            "{name}: {log}"
        );
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"], "one pod per index");
    let first = ok(&skiffctl(&w.cluster, &["logs", "job/indexed"], None));
    assert!(first.contains("index="), "logs of a job: {first}");

    info!("phase: the 5-completion Job completes, never more than 2 pods at once");
    ok(&skiffctl(
        &w.cluster,
        &[
            "wait",
            "--for=condition=Complete",
            "job/five",
            "--timeout",
            "180s",
        ],
        None,
    ));
    let five = jobs.get("five").await.expect("job five");
    let status = five.status.clone().unwrap_or_default();
    assert_eq!((status.succeeded, status.failed), (Some(5), Some(0)));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    let ran = pods_of(&pods, "five").await;
    assert_eq!(ran.len(), 5, "one pod per completion");
    let at_once = most_at_once(&ran);
    assert!(
        (1..=2).contains(&at_once),
        "at most parallelism pods ran at once: {at_once}"
    );
    let table = ok(&skiffctl(&w.cluster, &["get", "jobs"], None));
    let row = table
        .lines()
        .find(|l| l.starts_with("five "))
        .unwrap_or_default();
    assert!(row.contains("Complete") && row.contains("5/5"), "{table}");

    info!("phase: the failing Job stops after its back-off limit, with the reason");
    ok(&skiffctl(
        &w.cluster,
        &[
            "wait",
            "--for=condition=Failed",
            "job/broken",
            "--timeout",
            "120s",
        ],
        None,
    ));
    let broken = jobs.get("broken").await.expect("job broken");
    assert_eq!(
        condition(&broken, "Failed").map(|c| c.0).as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(
        pods_of(&pods, "broken").await.len(),
        2,
        "the first try and one retry"
    );
    assert_eq!(broken.status.as_ref().and_then(|s| s.failed), Some(2));

    info!("phase: the Job past its deadline failed, and its pod was stopped");
    ok(&skiffctl(
        &w.cluster,
        &[
            "wait",
            "--for=condition=Failed",
            "job/slow",
            "--timeout",
            "60s",
        ],
        None,
    ));
    let slow = jobs.get("slow").await.expect("job slow");
    assert_eq!(
        condition(&slow, "Failed").map(|c| c.0).as_deref(),
        Some("DeadlineExceeded")
    );
    wait_until(
        Duration::from_secs(30),
        "the slow Job's pod stopped",
        || async {
            pods_of(&pods, "slow").await.iter().all(|p| {
                p.metadata.deletion_timestamp.is_some()
                    || matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed" | "Succeeded")
                    )
            })
        },
    )
    .await;

    info!("phase: the Indexed Job is deleted after its TTL, its pods with it");
    wait_until(
        Duration::from_secs(60),
        "the Indexed Job and its pods gone",
        || async {
            is_not_found(jobs.get("indexed").await) && pods_of(&pods, "indexed").await.is_empty()
        },
    )
    .await;

    info!("phase: `create job` makes a Job from flags that runs");
    ok(&skiffctl(
        &w.cluster,
        &[
            "create",
            "job",
            "adhoc",
            "--image",
            &image,
            "--",
            "echo",
            "made by hand",
        ],
        None,
    ));
    ok(&skiffctl(
        &w.cluster,
        &[
            "wait",
            "--for=condition=complete",
            "job/adhoc",
            "--timeout",
            "60s",
        ],
        None,
    ));
    let log = ok(&skiffctl(&w.cluster, &["logs", "job/adhoc"], None));
    assert!(log.contains("made by hand"), "{log}");
}
