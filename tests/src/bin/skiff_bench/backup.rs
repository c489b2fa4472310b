//! Backup and restore of a large store: `skiffctl snapshot save` from a three-member cluster
//! holding `--size-mib` of ConfigMaps, and `skiff control restore` of the file, each timed
//! against the disk's own sequential write speed measured in the same run (`dd` with
//! `oflag=direct`), with the memory each takes (the serving member's resident growth; the
//! peak of skiffctl and of the restore). Beside them, what the store's engine alone takes to
//! load the same records (sled, in the restore's batches): the floor under any restore.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_e2e::{binary, Cluster, MemberOptions};
use skiff_proto::{Client, ClientConfig};

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Data to back up, in MiB of ConfigMap payload.
    #[arg(long, default_value_t = 1024)]
    size_mib: usize,
    /// Save-and-restore rounds on the one filled cluster.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Bytes of each ConfigMap's one value.
const OBJECT_BYTES: usize = 512 << 10;

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

/// Sequential write speed of the filesystem at `dir`: 1 GiB (or `bytes`) of direct writes.
fn dd_speed(dir: &Path, bytes: u64) -> anyhow::Result<f64> {
    let file = dir.join("dd.bench");
    let count = (bytes >> 20).max(64);
    let started = Instant::now();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={count}"), "oflag=direct"])
        .output()?;
    let took = started.elapsed();
    let _ = std::fs::remove_file(&file);
    anyhow::ensure!(
        out.status.success(),
        "dd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(mib_per_s(count << 20, took))
}

/// Run `cmd`; returns its wall time and peak resident memory (bytes, its `VmHWM` as last
/// read before it exited: sampled every 10 ms, and the peak only grows).
fn run_measured(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = proc_status_kib(child.id() as i32, "VmHWM:").map_or(peak, |kib| kib * 1024);
        std::thread::sleep(Duration::from_millis(10));
    };
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok((started.elapsed(), peak))
}

pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = Client::with_config(
        &cluster.endpoints(),
        ClientConfig {
            call_deadline: Duration::from_secs(60),
            ..cluster.client_config()
        },
    )?;
    super::wait_for_default_namespace(&client).await;
    let objects = (args.size_mib << 20) / OBJECT_BYTES;
    println!(
        "# backup and restore of {} MiB ({objects} ConfigMaps of {} KiB) from a 3-member cluster; {} rounds",
        args.size_mib,
        OBJECT_BYTES >> 10,
        args.rounds
    );
    let filled = Instant::now();
    let payload = "b".repeat(OBJECT_BYTES);
    let mut errors = 0usize;
    let mut fills = futures::stream::FuturesUnordered::new();
    use futures::StreamExt as _;
    for i in 0..objects {
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("bulk-{i:06}"), "namespace": "default"},
            "data": {"payload": payload}});
        let client = client.clone();
        fills.push(async move {
            client
                .create_object(
                    "configmaps",
                    "default",
                    serde_json::to_vec(&cm).unwrap_or_default(),
                )
                .await
        });
        if fills.len() >= 8 {
            if let Some(Err(_)) = fills.next().await {
                errors += 1;
            }
        }
    }
    while let Some(r) = fills.next().await {
        if r.is_err() {
            errors += 1;
        }
    }
    println!(
        "filled in {:.1} s ({errors} failed creates)",
        filled.elapsed().as_secs_f64()
    );

    let work = cluster.dir().join("bench-backup");
    std::fs::create_dir_all(&work)?;
    let config = cluster.config_file();
    println!("\nround  dd MiB/s  save s  save MiB/s  save/dd  member RSS MiB  member +RSS MiB  skiffctl peak MiB  restore s  restore MiB/s  restore/dd  restore peak MiB  engine load s  engine/dd  engine wrote MiB");
    let (mut save_ratio, mut restore_ratio, mut member_growth, mut engine_ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let dd = dd_speed(&work, (args.size_mib as u64) << 20)?;
        let file = work.join(format!("round-{round}.skiff"));
        // The serving member is the one skiffctl reaches first: the leader, asked alone.
        let serving = &cluster.members[&leader];
        let baseline = serving.rss_bytes().unwrap_or(0);
        // The member's peak resident memory while the save runs, sampled every 20 ms.
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
        let sampler = {
            let (pid, peak) = (serving.pid().map(|p| p.as_raw()), peak.clone());
            tokio::spawn(async move {
                while let Some(kib) = pid.and_then(|p| proc_status_kib(p, "VmRSS:")) {
                    peak.fetch_max(kib * 1024, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let (save_took, ctl_peak) = {
            let mut cmd = Command::new(binary("skiffctl"));
            cmd.env("SKIFFCONFIG", &config)
                .args(["--endpoints", &serving.addr, "snapshot", "save"])
                .arg(&file)
                .stdout(std::process::Stdio::null());
            tokio::task::spawn_blocking(move || run_measured(&mut cmd)).await??
        };
        sampler.abort();
        let member_peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        let bytes = std::fs::metadata(&file)?.len();
        let target = work.join(format!("restored-{round}"));
        let (restore_took, restore_peak) = {
            let mut cmd = Command::new(binary("skiff"));
            cmd.args(["control", "restore"])
                .arg(&file)
                .arg("--data-dir")
                .arg(&target)
                .args(["--id", "1", "--initial-cluster", "1=127.0.0.1:1"])
                .stdout(std::process::Stdio::null());
            tokio::task::spawn_blocking(move || run_measured(&mut cmd)).await??
        };
        let (engine_took, engine_wrote) = {
            let dir = work.join(format!("engine-{round}"));
            let measured =
                tokio::task::spawn_blocking(move || engine_load(&dir, objects)).await??;
            let _ = std::fs::remove_dir_all(work.join(format!("engine-{round}")));
            measured
        };
        let save = mib_per_s(bytes, save_took);
        let restore = mib_per_s(bytes, restore_took);
        let engine = mib_per_s(bytes, engine_took);
        let growth = member_peak.saturating_sub(baseline) as f64 / (1 << 20) as f64;
        println!(
            "{round:>5}  {dd:>8.0}  {:>6.1}  {save:>10.0}  {:>7.2}  {:>14.0}  {growth:>15.0}  {:>17.0}  {:>9.1}  {restore:>13.0}  {:>10.2}  {:>16.0}  {:>13.1}  {:>9.2}  {:>16.0}",
            save_took.as_secs_f64(),
            save / dd,
            baseline as f64 / (1 << 20) as f64,
            ctl_peak as f64 / (1 << 20) as f64,
            restore_took.as_secs_f64(),
            restore / dd,
            restore_peak as f64 / (1 << 20) as f64,
            engine_took.as_secs_f64(),
            engine / dd,
            engine_wrote as f64 / (1 << 20) as f64,
        );
        engine_ratio.push(engine / dd);
        save_ratio.push(save / dd);
        restore_ratio.push(restore / dd);
        member_growth.push(growth);
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_dir_all(&target);
    }
    println!("\n## summary (medians of {} rounds)", args.rounds);
    println!(
        "save at {:.2}x the disk's direct write speed, restore at {:.2}x (target: at least 0.5x each)",
        super::median(save_ratio),
        super::median(restore_ratio)
    );
    println!(
        "the store's engine alone loads the same records at {:.2}x (the floor under a restore)",
        super::median(engine_ratio)
    );
    println!(
        "serving member's resident memory grew {:.0} MiB during the save (target: at most 64 MiB)",
        super::median(member_growth)
    );
    super::print_verdict(errors, "creates failed");
    Ok(())
}

/// Load `objects` records of [`OBJECT_BYTES`] into a new engine at `dir` as a restore does
/// (16 MiB batches, one sync at the end); its wall time and the bytes this process wrote to
/// disk meanwhile (`/proc/self/io`).
fn engine_load(dir: &Path, objects: usize) -> anyhow::Result<(Duration, u64)> {
    use skiff_raft::engine::{Engine, SledEngine, WriteBatch};
    let written = || -> anyhow::Result<u64> {
        let io = std::fs::read_to_string("/proc/self/io")?;
        io.lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("/proc/self/io has no write_bytes"))
    };
    let value = vec![b'b'; OBJECT_BYTES];
    let before = written()?;
    let started = Instant::now();
    let engine = SledEngine::open(dir)?;
    let per_batch = (16 << 20) / OBJECT_BYTES;
    for first in (0..objects).step_by(per_batch) {
        let mut batch = WriteBatch::default();
        for i in first..(first + per_batch).min(objects) {
            let key = format!("/registry/core/configmaps/default/bulk-{i:06}");
            batch.put_raw(key.into_bytes(), value.clone());
        }
        engine.write(batch)?;
    }
    engine.sync()?;
    drop(engine);
    Ok((started.elapsed(), written()? - before))
}

/// A `/proc/PID/status` figure given in kB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
