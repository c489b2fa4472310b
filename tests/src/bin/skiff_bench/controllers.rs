//! `skiff-bench controllers`: whether the controllers' cost follows the work or the cluster.
//! Three control nodes and hollow nodes; Deployments bring the cluster to a first size, then a
//! steady churn deletes pods at a fixed rate and their ReplicaSets replace them; the same
//! again at a second, larger size, in the same run. Reported per size: replacement latency
//! (a pod's delete to its ReplicaSet's next new pod Running) p50/p99, and the leader's CPU
//! per replaced pod; then the ratio of the two sizes' CPU per replaced pod.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::Cluster;
use skiff_proto::objects::{Selection, WatchItem};
use skiff_proto::Client;

#[derive(clap::Args, Clone)]
pub struct ControllersArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods at the first size.
    #[arg(long, default_value_t = 3000)]
    small: usize,
    /// Pods at the second size.
    #[arg(long, default_value_t = 30000)]
    large: usize,
    /// Replicas of each Deployment.
    #[arg(long, default_value_t = 100)]
    replicas: usize,
    /// Pod deletions per second during the churn.
    #[arg(long, default_value_t = 100)]
    rate: usize,
    /// Seconds of churn at each size.
    #[arg(long, default_value_t = 30)]
    churn_secs: u64,
}

/// Running pods and their ReplicaSets, with O(1) insert, removal and pick by position.
#[derive(Default)]
struct Running {
    pods: Vec<(String, String)>,
    at: HashMap<String, usize>,
}

impl Running {
    fn insert(&mut self, name: String, owner: String) {
        if !self.at.contains_key(&name) {
            self.at.insert(name.clone(), self.pods.len());
            self.pods.push((name, owner));
        }
    }

    fn remove(&mut self, name: &str) -> Option<(String, String)> {
        let i = self.at.remove(name)?;
        let gone = self.pods.swap_remove(i);
        if let Some((moved, _)) = self.pods.get(i) {
            self.at.insert(moved.clone(), i);
        }
        Some(gone)
    }

    fn len(&self) -> usize {
        self.pods.len()
    }

    /// Take out the pod at `seed` (modulo the count).
    fn take(&mut self, seed: usize) -> Option<(String, String)> {
        let name = self.pods.get(seed % self.pods.len().max(1))?.0.clone();
        self.remove(&name)
    }
}

/// What the bench's pod watch knows.
#[derive(Default)]
struct Pods {
    /// Running pods, with their ReplicaSet.
    running: Running,
    /// Every pod seen Running once.
    seen_running: HashSet<String>,
    /// Deletions not yet replaced, per ReplicaSet: when each was asked.
    pending: HashMap<String, VecDeque<Instant>>,
    /// Replacement latencies, in milliseconds.
    latencies: Vec<f64>,
    /// Pods that came up Running while churning.
    measuring: bool,
}

