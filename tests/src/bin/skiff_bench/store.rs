//! `skiff-bench store`: three Skiff control nodes and three etcd 3.4 members (Debian's
//! `etcd-server`) on loopback, both fsyncing: write throughput and latency at several client
//! counts (256-byte values) with the clients on the leader and spread over every member (a
//! follower forwards what it gets, in both systems), linearizable reads per second, and the
//! failover time (leader `kill -9` to the first successful write) at equal Raft timings and at
//! each system's defaults, printing medians, errors and ratios.
//!
//! Both run mutual TLS (etcd on its client and peer ports, with client certificates
//! required), as users run them, and a plaintext Skiff runs beside them for what TLS costs;
//! `--plaintext` runs both without. Each run loads the systems one after another, in an order
//! that alternates from run to run, and the ratios are medians of the ratios paired within a
//! run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use skiff_e2e::{Cluster, MemberOptions};
use skiff_proto::{Client, ClientConfig};

use super::etcd::Etcd;
use super::{median, percentile};

#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Client counts to measure writes at.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Runs of each write measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Leader kills per system for the failover time.
    #[arg(long, default_value_t = 10)]
    failovers: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Only Skiff (no etcd).
    #[arg(long)]
    skip_etcd: bool,
    /// Plaintext on both sides, as the first comparisons ran; by default both run mutual TLS
    /// (as users run them) and a plaintext Skiff runs beside for what TLS costs.
    #[arg(long)]
    plaintext: bool,
}

/// Something to load: put and linearizable get.

#[derive(Clone)]
enum Target {
    Skiff(Client),
    Etcd(Box<etcd_client::KvClient>),
}

