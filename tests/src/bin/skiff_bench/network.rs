//! `skiff-bench network`: the pod network and the cluster DNS on real nodes (agents in test
//! hosts on one LAN, each with its own containerd).
//!
//! 1. TCP throughput pod to pod across two nodes (iperf3 in the pods' network namespaces)
//!    against host to host over the same LAN, in the same run, alternating; per mode.
//! 2. DNS: a Service name asked of a node's DNS at `--dns-qps` from the node's host: p50, p99,
//!    answers, errors.
//! 3. A new Service resolvable on every node's DNS: from its create's answer to the first
//!    answer naming it, per node.
//! 4. A new node's pods routed from every other node: from its Node appearing in a watch to
//!    its pod CIDR's route on every other node.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Pod;
use skiff_e2e::node_env::nodes::{nodes, Nodes};
use skiff_e2e::node_env::world::{ok, skiffctl};
use skiff_proto::objects::Api;

use super::{median, print_verdict};

#[derive(clap::Args, Clone)]
pub struct NetworkArgs {
    /// Throughput runs each way (pod to pod, host to host), alternating.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The LAN's "wire" for the second set of throughput runs, in Gbit/s: each host's LAN
    /// port is shaped to it (tc tbf), so that both paths are bound by a link as between real
    /// hosts, not by the CPU of this machine. 0: no shaped runs.
    #[arg(long, default_value_t = 10)]
    link_gbit: u64,
    /// DNS questions per second.
    #[arg(long, default_value_t = 5000)]
    dns_qps: u64,
    /// Seconds of DNS load.
    #[arg(long, default_value_t = 10)]
    dns_seconds: u64,
    /// New Services timed to every node's DNS.
    #[arg(long, default_value_t = 30)]
    services: usize,
    /// Nodes joined one after another, timed to every other node's routes.
    #[arg(long, default_value_t = 4)]
    joins: usize,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

const IMAGE: &str = "example.test/bench/busybox:1";

fn pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: \"{IMAGE}\", command: [sleep, \"36000\"]}}]\n---\n"
    )
}

