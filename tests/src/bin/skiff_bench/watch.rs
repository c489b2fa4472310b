//! `skiff-bench watch`: watch fan-out at cluster scale. Skiff's object watch and etcd 3.4's key
//! watch of the same bytes side by side in one run (same watchers, same write rate, watchers
//! spread alike over the three members, mutual TLS and fsync on both), and the Skiff leader's
//! resident memory holding 10,000 pods and 1,000 nodes, before and after the watch load.
//!
//! Two shapes: every watcher of every pod (each write reaches every watcher), and every
//! watcher of its own node's pods (`spec.nodeName=` field selector; a key prefix per node in
//! etcd: each write reaches one watcher). A delivery is a write's ADDED (etcd: PUT) event;
//! each watcher checks it got each write it should exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions};
use serde_json::json;
use skiff_e2e::{Cluster, MemberOptions};
use skiff_proto::objects::Selection;
use skiff_proto::pb::object_event::Type;
use skiff_proto::Client;
use tokio::sync::watch;

use super::etcd::Etcd;
use super::objects::{client_of, ensure_namespace, fill, now_micros, rss_line, static_nodes};
use super::{median, print_verdict};

#[derive(clap::Args, Clone)]
pub struct WatchArgs {
    /// Watchers of every pod (first fan-out).
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Watchers each of its own node's pods (second fan-out).
    #[arg(long, default_value_t = 5000)]
    node_watchers: usize,
    /// Pod writes per second during a fan-out.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of writes per fan-out run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs of each fan-out per system (Skiff and etcd alternate; medians reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Pods in the cluster whose leader's memory is measured.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Nodes in that cluster.
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    /// A flag for every `skiff control` member (repeatable), to measure a setting.
    #[arg(long = "member-flag", allow_hyphen_values = true)]
    member_flags: Vec<String>,
}

/// What each watcher selects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Every pod: each write reaches every watcher.
    AllPods,
    /// Pods of one node, watcher `i` on node `i`: each write reaches one watcher.
    OwnNode,
}

/// The system under load.
enum Target<'a> {
    Skiff(&'a Cluster),
    Etcd(&'a Etcd),
}

impl Target<'_> {
    fn name(&self) -> &'static str {
        match self {
            Target::Skiff(_) => "skiff",
            Target::Etcd(_) => "etcd 3.4",
        }
    }
}

/// Watchers sharing one connection.
const WATCHERS_PER_CONNECTION: usize = 100;

/// A ~1 KiB pod; `bench/sent` (first among its annotations, so found near the start) holds the
/// send time in µs and the write's index.
fn pod(ns: &str, index: u64, node: Option<&str>) -> Vec<u8> {
    let mut spec = json!({"schedulerName": "manual",
        "containers": [{"name": "app", "image": "registry.local/bench/app:1.0",
                        "command": ["/bin/app", "--port", "8080"],
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]});
    if let Some(node) = node {
        spec["nodeName"] = node.into();
    }
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("w-{index}"), "namespace": ns,
                     "labels": {"app": "bench", "tier": "web"},
                     "annotations": {"bench/sent": format!("{}-{index}", now_micros()),
                                     "bench/pad": "p".repeat(420)}},
        "spec": spec
    });
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// The send time and write index in an object's bytes.
fn marker(bytes: &[u8]) -> Option<(u64, u64)> {
    const KEY: &[u8] = b"\"bench/sent\":\"";
    let at = bytes.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &bytes[at..];
    let end = rest.iter().position(|b| *b == b'"')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let (sent, index) = text.split_once('-')?;
    Some((sent.parse().ok()?, index.parse().ok()?))
}

/// What one watcher saw.
#[derive(Default)]
struct Log {
    latencies_us: Vec<u32>,
    got: HashMap<u64, u32>,
    opened: bool,
    /// The server closed the watch (Skiff: EXPIRED, the watcher fell too far behind).
    cut_off: bool,
}

