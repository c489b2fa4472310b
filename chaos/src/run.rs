//! One chaos run: hosts, control nodes, workload and watchers, faults on a seeded schedule,
//! then healing, final reads, convergence, and every checker.
//!
//! ```text
//!  seed ─▶ nemesis schedule ──faults──▶ hosts (netns) ─ skiff control ×3
//!                                          ▲
//!  clients (read/write/cas) ──history──────┤      watchers ──events──┐
//!                                          ▼                         ▼
//!                      heal ─▶ final reads ─▶ checkers: linearizable, watch, convergence
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use skiff_proto::pb;
use skiff_proto::{Client, ClientConfig};

use crate::checker::convergence::{self, MemberState};
use crate::checker::{linearizable, watch, Verdict};
use crate::cluster::ChaosCluster;
use crate::delay::DelayProxy;
use crate::history::{Operation, Outcome, RegisterOp, SeenEvent};
use crate::nemesis::{self, Fault, Scenario};
use crate::net::TestNet;
use crate::object_workload;
use crate::workload::{self, Recorded, PREFIX};

/// The delay proxy listens on the bridge address at this port plus the target host's number.
const DELAY_PROXY_BASE_PORT: u16 = 17400;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Which faults.
    pub scenario: Scenario,
    /// How long the workload runs under faults.
    pub duration: Duration,
    /// Seed of the fault schedule and the workload.
    pub seed: u64,
    /// Concurrent register clients.
    pub clients: u32,
    /// Concurrent object clients (ConfigMaps through the object API).
    pub object_clients: u32,
    /// Number of registers (and of ConfigMaps).
    pub keys: u32,
    /// Watchers.
    pub watchers: u32,
    /// Which 10.231.N.0/24 the hosts use.
    pub net: u8,
    /// Where histories are written.
    pub out_dir: PathBuf,
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// Operations that ended ok / fail / unknown.
    pub ok: usize,
    /// Failed operations.
    pub fail: usize,
    /// Operations with unknown outcome.
    pub unknown: usize,
    /// Faults injected.
    pub faults: usize,
    /// Each checker's verdict.
    pub verdicts: Vec<Verdict>,
    /// Where the full history is.
    pub history_file: String,
}

impl Report {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }
}

#[derive(Serialize)]
struct HistoryFile<'a> {
    scenario: String,
    seed: u64,
    faults: &'a [Fault],
    operations: &'a [Operation],
    watch_events: &'a [SeenEvent],
    verdicts: &'a [Verdict],
}