/// The network namespace name and address of a Running pod.
async fn pod_netns(pods: &Api<Pod>, name: &str) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(p) = pods.get(name).await {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let s = p.status.unwrap_or_default();
            if let (Some("Running"), Some(ip)) = (s.phase.as_deref(), s.pod_ip) {
                return Ok((skiff_node::pod_worker::sandbox_name(&uid), ip));
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "pod {name} never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn in_netns(netns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]).args(args);
    c
}

/// One iperf3 run from `client_ns` to `server_ip` served in `server_ns`: Gbit/s received.
fn iperf(server_ns: &str, client_ns: &str, server_ip: &str, seconds: u64) -> anyhow::Result<f64> {
    let mut server: Child = in_netns(server_ns, &["iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = in_netns(
        client_ns,
        &["iperf3", "-c", server_ip, "-t", &seconds.to_string(), "-J"],
    )
    .output()?;
    let _ = server.kill();
    let _ = server.wait();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    report
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|v| v.as_f64())
        .map(|b| b / 1e9)
        .ok_or_else(|| anyhow::anyhow!("iperf3: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Run `f` on a thread inside the network namespace `netns` (`/run/netns/NAME`).
fn in_namespace<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = File::open(&path)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(f())
    })
}

fn question(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    if let Ok(n) = Name::from_str(name) {
        m.add_query(Query::query(n, RecordType::A));
    }
    m.to_vec().unwrap_or_default()
}

/// Ask `server` for `name` `qps` times a second for `seconds` from 8 paced workers; the
/// latencies (ms) of answers with records, and the count of errors (timeouts, failures).
fn dns_load(server: SocketAddr, name: String, qps: u64, seconds: u64) -> (Vec<f64>, usize) {
    let workers = 8u64;
    let interval = Duration::from_secs_f64(workers as f64 / qps as f64);
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let name = name.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0;
                let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else {
                    return (lat, 1);
                };
                let _ = sock.set_read_timeout(Some(Duration::from_secs(1)));
                let end = Instant::now() + Duration::from_secs(seconds);
                let mut next = Instant::now() + interval.mul_f64(w as f64 / workers as f64);
                let mut id = (w as u16) << 12;
                let mut buf = [0u8; 1500];
                while Instant::now() < end {
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    next += interval;
                    id = id.wrapping_add(1);
                    let t0 = Instant::now();
                    if sock.send_to(&question(&name, id), server).is_err() {
                        errors += 1;
                        continue;
                    }
                    let answered = loop {
                        match sock.recv(&mut buf) {
                            Ok(n) => match Message::from_vec(&buf[..n]) {
                                Ok(m) if m.id() == id => {
                                    break m.response_code() == ResponseCode::NoError
                                        && !m.answers().is_empty()
                                }
                                Ok(_) => continue,
                                Err(_) => break false,
                            },
                            Err(_) => break false,
                        }
                    };
                    if answered {
                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        if let Ok((l, e)) = h.join() {
            all.extend(l);
            errors += e;
        } else {
            errors += 1;
        }
    }
    (all, errors)
}

/// Whether `server` answers `name` with a record now.
fn answers(sock: &UdpSocket, server: SocketAddr, name: &str) -> bool {
    let mut buf = [0u8; 1500];
    if sock.send_to(&question(name, 7), server).is_err() {
        return false;
    }
    match sock.recv(&mut buf) {
        Ok(n) => Message::from_vec(&buf[..n]).is_ok_and(|m| !m.answers().is_empty()),
        Err(_) => false,
    }
}

async fn throughput(mode: &str, args: &NetworkArgs, errors: &mut usize) -> anyhow::Result<()> {
    let all = nodes(2, &["--pod-network", mode]).await;
    all.import_busybox(IMAGE, "bench");
    let manifest = format!("{}{}", pod("server", "n2"), pod("client", "n1"));
    ok(&skiffctl(
        &all.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    let pods: Api<Pod> = Api::new(all.cluster.client(), "default");
    let (server_ns, server_ip) = pod_netns(&pods, "server").await?;
    let (client_ns, _) = pod_netns(&pods, "client").await?;
    let (h1, h2) = (&all.node("n1").host, &all.node("n2").host);
    let pairs = Pairs {
        server_ns: &server_ns,
        client_ns: &client_ns,
        server_ip: &server_ip,
        hosts: (&h1.netns, &h2.netns),
        host_ip: &h2.node_ip,
    };
    pairs.measure(&format!("{mode:<8} unshaped"), args, errors);
    if args.link_gbit > 0 {
        for host in [h1, h2] {
            let rate = format!("{}gbit", args.link_gbit);
            let out = in_netns(
                &host.netns,
                &[
                    "tc", "qdisc", "replace", "dev", "lan0", "root", "tbf", "rate", &rate, "burst",
                    "4mb", "latency", "50ms",
                ],
            )
            .output()?;
            anyhow::ensure!(
                out.status.success(),
                "tc: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pairs.measure(
            &format!("{mode:<8} {} Gbit/s link", args.link_gbit),
            args,
            errors,
        );
    }
    Ok(())
}

/// A pair of pods and a pair of hosts to measure throughput between.
struct Pairs<'a> {
    server_ns: &'a str,
    client_ns: &'a str,
    server_ip: &'a str,
    /// (client host, server host).
    hosts: (&'a str, &'a str),
    host_ip: &'a str,
}

impl Pairs<'_> {
    /// `args.runs` alternating runs each way; prints medians and the paired ratio.
    fn measure(&self, label: &str, args: &NetworkArgs, errors: &mut usize) {
        let (mut pod_runs, mut host_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let host = iperf(self.hosts.1, self.hosts.0, self.host_ip, args.seconds);
            let pods = iperf(self.server_ns, self.client_ns, self.server_ip, args.seconds);
            match (pods, host) {
                (Ok(p), Ok(h)) => {
                    pod_runs.push(p);
                    host_runs.push(h);
                    ratios.push(p / h);
                }
                (p, h) => {
                    eprintln!("iperf3 failed: pods {p:?}, hosts {h:?}");
                    *errors += 1;
                }
            }
        }
        println!(
        "{label}   pod→pod {:>6.2} Gbit/s   host→host {:>6.2} Gbit/s   ratio (paired, median) {:.2}x   runs {}",
        median(pod_runs),
        median(host_runs),
        median(ratios),
        args.runs
    );
    }
}

async fn dns(all: &Nodes, args: &NetworkArgs, errors: &mut usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::new(all.cluster.client(), "default");
    pod_netns(&pods, "client").await?;
    let server = dns_server_of(all, "n1").ok_or_else(|| anyhow::anyhow!("n1 has no pod CIDR"))?;
    let host1 = all.node("n1").host.netns.clone();
    let (qps, secs) = (args.dns_qps, args.dns_seconds);
    let name = "web.default.svc.cluster.local.".to_string();
    let (lat, errs) = in_namespace(&host1, move || dns_load(server, name, qps, secs))
        .join()
        .map_err(|_| anyhow::anyhow!("the DNS load thread panicked"))??;
    *errors += errs;
    let rate = lat.len() as f64 / secs as f64;
    println!(
        "dns      {:>6.0} answers/s (asked {qps}/s)   p50 {:.3} ms   p99 {:.3} ms   errors {errs}",
        rate,
        percentile(lat.clone(), 0.5),
        percentile(lat, 0.99),
    );

    // New Services, timed to every node's DNS.
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); all.nodes.len()];
    let client = all.cluster.client();
    for i in 0..args.services {
        let name = format!("probe-{i}");
        let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}});
        client
            .create_object("services", "default", serde_json::to_vec(&svc)?)
            .await?;
        let created = Instant::now();
        let fqdn = format!("{name}.default.svc.cluster.local.");
        let waits: Vec<_> = all
            .nodes
            .iter()
            .map(|n| {
                let fqdn = fqdn.clone();
                let server = dns_server_of(all, &n.agent.name)
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 53)));
                in_namespace(&n.host.netns, move || {
                    let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else {
                        return None;
                    };
                    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < deadline {
                        if answers(&sock, server, &fqdn) {
                            return Some(created.elapsed().as_secs_f64() * 1000.0);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    None
                })
            })
            .collect();
        for (k, w) in waits.into_iter().enumerate() {
            match w.join().ok().and_then(|r| r.ok()).flatten() {
                Some(ms) => per_node[k].push(ms),
                None => *errors += 1,
            }
        }
    }
    for (k, v) in per_node.into_iter().enumerate() {
        println!(
            "new Service → node n{} DNS   p50 {:.1} ms   p99 {:.1} ms   ({} services)",
            k + 1,
            percentile(v.clone(), 0.5),
            percentile(v, 0.99),
            args.services
        );
    }
    Ok(())
}

