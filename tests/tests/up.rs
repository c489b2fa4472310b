//! `skiff up` as a user runs it from a terminal: a local cluster with its own containerd and
//! node agent runs a pod, and Ctrl-C (SIGINT to the whole foreground process group) stops
//! everything, the pod's container and shim included, and removes what it mounted, the pod's
//! network namespace included. A second `skiff up` runs the pod again, without leaking its
//! first address.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::require_system_parts;
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

/// A running `skiff up` in `dir`, in a process group of its own as a shell starts a
/// foreground job, logging to `log`.
struct Up {
    child: std::process::Child,
    group: Pid,
    dir: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Up {
    fn start(dir: &Path, base_port: u16, log_name: &str) -> Self {
        let log = dir.join(log_name);
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(binary("skiff"))
            .args(["up", "--base-port", &base_port.to_string()])
            .current_dir(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("skiff up");
        let mut up = Self {
            group: Pid::from_raw(child.id() as i32),
            child,
            dir: dir.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !up.log().contains("Skiff is up") {
            assert!(
                up.child.try_wait().expect("wait").is_none(),
                "skiff up exited: {}",
                up.log()
            );
            assert!(Instant::now() < deadline, "skiff up: {}", up.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        up
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ctrl-C (the whole group gets SIGINT, containerd included); then nothing of it may be
    /// left: no process, no mount, not the pod's network namespace `netns`.
    fn ctrl_c_leaves_nothing(mut self, netns: &Path) {
        let socket = self.dir.join(".skiff/containerd/containerd.sock");
        let socket = socket.display().to_string();
        let mut running = pids_mentioning(&socket);
        running.extend(pids_mentioning(POD_COMMAND));
        assert!(
            !processes_mentioning(&socket).is_empty()
                && !processes_mentioning(POD_COMMAND).is_empty(),
            "the pod's container and shim run against skiff up's containerd"
        );
        assert!(netns.exists(), "the pod's namespace {netns:?} is there");
        killpg(self.group, Signal::SIGINT).expect("SIGINT");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "skiff up did not stop: {}",
                self.log()
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
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut left = processes_mentioning(&socket);
        left.extend(processes_mentioning(POD_COMMAND));
        assert!(
            left.is_empty(),
            "processes left after Ctrl-C: {left:?}\n{}",
            self.log()
        );
        assert_eq!(
            mounts_under(&self.dir),
            Vec::<String>::new(),
            "mounts left after Ctrl-C"
        );
        assert!(
            !netns.exists(),
            "the pod's network namespace {netns:?} is left after Ctrl-C"
        );
    }
}

impl Drop for Up {
    /// Ctrl-C for a `skiff up` a failed assertion left running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none()
            && killpg(self.group, Signal::SIGINT).is_ok()
        {
            std::thread::sleep(Duration::from_secs(10));
        }
    }
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
    let base_port = free_port();
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
    up.ctrl_c_leaves_nothing(&netns);

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
    up.ctrl_c_leaves_nothing(&netns);
}