fn owner_of(p: &Value) -> Option<String> {
    p["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .and_then(|o| o["name"].as_str())
        .map(str::to_string)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

async fn follow(client: Client, from: u64, pods: Arc<Mutex<Pods>>) -> anyhow::Result<()> {
    let sel = Selection {
        namespace: "default".into(),
        ..Default::default()
    };
    let mut watch = client.watch_objects("pods", &sel, from);
    while let Some(item) = watch.recv().await {
        match item? {
            WatchItem::Added(b) | WatchItem::Modified(b) => {
                let p: Value = serde_json::from_slice(&b)?;
                let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                let running = p["status"]["phase"] == "Running"
                    && p["metadata"]["deletionTimestamp"].is_null();
                let Some(owner) = owner_of(&p) else { continue };
                let mut s = pods.lock().unwrap_or_else(|e| e.into_inner());
                if running && s.seen_running.insert(name.clone()) {
                    s.running.insert(name, owner.clone());
                    if s.measuring {
                        if let Some(asked) = s.pending.get_mut(&owner).and_then(VecDeque::pop_front)
                        {
                            let ms = asked.elapsed().as_secs_f64() * 1000.0;
                            s.latencies.push(ms);
                        }
                    }
                } else if !running {
                    let _ = s.running.remove(&name);
                }
            }
            WatchItem::Deleted(b) => {
                let p: Value = serde_json::from_slice(&b)?;
                let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                let _ = pods
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .running
                    .remove(&name);
            }
            WatchItem::Bookmark(_) => {}
        }
    }
    Ok(())
}

async fn deploy(client: &Client, from: usize, to: usize, replicas: usize) -> anyhow::Result<()> {
    let creates = (from..to).map(|i| {
        let client = client.clone();
        async move {
            let name = format!("app-{i}");
            let d = json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"terminationGracePeriodSeconds": 0,
                                               "containers": [{"name": "c", "image": "bench:1",
                                                               "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
            });
            client
                .apply_object("default", serde_json::to_vec(&d).unwrap_or_default())
                .await
        }
    });
    for r in futures::future::join_all(creates).await {
        r?;
    }
    Ok(())
}

async fn wait_running(pods: &Arc<Mutex<Pods>>, want: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(1200);
    loop {
        let n = pods.lock().unwrap_or_else(|e| e.into_inner()).running.len();
        if n >= want {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {n} of {want} pods Running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The member that leads now.
async fn leader(cluster: &Cluster) -> u64 {
    cluster.wait_leader(Duration::from_secs(20)).await
}

struct Churn {
    size: usize,
    replaced: usize,
    asked: usize,
    failed_deletes: usize,
    unreplaced: usize,
    p50: f64,
    p99: f64,
    leader_cpu_per_pod: f64,
    control_cpu_per_pod: f64,
}

async fn churn(
    cluster: &Cluster,
    client: &Client,
    pods: &Arc<Mutex<Pods>>,
    args: &ControllersArgs,
    size: usize,
) -> anyhow::Result<Churn> {
    let lead = leader(cluster).await;
    let cpu = |id: u64| {
        cluster
            .members
            .get(&id)
            .and_then(|m| m.cpu_ms())
            .unwrap_or(f64::NAN)
    };
    let all_cpu = || {
        cluster
            .members
            .values()
            .filter_map(|m| m.cpu_ms())
            .sum::<f64>()
    };
    {
        let mut s = pods.lock().unwrap_or_else(|e| e.into_inner());
        s.latencies.clear();
        s.pending.clear();
        s.measuring = true;
    }
    let (leader_before, all_before) = (cpu(lead), all_cpu());
    let total = args.rate * args.churn_secs as usize;
    let mut asked = 0;
    let mut failed_deletes = 0;
    let tick = Duration::from_millis(100);
    let per_tick = (args.rate / 10).max(1);
    let mut next = Instant::now();
    let mut deletes = Vec::new();
    while asked < total {
        next += tick;
        let victims: Vec<(String, String)> = {
            let mut s = pods.lock().unwrap_or_else(|e| e.into_inner());
            let mut picked = Vec::with_capacity(per_tick);
            for k in 0..per_tick {
                let seed = (asked + k).wrapping_mul(7919).wrapping_add(104_729);
                if let Some((n, o)) = s.running.take(seed) {
                    s.pending
                        .entry(o.clone())
                        .or_default()
                        .push_back(Instant::now());
                    picked.push((n, o));
                }
            }
            picked
        };
        for (name, _) in victims {
            asked += 1;
            let client = client.clone();
            deletes.push(tokio::spawn(async move {
                client
                    .delete_object("pods", "default", &name, &Default::default())
                    .await
                    .is_ok()
            }));
        }
        tokio::time::sleep_until(next.into()).await;
    }
    for d in deletes {
        if !d.await.unwrap_or(false) {
            failed_deletes += 1;
        }
    }
    // Every deleted pod replaced (or a deadline).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latencies
            .len();
        if done + failed_deletes >= asked || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader_after, all_after) = (cpu(lead), all_cpu());
    let s = pods.lock().unwrap_or_else(|e| e.into_inner());
    let replaced = s.latencies.len();
    Ok(Churn {
        size,
        replaced,
        asked,
        failed_deletes,
        unreplaced: asked.saturating_sub(replaced + failed_deletes),
        p50: percentile(s.latencies.clone(), 0.5),
        p99: percentile(s.latencies.clone(), 0.99),
        leader_cpu_per_pod: (leader_after - leader_before) / replaced.max(1) as f64,
        control_cpu_per_pod: (all_after - all_before) / replaced.max(1) as f64,
    })
}

pub async fn run(args: ControllersArgs) -> anyhow::Result<()> {
    println!(
        "# skiff-bench controllers: {} hollow nodes, 3 control nodes; churn of {} pod deletions/s for {} s at {} and at {} pods",
        args.nodes, args.rate, args.churn_secs, args.small, args.large
    );
    let (cluster, client, hollow) = super::hollow_cluster::start(args.nodes, "64", "256Gi").await?;
    let pods = Arc::new(Mutex::new(Pods::default()));
    let from = client.status().await?.revision;
    let follower = tokio::spawn(follow(client.clone(), from, pods.clone()));

    let mut results = Vec::new();
    let mut deployed = 0;
    for size in [args.small, args.large] {
        let want = size / args.replicas;
        deploy(&client, deployed, want, args.replicas).await?;
        deployed = want;
        let took = wait_running(&pods, want * args.replicas).await?;
        // A moment for the last statuses to settle before the clock starts.
        println!(
            "{size} pods Running {:.1} s after their Deployments were applied",
            took.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let c = churn(&cluster, &client, &pods, &args, size).await?;
        println!(
            "at {:>6} pods: {} deletions asked ({} failed), {} replaced, {} not replaced in 60 s; replacement p50 {:.0} ms, p99 {:.0} ms (target <= 1000); leader CPU {:.2} ms per replaced pod, all control nodes {:.2} ms",
            c.size, c.asked, c.failed_deletes, c.replaced, c.unreplaced, c.p50, c.p99, c.leader_cpu_per_pod, c.control_cpu_per_pod
        );
        results.push(c);
    }
    let rss: Vec<String> = cluster
        .members
        .values()
        .map(|m| {
            format!(
                "{:.0}",
                m.rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64
            )
        })
        .collect();
    drop(hollow);
    follower.abort();
    let (a, b) = (&results[0], &results[1]);
    let errors = results
        .iter()
        .map(|c| c.failed_deletes + c.unreplaced)
        .sum::<usize>();
    println!(
        "summary: replacement p99 {:.0} ms at {} pods, {:.0} ms at {} pods (target <= 1000 at both); leader CPU per replaced pod {:.2} vs {:.2} ms, ratio {:.2} (target <= 1.5); control node RSS {} MiB; errors {errors}{}",
        a.p99,
        a.size,
        b.p99,
        b.size,
        a.leader_cpu_per_pod,
        b.leader_cpu_per_pod,
        b.leader_cpu_per_pod / a.leader_cpu_per_pod,
        rss.join(" / "),
        if errors > 0 { " (THIS RUN HAD ERRORS)" } else { "" }
    );
    Ok(())
}