/// The DNS address of node `name` (its pod CIDR's first address), from the Node.
fn dns_server_of(all: &Nodes, name: &str) -> Option<SocketAddr> {
    let out = skiffctl(&all.cluster, &["get", "node", name, "-o", "json"], None);
    let node: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let cidr: skiff_proto::cidr::Cidr = node.pointer("/spec/podCIDR")?.as_str()?.parse().ok()?;
    format!("{}:53", cidr.first_host()).parse().ok()
}

/// Whether the route to `cidr` is in `netns`' routes the pod network owns.
fn routed(netns: &str, cidr: &str) -> bool {
    in_netns(netns, &["ip", "-4", "route", "show", "proto", "210"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(cidr))
}

async fn joins(all: &mut Nodes, args: &NetworkArgs, errors: &mut usize) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for _ in 0..args.joins {
        let peers: Vec<String> = all.nodes.iter().map(|n| n.host.netns.clone()).collect();
        let name = format!("n{}", all.nodes.len() + 1);
        // From the new Node's first appearance in a watch, until every other node routes its
        // pod CIDR (known once the control plane has assigned it), polled every 2 ms while
        // the agent is still starting.
        let mut watch = all
            .cluster
            .client()
            .watch_objects("nodes", &Default::default(), 0);
        let measure = tokio::spawn(async move {
            let mut appeared = None;
            let cidr = loop {
                let Some(Ok(item)) = watch.recv().await else {
                    return None;
                };
                let (skiff_proto::objects::WatchItem::Added(b)
                | skiff_proto::objects::WatchItem::Modified(b)) = item
                else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                if v.pointer("/metadata/name").and_then(|n| n.as_str()) != Some(&name) {
                    continue;
                }
                appeared.get_or_insert_with(Instant::now);
                if let Some(c) = v.pointer("/spec/podCIDR").and_then(|c| c.as_str()) {
                    break c.to_string();
                }
            };
            let appeared = appeared?;
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut pending = peers;
                while !pending.is_empty() && Instant::now() < deadline {
                    pending.retain(|ns| !routed(ns, &cidr));
                    std::thread::sleep(Duration::from_millis(2));
                }
                pending
                    .is_empty()
                    .then(|| appeared.elapsed().as_secs_f64() * 1000.0)
            })
            .await
            .ok()
            .flatten()
        });
        all.add_node().await;
        match measure.await.ok().flatten() {
            Some(ms) => times.push(ms),
            None => *errors += 1,
        }
    }
    println!(
        "new node's pod CIDR routed on every other node (from its Node in a watch, polled every 2 ms): p50 {:.0} ms   max {:.0} ms   ({} joins)",
        percentile(times.clone(), 0.5),
        percentile(times, 1.0),
        args.joins
    );
    Ok(())
}

pub async fn run(args: NetworkArgs) -> anyhow::Result<()> {
    let mut errors = 0;
    println!("# pod-to-pod TCP across two nodes against host-to-host on the same LAN (iperf3, {} s runs)", args.seconds);
    throughput("host-gw", &args, &mut errors).await?;
    throughput("vxlan", &args, &mut errors).await?;

    println!("# the cluster DNS (vxlan, two nodes, then joins)");
    let mut all = nodes(2, &[]).await;
    all.import_busybox(IMAGE, "bench");
    let manifest = format!(
        "{}apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  ports: [{{port: 80}}]\n",
        pod("client", "n1")
    );
    ok(&skiffctl(
        &all.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    dns(&all, &args, &mut errors).await?;
    joins(&mut all, &args, &mut errors).await?;
    print_verdict(
        errors,
        "errors (failed runs, unanswered questions, missed routes)",
    );
    Ok(())
}
