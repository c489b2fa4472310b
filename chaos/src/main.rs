//! `skiff-chaos`: run chaos scenarios against real Skiff control nodes.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
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

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// A scenario name, or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Duration per scenario: 30s, 2m, 10m.
    #[arg(long, default_value = "30s", value_parser = skiff_proto::duration::parse)]
    duration: Duration,
    /// Seed of the schedule; random if not given (printed either way). Scenario i of `all`
    /// runs with seed + i.
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
    /// Scenarios run side by side, each in a process of its own on its own bridge and hosts
    /// (10.231.7+k.0/24); their logs go to OUT/<scenario>-<seed>.log.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    parallel: u8,
    /// The host network number (10.231.N.0/24) of this run.
    #[arg(long, default_value_t = 7, hide = true)]
    net: u8,
    /// Write the summary rows (JSON) here, for a parent run.
    #[arg(long, hide = true)]
    report: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario (or all). The same --seed replays the same fault schedule.
    Run(RunArgs),
    /// List the scenarios.
    List,
}

/// One line of the summary table.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    scenario: String,
    seed: u64,
    ok: usize,
    fail: usize,
    unknown: usize,
    faults: usize,
    /// (checker, passed, detail)
    verdicts: Vec<(String, bool, String)>,
    history_file: String,
    /// Set when the scenario could not run at all.
    error: Option<String>,
}

impl Row {
    fn from_report(r: &Report) -> Self {
        Self {
            scenario: r.scenario.clone(),
            seed: r.seed,
            ok: r.ok,
            fail: r.fail,
            unknown: r.unknown,
            faults: r.faults,
            verdicts: r
                .verdicts
                .iter()
                .map(|v| (v.checker.to_string(), v.ok, v.detail.clone()))
                .collect(),
            history_file: r.history_file.clone(),
            error: None,
        }
    }

    fn failed(scenario: &str, seed: u64, error: String) -> Self {
        Self {
            scenario: scenario.into(),
            seed,
            ok: 0,
            fail: 0,
            unknown: 0,
            faults: 0,
            verdicts: Vec::new(),
            history_file: String::new(),
            error: Some(error),
        }
    }

    fn passed(&self) -> bool {
        self.error.is_none() && self.verdicts.iter().all(|v| v.1)
    }
}

fn print_summary(rows: &[Row]) {
    println!(
        "\n{:<20} {:>20} {:>8} {:>5} {:>8} {:>7}  verdicts",
        "scenario", "seed", "ok", "fail", "unknown", "faults"
    );
    for r in rows {
        let verdicts: Vec<String> = r
            .verdicts
            .iter()
            .map(|v| format!("{}={}", v.0, if v.1 { "pass" } else { "FAIL" }))
            .collect();
        println!(
            "{:<20} {:>20} {:>8} {:>5} {:>8} {:>7}  {}",
            r.scenario,
            r.seed,
            r.ok,
            r.fail,
            r.unknown,
            r.faults,
            if r.error.is_some() {
                "did not run".to_string()
            } else {
                verdicts.join(" ")
            }
        );
    }
    for r in rows {
        if let Some(e) = &r.error {
            println!("ERROR {} (seed {}): {e}", r.scenario, r.seed);
        }
        for v in r.verdicts.iter().filter(|v| !v.1) {
            println!(
                "VIOLATION {} (seed {}): {}: {}  [history: {}]",
                r.scenario, r.seed, v.0, v.2, r.history_file
            );
        }
    }
    let faults: usize = rows.iter().map(|r| r.faults).sum();
    let ops: usize = rows.iter().map(|r| r.ok + r.fail + r.unknown).sum();
    println!(
        "{} scenarios, {} operations, {} faults injected, {}",
        rows.len(),
        ops,
        faults,
        if rows.iter().all(Row::passed) {
            "all checkers passed"
        } else {
            "VIOLATIONS FOUND"
        }
    );
}

/// Run `scenarios` one after another in this process.
async fn run_here(args: &RunArgs, scenarios: &[(usize, Scenario)], seed: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, s) in scenarios {
        let cfg = RunConfig {
            scenario: *s,
            duration: args.duration,
            seed: seed.wrapping_add(*i as u64),
            clients: args.clients,
            object_clients: args.object_clients,
            keys: args.keys,
            watchers: args.watchers,
            net: args.net,
            out_dir: args.out.clone(),
        };
        eprintln!(
            "== {} (seed {}) for {:?}",
            s.name(),
            cfg.seed,
            args.duration
        );
        match run(&cfg).await {
            Ok(r) => rows.push(Row::from_report(&r)),
            Err(e) => {
                let row = Row::failed(&s.name(), cfg.seed, format!("could not run: {e:#}"));
                rows.push(row);
                break;
            }
        }
    }
    rows
}

