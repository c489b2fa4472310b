//! `skiff up` as a user runs it from a terminal: a local cluster with its own containerd and
//! node agent runs a pod, and Ctrl-C (SIGINT to the whole foreground process group) stops
//! everything, the pod's container and shim included, and unmounts what it mounted.

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
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
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

/// Ctrl-C for a `skiff up` a failed assertion left running.
struct StopOnDrop(Pid);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if killpg(self.0, Signal::SIGINT).is_ok() {
            std::thread::sleep(Duration::from_secs(10));
        }
    }
}

#[test]
fn skiff_up_runs_a_pod_and_ctrl_c_leaves_nothing_running() {
    if !require_system_parts() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(tmp.path()).expect("canonical dir");
    let base_port = free_port();
    let endpoints = (0..3)
        .map(|i| format!("127.0.0.1:{}", base_port + i))
        .collect::<Vec<_>>()
        .join(",");
    let log = std::fs::File::create(dir.join("up.log")).expect("log");
    // Its own process group, as a shell gives a foreground job: Ctrl-C reaches the group.
    let mut up = Command::new(binary("skiff"))
        .args(["up", "--base-port", &base_port.to_string()])
        .current_dir(&dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("skiff up");
    let group = Pid::from_raw(up.id() as i32);
    let _stop = StopOnDrop(group);
    let read_log = || std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_log().contains("Skiff is up") {
        assert!(
            up.try_wait().expect("wait").is_none(),
            "skiff up exited: {}",
            read_log()
        );
        assert!(Instant::now() < deadline, "skiff up: {}", read_log());
        std::thread::sleep(Duration::from_millis(200));
    }

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
            "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers:\n  - {name: c, image: \"example.test/up/busybox:1\", imagePullPolicy: Never, command: [\"sleep\", \"3599\"]}\n",
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = skiffctl(&dir, &endpoints, &["get", "pods"], None);
        if pods.contains("Running") {
            break;
        }
        assert!(Instant::now() < deadline, "pod hello not Running: {pods}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let socket = dir.join(".skiff/containerd/containerd.sock");
    let socket = socket.display().to_string();
    assert!(
        !processes_mentioning(&socket).is_empty() && !processes_mentioning(POD_COMMAND).is_empty(),
        "the pod's container and shim run against skiff up's containerd"
    );

    // Ctrl-C: the whole group gets SIGINT, containerd included.
    killpg(group, Signal::SIGINT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "skiff up did not stop: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut left = processes_mentioning(&socket);
    left.extend(processes_mentioning(POD_COMMAND));
    assert!(
        left.is_empty(),
        "processes left after Ctrl-C: {left:?}\n{}",
        read_log()
    );
    assert_eq!(
        mounts_under(&dir),
        Vec::<String>::new(),
        "mounts left after Ctrl-C"
    );
}
