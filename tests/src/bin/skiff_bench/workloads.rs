//! `skiff-bench workloads`: DaemonSets, StatefulSets and Jobs on hollow nodes. Three control nodes and
//! `nodes` hollow nodes (a Job's pods end as soon as they run). Each round, in a namespace
//! of its own:
//! - a DaemonSet is created and timed until a pod is available on every node, then its
//!   template changes and the rollout (maxUnavailable 10%) is timed until every node runs an
//!   available pod of the new template;
//! - a StatefulSet of `sts_replicas` pods (Parallel), each with a `local-path` claim, is
//!   timed until every pod is ready, and until every claim is bound;
//! - `jobs` Jobs of `completions` completions (`parallelism` at a time) are timed from the
//!   first create to the last Job Complete.
//!
//! Reported: each round's times, and the medians; failed Jobs and errors are counted.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_proto::objects::Selection;
use skiff_proto::Client;

#[derive(clap::Args, Clone)]
pub struct WorkloadsArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Jobs per round.
    #[arg(long, default_value_t = 10)]
    jobs: usize,
    /// Completions of each Job.
    #[arg(long, default_value_t = 100)]
    completions: usize,
    /// Pods of each Job at a time.
    #[arg(long, default_value_t = 50)]
    parallelism: usize,
    /// Pods of the StatefulSet.
    #[arg(long, default_value_t = 100)]
    sts_replicas: usize,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How long a round may take before it counts as failed.
    #[arg(long, default_value = "300s", value_parser = skiff_proto::duration::parse)]
    timeout: Duration,
}

fn job(name: &str, ns: &str, completions: usize, parallelism: usize) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "completions": completions, "parallelism": parallelism,
            "template": {
                "metadata": {"annotations": {"hollow.skiff.dev/run-seconds": "0"}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "work", "image": "bench/work:1"}]},
            },
        },
    })
}

fn has_condition(j: &Value, type_: &str) -> bool {
    j.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        })
}

fn daemon_set(ns: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": image}]},
            },
        },
    })
}

fn stateful_set(ns: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {
            "replicas": replicas, "serviceName": "db", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "db:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]},
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    })
}