/// Run one scenario in a child process on host network `net`; its output goes to a log.
fn run_child(args: &RunArgs, scenario: Scenario, seed: u64, net: u8) -> Row {
    let name = scenario.name();
    let report = args.out.join(format!(".{name}-{seed}.report.json"));
    let log_path = args.out.join(format!("{name}-{seed}.log"));
    let result = (|| -> std::io::Result<std::process::ExitStatus> {
        let log = std::fs::File::create(&log_path)?;
        Command::new(std::env::current_exe()?)
            .arg("run")
            .args(["--scenario", &name])
            .args(["--duration", &format!("{}s", args.duration.as_secs())])
            .args(["--seed", &seed.to_string()])
            .args(["--clients", &args.clients.to_string()])
            .args(["--keys", &args.keys.to_string()])
            .args(["--object-clients", &args.object_clients.to_string()])
            .args(["--watchers", &args.watchers.to_string()])
            .args(["--net", &net.to_string()])
            .arg("--out")
            .arg(&args.out)
            .arg("--report")
            .arg(&report)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
    })();
    let rows: Option<Vec<Row>> = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = std::fs::remove_file(&report);
    match (result, rows.and_then(|mut r| r.pop())) {
        (_, Some(row)) => row,
        (Ok(status), None) => Row::failed(
            &name,
            seed,
            format!(
                "the run ended ({status}) without a report; see {}",
                log_path.display()
            ),
        ),
        (Err(e), None) => Row::failed(&name, seed, format!("could not start: {e}")),
    }
}

/// Run `scenarios` in `parallel` lanes of child processes.
fn run_lanes(args: &RunArgs, scenarios: &[(usize, Scenario)], seed: u64) -> Vec<Row> {
    let lanes = usize::from(args.parallel);
    let mut rows: Vec<(usize, Row)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let mine: Vec<(usize, Scenario)> = scenarios
                    .iter()
                    .copied()
                    .filter(|(i, _)| i % lanes == lane)
                    .collect();
                scope.spawn(move || {
                    let net = args.net + lane as u8;
                    mine.into_iter()
                        .map(|(i, s)| {
                            let seed = seed.wrapping_add(i as u64);
                            eprintln!(
                                "== {} (seed {seed}) for {:?}, net {net}",
                                s.name(),
                                args.duration
                            );
                            (i, run_child(args, s, seed, net))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

fn write_report(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    std::fs::write(
        path,
        serde_json::to_vec(rows).map_err(std::io::Error::other)?,
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        // fuser reports its own unmount failing after the suite unmounted lazily: noise.
        .unwrap_or_else(|_| "info,fuser=off".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Cmd::List => {
            for s in Scenario::all() {
                println!("{}", s.name());
            }
            return ExitCode::SUCCESS;
        }
        Cmd::Run(args) => args,
    };
    let scenarios: Vec<(usize, Scenario)> = if args.scenario == "all" {
        Scenario::all().into_iter().enumerate().collect()
    } else {
        match Scenario::all()
            .into_iter()
            .find(|s| s.name() == args.scenario)
        {
            Some(s) => vec![(0, s)],
            None => {
                eprintln!(
                    "error: --scenario {:?} is not a scenario; see `skiff-chaos list`",
                    args.scenario
                );
                return ExitCode::from(2);
            }
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("error: --out {}: {e}", args.out.display());
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let rows = if args.parallel > 1 {
        let a = args.clone();
        let s = scenarios.clone();
        tokio::task::spawn_blocking(move || run_lanes(&a, &s, seed))
            .await
            .unwrap_or_default()
    } else {
        run_here(&args, &scenarios, seed).await
    };
    if let Some(path) = &args.report {
        if let Err(e) = write_report(path, &rows) {
            eprintln!("error: --report {}: {e}", path.display());
        }
    }
    print_summary(&rows);
    if !rows.is_empty() && rows.iter().all(Row::passed) && rows.len() == scenarios.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