/// Run one scenario.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<Report> {
    let net = TestNet::create(cfg.net, 3)?;
    let data = tempfile::Builder::new().prefix("skiff-chaos-").tempdir()?;
    let mut cluster = ChaosCluster::start(
        &net,
        data.path(),
        cfg.scenario.uses_power_cut(),
        cfg.scenario.node_args(),
    )?;
    if cfg.scenario == Scenario::Delay {
        let targets = cluster
            .nodes
            .iter()
            .map(|n| Ok((n.id, n.addr.parse()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        cluster.delay = Some(
            DelayProxy::start(net.bridge_addr().parse()?, DELAY_PROXY_BASE_PORT, &targets).await?,
        );
    }
    wait_for_leader(&cluster, Duration::from_secs(30)).await?;

    let start = Instant::now();
    let rec = Arc::new(Recorded::default());
    let stop_clients = Arc::new(AtomicBool::new(false));
    let stop_watchers = Arc::new(AtomicBool::new(false));
    let access = cluster.access();
    let clients = workload::spawn_clients(
        access.clone(),
        cfg.clients,
        cfg.keys,
        cfg.seed,
        start,
        rec.clone(),
        stop_clients.clone(),
    );
    let watchers = workload::spawn_watchers(
        access.clone(),
        cfg.watchers,
        rec.clone(),
        stop_watchers.clone(),
    );
    let mut object_clients = Vec::new();
    if cfg.object_clients > 0 {
        // The built-in namespace appears shortly after the first leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = object_workload::setup(&access, cfg.keys, start, &rec).await {
            anyhow::ensure!(
                Instant::now() < deadline,
                "creating the object workload's ConfigMaps: {e}"
            );
            rec.ops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|o| o.process != 499);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        object_clients = object_workload::spawn_clients(
            access.clone(),
            cfg.object_clients,
            cfg.keys,
            cfg.seed,
            start,
            rec.clone(),
            stop_clients.clone(),
        );
    }

    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut faults = Vec::new();
    while start.elapsed() < cfg.duration {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
        if start.elapsed() >= cfg.duration {
            break;
        }
        let what = nemesis::inject(cfg.scenario, &mut rng, &net, &mut cluster).await?;
        tracing::info!(scenario = %cfg.scenario.name(), "{what}");
        faults.push(Fault {
            at_us: start.elapsed().as_micros() as u64,
            what,
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..3000))).await;
        nemesis::heal(&net, &mut cluster)?;
        faults.push(Fault {
            at_us: start.elapsed().as_micros() as u64,
            what: "heal".into(),
        });
    }

    stop_clients.store(true, Ordering::Relaxed);
    for c in clients.into_iter().chain(object_clients) {
        let _ = c.await;
    }
    nemesis::heal(&net, &mut cluster)?;
    // A cluster that does not come back after healing is a violation in itself (a power cut
    // that lost acknowledged log entries can leave members that refuse to start).
    let recovery = match wait_for_leader(&cluster, Duration::from_secs(30)).await {
        Ok(l) => Verdict::pass("recovery", format!("leader {l} after healing")),
        Err(e) => Verdict::fail(
            "recovery",
            format!("{e:#} after healing; {}", cluster.log_tails(5)),
        ),
    };
    let recovered = recovery.ok;

    // Final linearizable reads, part of the history: a lost write shows up here.
    let final_client = access.client(ClientConfig {
        call_deadline: Duration::from_secs(20),
        ..Default::default()
    });
    for k in (0..cfg.keys).filter(|_| recovered) {
        workload::read(&final_client, 1000, &format!("{PREFIX}{k}"), start, &rec).await;
        if cfg.object_clients > 0 {
            object_workload::read(&final_client, 1001, k, start, &rec).await;
        }
    }
    let ops = rec.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let final_revision = ops.iter().filter_map(|o| o.revision).max().unwrap_or(0);

    // Let watchers catch up to everything acknowledged.
    let deadline = Instant::now() + Duration::from_secs(if recovered { 20 } else { 0 });
    while Instant::now() < deadline {
        let events = rec.events.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let caught_up = (0..cfg.watchers).all(|w| {
            events
                .iter()
                .filter(|e| e.watcher == w)
                .map(|e| e.revision)
                .max()
                .unwrap_or(0)
                >= final_revision
        });
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_watchers.store(true, Ordering::Relaxed);
    for w in watchers {
        let _ = w.await;
    }

    let members = converge(&cluster).await;
    // The compaction scenario must have compacted: a watch from revision 1 is then expired.
    let compaction = if cfg.scenario == Scenario::Compaction {
        let mut rx = final_client.watch("", true, 1);
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.recv().await {
                    Some(Ok(skiff_proto::WatchEvent::Progress(_))) => continue,
                    other => return other,
                }
            }
        })
        .await;
        Some(match first {
            Ok(Some(Err(skiff_proto::ClientError::Expired { compacted }))) => Verdict::pass(
                "compaction",
                format!("history compacted through revision {compacted} while watchers ran"),
            ),
            other => Verdict::fail(
                "compaction",
                format!("a watch from revision 1 was not expired: {other:?}"),
            ),
        })
    } else {
        None
    };
    let events = rec.events.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let watch_errors = rec
        .watch_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();

    let mut acked: BTreeMap<u64, (String, Option<String>)> = BTreeMap::new();
    let mut written: HashSet<String> = HashSet::new();
    for o in &ops {
        match &o.op {
            RegisterOp::Write { value } | RegisterOp::Cas { to: value, .. } => {
                written.insert(value.clone());
                if let (Outcome::Ok, Some(rev)) = (o.outcome, o.revision) {
                    acked.insert(rev, (o.key.clone(), Some(value.clone())));
                }
            }
            RegisterOp::Read { .. } => {}
        }
    }
    let mut verdicts = vec![
        recovery,
        linearizable::check(&ops),
        watch::check(&events, &acked, &written),
        convergence::check(&members),
    ];
    verdicts.push(if watch_errors.is_empty() {
        Verdict::pass("watch-resume", "every watch stayed open across faults")
    } else {
        Verdict::fail("watch-resume", watch_errors.join("; "))
    });
    verdicts.push(revisions_monotonic(&ops));
    verdicts.extend(compaction);

    std::fs::create_dir_all(&cfg.out_dir)?;
    let file = cfg
        .out_dir
        .join(format!("{}-{}.json", cfg.scenario.name(), cfg.seed));
    let body = HistoryFile {
        scenario: cfg.scenario.name(),
        seed: cfg.seed,
        faults: &faults,
        operations: &ops,
        watch_events: &events,
        verdicts: &verdicts,
    };
    std::fs::write(&file, serde_json::to_vec_pretty(&body)?)?;

    let count = |o: Outcome| ops.iter().filter(|x| x.outcome == o).count();
    Ok(Report {
        scenario: cfg.scenario.name(),
        seed: cfg.seed,
        ok: count(Outcome::Ok),
        fail: count(Outcome::Fail),
        unknown: count(Outcome::Unknown),
        faults: faults.iter().filter(|f| f.what != "heal").count(),
        verdicts,
        history_file: file.display().to_string(),
    })
}

