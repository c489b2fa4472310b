//! `skiff-bench pods`: pods on a real node. A three-node control plane, one `skiff node` in a
//! test host with its own containerd, the images already present; N pods (default 30) of M
//! different images (default 3, in turn) are created at once (the scheduler places them) and
//! a watch records when each is first seen Running. Reports create-to-Running p50/p99 per run, their medians, and the agent's
//! resident memory with the pods running.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::world::world;
use skiff_proto::objects::{Selection, WatchItem};
use skiff_proto::Client;

use super::median;

#[derive(clap::Args, Clone)]
pub struct PodsArgs {
    /// Pods created at once per run.
    #[arg(long, default_value_t = 30)]
    pods: usize,
    /// Runs (the pods of a run are deleted before the next).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Different images the pods of a burst use, in turn (a realistic burst is not of one
    /// image: what a node keeps ready for the last image it ran serves only some of it).
    #[arg(long, default_value_t = 3)]
    images: usize,
    /// The OCI runtime the agent's containerd shim runs (`runc` or `crun`).
    #[arg(long, default_value = "runc")]
    oci_runtime: String,
    /// Seconds to wait before each run. On an ext4 without a journal (as on some VMs) a file
    /// created within a minute of many deletions costs a scan of the freed inodes, so a run
    /// straight after the last one's deletions also measures those.
    #[arg(long, default_value_t = 0)]
    settle_secs: u64,
    /// Extra flags for `skiff node` (e.g. `--agent-flag=--parallel-pod-starts=4`).
    #[arg(long = "agent-flag", allow_hyphen_values = true)]
    agent_flags: Vec<String>,
}

/// The agent's `--warm-sandboxes` among `flags` (0 without it).
fn warm_sandboxes_flag(flags: &[String]) -> usize {
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        let value = match f.strip_prefix("--warm-sandboxes") {
            Some(v) if v.starts_with('=') => Some(v[1..].to_string()),
            Some("") => it.next().cloned(),
            _ => None,
        };
        if let Some(n) = value.and_then(|v| v.parse().ok()) {
            return n;
        }
    }
    0
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Busy CPU time of the whole machine so far, in milliseconds (`/proc/stat`, all but idle
/// and iowait), so that a run can say how much CPU a pod start costs all processes together.
fn busy_cpu_ms() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return f64::NAN;
    }
    // user nice system idle iowait irq softirq steal
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    // USER_HZ is 100 on Linux.
    busy * 10.0
}

/// Resident memory of every containerd shim on the machine, in MiB: with the bench's private
/// containerd and no pod running, what the warm pool's shims hold.
fn shims_rss_mib() -> f64 {
    let mut kib = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("containerd-shim") {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        kib += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    kib as f64 / 1024.0
}

/// CPU time the control processes have used together, in milliseconds.
fn control_cpu_ms(cluster: &skiff_e2e::Cluster) -> f64 {
    cluster
        .members
        .values()
        .map(|m| m.cpu_ms().unwrap_or(f64::NAN))
        .sum()
}

/// Wall-clock now in seconds since the epoch: `perf record -k realtime` stamps samples so.
fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(f64::NAN)
}

fn pod_json(name: &str, image: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"],
                                 "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}}]}
    }))
    .unwrap_or_default()
}