/// Seconds from creating the StatefulSet in `ns` to every pod ready, and to every claim
/// bound (`None`: not within `timeout`).
async fn stateful_set_round(
    client: &Client,
    ns: &str,
    replicas: usize,
    timeout: Duration,
) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let started = Instant::now();
    client
        .create_object(
            "statefulsets",
            ns,
            serde_json::to_vec(&stateful_set(ns, replicas))?,
        )
        .await?;
    let sel = Selection {
        namespace: ns.to_string(),
        ..Default::default()
    };
    let (mut ready, mut bound) = (None, None);
    while started.elapsed() < timeout && (ready.is_none() || bound.is_none()) {
        if ready.is_none() {
            if let Ok(got) = client.get_object("statefulsets", ns, "db", false).await {
                let sts: Value = serde_json::from_slice(&got.object)?;
                if int(&sts, "/status/readyReplicas") == replicas as i64 {
                    ready = Some(started.elapsed().as_secs_f64());
                }
            }
        }
        if bound.is_none() {
            if let Ok(list) = client.list_objects("persistentvolumeclaims", &sel).await {
                let n = list
                    .items
                    .iter()
                    .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
                    .filter(|c| c.pointer("/status/phase") == Some(&json!("Bound")))
                    .count();
                if n == replicas {
                    bound = Some(started.elapsed().as_secs_f64());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((ready, bound))
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// Seconds until the DaemonSet runs an available pod of its current template on `nodes`
/// nodes, or `None` after `timeout`.
async fn rolled_out(client: &Client, ns: &str, nodes: usize, timeout: Duration) -> Option<f64> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(got) = client.get_object("daemonsets", ns, "agent", false).await {
            if let Ok(ds) = serde_json::from_slice::<Value>(&got.object) {
                let n = nodes as i64;
                let observed =
                    int(&ds, "/status/observedGeneration") >= int(&ds, "/metadata/generation");
                if observed
                    && int(&ds, "/status/desiredNumberScheduled") == n
                    && int(&ds, "/status/updatedNumberScheduled") == n
                    && int(&ds, "/status/numberAvailable") == n
                {
                    return Some(started.elapsed().as_secs_f64());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// One round of Jobs in `ns`: seconds to the last Job Complete, Jobs failed, errors.
async fn jobs_round(
    client: &Client,
    a: &WorkloadsArgs,
    ns: &str,
) -> anyhow::Result<(f64, usize, usize, usize)> {
    let started = Instant::now();
    let mut errors = 0;
    for i in 0..a.jobs {
        let j = job(&format!("work-{i}"), ns, a.completions, a.parallelism);
        if let Err(e) = client
            .create_object("jobs", ns, serde_json::to_vec(&j)?)
            .await
        {
            eprintln!("creating a job: {e}");
            errors += 1;
        }
    }
    let sel = Selection {
        namespace: ns.to_string(),
        ..Default::default()
    };
    let (done, failed) = loop {
        let jobs: Vec<Value> = client
            .list_objects("jobs", &sel)
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter_map(|b| serde_json::from_slice(b).ok())
                    .collect()
            })
            .unwrap_or_default();
        let complete = jobs.iter().filter(|j| has_condition(j, "Complete")).count();
        let failed = jobs.iter().filter(|j| has_condition(j, "Failed")).count();
        if complete + failed + errors >= a.jobs || started.elapsed() > a.timeout {
            break (complete, failed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if done + failed + errors < a.jobs {
        eprintln!(
            "{ns}: {done} of {} Jobs complete after {:?}",
            a.jobs, a.timeout
        );
        errors += a.jobs - done - failed - errors;
    }
    Ok((started.elapsed().as_secs_f64(), done, failed, errors))
}

pub async fn run(a: WorkloadsArgs) -> anyhow::Result<()> {
    let (_cluster, client, _hollow) = super::hollow_cluster::start(a.nodes, "64", "256Gi").await?;
    let total = a.jobs * a.completions;
    println!(
        "workloads: {} hollow nodes, {} rounds; DaemonSet create and rollout (maxUnavailable 10%); {} Jobs x {} completions ({} at a time) = {total} completions",
        a.nodes, a.rounds, a.jobs, a.completions, a.parallelism
    );
    println!(
        "{:>6} {:>12} {:>13} {:>13} {:>13} {:>10} {:>14} {:>8} {:>7}",
        "round",
        "ds create s",
        "ds rollout s",
        "sts ready s",
        "sts bound s",
        "jobs s",
        "completions/s",
        "failed",
        "errors"
    );
    let (mut creates, mut rollouts, mut jobs_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sts_ready, mut sts_bound) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for round in 0..a.rounds {
        let ns = format!("workloads-{round}");
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        client
            .create_object("namespaces", "", serde_json::to_vec(&namespace)?)
            .await?;
        client
            .create_object(
                "daemonsets",
                &ns,
                serde_json::to_vec(&daemon_set(&ns, "agent:1"))?,
            )
            .await?;
        let create = rolled_out(&client, &ns, a.nodes, a.timeout).await;
        let update = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:2"}]}}}});
        client
            .patch_object(
                "daemonsets",
                &ns,
                "agent",
                serde_json::to_vec(&update)?,
                false,
            )
            .await?;
        let rollout = rolled_out(&client, &ns, a.nodes, a.timeout).await;
        // The DaemonSet's pods leave room for the Jobs' on every node.
        client
            .delete_object("daemonsets", &ns, "agent", &Default::default())
            .await?;
        let (ready, bound) = stateful_set_round(&client, &ns, a.sts_replicas, a.timeout).await?;
        client
            .delete_object("statefulsets", &ns, "db", &Default::default())
            .await?;
        let (took, done, failed, round_errors) = jobs_round(&client, &a, &ns).await?;
        let round_errors = round_errors
            + [create, rollout, ready, bound]
                .iter()
                .filter(|t| t.is_none())
                .count();
        let show = |t: Option<f64>| t.map_or_else(|| "timeout".to_string(), |t| format!("{t:.2}"));
        println!(
            "{round:>6} {:>12} {:>13} {:>13} {:>13} {took:>10.2} {:>14.0} {failed:>8} {round_errors:>7}",
            show(create),
            show(rollout),
            show(ready),
            show(bound),
            (done * a.completions) as f64 / took
        );
        sts_ready.extend(ready);
        sts_bound.extend(bound);
        errors += failed + round_errors;
        creates.extend(create);
        rollouts.extend(rollout);
        jobs_times.push(took);
    }
    let verdict = |met: bool| if met { "met" } else { "not met" };
    let ds_create = super::median(creates);
    let ds_rollout = super::median(rollouts);
    println!(
        "median DaemonSet create over {} nodes: {ds_create:.2} s; rollout: {ds_rollout:.2} s; target: rollout over 1,000 nodes at most 30 s: {}",
        a.nodes,
        if a.nodes >= 1000 { verdict(ds_rollout <= 30.0) } else { "not measured at 1,000" }
    );
    let (ready, bound) = (super::median(sts_ready), super::median(sts_bound));
    println!(
        "median StatefulSet of {} (Parallel, a local-path claim each): ready {ready:.2} s, claims bound {bound:.2} s; target: 100 ready in at most 5 s: {}",
        a.sts_replicas,
        if a.sts_replicas >= 100 { verdict(ready <= 5.0) } else { "not measured at 100" }
    );
    let med = super::median(jobs_times);
    println!(
        "median Jobs: {med:.2} s for {total} completions ({:.0}/s); target: at most 30 s for 1,000 completions: {}",
        total as f64 / med,
        if total >= 1000 { verdict(med <= 30.0) } else { "not measured at 1,000" }
    );
    super::print_verdict(errors, "failed Jobs, timeouts or errors");
    Ok(())
}