/// Revisions a client sees on its own acknowledged writes never go backwards.
fn revisions_monotonic(ops: &[Operation]) -> Verdict {
    let mut by_process: BTreeMap<u32, Vec<&Operation>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.revision.is_some()) {
        by_process.entry(o.process).or_default().push(o);
    }
    for (p, mut list) in by_process {
        list.sort_by_key(|o| o.invoke_us);
        let mut last = 0;
        for o in list {
            let r = o.revision.unwrap_or(0);
            if r < last {
                return Verdict::fail(
                    "monotonic-revisions",
                    format!("process {p} saw revision {r} after {last}"),
                );
            }
            last = r;
        }
    }
    Verdict::pass("monotonic-revisions", "each client's revisions only grew")
}

async fn wait_for_leader(cluster: &ChaosCluster, within: Duration) -> anyhow::Result<u8> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = nemesis::leader(cluster).await {
            return Ok(l);
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until every member reports the same revision, then hash each member's data.
async fn converge(cluster: &ChaosCluster) -> Vec<MemberState> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut states = Vec::new();
        for n in &cluster.nodes {
            let Ok(c) = Client::with_config(
                std::slice::from_ref(&n.addr),
                ClientConfig {
                    call_deadline: Duration::from_secs(2),
                    tls: Some(cluster.client_tls().clone()),
                    ..Default::default()
                },
            ) else {
                continue;
            };
            let Ok(st) = Client::status_of(&n.addr, Some(cluster.credentials())).await else {
                continue;
            };
            let Ok(r) = c
                .range(pb::RangeRequest {
                    key: vec![],
                    prefix: true,
                    stale: true,
                    ..Default::default()
                })
                .await
            else {
                continue;
            };
            let revision = r.header.as_ref().map(|h| h.revision).unwrap_or(st.revision);
            let data_hash = convergence::hash_pairs(
                r.kvs
                    .iter()
                    .map(|kv| (kv.key.as_slice(), kv.value.as_slice())),
            );
            states.push(MemberState {
                id: u64::from(n.id),
                revision,
                data_hash,
            });
        }
        let agreed = states.len() == cluster.nodes.len()
            && states.windows(2).all(|w| w[0].revision == w[1].revision);
        if agreed || Instant::now() > deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
