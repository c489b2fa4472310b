//! `skiff-bench store`: three Skiff control nodes and three etcd 3.4 members (Debian's
//! `etcd-server`) on loopback, both fsyncing: write throughput and latency at several client
//! counts (256-byte values), linearizable reads per second, and the failover time (leader
//! `kill -9` to the first successful write), printing medians and ratios.
//!
//! Both run mutual TLS (etcd on its client and peer ports, with client certificates
//! required), as users run them, and a plaintext Skiff runs beside them for what TLS costs;
//! `--plaintext` runs both without. Each run
//! loads the systems one after another, and the ratios are medians of the ratios paired
//! within a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
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

async fn etcd_targets(etcd: &Etcd, n: usize) -> anyhow::Result<Vec<Target>> {
    let endpoints = etcd.endpoints();
    let mut out = Vec::new();
    for i in 0..n {
        // One connection per endpoint, spread like Skiff's clients.
        let c = etcd.connect(&endpoints[i % endpoints.len()]).await?;
        out.push(Target::Etcd(Box::new(c.kv_client())));
    }
    Ok(out)
}

fn skiff_targets(cluster: &Cluster, n: usize) -> anyhow::Result<Vec<Target>> {
    let endpoints = cluster.endpoints();
    (0..n)
        .map(|i| {
            let mut eps = endpoints.clone();
            eps.rotate_left(i % endpoints.len());
            Ok(Target::Skiff(Client::with_config(
                &eps,
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
        "{system:<11} {clients:>7} {:>12.0} {:>9.2} {:>9.2} {:>7}",
        m.ops_per_sec, m.p50_ms, m.p99_ms, m.errors
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

/// What was measured at one client count.
struct Row {
    clients: usize,
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
        print_row(s, self.clients, &median_of(&all(&|r| Some(r.skiff))));
        let plain = all(&|r| r.plain);
        if !plain.is_empty() {
            print_row("skiff-plain", self.clients, &median_of(&plain));
        }
        let etcd = all(&|r| r.etcd);
        if !etcd.is_empty() {
            print_row(e, self.clients, &median_of(&etcd));
        }
    }
}

/// Load every system with `clients` clients once each.
async fn round(
    skiff: &Cluster,
    plain: Option<&Cluster>,
    etcd: Option<&Etcd>,
    clients: usize,
    duration: Duration,
    value_size: usize,
    write: bool,
) -> anyhow::Result<Round> {
    let targets = skiff_targets(skiff, clients)?;
    let s = load(&targets, clients, duration, value_size, write).await;
    let p = match plain {
        Some(p) => {
            let targets = skiff_targets(p, clients)?;
            Some(load(&targets, clients, duration, value_size, write).await)
        }
        None => None,
    };
    let e = match etcd {
        Some(e) => {
            let targets = etcd_targets(e, clients).await?;
            Some(load(&targets, clients, duration, value_size, write).await)
        }
        None => None,
    };
    Ok(Round {
        skiff: s,
        plain: p,
        etcd: e,
    })
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
        "# {}s per measurement, median of {} runs, {}-byte values\n",
        args.duration, args.runs, args.value_size
    );

    let mut skiff = Cluster::start(
        3,
        MemberOptions {
            plaintext: !tls,
            ..Default::default()
        },
    );
    skiff.wait_leader(Duration::from_secs(20)).await;
    let plain = if tls {
        let p = Cluster::start(
            3,
            MemberOptions {
                plaintext: true,
                ..Default::default()
            },
        );
        p.wait_leader(Duration::from_secs(20)).await;
        Some(p)
    } else {
        None
    };
    let mut etcd = if args.skip_etcd {
        None
    } else {
        Some(Etcd::start(tls)?)
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
        "{:<11} {:>7} {:>12} {:>9} {:>9} {:>7}",
        "system", "clients", "writes/s", "p50 ms", "p99 ms", "errors"
    );
    let mut rows = Vec::new();
    for &c in &args.clients {
        let mut rounds = Vec::new();
        for _ in 0..args.runs {
            rounds.push(
                round(
                    &skiff,
                    plain.as_ref(),
                    etcd.as_ref(),
                    c,
                    duration,
                    args.value_size,
                    true,
                )
                .await?,
            );
        }
        let row = Row { clients: c, rounds };
        row.print(tls);
        rows.push(row);
    }

    println!("\n## linearizable reads (64 clients)");
    let reads = Row {
        clients: 64,
        rounds: vec![
            round(
                &skiff,
                plain.as_ref(),
                etcd.as_ref(),
                64,
                duration,
                args.value_size,
                false,
            )
            .await?,
        ],
    };
    reads.print(tls);

    println!(
        "\n## failover: leader kill -9 to first successful write ({} times each)",
        args.failovers
    );
    let mut skiff_fo = Vec::new();
    for _ in 0..args.failovers {
        let leader = skiff.wait_leader(Duration::from_secs(20)).await;
        let writers: Vec<Target> = skiff
            .endpoints()
            .iter()
            .map(|e| {
                Client::with_config(
                    std::slice::from_ref(e),
                    ClientConfig {
                        attempt_timeout: Duration::from_millis(250),
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
            let writers = etcd_targets(e, 3).await?;
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

    println!("\n## ratios (paired within each run, median)");
    let ratio = |a: f64, b: Option<f64>| b.map(|b| a / b);
    for row in rows.iter().chain([&reads]) {
        let what = if std::ptr::eq(row, &reads) {
            "linearizable reads".to_string()
        } else {
            format!("writes, {:>3} clients", row.clients)
        };
        let vs_etcd = row.paired(|r| ratio(r.skiff.ops_per_sec, r.etcd.map(|e| e.ops_per_sec)));
        let p99 = row.paired(|r| ratio(r.skiff.p99_ms, r.etcd.map(|e| e.p99_ms)));
        if let (Some(t), Some(p)) = (vs_etcd, p99) {
            println!("{what}: skiff / etcd throughput x{t:.2}, p99 x{p:.2}");
        }
        if let Some(t) = row.paired(|r| ratio(r.skiff.ops_per_sec, r.plain.map(|p| p.ops_per_sec)))
        {
            println!("{what}: skiff TLS / skiff plaintext throughput x{t:.2}");
        }
    }
    if !etcd_fo.is_empty() && !skiff_fo.is_empty() {
        println!(
            "failover median: x{:.2}",
            median(skiff_fo.clone()) / median(etcd_fo.clone())
        );
    }
    Ok(())
}
