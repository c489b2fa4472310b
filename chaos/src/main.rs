//! `skiff-chaos`: run chaos scenarios against real Skiff control nodes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use skiff_chaos::nemesis::Scenario;
use skiff_chaos::run::{run, Report, RunConfig};

#[derive(Parser)]
#[command(
    name = "skiff-chaos",
    about = "Chaos tests of Skiff's store: real faults, checked histories"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario (or all). The same --seed replays the same fault schedule.
    Run {
        /// A scenario name, or `all`.
        #[arg(long, default_value = "all")]
        scenario: String,
        /// Duration per scenario: 30s, 2m, 10m.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Seed of the schedule; random if not given (printed either way).
        #[arg(long)]
        seed: Option<u64>,
        /// Concurrent register clients.
        #[arg(long, default_value_t = 4)]
        clients: u32,
        /// Registers.
        #[arg(long, default_value_t = 3)]
        keys: u32,
        /// Concurrent object clients (ConfigMaps with resourceVersion compare-and-swap).
        #[arg(long, default_value_t = 2)]
        object_clients: u32,
        /// Watchers.
        #[arg(long, default_value_t = 2)]
        watchers: u32,
        /// Where histories (JSON) go.
        #[arg(long, default_value = "chaos-results")]
        out: PathBuf,
    },
    /// List the scenarios.
    List,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m or h"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use s, m or h)")),
    }
}

fn print_summary(reports: &[Report]) {
    println!(
        "\n{:<20} {:>20} {:>6} {:>5} {:>8} {:>7}  verdicts",
        "scenario", "seed", "ok", "fail", "unknown", "faults"
    );
    for r in reports {
        let verdicts: Vec<String> = r
            .verdicts
            .iter()
            .map(|v| format!("{}={}", v.checker, if v.ok { "pass" } else { "FAIL" }))
            .collect();
        println!(
            "{:<20} {:>20} {:>6} {:>5} {:>8} {:>7}  {}",
            r.scenario,
            r.seed,
            r.ok,
            r.fail,
            r.unknown,
            r.faults,
            verdicts.join(" ")
        );
    }
    for r in reports {
        for v in r.verdicts.iter().filter(|v| !v.ok) {
            println!(
                "VIOLATION {} (seed {}): {}: {}  [history: {}]",
                r.scenario, r.seed, v.checker, v.detail, r.history_file
            );
        }
    }
    let faults: usize = reports.iter().map(|r| r.faults).sum();
    println!(
        "{} scenarios, {} faults injected, {}",
        reports.len(),
        faults,
        if reports.iter().all(Report::passed) {
            "all checkers passed"
        } else {
            "VIOLATIONS FOUND"
        }
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::List => {
            for s in Scenario::all() {
                println!("{}", s.name());
            }
            std::process::ExitCode::SUCCESS
        }
        Cmd::Run {
            scenario,
            duration,
            seed,
            clients,
            object_clients,
            keys,
            watchers,
            out,
        } => {
            let scenarios = if scenario == "all" {
                Scenario::all()
            } else {
                match Scenario::all().into_iter().find(|s| s.name() == scenario) {
                    Some(s) => vec![s],
                    None => {
                        eprintln!("error: --scenario {scenario:?} is not a scenario; see `skiff-chaos list`");
                        return std::process::ExitCode::from(2);
                    }
                }
            };
            let seed = seed.unwrap_or_else(rand::random);
            let mut reports = Vec::new();
            for (i, s) in scenarios.into_iter().enumerate() {
                let cfg = RunConfig {
                    scenario: s,
                    duration,
                    seed: seed.wrapping_add(i as u64),
                    clients,
                    object_clients,
                    keys,
                    watchers,
                    net: 7,
                    out_dir: out.clone(),
                };
                eprintln!("== {} (seed {}) for {:?}", s.name(), cfg.seed, duration);
                match run(&cfg).await {
                    Ok(r) => reports.push(r),
                    Err(e) => {
                        eprintln!("error: scenario {} could not run: {e:#}", s.name());
                        print_summary(&reports);
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
            print_summary(&reports);
            if reports.iter().all(Report::passed) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
