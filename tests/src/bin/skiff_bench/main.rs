//! `skiff-bench`: benchmarks that compare Skiff with its peers side by side in one run.
//!
//! `skiff-bench store` starts three Skiff control nodes and three etcd 3.4 members (Debian's
//! `etcd-server`) on loopback, both fsyncing, and measures for each: write throughput and
//! latency at several client counts (256-byte values), linearizable reads per second, and the
//! failover time (leader `kill -9` to the first successful write), printing medians and ratios.
//! `skiff-bench objects` measures the object API (see `objects.rs`), `skiff-bench scheduling`
//! the scheduler (`scheduling.rs`), `skiff-bench pods` pods on a real node (`pods.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use skiff_e2e::{free_port, Cluster, MemberOptions};
use skiff_proto::{Client, ClientConfig};

mod authz;
mod controllers;
mod hollow_cluster;
mod objects;
mod pods;
mod proxy;
mod scheduling;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Skiff's store against etcd: writes, reads, failover.
    Store(StoreArgs),
    /// The object API: create overhead, watch fan-out, list latency, memory.
    Objects(objects::ObjectsArgs),
    /// The scheduler and controllers: Deployments onto hollow nodes.
    Scheduling(scheduling::SchedulingArgs),
    /// The controllers under a steady churn at two cluster sizes: cost follows the work.
    Controllers(controllers::ControllersArgs),
    /// Pods on a real node: create-to-Running latency and the agent's memory.
    Pods(pods::PodsArgs),
    /// The service proxy on a real node: rule latency, full sync, ClusterIP throughput.
    Proxy(proxy::ProxyArgs),
    /// What enforcing roles costs object creates (roles vs always-allow, paired).
    Authz(authz::AuthzArgs),
}

#[derive(clap::Args, Clone)]
struct StoreArgs {
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

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Run `clients` concurrent loops of `op` for `duration`.
async fn load(
    targets: &[Target],
    clients: usize,
    duration: Duration,
    value_size: usize,
    write: bool,
) -> Measure {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let mut t = targets[i % targets.len()].clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
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

/// Three etcd members on loopback.
struct Etcd {
    procs: BTreeMap<u64, (String, Vec<String>, Option<Child>)>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> anyhow::Result<Self> {
        let bin = which("etcd").context("etcd is not installed: apt-get install etcd-server")?;
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-etcd-")
            .tempdir()?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = BTreeMap::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let args = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                dir.path().join(&name).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "skiff-bench".into(),
                "--log-level".into(),
                "error".into(),
            ];
            let child = spawn_etcd(&bin, &args)?;
            procs.insert(
                i as u64 + 1,
                (format!("127.0.0.1:{client}"), args, Some(child)),
            );
        }
        let _ = bin;
        Ok(Self { procs, _dir: dir })
    }

    fn endpoints(&self) -> Vec<String> {
        self.procs.values().map(|(a, _, _)| a.clone()).collect()
    }