impl Target {
    async fn put(&mut self, key: String, value: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Target::Skiff(c) => {
                c.put(key, value).await?;
            }
            Target::Etcd(c) => {
                c.put(key, value, None).await?;
            }
        }
        Ok(())
    }

    async fn get(&mut self, key: String) -> anyhow::Result<()> {
        match self {
            Target::Skiff(c) => {
                c.get(key, false).await?;
            }
            Target::Etcd(c) => {
                c.get(key, None).await?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Measure {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// Run `clients` concurrent loops of writes (or linearizable reads) for `duration`. Each
/// client first makes one untimed read, so every connection (and TLS handshake) is made
/// before the clock starts, for Skiff's lazily connecting clients as for etcd's.
async fn load(
    targets: &[Target],
    clients: usize,
    duration: Duration,
    value_size: usize,
    write: bool,
) -> Measure {
    let ready = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let mut t = targets[i % targets.len()].clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let warm = t.get(format!("bench/{i}/0")).await.is_ok();
                ready.wait().await;
                let deadline = Instant::now() + duration;
                let mut lat = Vec::new();
                let mut errors = usize::from(!warm);
                let mut n = 0u64;
                let value = vec![b'v'; value_size];
                while Instant::now() < deadline {
                    let key = format!("bench/{i}/{}", n % 1000);
                    n += 1;
                    let t0 = Instant::now();
                    let r = if write {
                        t.put(key, value.clone()).await
                    } else {
                        t.get(key).await
                    };
                    match r {
                        Ok(()) => lat.push(t0.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    ready.wait().await;
    let start = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    Measure {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        errors,
    }
}

/// Where the clients send their calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Every client on the leader.
    Leader,
    /// Client `i` on member `i mod 3`; followers forward to the leader.
    Spread,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Leader => "leader",
            Placement::Spread => "spread",
        }
    }
}

/// The endpoint client `i` of a system uses: the leader's, or its share of `endpoints`.
fn endpoint_of(endpoints: &[String], leader: &str, placement: Placement, i: usize) -> String {
    match placement {
        Placement::Leader => leader.to_string(),
        Placement::Spread => endpoints[i % endpoints.len()].clone(),
    }
}

async fn etcd_targets(etcd: &Etcd, n: usize, placement: Placement) -> anyhow::Result<Vec<Target>> {
    let endpoints = etcd.endpoints();
    let leader = match placement {
        Placement::Leader => {
            let i = etcd.leader().await.context("etcd has no leader")?;
            endpoints[(i - 1) as usize].clone()
        }
        Placement::Spread => String::new(),
    };
    let mut out = Vec::new();
    for i in 0..n {
        let c = etcd
            .connect(&endpoint_of(&endpoints, &leader, placement, i))
            .await?;
        out.push(Target::Etcd(Box::new(c.kv_client())));
    }
    Ok(out)
}

/// Skiff's clients, each given one endpoint only, so it stays there as an etcd client does
/// (given all, a Skiff client sends writes to the leader once it knows it).
async fn skiff_targets(
    cluster: &Cluster,
    n: usize,
    placement: Placement,
) -> anyhow::Result<Vec<Target>> {
    let endpoints = cluster.endpoints();
    let leader = match placement {
        Placement::Leader => {
            let id = cluster.wait_leader(Duration::from_secs(20)).await;
            cluster.members[&id].addr.clone()
        }
        Placement::Spread => String::new(),
    };
    (0..n)
        .map(|i| {
            Ok(Target::Skiff(Client::with_config(
                &[endpoint_of(&endpoints, &leader, placement, i)],
                ClientConfig {
                    random_start: false,
                    ..cluster.client_config()
                },
            )?))
        })
        .collect()
}

/// Seconds since midnight UTC, to match a failover with the members' logs.
fn clock_of_day() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", t.as_secs() % 86_400, t.subsec_millis())
}

/// How long a failover probe write may take before it is given up and tried again: short, so
/// it does not set the measurement's resolution, the same for both systems.
const PROBE_DEADLINE: Duration = Duration::from_millis(20);

/// One failover: kill -9 the leader while a writer per member writes; time from the kill to
/// the first write that started after it and succeeded.
async fn failover_once(writers: Vec<Target>, kill: impl FnOnce()) -> Option<Duration> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first_ok: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let mut tasks = Vec::new();
    for (i, mut t) in writers.into_iter().enumerate() {
        let stop = stop.clone();
        let first_ok = first_ok.clone();
        let killed_at = killed_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let r = tokio::time::timeout(
                    PROBE_DEADLINE,
                    t.put(format!("failover/{i}/{n}"), vec![b'f'; 256]),
                )
                .await;
                if matches!(r, Ok(Ok(()))) {
                    let k = *killed_at.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(k) = k {
                        if started >= k {
                            let mut f = first_ok.lock().unwrap_or_else(|p| p.into_inner());
                            if f.is_none() {
                                *f = Some(Instant::now());
                            }
                        }
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    *killed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    kill();
    let t0 = killed_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_else(Instant::now);
    let deadline = t0 + Duration::from_secs(15);
    while first_ok.lock().unwrap_or_else(|p| p.into_inner()).is_none() && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let f = *first_ok.lock().unwrap_or_else(|p| p.into_inner());
    f.map(|f| f - t0)
}

fn print_row(system: &str, placement: Placement, clients: usize, m: &Measure) {
    println!(
        "{system:<11} {:<9} {clients:>7} {:>12.0} {:>9.2} {:>9.2} {:>7}",
        placement.name(),
        m.ops_per_sec,
        m.p50_ms,
        m.p99_ms,
        m.errors
    );
}

fn median_of(v: &[Measure]) -> Measure {
    Measure {
        ops_per_sec: median(v.iter().map(|m| m.ops_per_sec).collect()),
        p50_ms: median(v.iter().map(|m| m.p50_ms).collect()),
        p99_ms: median(v.iter().map(|m| m.p99_ms).collect()),
        errors: v.iter().map(|m| m.errors).sum(),
    }
}

/// One load of each system, one after another.
struct Round {
    skiff: Measure,
    plain: Option<Measure>,
    etcd: Option<Measure>,
}

/// What was measured at one client count and placement.
struct Row {
    clients: usize,
    placement: Placement,
    write: bool,
    rounds: Vec<Round>,
}

impl Row {
    /// Median of the paired throughput ratios `f(round)`.
    fn paired(&self, f: impl Fn(&Round) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.rounds.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    }

    fn print(&self, tls: bool) {
        let (s, e) = if tls {
            ("skiff-tls", "etcd-tls")
        } else {
            ("skiff", "etcd")
        };
        let all = |f: &dyn Fn(&Round) -> Option<Measure>| -> Vec<Measure> {
            self.rounds.iter().filter_map(f).collect()
        };
        let (at, c) = (self.placement, self.clients);
        print_row(s, at, c, &median_of(&all(&|r| Some(r.skiff))));
        let plain = all(&|r| r.plain);
        if !plain.is_empty() {
            print_row("skiff-plain", at, c, &median_of(&plain));
        }
        let etcd = all(&|r| r.etcd);
        if !etcd.is_empty() {
            print_row(e, at, c, &median_of(&etcd));
        }
    }
}

/// The systems a run compares.
struct Systems<'a> {
    skiff: &'a Cluster,
    plain: Option<&'a Cluster>,
    etcd: Option<&'a Etcd>,
}

/// How one round loads.
#[derive(Clone, Copy)]
struct Load {
    clients: usize,
    placement: Placement,
    duration: Duration,
    value_size: usize,
    write: bool,
}

/// Load every system once, etcd last on even runs and first on odd ones.
async fn round(systems: &Systems<'_>, how: Load, run: usize) -> anyhow::Result<Round> {
    let go = |targets: Vec<Target>| async move {
        load(
            &targets,
            how.clients,
            how.duration,
            how.value_size,
            how.write,
        )
        .await
    };
    let etcd_first = run % 2 == 1;
    let mut e = None;
    if let (true, Some(etcd)) = (etcd_first, systems.etcd) {
        e = Some(go(etcd_targets(etcd, how.clients, how.placement).await?).await);
    }
    let s = go(skiff_targets(systems.skiff, how.clients, how.placement).await?).await;
    let p = match systems.plain {
        Some(p) => Some(go(skiff_targets(p, how.clients, how.placement).await?).await),
        None => None,
    };
    if let (false, Some(etcd)) = (etcd_first, systems.etcd) {
        e = Some(go(etcd_targets(etcd, how.clients, how.placement).await?).await);
    }
    Ok(Round {
        skiff: s,
        plain: p,
        etcd: e,
    })
}

/// Raft timings a failover is measured at: Skiff's flags and etcd's.
struct Timings {
    name: &'static str,
    skiff: Vec<String>,
    etcd: Vec<String>,
}

/// Equal timings for both (etcd wants an election timeout of at least five heartbeats and
/// draws it from [timeout, 2 x timeout), so Skiff's range is set to match), and each system's
/// defaults.
fn timings() -> [Timings; 2] {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    [
        Timings {
            name: "equal (heartbeat 50 ms, election 250-500 ms)",
            skiff: v(&["--heartbeat-ms", "50", "--election-timeout-ms", "250-500"]),
            etcd: v(&["--heartbeat-interval=50", "--election-timeout=250"]),
        },
        Timings {
            name: "defaults (Skiff 50 ms / 120-240 ms, etcd 100 ms / 1,000-2,000 ms)",
            skiff: Vec::new(),
            etcd: Vec::new(),
        },
    ]
}

fn start_skiff(tls: bool, extra_args: Vec<String>) -> Cluster {
    Cluster::start(
        3,
        MemberOptions {
            plaintext: !tls,
            extra_args,
            ..Default::default()
        },
    )
}

async fn start_etcd(tls: bool, flags: &[String]) -> anyhow::Result<Etcd> {
    let etcd = Etcd::start(tls, flags)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcd.leader().await.is_none() {
        if Instant::now() > deadline {
            bail!("etcd elected no leader");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(etcd)
}

/// Kill the leader `times` times in each system; the milliseconds to the first write after.
async fn failovers(
    skiff: &mut Cluster,
    etcd: Option<&mut Etcd>,
    times: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut skiff_ms = Vec::new();
    for _ in 0..times {
        let leader = skiff.wait_leader(Duration::from_secs(20)).await;
        let writers: Vec<Target> = skiff
            .endpoints()
            .iter()
            .map(|e| {
                Client::with_config(
                    std::slice::from_ref(e),
                    ClientConfig {
                        attempt_timeout: PROBE_DEADLINE,
                        call_deadline: Duration::ZERO,
                        random_start: false,
                        ..skiff.client_config()
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(Target::Skiff)
            .collect();
        let skiff_ref = &mut *skiff;
        let d = failover_once(writers, || skiff_ref.kill9(leader)).await;
        skiff.restart(leader);
        if let Some(d) = d {
            eprintln!(
                "failover: killed member {leader} at {}, first write {:.0} ms later",
                clock_of_day(),
                d.as_secs_f64() * 1000.0
            );
            skiff_ms.push(d.as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut etcd_ms = Vec::new();
    if let Some(e) = etcd {
        for _ in 0..times {
            let Some(leader) = e.leader().await else {
                continue;
            };
            let writers = etcd_targets(e, 3, Placement::Spread).await?;
            let d = failover_once(writers, || e.kill9(leader)).await;
            e.restart(leader)?;
            if let Some(d) = d {
                etcd_ms.push(d.as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    Ok((skiff_ms, etcd_ms))
}

fn spread_of(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    format!(
        "median {:.0} ms (min {:.0}, max {:.0}, n={})",
        median(s.clone()),
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
        s.len()
    )
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.duration);
    let tls = !args.plaintext;
    let security = if tls {
        "mutual TLS on both (and a plaintext Skiff beside)"
    } else {
        "plaintext"
    };
    println!(
        "# skiff-bench store: 3 Skiff members vs 3 etcd 3.4 members on loopback, fsync on, {security}"
    );
    println!(
        "# {}s per measurement, median of {} runs (order alternating), {}-byte values\n",
        args.duration, args.runs, args.value_size
    );

    let [equal, defaults] = timings();
    let mut skiff = start_skiff(tls, defaults.skiff.clone());
    skiff.wait_leader(Duration::from_secs(20)).await;
    let plain = if tls {
        let p = start_skiff(false, Vec::new());
        p.wait_leader(Duration::from_secs(20)).await;
        Some(p)
    } else {
        None
    };
    let mut etcd = if args.skip_etcd {
        None
    } else {
        Some(start_etcd(tls, &defaults.etcd).await?)
    };

    println!("## writes");
    println!(
        "{:<11} {:<9} {:>7} {:>12} {:>9} {:>9} {:>7}",
        "system", "placement", "clients", "writes/s", "p50 ms", "p99 ms", "errors"
    );
    let mut rows = Vec::new();
    let mut reads = Vec::new();
    {
        let systems = Systems {
            skiff: &skiff,
            plain: plain.as_ref(),
            etcd: etcd.as_ref(),
        };
        for placement in [Placement::Leader, Placement::Spread] {
            for &c in &args.clients {
                let mut rounds = Vec::new();
                for run in 0..args.runs {
                    let how = Load {
                        clients: c,
                        placement,
                        duration,
                        value_size: args.value_size,
                        write: true,
                    };
                    rounds.push(round(&systems, how, run).await?);
                }
                let row = Row {
                    clients: c,
                    placement,
                    write: true,
                    rounds,
                };
                row.print(tls);
                rows.push(row);
            }
        }

        println!("\n## linearizable reads (64 clients)");
        for placement in [Placement::Leader, Placement::Spread] {
            let how = Load {
                clients: 64,
                placement,
                duration,
                value_size: args.value_size,
                write: false,
            };
            let row = Row {
                clients: 64,
                placement,
                write: false,
                rounds: vec![round(&systems, how, 0).await?],
            };
            row.print(tls);
            reads.push(row);
        }
    }

    println!(
        "\n## failover: leader kill -9 to the first successful write ({} times each; probes of {} ms, retried)",
        args.failovers,
        PROBE_DEADLINE.as_millis()
    );
    let mut failover_summary = Vec::new();
    drop(plain);
    let (s, e) = failovers(&mut skiff, etcd.as_mut(), args.failovers).await?;
    drop(skiff);
    drop(etcd.take());
    failover_summary.push((defaults.name, s, e));
    let mut skiff_eq = start_skiff(tls, equal.skiff.clone());
    skiff_eq.wait_leader(Duration::from_secs(20)).await;
    let mut etcd_eq = if args.skip_etcd {
        None
    } else {
        Some(start_etcd(tls, &equal.etcd).await?)
    };
    let (s, e) = failovers(&mut skiff_eq, etcd_eq.as_mut(), args.failovers).await?;
    failover_summary.push((equal.name, s, e));
    for (name, s, e) in &failover_summary {
        println!("{name}:");
        println!("  skiff  {}", spread_of(s));
        if !e.is_empty() {
            println!("  etcd   {}", spread_of(e));
        }
    }

    println!("\n## summary (ratios paired within each run, median)");
    let ratio = |a: f64, b: Option<f64>| b.map(|b| a / b);
    let errors: usize = rows
        .iter()
        .chain(&reads)
        .flat_map(|r| &r.rounds)
        .map(|r| r.skiff.errors + r.plain.map_or(0, |p| p.errors) + r.etcd.map_or(0, |e| e.errors))
        .sum();
    for row in rows.iter().chain(&reads) {
        let what = format!(
            "{:<6} {:<6} {:>3} clients",
            if row.write { "writes" } else { "reads" },
            row.placement.name(),
            row.clients
        );
        let vs_etcd = row.paired(|r| ratio(r.skiff.ops_per_sec, r.etcd.map(|e| e.ops_per_sec)));
        let p99 = row.paired(|r| ratio(r.skiff.p99_ms, r.etcd.map(|e| e.p99_ms)));
        let tls_cost = row.paired(|r| ratio(r.skiff.ops_per_sec, r.plain.map(|p| p.ops_per_sec)));
        let mut line = what;
        if let (Some(t), Some(p)) = (vs_etcd, p99) {
            line += &format!(": skiff/etcd throughput x{t:.2}, p99 x{p:.2}");
        }
        if let Some(t) = tls_cost {
            line += &format!("; TLS/plaintext throughput x{t:.2}");
        }
        println!("{line}");
    }
    for (name, s, e) in &failover_summary {
        if !s.is_empty() && !e.is_empty() {
            println!(
                "failover median, {name}: {:.0} / {:.0} ms, x{:.2}",
                median(s.clone()),
                median(e.clone()),
                median(s.clone()) / median(e.clone())
            );
        }
    }
    super::print_verdict(errors, "failed calls");
    Ok(())
}