async fn wait_gone(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = client
            .list_objects(
                "pods",
                &Selection {
                    namespace: "default".into(),
                    labels: "bench=pods".into(),
                    ..Default::default()
                },
            )
            .await?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} pods not deleted in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(args: PodsArgs) -> anyhow::Result<()> {
    // The same world as the node tests: three control nodes, a test host with containerd,
    // a local registry and an agent.
    if args.oci_runtime == "crun" {
        anyhow::ensure!(
            std::path::Path::new("/usr/bin/crun").exists(),
            "--oci-runtime crun: crun is not installed (apt-get install crun)"
        );
        skiff_e2e::node_env::prepare_host_for_crun();
    }
    let mut flags: Vec<&str> = vec!["--oci-runtime", &args.oci_runtime];
    flags.extend(args.agent_flags.iter().map(String::as_str));
    let w = world(&flags).await;
    let (cluster, registry) = (&w.cluster, &w.registry);
    let agent = &w.agent;
    anyhow::ensure!(args.images >= 1, "--images must be at least 1");
    let images: Vec<String> = (0..args.images)
        .map(|i| {
            let tag = format!("bench-{i}");
            registry.push(&OciImage::busybox(&tag), "skiff/busybox", &tag)
        })
        .collect();
    let client = cluster.client();

    // The images are present before the clock starts (as the target says): a
    // warm-up pod of each runs first.
    for (i, image) in images.iter().enumerate() {
        let warm = format!("warm-up-{i}");
        client
            .create_object("pods", "default", pod_json(&warm, image))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p: Value = serde_json::from_slice(
                &client
                    .get_object("pods", "default", &warm, false)
                    .await?
                    .object,
            )?;
            if p.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the warm-up pod did not run: {}",
                p.get("status").cloned().unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client
            .delete_object("pods", "default", &warm, &Default::default())
            .await?;
    }
    wait_gone(&client).await?;

    let warm_wanted = warm_sandboxes_flag(&args.agent_flags);
    let pool = if warm_wanted > 0 {
        format!("a pool of {warm_wanted} warm sandboxes, filled before each burst (refilling it is in the last CPU column, its shims' memory beside)")
    } else {
        "no warm pool".to_string()
    };
    println!(
        "pods on one node ({}): {} pods of {} images created at once, images present, {pool}, {} runs",
        args.oci_runtime, args.pods, args.images, args.runs
    );
    println!(
        "{:>4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "run",
        "p50 ms",
        "p99 ms",
        "max ms",
        "RSS MiB",
        "anon MiB",
        "file MiB",
        "CPU ms/pod",
        "agent ms",
        "control ms",
        "+refill ms/pod",
        "pool shim MiB"
    );
    let mut cpu_per_pod = Vec::new();
    let mut with_refill_per_pod = Vec::new();
    let (mut p50s, mut p99s, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=args.runs {
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        // Each run starts with a full pool, as a node that was idle for a few seconds has.
        let deadline = Instant::now() + Duration::from_secs(60);
        while w.warm_sandboxes_ready() < warm_wanted {
            if Instant::now() > deadline {
                eprintln!(
                    "run {run}: only {} of {warm_wanted} warm sandboxes ready after 60 s; running anyway",
                    w.warm_sandboxes_ready()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pool_shims = if warm_wanted > 0 {
            shims_rss_mib()
        } else {
            0.0
        };
        let start_rev = client.status().await?.revision;
        let mut watch = client.watch_objects(
            "pods",
            &Selection {
                namespace: "default".into(),
                labels: "bench=pods".into(),
                ..Default::default()
            },
            start_rev,
        );
        let mut created: HashMap<String, Instant> = HashMap::new();
        let names: Vec<String> = (0..args.pods).map(|i| format!("p{run}-{i}")).collect();
        let cpu_before = busy_cpu_ms();
        let agent_before = agent.cpu_ms().unwrap_or(f64::NAN);
        let control_before = control_cpu_ms(cluster);
        let burst_from = unix_secs();
        let creates = names.iter().enumerate().map(|(i, n)| {
            let client = client.clone();
            let body = pod_json(n, &images[i % images.len()]);
            async move {
                (
                    Instant::now(),
                    client.create_object("pods", "default", body).await,
                )
            }
        });
        for (n, (at, r)) in names.iter().zip(futures::future::join_all(creates).await) {
            r?;
            created.insert(n.clone(), at);
        }
        let mut latencies: HashMap<String, f64> = HashMap::new();
        // The last waiting state with a message each pod went through: why a slow one was.
        let mut waits: HashMap<String, String> = HashMap::new();
        let mut bound: HashMap<String, f64> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while latencies.len() < args.pods {
            let item = tokio::time::timeout_at(deadline.into(), watch.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "only {} of {} pods Running in 120 s",
                        latencies.len(),
                        args.pods
                    )
                })?
                .ok_or_else(|| anyhow::anyhow!("watch ended"))??;
            if let WatchItem::Added(b) | WatchItem::Modified(b) = item {
                let p: Value = serde_json::from_slice(&b)?;
                let name = p
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let on_node = p
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                if on_node && !bound.contains_key(&name) {
                    if let Some(at) = created.get(&name) {
                        bound.insert(name.clone(), at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                if let Some(w) = p.pointer("/status/containerStatuses/0/state/waiting") {
                    if w.get("message").is_some() {
                        waits.insert(name.clone(), w.to_string());
                    }
                }
                if p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
                    && !latencies.contains_key(&name)
                {
                    if let Some(at) = created.get(&name) {
                        latencies.insert(name, at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
        }
        let burst_to = unix_secs();
        let cpu = (busy_cpu_ms() - cpu_before) / args.pods as f64;
        // The burst took sandboxes from the pool; the machine's CPU until it is full again is
        // what the burst cost with the pool's refill.
        let refill_deadline = Instant::now() + Duration::from_secs(60);
        while w.warm_sandboxes_ready() < warm_wanted && Instant::now() < refill_deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let with_refill = (busy_cpu_ms() - cpu_before) / args.pods as f64;
        with_refill_per_pod.push(with_refill);
        let control_cpu = (control_cpu_ms(cluster) - control_before) / args.pods as f64;
        cpu_per_pod.push(cpu);
        let agent_cpu = (agent.cpu_ms().unwrap_or(f64::NAN) - agent_before) / args.pods as f64;
        let mem = |f: &str| {
            agent
                .memory_bytes(f)
                .map(|b| b as f64 / (1 << 20) as f64)
                .unwrap_or(f64::NAN)
        };
        let (mib, anon, file) = (mem("VmRSS"), mem("RssAnon"), mem("RssFile"));
        let v: Vec<f64> = latencies.values().copied().collect();
        let (p50, p99, max) = (
            percentile(v.clone(), 0.5),
            percentile(v.clone(), 0.99),
            percentile(v, 1.0),
        );
        println!(
            "{run:>4} {p50:>10.0} {p99:>10.0} {max:>10.0} {mib:>10.1} {anon:>10.1} {file:>10.1} {cpu:>10.0} {agent_cpu:>10.1} {control_cpu:>10.1} {with_refill:>12.0} {pool_shims:>12.1}"
        );
        // Where the time went before the node's work: binding (create + schedule) and the
        // first pod's whole path.
        let bound_ms: Vec<f64> = bound.values().copied().collect();
        eprintln!(
            "run {run}: bound p50 {:.0} ms, max {:.0} ms; first Running {:.0} ms; burst {burst_from:.3}-{burst_to:.3} (unix s, for perf --time)",
            percentile(bound_ms.clone(), 0.5),
            percentile(bound_ms, 1.0),
            percentile(latencies.values().copied().collect(), 0.0)
        );
        for (name, ms) in &latencies {
            if *ms > 5000.0 {
                let why = waits
                    .get(name)
                    .map(String::as_str)
                    .unwrap_or("no waiting reason seen");
                let bound_ms = bound.get(name).copied().unwrap_or(f64::NAN);
                println!("     slow pod {name}: Running after {ms:.0} ms, bound after {bound_ms:.0} ms; {why}");
            }
        }
        p50s.push(p50);
        p99s.push(p99);
        rss.push(mib);
        for n in &names {
            client
                .delete_object("pods", "default", n, &Default::default())
                .await?;
        }
        wait_gone(&client).await?;
    }
    println!(
        "{}, {pool}, median of {} runs: create-to-Running p50 {:.0} ms (target <= 400), p99 {:.0} ms (target <= 1000); agent resident memory with {} pods {:.1} MiB (target <= 40); machine CPU per pod start {:.0} ms, {:.0} ms with the pool's refill",
        args.oci_runtime,
        args.runs,
        median(p50s),
        median(p99s),
        args.pods,
        median(rss),
        median(cpu_per_pod),
        median(with_refill_per_pod)
    );
    Ok(())
}
