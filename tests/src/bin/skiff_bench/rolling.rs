//! A rolling restart of three members under a steady write load: the longest time no write was
//! acknowledged, as a client sees it, with the members stopped as systemd stops them (SIGTERM:
//! a leader hands over first) against `kill -9` (no handover: the others wait out an election
//! timeout), paired within each round.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_e2e::{Cluster, MemberOptions};
use skiff_proto::{Client, ClientConfig};

#[derive(clap::Args)]
pub struct RollingArgs {
    /// Rounds; each rolls one cluster with SIGTERM and one with kill -9.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Writers, each putting its own keys one after another.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Time between a member's stop and its start.
    #[arg(long, default_value_t = 500)]
    down_ms: u64,
}

/// How members are stopped.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Term,
    Kill,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Kill => "kill -9",
        }
    }
}

struct Rolled {
    longest_stall: Duration,
    elections: u64,
    acked: usize,
    errors: usize,
}

async fn roll(stop: Stop, args: &RollingArgs) -> anyhow::Result<Rolled> {
    let mut cluster = Cluster::start(3, MemberOptions::default());
    let first_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = Client::with_config(
        &cluster.endpoints(),
        ClientConfig {
            call_deadline: Duration::from_secs(20),
            ..cluster.client_config()
        },
    )?;
    super::wait_for_default_namespace(&client).await;
    let term_before =
        Client::status_of(&cluster.members[&first_leader].addr, cluster.credentials())
            .await?
            .term;
    let acks: Arc<Mutex<Vec<Instant>>> = Default::default();
    let errors = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..args.writers)
        .map(|w| {
            let (client, acks, errors, done) =
                (client.clone(), acks.clone(), errors.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !done.load(Ordering::Relaxed) {
                    match client.put(format!("roll/{w}/{i}"), vec![b'r'; 256]).await {
                        Ok(_) => acks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Instant::now()),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let began = Instant::now();
    let mut order: Vec<u64> = (1..=3).filter(|id| *id != first_leader).collect();
    order.push(first_leader);
    for id in order {
        match stop {
            Stop::Term => {
                cluster.stop(id);
            }
            Stop::Kill => cluster.kill9(id),
        }
        tokio::time::sleep(Duration::from_millis(args.down_ms)).await;
        cluster.restart(id);
        anyhow::ensure!(
            cluster.caught_up(id, Duration::from_secs(30)).await,
            "member {id} did not catch up after its restart"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let term_after = Client::status_of(&cluster.members[&leader].addr, cluster.credentials())
        .await?
        .term;
    let mut times = acks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    times.sort();
    let mut longest_stall = Duration::ZERO;
    let mut previous = began;
    for t in times.iter().copied().filter(|t| *t >= began) {
        longest_stall = longest_stall.max(t - previous);
        previous = t;
    }
    Ok(Rolled {
        longest_stall,
        elections: term_after - term_before,
        acked: times.len(),
        errors: errors.load(Ordering::Relaxed),
    })
}

pub async fn run(args: RollingArgs) -> anyhow::Result<()> {
    println!(
        "# rolling restart of 3 members, followers first, leader last; {} writers, {} ms down each; {} rounds",
        args.writers, args.down_ms, args.rounds
    );
    println!("round  stop     longest stall ms  elections  acked  errors");
    let (mut term, mut kill) = (Vec::new(), Vec::new());
    let mut ratios = Vec::new();
    let mut errors = 0;
    for round in 1..=args.rounds {
        let mut pair = [0.0f64; 2];
        // Alternate which goes first, so drift in the machine's load falls on both.
        let order = if round % 2 == 1 {
            [Stop::Term, Stop::Kill]
        } else {
            [Stop::Kill, Stop::Term]
        };
        for stop in order {
            let r = roll(stop, &args).await?;
            let ms = r.longest_stall.as_secs_f64() * 1000.0;
            println!(
                "{round:>5}  {:<7}  {ms:>16.0}  {:>9}  {:>5}  {:>6}",
                stop.name(),
                r.elections,
                r.acked,
                r.errors
            );
            errors += r.errors;
            match stop {
                Stop::Term => {
                    pair[0] = ms;
                    term.push(ms);
                }
                Stop::Kill => {
                    pair[1] = ms;
                    kill.push(ms);
                }
            }
        }
        ratios.push(pair[0] / pair[1]);
    }
    println!("\n## summary (medians of {} rounds)", args.rounds);
    println!(
        "longest write stall: SIGTERM (handover) {:.0} ms, kill -9 {:.0} ms; paired ratio SIGTERM/kill {:.2}",
        super::median(term.clone()),
        super::median(kill),
        super::median(ratios)
    );
    println!(
        "target: longest stall at most 1000 ms with SIGTERM: {}",
        if term.iter().all(|ms| *ms <= 1000.0) {
            "met in every round"
        } else {
            "NOT met in every round"
        }
    );
    super::print_verdict(errors, "writes failed");
    Ok(())
}