    /// The index (1-based) of the leader, by asking each member.
    async fn leader(&self) -> Option<u64> {
        for (addr, _, child) in self.procs.values() {
            if child.is_none() {
                continue;
            }
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_millis(500),
                etcd_client::Client::connect([addr.as_str()], None),
            )
            .await
            else {
                continue;
            };
            let Ok(Ok(st)) = tokio::time::timeout(Duration::from_millis(500), c.status()).await
            else {
                continue;
            };
            let leader_member = st.leader();
            for (j, (addr2, _, child2)) in &self.procs {
                if child2.is_none() {
                    continue;
                }
                let Ok(Ok(mut c2)) = tokio::time::timeout(
                    Duration::from_millis(500),
                    etcd_client::Client::connect([addr2.as_str()], None),
                )
                .await
                else {
                    continue;
                };
                if let Ok(Ok(st2)) =
                    tokio::time::timeout(Duration::from_millis(500), c2.status()).await
                {
                    if st2.header().map(|h| h.member_id()) == Some(leader_member) {
                        return Some(*j);
                    }
                }
            }
        }
        None
    }

    fn kill9(&mut self, i: u64) {
        if let Some((_, _, child)) = self.procs.get_mut(&i) {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn restart(&mut self, i: u64) -> anyhow::Result<()> {
        let bin = which("etcd").context("etcd")?;
        if let Some((_, args, child)) = self.procs.get_mut(&i) {
            let mut args = args.clone();
            // A restarted member rejoins its existing cluster from disk.
            if let Some(pos) = args.iter().position(|a| a == "new") {
                args[pos] = "existing".into();
            }
            *child = Some(spawn_etcd(&bin, &args)?);
        }
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for (_, _, child) in self.procs.values_mut() {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn spawn_etcd(bin: &PathBuf, args: &[String]) -> anyhow::Result<Child> {
    Ok(Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
}

async fn etcd_targets(endpoints: &[String], n: usize) -> anyhow::Result<Vec<Target>> {
    let mut out = Vec::new();
    for i in 0..n {
        // One connection per endpoint, spread like Skiff's clients.
        let ep = &endpoints[i % endpoints.len()];
        let c = etcd_client::Client::connect([ep.as_str()], None).await?;
        out.push(Target::Etcd(Box::new(c.kv_client())));
    }
    Ok(out)
}

fn skiff_targets(endpoints: &[String], n: usize) -> anyhow::Result<Vec<Target>> {
    (0..n)
        .map(|i| {
            let mut eps = endpoints.to_vec();
            eps.rotate_left(i % endpoints.len());
            Ok(Target::Skiff(Client::with_config(
                &eps,
                ClientConfig {
                    random_start: false,
                    ..Default::default()
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

/// One failover: kill -9 the leader while a writer runs; time to its first success after.
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
                    Duration::from_millis(250),
                    t.put(format!("failover/{i}/{n}"), vec![b'f'; 256]),
                )
                .await;
                if matches!(r, Ok(Ok(()))) {
                    let k = *killed_at.lock().unwrap();
                    if let Some(k) = k {
                        if started >= k {
                            let mut f = first_ok.lock().unwrap();
                            if f.is_none() {
                                *f = Some(Instant::now());
                            }
                        }
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    *killed_at.lock().unwrap() = Some(Instant::now());
    kill();
    let t0 = killed_at.lock().unwrap().unwrap_or_else(Instant::now);
    let deadline = t0 + Duration::from_secs(15);
    while first_ok.lock().unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let f = *first_ok.lock().unwrap();
    f.map(|f| f - t0)
}

fn print_row(system: &str, clients: usize, m: &Measure) {
    println!(
        "{system:<6} {clients:>7} {:>12.0} {:>9.2} {:>9.2} {:>7}",
        m.ops_per_sec, m.p50_ms, m.p99_ms, m.errors
    );
}

async fn store(args: StoreArgs) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.duration);
    println!("# skiff-bench store: 3 Skiff members vs 3 etcd 3.4 members on loopback, fsync on");
    println!(
        "# {}s per measurement, median of {} runs, {}-byte values\n",
        args.duration, args.runs, args.value_size
    );

    // Plaintext, as the etcd it is compared with runs (a TLS comparison needs etcd with
    // certificates too).
    let mut skiff = Cluster::start(
        3,
        MemberOptions {
            plaintext: true,
            ..Default::default()
        },
    );
    skiff.wait_leader(Duration::from_secs(20)).await;
    let mut etcd = if args.skip_etcd {
        None
    } else {
        Some(Etcd::start()?)
    };
    if let Some(e) = &etcd {
        let deadline = Instant::now() + Duration::from_secs(20);
        while e.leader().await.is_none() {
            if Instant::now() > deadline {
                bail!("etcd elected no leader");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    println!("## writes");
    println!(
        "{:<6} {:>7} {:>12} {:>9} {:>9} {:>7}",
        "system", "clients", "writes/s", "p50 ms", "p99 ms", "errors"
    );
    let mut summary: Vec<(usize, Measure, Option<Measure>)> = Vec::new();
    for &c in &args.clients {
        let mut sk = Vec::new();
        let mut et = Vec::new();
        for _ in 0..args.runs {
            let targets = skiff_targets(&skiff.endpoints(), c)?;
            sk.push(load(&targets, c, duration, args.value_size, true).await);
            if let Some(e) = &etcd {
                let targets = etcd_targets(&e.endpoints(), c).await?;
                et.push(load(&targets, c, duration, args.value_size, true).await);
            }
        }
        let med = |v: &[Measure]| Measure {
            ops_per_sec: median(v.iter().map(|m| m.ops_per_sec).collect()),
            p50_ms: median(v.iter().map(|m| m.p50_ms).collect()),
            p99_ms: median(v.iter().map(|m| m.p99_ms).collect()),
            errors: v.iter().map(|m| m.errors).sum(),
        };
        let s = med(&sk);
        print_row("skiff", c, &s);
        let e = (!et.is_empty()).then(|| med(&et));
        if let Some(e) = &e {
            print_row("etcd", c, e);
        }
        summary.push((c, s, e));
    }

    println!("\n## linearizable reads (64 clients)");
    let targets = skiff_targets(&skiff.endpoints(), 64)?;
    let sr = load(&targets, 64, duration, args.value_size, false).await;
    print_row("skiff", 64, &sr);
    let er = match &etcd {
        Some(e) => {
            let targets = etcd_targets(&e.endpoints(), 64).await?;
            let m = load(&targets, 64, duration, args.value_size, false).await;
            print_row("etcd", 64, &m);
            Some(m)
        }
        None => None,
    };

    println!(
        "\n## failover: leader kill -9 to first successful write ({} times each)",
        args.failovers
    );
    let mut skiff_fo = Vec::new();
    for _ in 0..args.failovers {
        let leader = skiff.wait_leader(Duration::from_secs(20)).await;
        let endpoints = skiff.endpoints();
        let writers: Vec<Target> = endpoints
            .iter()
            .map(|e| {
                Client::with_config(
                    std::slice::from_ref(e),
                    ClientConfig {
                        attempt_timeout: Duration::from_millis(250),
                        call_deadline: Duration::ZERO,
                        random_start: false,
                        tls: None,
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(Target::Skiff)
            .collect();
        let skiff_ref = &mut skiff;
        let d = failover_once(writers, || skiff_ref.kill9(leader)).await;
        skiff.restart(leader);
        if let Some(d) = d {
            eprintln!(
                "failover: killed member {leader} at {}, first write {:.0} ms later",
                clock_of_day(),
                d.as_secs_f64() * 1000.0
            );
            skiff_fo.push(d.as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut etcd_fo = Vec::new();
    if let Some(e) = etcd.as_mut() {
        for _ in 0..args.failovers {
            let Some(leader) = e.leader().await else {
                continue;
            };
            let writers = etcd_targets(&e.endpoints(), 3).await?;
            let d = failover_once(writers, || e.kill9(leader)).await;
            e.restart(leader)?;
            if let Some(d) = d {
                etcd_fo.push(d.as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    let fmt = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        format!(
            "median {:.0} ms (min {:.0}, max {:.0}, n={})",
            median(s.clone()),
            s.first().copied().unwrap_or(f64::NAN),
            s.last().copied().unwrap_or(f64::NAN),
            s.len()
        )
    };
    println!("skiff  {}", fmt(&skiff_fo));
    if etcd.is_some() {
        println!("etcd   {}", fmt(&etcd_fo));
    }

    println!("\n## ratios (skiff / etcd)");
    for (c, s, e) in &summary {
        if let Some(e) = e {
            println!(
                "clients {c:>3}: throughput x{:.2}, p99 x{:.2}",
                s.ops_per_sec / e.ops_per_sec,
                s.p99_ms / e.p99_ms
            );
        }
    }
    if let Some(er) = er {
        println!(
            "linearizable reads: x{:.2}",
            sr.ops_per_sec / er.ops_per_sec
        );
    }
    if !etcd_fo.is_empty() && !skiff_fo.is_empty() {
        println!(
            "failover median: x{:.2}",
            median(skiff_fo.clone()) / median(etcd_fo.clone())
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Store(a) => store(a).await,
        Cmd::Objects(a) => objects::run(a).await,
        Cmd::Authz(a) => authz::run(a).await,
        Cmd::Scheduling(a) => scheduling::run(a).await,
        Cmd::Controllers(a) => controllers::run(a).await,
        Cmd::Pods(a) => pods::run(a).await,
        Cmd::Proxy(a) => proxy::run(a).await,
    }
}
