//! `skiff up` as a user runs it from a terminal: a local cluster with its own containerd and
//! node agent runs a pod, and Ctrl-C (SIGINT to the whole foreground process group) stops
//! everything, the pod's container and shim included, and removes what it mounted, the pod's
//! network namespace included. A second `skiff up` runs the pod again, without leaking its
//! first address. Beside another cluster, `skiff up` refuses taken ports and runs on others;
//! it restarts a member that dies.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::require_system_parts;
use skiff_e2e::skiff_up::{free_base_port, Up};
use skiff_e2e::{binary, free_port};

fn skiffctl(dir: &Path, endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(binary("skiffctl"))
        .args(args)
        .current_dir(dir)
        .env("SKIFF_ENDPOINTS", endpoints)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skiffctl runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("stdin");
    drop(input);
    let out = child.wait_with_output().expect("skiffctl output");
    assert!(
        out.status.success(),
        "skiffctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    pids_mentioning(needle)
        .into_iter()
        .map(|(_, c)| c)
        .collect()
}

/// Processes whose command line holds `needle`: pid and command line.
fn pids_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(String::from)
        .collect()
}

/// The pod's command, unlike any other test's, to find its process.
const POD_COMMAND: &str = "sleep 3599";

/// Ctrl-C (the whole group gets SIGINT, containerd included); then nothing of it may be
/// left: no process, no mount, not the pod's network namespace `netns`.
fn ctrl_c_leaves_nothing(up: Up, netns: &Path) {
    ctrl_c_leaves_nothing_of(up, netns, POD_COMMAND)
}