impl Log {
    fn record(&mut self, bytes: &[u8], received: &AtomicU64) {
        if let Some((sent, index)) = marker(bytes) {
            let lat = now_micros().saturating_sub(sent).min(u32::MAX as u64) as u32;
            self.latencies_us.push(lat);
            *self.got.entry(index).or_default() += 1;
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One fan-out run's figures.
struct Outcome {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed_writes: usize,
    lost: usize,
    duplicated: usize,
    /// Watchers that could not open.
    unopened: usize,
    /// Watchers the server closed (their later events count as lost).
    cut_off: usize,
}

impl Outcome {
    fn errors(&self) -> usize {
        self.failed_writes + self.lost + self.duplicated + self.unopened + self.cut_off
    }
}

struct Shared {
    ready: AtomicUsize,
    received: AtomicU64,
}

async fn skiff_watcher(
    client: Client,
    sel: Selection,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Log {
    let mut log = Log::default();
    let Ok(mut stream) = client.watch_objects_stream("pods", &sel, 0).await else {
        shared.ready.fetch_add(1, Ordering::Relaxed);
        return log;
    };
    log.opened = true;
    shared.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            m = stream.message() => match m {
                Ok(Some(resp)) => {
                    for e in resp.events.iter().filter(|e| e.r#type == Type::Added as i32) {
                        log.record(&e.object, &shared.received);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    log.cut_off = true;
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    log
}

async fn etcd_watcher(
    mut client: etcd_client::Client,
    prefix: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Log {
    let mut log = Log::default();
    let opened = client
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await;
    let Ok(mut stream) = opened else {
        shared.ready.fetch_add(1, Ordering::Relaxed);
        return log;
    };
    // Ready once etcd confirms the watch (its first response).
    if let Ok(Some(_created)) = stream.message().await {
        log.opened = true;
    }
    shared.ready.fetch_add(1, Ordering::Relaxed);
    while log.opened {
        tokio::select! {
            m = stream.message() => match m {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        log.cut_off = true;
                        break;
                    }
                    for e in resp.events().iter().filter(|e| e.event_type() == EventType::Put) {
                        if let Some(kv) = e.kv() {
                            log.record(kv.value(), &shared.received);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    log.cut_off = true;
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    log
}

/// One fan-out run: open `watchers`, write at `rate` for `seconds`, wait for the deliveries,
/// then delete what was written.
async fn fan_out(
    target: &Target<'_>,
    shape: Shape,
    watchers: usize,
    rate: u64,
    seconds: u64,
    round: usize,
) -> anyhow::Result<Outcome> {
    let ns = format!("bench-fanout-{round}");
    let etcd_prefix = format!("/bench/{round}/pods/");
    let node = |i: usize| format!("node-{i}");
    let shared = Arc::new(Shared {
        ready: AtomicUsize::new(0),
        received: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::with_capacity(watchers);
    match target {
        Target::Skiff(cluster) => {
            ensure_namespace(&client_of(cluster)?, &ns).await?;
            let endpoints = cluster.endpoints();
            let mut connections: Vec<Client> = Vec::new();
            for i in 0..watchers {
                let member = i % endpoints.len();
                let slot = i / (endpoints.len() * WATCHERS_PER_CONNECTION);
                let at = slot * endpoints.len() + member;
                if at >= connections.len() {
                    connections.push(cluster.client_to(&[endpoints[member].clone()]));
                }
                let sel = Selection {
                    namespace: if shape == Shape::OwnNode {
                        ns.clone()
                    } else {
                        String::new()
                    },
                    fields: if shape == Shape::OwnNode {
                        format!("spec.nodeName={}", node(i))
                    } else {
                        String::new()
                    },
                    ..Default::default()
                };
                handles.push(tokio::spawn(skiff_watcher(
                    connections[at].clone(),
                    sel,
                    shared.clone(),
                    stop_rx.clone(),
                )));
            }
        }
        Target::Etcd(etcd) => {
            let endpoints = etcd.endpoints();
            let mut connections: Vec<etcd_client::Client> = Vec::new();
            for i in 0..watchers {
                let member = i % endpoints.len();
                let slot = i / (endpoints.len() * WATCHERS_PER_CONNECTION);
                let at = slot * endpoints.len() + member;
                if at >= connections.len() {
                    connections.push(etcd.connect(&endpoints[member]).await?);
                }
                let prefix = match shape {
                    Shape::AllPods => etcd_prefix.clone(),
                    Shape::OwnNode => format!("{etcd_prefix}{}/", node(i)),
                };
                handles.push(tokio::spawn(etcd_watcher(
                    connections[at].clone(),
                    prefix,
                    shared.clone(),
                    stop_rx.clone(),
                )));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.ready.load(Ordering::Relaxed) < watchers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The writes, paced; each in its own task so a slow one does not hold the next back.
    let skiff_writer = match target {
        Target::Skiff(cluster) => Some(client_of(cluster)?),
        Target::Etcd(_) => None,
    };
    let etcd_writer = match target {
        Target::Etcd(etcd) => Some(etcd.connect_all().await?.kv_client()),
        Target::Skiff(_) => None,
    };
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut next = start;
    let mut writes = Vec::new();
    let mut k = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        next += period;
        let on = (shape == Shape::OwnNode).then(|| node(k as usize % watchers));
        let bytes = pod(&ns, k, on.as_deref());
        let index = k;
        k += 1;
        if let Some(c) = &skiff_writer {
            let c = c.clone();
            let ns = ns.clone();
            writes.push(tokio::spawn(async move {
                (index, c.create_object("pods", &ns, bytes).await.is_ok())
            }));
        } else if let Some(c) = &etcd_writer {
            let mut c = c.clone();
            let key = match &on {
                Some(n) => format!("{etcd_prefix}{n}/w-{index}"),
                None => format!("{etcd_prefix}w-{index}"),
            };
            writes.push(tokio::spawn(async move {
                (index, c.put(key, bytes, None).await.is_ok())
            }));
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let mut written = Vec::new();
    let mut failed_writes = 0;
    for w in writes {
        match w.await {
            Ok((i, true)) => written.push(i),
            _ => failed_writes += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let expected = match shape {
        Shape::AllPods => (written.len() * watchers) as u64,
        Shape::OwnNode => written.len() as u64,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let mut latencies: Vec<u32> = Vec::new();
    let (mut lost, mut duplicated, mut unopened, mut cut_off) = (0, 0, 0, 0);
    for (i, h) in handles.into_iter().enumerate() {
        let log = h.await.unwrap_or_default();
        if !log.opened {
            unopened += 1;
        }
        if log.cut_off {
            cut_off += 1;
        }
        for w in &written {
            let wanted = shape == Shape::AllPods || *w as usize % watchers == i;
            if wanted && !log.got.contains_key(w) {
                lost += 1;
            }
        }
        duplicated += log
            .got
            .values()
            .map(|c| c.saturating_sub(1) as usize)
            .sum::<usize>();
        latencies.extend(log.latencies_us);
    }
    latencies.sort_unstable();
    // The cluster goes back to the size whose memory is measured.
    match target {
        Target::Skiff(cluster) => {
            // Gone before the next run starts: its pods' deletions must not overlap it.
            let admin = client_of(cluster)?;
            admin
                .delete_object("namespaces", "", &ns, &Default::default())
                .await?;
            let deadline = Instant::now() + Duration::from_secs(300);
            while admin.get_object("namespaces", "", &ns, false).await.is_ok()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Target::Etcd(etcd) => {
            etcd.connect_all()
                .await?
                .delete(
                    etcd_prefix,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await?;
        }
    }
    let pct = |p: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    Ok(Outcome {
        per_sec: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        failed_writes,
        lost,
        duplicated,
        unopened,
        cut_off,
    })
}

fn rss_mib(cluster: &Cluster, id: u64) -> f64 {
    cluster
        .members
        .get(&id)
        .and_then(|m| m.rss_bytes())
        .unwrap_or(0) as f64
        / (1024.0 * 1024.0)
}

/// Wait until the store's revision has not moved for `quiet` (the controllers are done).
async fn settle(client: &Client, quiet: Duration) {
    let mut last = 0;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let rev = client
            .status()
            .await
            .map(|s| s.revision)
            .unwrap_or_default();
        if rev != last {
            last = rev;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    println!(
        "# skiff-bench watch: 3 Skiff members and 3 etcd 3.4 members on loopback, fsync on, mutual TLS on both; load generator on the same machine"
    );
    let cluster = Cluster::start(
        3,
        MemberOptions {
            extra_args: static_nodes(&args.member_flags),
            ..Default::default()
        },
    );
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let admin = client_of(&cluster)?;
    super::wait_for_default_namespace(&admin).await;
    let etcd = Etcd::start(true, &[])?;
    let mut errors = 0;

    println!(
        "\n## the leader's memory at {} pods and {} nodes",
        args.pods, args.nodes
    );
    let (failed_pods, failed_nodes) = fill(&cluster, args.pods, args.nodes).await?;
    errors += failed_pods + failed_nodes;
    settle(&admin, Duration::from_secs(3)).await;
    let before = rss_mib(&cluster, leader);
    println!("failed creates: {failed_pods} pods, {failed_nodes} nodes");
    println!("leader (member {leader}) resident memory: {before:.0} MiB  (target ≤ 200 MiB); every member: {} MiB", rss_line(&cluster));

    for (shape, watchers, target_p99) in [
        (Shape::AllPods, args.watchers, 100.0),
        (Shape::OwnNode, args.node_watchers, 50.0),
    ] {
        println!(
            "\n## {watchers} watchers {}, {} writes/s for {} s, {} runs each, Skiff and etcd alternating",
            match shape {
                Shape::AllPods => "of every pod",
                Shape::OwnNode => "each of its own node's pods",
            },
            args.rate,
            args.seconds,
            args.runs
        );
        println!(
            "{:<9} {:>4} {:>13} {:>9} {:>9} {:>7} {:>8} {:>6} {:>9} {:>8}",
            "system",
            "run",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "failed",
            "lost",
            "dup",
            "unopened",
            "cut off"
        );
        let mut ratios = Vec::new();
        let mut runs: HashMap<&str, Vec<Outcome>> = HashMap::new();
        for run in 0..args.runs {
            let order = if run % 2 == 0 {
                [Target::Skiff(&cluster), Target::Etcd(&etcd)]
            } else {
                [Target::Etcd(&etcd), Target::Skiff(&cluster)]
            };
            for target in order {
                let round = run * 2 + usize::from(shape == Shape::OwnNode) * 1000;
                let o = fan_out(&target, shape, watchers, args.rate, args.seconds, round).await?;
                println!(
                    "{:<9} {:>4} {:>13.0} {:>9.2} {:>9.2} {:>7} {:>8} {:>6} {:>9} {:>8}",
                    target.name(),
                    run + 1,
                    o.per_sec,
                    o.p50_ms,
                    o.p99_ms,
                    o.failed_writes,
                    o.lost,
                    o.duplicated,
                    o.unopened,
                    o.cut_off
                );
                errors += o.errors();
                runs.entry(target.name()).or_default().push(o);
            }
            let (s, e) = (&runs["skiff"][run], &runs["etcd 3.4"][run]);
            ratios.push((s.per_sec / e.per_sec, s.p99_ms / e.p99_ms));
        }
        for name in ["skiff", "etcd 3.4"] {
            let r = &runs[name];
            println!(
                "{name:<9} median: {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms{}",
                median(r.iter().map(|o| o.per_sec).collect()),
                median(r.iter().map(|o| o.p50_ms).collect()),
                median(r.iter().map(|o| o.p99_ms).collect()),
                if name == "skiff" {
                    format!("  (target p99 ≤ {target_p99} ms)")
                } else {
                    String::new()
                }
            );
        }
        println!(
            "skiff ÷ etcd, paired per run (median): deliveries/s {:.2}x (target ≥ 1), p99 {:.2}x (target ≤ 1)",
            median(ratios.iter().map(|r| r.0).collect()),
            median(ratios.iter().map(|r| r.1).collect())
        );
    }

    // The fan-outs' pods are deleted with their namespaces: wait until they are gone.
    settle(&admin, Duration::from_secs(3)).await;
    let after = rss_mib(&cluster, leader);
    println!(
        "\nleader (member {leader}) resident memory after the watch load: {after:.0} MiB  (target ≤ 300 MiB); every member: {} MiB",
        rss_line(&cluster)
    );
    print_verdict(
        errors,
        "errors (failed writes, lost or duplicated events, watchers that did not open)",
    );
    Ok(())
}
