//! `skiff-bench proxy`: the service proxy on a real node. (1) An Endpoints change to the rule
//! in place, with one service and with `--services` services (5 endpoints each); (2) the full
//! sync of `--services` services at a proxy restart; (3) requests per second through a
//! ClusterIP against straight to the pod IP (wrk, from the node), alternating, medians.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::world::world;
use skiff_e2e::node_env::TestHost;
use skiff_proto::Client;

use super::median;

#[derive(clap::Args, Clone)]
pub struct ProxyArgs {
    /// Services (each with 5 endpoints) for the full sync and the change at scale.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoint changes timed per scale.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// wrk runs each way (alternating).
    #[arg(long, default_value_t = 3)]
    wrk_runs: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    wrk_seconds: u64,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

fn endpoints_json(name: &str, base: u32, n: u32) -> Vec<u8> {
    let addresses: Vec<Value> = (0..n)
        .map(|i| {
            let v = base + i;
            json!({"ip": format!("10.245.{}.{}", (v >> 8) & 0xff, v & 0xff)})
        })
        .collect();
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
        "subsets": [{"addresses": addresses, "ports": [{"port": 8080}]}]
    }))
    .unwrap_or_default()
}

fn service_json(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap_or_default()
}

/// Time `changes` Endpoints updates of service `name` until the node's rules show them. The
/// service alternates between 4 and 5 endpoints (fresh addresses each time), so each change
/// moves it in or out of the 4-backend set, which holds only it: a cheap thing to look at
/// (listing the 5-backend map of 10,000 services costs nft seconds, which would be measured
/// instead of the proxy).
async fn time_changes(
    client: &Client,
    host: &TestHost,
    name: &str,
    changes: usize,
) -> anyhow::Result<Vec<f64>> {
    let svc: Value = serde_json::from_slice(
        &client
            .get_object("services", "default", name, false)
            .await?
            .object,
    )?;
    let vip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut out = Vec::with_capacity(changes);
    for i in 0..changes {
        let base = 51_200 + (i as u32 % 2000) * 5;
        let count = if i % 2 == 0 { 4 } else { 5 };
        let started = Instant::now();
        client
            .apply_object("default", endpoints_json(name, base, count))
            .await?;
        loop {
            let set = String::from_utf8_lossy(
                &host
                    .try_exec(&["nft", "list", "set", "ip", "skiff", "services_4"])
                    .stdout,
            )
            .into_owned();
            if set.contains(&vip) == (count == 4) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "change {i} not in the rules after 10 s"
            );
        }
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// The text of a log without its colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Requests per second from one wrk run, and its errors (socket errors and non-2xx answers;
/// a run that printed no rate counts as one); `close` sends `Connection: close` so that every
/// request opens a new connection (and a new conntrack entry, where the DNAT rule is looked up).
fn wrk(host: &TestHost, url: &str, seconds: u64, close: bool) -> (f64, usize) {
    let duration = format!("{seconds}s");
    let mut argv = vec!["wrk", "-t", "1", "-c", "8", "-d", &duration];
    if close {
        argv.extend(["-H", "Connection: close"]);
    }
    argv.push(url);
    let out = host.try_exec(&argv);
    let text = String::from_utf8_lossy(&out.stdout);
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let numbers = |l: &str| -> usize {
        l.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<usize>().ok())
            .sum()
    };
    let mut errors: usize = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("Socket errors:")
                .or_else(|| l.strip_prefix("Non-2xx or 3xx responses:"))
        })
        .map(numbers)
        .sum();
    if rate.is_nan() {
        errors += 1;
    }
    (rate, errors)
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    // The same world as the node tests: three control nodes, a test host with containerd,
    // a local registry and an agent.
    let mut w = world(&[]).await;
    let (cluster, host, registry) = (&w.cluster, &w.host, &w.registry);
    let agent = &mut w.agent;
    let client = cluster.client();
    while client.get_object("nodes", "", "n1", false).await.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!("== endpoint change to rule in place ==");
    client.apply_object("default", service_json("one")).await?;
    client
        .apply_object("default", endpoints_json("one", 1, 5))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let small = match time_changes(&client, host, "one", args.changes).await {
        Ok(v) => v,
        Err(e) => {
            let log = strip_ansi(&agent.log());
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("agent log (last lines, newest first):\n{}", tail.join("\n"));
            return Err(e);
        }
    };
    println!(
        "1 service: {} changes, p50 {:.1} ms, p99 {:.1} ms (target p99 <= 100 ms)",
        small.len(),
        percentile(small.clone(), 0.5),
        percentile(small.clone(), 0.99)
    );

    println!("== {} services x 5 endpoints ==", args.services);
    let started = Instant::now();
    let creates = (0..args.services).map(|i| {
        let client = client.clone();
        async move {
            let name = format!("s{i}");
            client.apply_object("default", service_json(&name)).await?;
            client
                .apply_object("default", endpoints_json(&name, (i as u32 % 10_000) * 5, 5))
                .await
        }
    });
    let mut pending = futures::stream::iter(creates).buffer_unordered(64);
    use futures::StreamExt as _;
    while let Some(r) = pending.next().await {
        r?;
    }
    println!("created in {:.1} s", started.elapsed().as_secs_f64());
    // Let the running proxy catch up, then time a change at this scale.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let large = time_changes(&client, host, "one", args.changes).await?;
    println!(
        "{} services: {} changes, p50 {:.1} ms, p99 {:.1} ms (target p99 <= 100 ms)",
        args.services + 1,
        large.len(),
        percentile(large.clone(), 0.5),
        percentile(large.clone(), 0.99)
    );

    println!("== full sync at a proxy restart ==");
    // From the agent's start (a kill -9, then a new process) to its log saying the rules are
    // in place, listing included; the proxy's own figure for the sync alone beside it.
    let (mut syncs, mut from_start) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let before = agent.log().matches("service rules: full sync").count();
        agent.kill9();
        let started = Instant::now();
        agent.restart();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = strip_ansi(&agent.log());
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("service rules: full sync"))
                .collect();
            if lines.len() > before {
                let line = lines[lines.len() - 1];
                let ms = line
                    .split("ms=")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .map(|v| v.trim_matches(|c: char| !c.is_ascii_digit() && c != '.'))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN);
                syncs.push(ms);
                from_start.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no full sync after the restart");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "full sync of {} service ports, from the agent's start to the rules in place: runs {:?} ms, median {:.0} ms (target <= 2000 ms); the sync alone, as the proxy logs it: median {:.0} ms",
        args.services + 1,
        from_start.iter().map(|v| v.round()).collect::<Vec<_>>(),
        median(from_start),
        median(syncs)
    );

    println!("== requests/s: ClusterIP against the pod IP (wrk -t1 -c8, from the node) ==");
    // A keep-alive server of the workspace's own (busybox httpd forks per request).
    let server = std::env::current_exe()?.with_file_name("skiff-test-httpd");
    anyhow::ensure!(
        server.exists(),
        "{} is missing: build the workspace's binaries first",
        server.display()
    );
    let image = registry.push(
        &OciImage::busybox_with("bench-httpd", &[("skiff-test-httpd", server.as_path())]),
        "skiff/httpd",
        "bench",
    );
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "target", "labels": {"app": "target"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "httpd", "image": image,
            "command": ["skiff-test-httpd", "8080"]}]}
    });
    client
        .apply_object("default", serde_json::to_vec(&manifest)?)
        .await?;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "target"},
        "spec": {"selector": {"app": "target"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    client
        .apply_object("default", serde_json::to_vec(&svc)?)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (pod_ip, cluster_ip) = loop {
        let p: Value = serde_json::from_slice(
            &client
                .get_object("pods", "default", "target", false)
                .await?
                .object,
        )?;
        let s: Value = serde_json::from_slice(
            &client
                .get_object("services", "default", "target", false)
                .await?
                .object,
        )?;
        let e = client
            .get_object("endpoints", "default", "target", false)
            .await;
        let ready = e.is_ok_and(|e| String::from_utf8_lossy(&e.object).contains("addresses"));
        if let (Some(pip), Some(cip), true) = (
            p.pointer("/status/podIP").and_then(Value::as_str),
            s.pointer("/spec/clusterIP").and_then(Value::as_str),
            ready,
        ) {
            break (pip.to_string(), cip.to_string());
        }
        anyhow::ensure!(Instant::now() < deadline, "the wrk target did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // With a connection per request, TIME_WAIT ports would run out within a few runs
    // without reuse, and every figure after would be the exhaustion's.
    host.exec(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
    host.exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"]);
    let mut errors = 0;
    let d_url = format!("http://{pod_ip}:8080/");
    let v_url = format!("http://{cluster_ip}/");
    for (shape, close) in [
        ("keep-alive connections", false),
        ("a connection per request", true),
    ] {
        let (mut direct, mut via) = (Vec::new(), Vec::new());
        for run in 0..args.wrk_runs {
            // Alternate which goes first, so drift over the runs falls on both sides.
            let (d, v) = if run % 2 == 0 {
                let d = wrk(host, &d_url, args.wrk_seconds, close);
                (d, wrk(host, &v_url, args.wrk_seconds, close))
            } else {
                let v = wrk(host, &v_url, args.wrk_seconds, close);
                (wrk(host, &d_url, args.wrk_seconds, close), v)
            };
            println!(
                "{shape}, run {}: pod IP {:.0} req/s ({} errors), ClusterIP {:.0} req/s ({} errors)",
                run + 1,
                d.0,
                d.1,
                v.0,
                v.1
            );
            errors += d.1 + v.1;
            direct.push(d.0);
            via.push(v.0);
        }
        if args.wrk_runs > 0 {
            // The ratio of each run's pair, then their median.
            let ratio = median(direct.iter().zip(&via).map(|(d, v)| v / d).collect());
            let (d, v) = (median(direct), median(via));
            let target = if close { "" } else { " (target >= 0.9)" };
            println!(
                "{shape}: median pod IP {d:.0} req/s, ClusterIP {v:.0} req/s, paired ratio {ratio:.2}{target}"
            );
        }
    }
    super::print_verdict(errors, "failed requests or wrk runs");
    Ok(())
}