/// [`ctrl_c_leaves_nothing`] for a pod that runs `pod_command`.
fn ctrl_c_leaves_nothing_of(mut up: Up, netns: &Path, pod_command: &str) {
    let socket = up.dir.join(".skiff/containerd/containerd.sock");
    let socket = socket.display().to_string();
    let mut running = pids_mentioning(&socket);
    running.extend(pids_mentioning(pod_command));
    assert!(
        !processes_mentioning(&socket).is_empty() && !processes_mentioning(pod_command).is_empty(),
        "the pod's container and shim run against skiff up's containerd"
    );
    assert!(netns.exists(), "the pod's namespace {netns:?} is there");
    killpg(up.group, Signal::SIGINT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "skiff up did not stop: {}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Shims exit on their own once containerd has deleted their tasks: wait for each
    // process that ran to be gone, then nothing may mention skiff up's containerd.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some((pid, cmd)) = running
        .iter()
        .find(|(pid, _)| Path::new(&format!("/proc/{pid}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "process {pid} ({cmd}) still runs after Ctrl-C\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut left = processes_mentioning(&socket);
    left.extend(processes_mentioning(pod_command));
    assert!(
        left.is_empty(),
        "processes left after Ctrl-C: {left:?}\n{}",
        up.log()
    );
    assert_eq!(
        mounts_under(&up.dir),
        Vec::<String>::new(),
        "mounts left after Ctrl-C"
    );
    assert!(
        !netns.exists(),
        "the pod's network namespace {netns:?} is left after Ctrl-C"
    );
    let net: serde_json::Value = serde_json::from_slice(
        &std::fs::read(up.dir.join(".skiff/network.json")).expect("network.json"),
    )
    .expect("network choice");
    let bridge = net["bridge"].as_str().expect("bridge");
    assert!(
        !Path::new("/sys/class/net").join(bridge).exists(),
        "the node's bridge {bridge} is left after Ctrl-C"
    );
}

/// The pod addresses host-local has handed out on the node of `skiff up` in `dir`.
fn reserved_addresses(dir: &Path) -> Vec<String> {
    let records = dir.join(".skiff/node/cni/skiff");
    let mut found: Vec<String> = std::fs::read_dir(&records)
        .unwrap_or_else(|e| panic!("{}: {e}", records.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    found.sort();
    found
}

/// Wait until pod `hello` is Running; returns it.
fn running_hello(dir: &Path, endpoints: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = skiffctl(dir, endpoints, &["get", "pod", "hello", "-o", "json"], None);
        let pod: serde_json::Value = serde_json::from_str(&out).expect("pod json");
        if pod.pointer("/status/phase").and_then(|p| p.as_str()) == Some("Running") {
            return pod;
        }
        assert!(Instant::now() < deadline, "pod hello not Running: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn skiff_up_runs_a_pod_ctrl_c_leaves_nothing_running_and_a_second_up_runs_it_again() {
    require_system_parts();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(tmp.path()).expect("canonical dir");
    let base_port = free_base_port(&[]);
    let endpoints = (0..3)
        .map(|i| format!("127.0.0.1:{}", base_port + i))
        .collect::<Vec<_>>()
        .join(",");
    let up = Up::start(&dir, base_port, "up.log");

    let archive = dir.join("busybox.tar");
    std::fs::write(
        &archive,
        OciImage::busybox("up").archive("example.test/up/busybox:1"),
    )
    .expect("archive");
    let archive = archive.display().to_string();
    // The node registers shortly after the control plane is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !skiffctl(&dir, &endpoints, &["get", "nodes"], None).contains("local") {
        assert!(Instant::now() < deadline, "node local never registered");
        std::thread::sleep(Duration::from_millis(200));
    }
    skiffctl(
        &dir,
        &endpoints,
        &["image", "import", "--node", "local", &archive],
        None,
    );
    skiffctl(
        &dir,
        &endpoints,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers:\n  - {name: c, image: \"example.test/up/busybox:1\", imagePullPolicy: Never, command: [\"sh\", \"-c\", \"echo hello from skiff up; exec sleep 3599\"]}\n",
        ),
    );
    let pod = running_hello(&dir, &endpoints);
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(|u| u.as_str())
        .expect("uid");
    let netns = skiff_node::netns::path(&skiff_node::pod_worker::sandbox_name(uid));
    ctrl_c_leaves_nothing(up, &netns);

    // The cluster's state is kept: the pod runs again, restarted once, at the same address.
    let up = Up::start(&dir, base_port, "up-again.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod = loop {
        let pod = running_hello(&dir, &endpoints);
        let restarts = pod.pointer("/status/containerStatuses/0/restartCount");
        if restarts.and_then(|r| r.as_i64()) == Some(1) {
            break pod;
        }
        assert!(
            Instant::now() < deadline,
            "pod hello not restarted once: {pod}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Wired again; the address it had before was released, not leaked.
    let ip = pod
        .pointer("/status/podIP")
        .and_then(|i| i.as_str())
        .expect("podIP");
    assert_eq!(reserved_addresses(&dir), vec![ip.to_string()]);
    let logs = skiffctl(&dir, &endpoints, &["logs", "hello"], None);
    assert!(logs.contains("hello from skiff up"), "logs: {logs}");
    ctrl_c_leaves_nothing(up, &netns);
}

fn endpoints_from(base_port: u16) -> String {
    (0..3)
        .map(|i| format!("127.0.0.1:{}", base_port + i))
        .collect::<Vec<_>>()
        .join(",")
}

/// The cluster's nodes: name, uid and the agent's port each reports.
fn nodes(dir: &Path, endpoints: &str) -> Vec<(String, String, i64)> {
    let out = skiffctl(dir, endpoints, &["get", "nodes", "-o", "json"], None);
    let list: serde_json::Value = serde_json::from_str(&out).expect("node list json");
    let mut nodes: Vec<(String, String, i64)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            (
                n.pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                n.pointer("/metadata/uid")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                n.pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
                    .and_then(|v| v.as_i64())
                    .unwrap_or_default(),
            )
        })
        .collect();
    nodes.sort();
    nodes
}

/// Wait until the cluster has node `local`; returns the node list.
fn registered(dir: &Path, endpoints: &str) -> Vec<(String, String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = nodes(dir, endpoints);
        if found.iter().any(|n| n.0 == "local") {
            return found;
        }
        assert!(Instant::now() < deadline, "node local never registered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Import busybox and run pod `hello` with `command` in the cluster of `dir`; returns the
/// running pod.
fn run_hello(dir: &Path, endpoints: &str, command: &str) -> serde_json::Value {
    let archive = dir.join("busybox.tar");
    std::fs::write(
        &archive,
        OciImage::busybox("up").archive("example.test/up/busybox:1"),
    )
    .expect("archive");
    let archive = archive.display().to_string();
    skiffctl(
        dir,
        endpoints,
        &["image", "import", "--node", "local", &archive],
        None,
    );
    skiffctl(
        dir,
        endpoints,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: hello}}\nspec:\n  containers:\n  - {{name: c, image: \"example.test/up/busybox:1\", imagePullPolicy: Never, command: [\"sh\", \"-c\", \"echo hello from {}; exec {command}\"]}}\n",
            dir.display()
        )),
    );
    running_hello(dir, endpoints)
}

fn pod_netns(pod: &serde_json::Value) -> std::path::PathBuf {
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(|u| u.as_str())
        .expect("uid");
    skiff_node::netns::path(&skiff_node::pod_worker::sandbox_name(uid))
}

#[test]
fn a_second_up_on_taken_ports_refuses_and_one_on_other_ports_runs_beside_with_its_own_node() {
    require_system_parts();
    let tmp_a = tempfile::tempdir().expect("tempdir");
    let tmp_b = tempfile::tempdir().expect("tempdir");
    let dir_a = std::fs::canonicalize(tmp_a.path()).expect("canonical dir");
    let dir_b = std::fs::canonicalize(tmp_b.path()).expect("canonical dir");
    let port_a = free_base_port(&[]);
    let endpoints_a = endpoints_from(port_a);
    let up_a = Up::start(&dir_a, port_a, "up.log");
    let nodes_a = registered(&dir_a, &endpoints_a);
    assert_eq!(nodes_a.len(), 1, "{nodes_a:?}");
    assert_eq!(
        nodes_a[0].2,
        i64::from(port_a) + 3,
        "the agent takes the port after the members"
    );
    let pod_a = run_hello(&dir_a, &endpoints_a, "sleep 3597");

    // The same ports: refused before anything starts, naming the port and the way out.
    let second = Command::new(binary("skiff"))
        .args(["up", "--base-port", &port_a.to_string()])
        .current_dir(&dir_b)
        .stdin(Stdio::null())
        .output()
        .expect("skiff up");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second skiff up succeeded: {stderr}"
    );
    assert!(
        stderr.contains(&format!("port {port_a}")) && stderr.contains("--base-port"),
        "{stderr}"
    );
    assert_eq!(
        processes_mentioning(&dir_b.display().to_string()),
        Vec::<String>::new(),
        "nothing of the refused skiff up may run"
    );
    assert_eq!(
        nodes(&dir_a, &endpoints_a),
        nodes_a,
        "the first cluster's nodes changed"
    );

    // A node agent given another cluster's id refuses the first cluster's control plane, even
    // with a certificate the first cluster's CA signed.
    let stranger_dir = dir_b.join("stranger");
    let ca_a = skiff_proto::tls::authority::ClusterCa::load(&dir_a.join(".skiff/pki"))
        .expect("read the CA")
        .expect("skiff up made a CA");
    ca_a.issue(
        &skiff_proto::tls::holder::Holder::Node("stranger".into()),
        &[],
    )
    .expect("issue")
    .save(&stranger_dir.join("pki"), "node")
    .expect("save");
    let stranger = Command::new(binary("skiff"))
        .args(["node", "--name", "stranger", "--endpoints", &endpoints_a])
        .args(["--cluster-id", "skiff-local-someone-else"])
        .arg("--containerd-socket")
        .arg(dir_a.join(".skiff/containerd/containerd.sock"))
        .arg("--data-dir")
        .arg(&stranger_dir)
        .args([
            "--agent-port",
            &free_port().to_string(),
            "--bridge",
            "skiffst0",
            "--no-proxy",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("skiff node");
    let log = String::from_utf8_lossy(&stranger.stderr).into_owned()
        + &String::from_utf8_lossy(&stranger.stdout);
    assert!(!stranger.status.success(), "the stranger agent ran: {log}");
    assert!(log.contains("refusing to join"), "{log}");
    assert_eq!(
        nodes(&dir_a, &endpoints_a),
        nodes_a,
        "the stranger registered"
    );

    // Other ports: both run, each with its own node, network and pod.
    let port_b = free_base_port(&[port_a]);
    let endpoints_b = endpoints_from(port_b);
    let up_b = Up::start(&dir_b, port_b, "up.log");
    let nodes_b = registered(&dir_b, &endpoints_b);
    assert_eq!(nodes_b.len(), 1, "{nodes_b:?}");
    assert_ne!(nodes_b[0].1, nodes_a[0].1, "one node in two clusters");
    assert_eq!(nodes_b[0].2, i64::from(port_b) + 3);
    assert_eq!(
        nodes(&dir_a, &endpoints_a),
        nodes_a,
        "the first cluster's nodes changed"
    );
    let pod_b = run_hello(&dir_b, &endpoints_b, "sleep 3598");
    let ip = |p: &serde_json::Value| {
        p.pointer("/status/podIP")
            .and_then(|i| i.as_str())
            .map(String::from)
    };
    assert_ne!(
        ip(&pod_a),
        ip(&pod_b),
        "two clusters' pods share an address"
    );
    let logs_b = skiffctl(&dir_b, &endpoints_b, &["logs", "hello"], None);
    assert!(
        logs_b.contains(&format!("hello from {}", dir_b.display())),
        "{logs_b}"
    );

    // Stopping the second leaves the first running.
    ctrl_c_leaves_nothing_of(up_b, &pod_netns(&pod_b), "sleep 3598");
    let again = running_hello(&dir_a, &endpoints_a);
    assert_eq!(
        again.pointer("/metadata/uid"),
        pod_a.pointer("/metadata/uid")
    );
    let logs_a = skiffctl(&dir_a, &endpoints_a, &["logs", "hello"], None);
    assert!(
        logs_a.contains(&format!("hello from {}", dir_a.display())),
        "{logs_a}"
    );
    ctrl_c_leaves_nothing_of(up_a, &pod_netns(&pod_a), "sleep 3597");
}

#[test]
fn a_member_killed_under_up_is_reported_once_restarted_and_catches_up() {
    require_system_parts();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(tmp.path()).expect("canonical dir");
    let base_port = free_base_port(&[]);
    let endpoints = endpoints_from(base_port);
    let up = Up::start_with(&dir, base_port, "up.log", &["--no-node"]);
    let cluster = std::fs::read_to_string(dir.join(".skiff/cluster-id")).expect("cluster id");
    let member = format!("127.0.0.1:{}", base_port + 1);
    let data = format!("{}/.skiff/control-2 ", dir.display());
    let pids = pids_mentioning(&data);
    assert_eq!(pids.len(), 1, "control node 2: {pids:?}");
    nix::sys::signal::kill(Pid::from_raw(pids[0].0 as i32), Signal::SIGKILL).expect("kill");

    // A write it misses while down.
    skiffctl(
        &dir,
        &endpoints,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: while-down}\ndata: {k: v}\n"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = skiff_proto::config_file::ConfigFile::load(&dir.join(".skiff/config.json"))
        .expect("client config");
    let admin = config.contexts[0].credentials.clone();
    assert!(admin.is_some(), "skiff up writes the admin's credentials");
    let status =
        |addr: &str| runtime.block_on(skiff_proto::Client::status_of(addr, admin.as_ref()));
    let leader_applied = endpoints
        .split(',')
        .filter_map(|e| status(e).ok())
        .find(|s| s.leader == s.member_id)
        .expect("a leader answers")
        .applied_index;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = up.log();
        let back = log.contains(&format!("control node 2 ({member}) started again"));
        let caught_up = status(&member).is_ok_and(|s| {
            s.cluster_id == cluster.trim() && s.applied_index >= leader_applied && s.leader != 0
        });
        if back && caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "control node 2 did not come back: {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = up.log();
    assert_eq!(
        log.matches(&format!("control node 2 ({member}) exited"))
            .count(),
        1,
        "its exit is reported once: {log}"
    );
    let pids = pids_mentioning(&data);
    assert_eq!(pids.len(), 1, "one control node 2 runs: {pids:?}");
}

/// The names of `ip netns list`.
fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn skiff_up_with_two_nodes_runs_a_two_tier_app_across_them_and_ctrl_c_leaves_nothing() {
    require_system_parts();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(tmp.path()).expect("canonical dir");
    let base_port = free_base_port(&[]);
    let endpoints = endpoints_from(base_port);
    let up = Up::start_with(&dir, base_port, "up.log", &["--nodes", "2"]);
    let net: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(".skiff/network.json")).expect("network.json"),
    )
    .expect("network choice");
    let bridge = net["bridge"].as_str().expect("bridge").to_string();
    let table = net["proxyTable"].as_str().expect("proxy table").to_string();
    let node_namespaces = [format!("{bridge}-local-1"), format!("{bridge}-local-2")];
    for ns in &node_namespaces {
        assert!(namespaces().contains(ns), "node host {ns} is made");
    }

    // Both nodes join, each from its own network namespace, and turn Ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list: serde_json::Value = serde_json::from_str(&skiffctl(
            &dir,
            &endpoints,
            &["get", "nodes", "-o", "json"],
            None,
        ))
        .expect("nodes json");
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        if ready == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "two Ready nodes: {list}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // A user's two-tier app: the image on every node, the backend on one node behind a
    // Service, the frontend on the other calling it by name.
    let archive = dir.join("busybox.tar");
    std::fs::write(
        &archive,
        OciImage::busybox("up2").archive("example.test/up/busybox:2"),
    )
    .expect("archive");
    let imported = skiffctl(
        &dir,
        &endpoints,
        &["image", "import", &archive.display().to_string()],
        None,
    );
    assert!(
        imported.contains("node/local-1") && imported.contains("node/local-2"),
        "{imported}"
    );
    skiffctl(
        &dir,
        &endpoints,
        &["apply", "-f", "-"],
        Some(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: backend}
spec:
  replicas: 1
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      nodeSelector: {kubernetes.io/hostname: local-2}
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: example.test/up/busybox:2
        command: ["sh", "-c", "mkdir -p /www && echo backend-says-hello > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: frontend}
spec:
  nodeSelector: {kubernetes.io/hostname: local-1}
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: example.test/up/busybox:2, command: ["sleep", "3600"]}
"#,
        ),
    );
    frontend_reaches_backend(&dir, &endpoints);
    let pods = skiffctl(&dir, &endpoints, &["get", "pods", "-o", "json"], None);
    let pods: serde_json::Value = serde_json::from_str(&pods).expect("pods json");
    let nodes_of: Vec<&str> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert!(
        nodes_of.contains(&"local-1") && nodes_of.contains(&"local-2"),
        "the tiers run on different nodes: {nodes_of:?}"
    );

    ctrl_c_leaves_no_node_host(up, &dir, &bridge, &table);

    // A second `skiff up --nodes 2` resumes: the same nodes, the app running again.
    let up = Up::start_with(&dir, base_port, "up-again.log", &["--nodes", "2"]);
    frontend_reaches_backend(&dir, &endpoints);
    ctrl_c_leaves_no_node_host(up, &dir, &bridge, &table);
}

/// Wait until pod `frontend` gets its backend's page through the Service `backend` by name.
fn frontend_reaches_backend(dir: &Path, endpoints: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = Command::new(binary("skiffctl"))
            .args([
                "exec",
                "frontend",
                "--timeout",
                "5",
                "--",
                "wget",
                "-q",
                "-O",
                "-",
                "http://backend/",
            ])
            .current_dir(dir)
            .env("SKIFF_ENDPOINTS", endpoints)
            .output()
            .expect("skiffctl exec");
        if String::from_utf8_lossy(&out.stdout).contains("backend-says-hello") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the frontend never reached its backend by name: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            skiffctl(dir, endpoints, &["get", "pods", "-o", "wide"], None)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Ctrl-C; then nothing of the nodes' hosts may be left: processes, namespaces, the LAN
/// bridge, the NAT table, mounts, routes.
fn ctrl_c_leaves_no_node_host(mut up: Up, dir: &Path, bridge: &str, table: &str) {
    killpg(up.group, Signal::SIGINT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "skiff up did not stop: {}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(&dir.display().to_string());
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{bridge}-")))
        .collect();
    assert!(left.is_empty(), "node hosts left: {left:?}");
    assert!(
        !Path::new("/sys/class/net")
            .join(format!("{bridge}lan"))
            .exists(),
        "the nodes' LAN bridge is left"
    );
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.contains(&format!("{table}_up")),
        "the nodes' NAT table is left: {tables}"
    );
    assert_eq!(mounts_under(dir), Vec::<String>::new(), "mounts left");
    let route = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .expect("ip route");
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        !route.contains(&format!("{bridge}lan")),
        "routes left: {route}"
    );
}
