//! `skiff-bench jobs`: Job completions on hollow nodes. Three control nodes and hollow nodes
//! whose Job pods end as soon as they run; each round creates `jobs` Jobs of `completions`
//! completions (`parallelism` at a time) in a namespace of its own and times them from the
//! first create to the last Job Complete. Reported: each round's time and completions per
//! second, and the median; failed Jobs and errors are counted.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_proto::objects::Selection;

#[derive(clap::Args, Clone)]
pub struct JobsArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 100)]
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

pub async fn run(a: JobsArgs) -> anyhow::Result<()> {
    let (_cluster, client, _hollow) = super::hollow_cluster::start(a.nodes, "64", "256Gi").await?;
    let total = a.jobs * a.completions;
    println!(
        "jobs: {} Jobs x {} completions ({} at a time) = {total} completions per round, {} hollow nodes, {} rounds",
        a.jobs, a.completions, a.parallelism, a.nodes, a.rounds
    );
    println!(
        "{:>6} {:>10} {:>14} {:>8} {:>7}",
        "round", "seconds", "completions/s", "failed", "errors"
    );
    let mut times = Vec::new();
    let mut errors = 0;
    for round in 0..a.rounds {
        let ns = format!("jobs-{round}");
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        client
            .create_object("namespaces", "", serde_json::to_vec(&namespace)?)
            .await?;
        let started = Instant::now();
        let mut round_errors = 0;
        for i in 0..a.jobs {
            let j = job(&format!("work-{i}"), &ns, a.completions, a.parallelism);
            if let Err(e) = client
                .create_object("jobs", &ns, serde_json::to_vec(&j)?)
                .await
            {
                eprintln!("creating a job: {e}");
                round_errors += 1;
            }
        }
        let sel = Selection {
            namespace: ns.clone(),
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
            if complete + failed + round_errors >= a.jobs || started.elapsed() > a.timeout {
                break (complete, failed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let took = started.elapsed().as_secs_f64();
        if done + failed + round_errors < a.jobs {
            eprintln!(
                "round {round}: {done} of {} Jobs complete after {:?}",
                a.jobs, a.timeout
            );
            round_errors += a.jobs - done - failed - round_errors;
        }
        println!(
            "{round:>6} {took:>10.2} {:>14.0} {failed:>8} {round_errors:>7}",
            (done * a.completions) as f64 / took
        );
        errors += failed + round_errors;
        times.push(took);
    }
    let med = super::median(times);
    println!(
        "median: {med:.2} s for {total} completions ({:.0}/s); target: at most 30 s for 1,000 completions: {}",
        total as f64 / med,
        if total >= 1000 && med <= 30.0 { "met" } else if total < 1000 { "not measured at 1,000" } else { "not met" }
    );
    super::print_verdict(errors, "failed Jobs or errors");
    Ok(())
}
