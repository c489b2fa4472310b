//! `skiff up`: a local HA cluster of three control nodes on loopback, data under ./.skiff/.
//! Ctrl-C stops it cleanly; running it again resumes from the same data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skiff_control::client_config::ClientConfig;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Where the cluster keeps its data, logs and client config.
    #[arg(long, default_value = ".skiff")]
    pub dir: PathBuf,
    /// Number of control nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Port of the first control node; the others follow.
    #[arg(long, default_value_t = 7401)]
    pub base_port: u16,
}

struct Member {
    id: u64,
    addr: String,
    child: Child,
}

fn cluster_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("cluster-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = format!("skiff-local-{}", uuid::Uuid::new_v4().simple());
            std::fs::write(&path, &id).with_context(|| path.display().to_string())?;
            Ok(id)
        }
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        anyhow::bail!("--nodes: need at least 1");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let cluster = cluster_id(&dir)?;
    let exe = std::env::current_exe().context("locating the skiff binary")?;
    let addrs: Vec<(u64, String)> = (1..=args.nodes)
        .map(|i| {
            (
                i,
                format!("127.0.0.1:{}", u64::from(args.base_port) + i - 1),
            )
        })
        .collect();
    let initial = addrs
        .iter()
        .map(|(i, a)| format!("{i}={a}"))
        .collect::<Vec<_>>()
        .join(",");

    let mut members = Vec::new();
    for (id, addr) in &addrs {
        let log_path = dir.join(format!("control-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(&exe)
            .arg("control")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(dir.join(format!("control-{id}")))
            .args([
                "--listen",
                addr,
                "--initial-cluster",
                &initial,
                "--cluster-id",
                &cluster,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting control node {id}"))?;
        members.push(Member {
            id: *id,
            addr: addr.clone(),
            child,
        });
    }
    let endpoints: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
    let config_path = dir.join("config.json");
    ClientConfig::single("local", endpoints.clone()).save(&config_path)?;

    let leader = wait_for_leader(&endpoints, Duration::from_secs(30)).await;
    match leader {
        Some(id) => println!(
            "Skiff is up: {} control nodes on {} (leader: {id}); data in {}\n\
             Client config: {} (skiffctl finds it from this directory)\n\
             Try: skiffctl cluster status   ·   Ctrl-C stops the cluster",
            members.len(),
            endpoints.join(", "),
            dir.display(),
            config_path.display()
        ),
        None => println!(
            "Started {} control nodes, but no leader yet; logs are in {}",
            members.len(),
            dir.display()
        ),
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for m in &mut members {
                    if let Ok(Some(status)) = m.child.try_wait() {
                        eprintln!("control node {} ({}) exited: {status}; see {}", m.id, m.addr, dir.join(format!("control-{}.log", m.id)).display());
                    }
                }
            }
        }
    }
    println!("stopping {} control nodes...", members.len());
    for m in &members {
        if let Some(pid) = m.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for m in &mut members {
        match tokio::time::timeout(Duration::from_secs(10), m.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("control node {} did not stop in 10 s; killing it", m.id);
                let _ = m.child.kill().await;
            }
        }
    }
    println!(
        "stopped; data kept in {} (run `skiff up` again to resume)",
        dir.display()
    );
    Ok(())
}

async fn wait_for_leader(endpoints: &[String], within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for e in endpoints {
            if let Ok(st) = skiff_proto::Client::status_of(e).await {
                if st.leader != 0 {
                    return Some(st.leader);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
