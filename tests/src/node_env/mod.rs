//! The world of node-agent tests: a test host (a network namespace with a veth to the root
//! namespace and no route off the machine), a private containerd, a local registry, images
//! built from busybox, and `skiff node` processes. Everything is named per test, removed on
//! drop even when the test fails, and what a killed run left behind is removed at the next.
//!
//! ```text
//! root netns: control nodes (0.0.0.0:port), registry (gw:port), containerd (unix socket)
//!     │ veth  gw 10.233.X.Y/30
//!     ▼
//! test host netns: skiff node (agent API :10250), bridge skiff0 ── pods (10.244.n.0/24)
//! ```

pub mod image;
pub mod lan;
pub mod nodes;
pub mod registry;
pub mod upstream_dns;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run a command; panic with its stderr if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command, returning its output whatever happens.
pub fn try_sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

/// Make this host one crun runs containers on: crun 1.8 refuses hosts that mount cgroup v1
/// hierarchies and also have controllers on the cgroup2 one ("hybrid mode", as this CI's VMs
/// boot: hugetlb sits alone on cgroup2). Each such controller gets its own v1 hierarchy, as on
/// a plain v1 host; runc works the same either way. Fails when crun is not installed (`make
/// test` installs it): a test never passes without what it tests.
pub fn prepare_host_for_crun() {
    assert!(
        Path::new("/usr/bin/crun").exists(),
        "this test needs the Debian package crun (make test installs it)"
    );
    for c in skiff_node::cgroups::hybrid_controllers() {
        let dir = format!("/sys/fs/cgroup/{c}");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        sh(&["mount", "-t", "cgroup", "-o", &c, "cgroup", &dir]);
    }
    let left = skiff_node::cgroups::hybrid_controllers();
    assert!(
        left.is_empty(),
        "controllers still on cgroup2 after moving them to v1: {left:?}"
    );
}

/// Fail unless the process is root and the Debian packages node tests run are installed
/// (`make test` installs them, and skips the tests that need root when it is not root): a
/// test never passes without what it tests.
pub fn require_system_parts() {
    let missing: Vec<&str> = [
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("docker-registry", "docker-registry"),
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("busybox", "busybox-static"),
    ]
    .iter()
    .filter(|(tool, _)| {
        !std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
    })
    .map(|(_, pkg)| *pkg)
    .chain((!Path::new("/usr/lib/cni/bridge").exists()).then_some("containernetworking-plugins"))
    .collect();
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    assert!(
        missing.is_empty() && root,
        "node tests need root (now: {}) and Debian packages {missing:?} (make test installs them)",
        if root { "root" } else { "not root" }
    );
}

const NETNS_PREFIX: &str = "ske2e";

/// Remove test-host namespaces of test processes that no longer run.
fn remove_stale_hosts() {
    let list = String::from_utf8_lossy(&try_sh(&["ip", "netns", "list"]).stdout).into_owned();
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let pid = rest.split('x').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = try_sh(&["ip", "netns", "del", name]);
        }
    }
}

/// A test host: a network namespace joined to the root namespace by a veth pair.
pub struct TestHost {
    /// Its namespace name.
    pub netns: String,
    /// Its address.
    pub ip: String,
    /// The root namespace's end of the link (how the host reaches the control plane).
    pub gateway: String,
    /// The address its agent publishes (`--node-ip`): `ip`, or its address on a LAN it
    /// joined ([`lan::Lan::attach`]).
    pub node_ip: String,
}

impl TestHost {
    /// Create a host with a fresh /30.
    pub fn create() -> Self {
        remove_stale_hosts();
        let n: u32 = rand::random::<u32>() % 16_000;
        let (a, b) = (n / 64, (n % 64) * 4);
        let netns = format!("{NETNS_PREFIX}{}x{n}", std::process::id());
        let gateway = format!("10.233.{a}.{}", b + 1);
        let ip = format!("10.233.{a}.{}", b + 2);
        let (outer, inner) = (format!("skv{n}a"), format!("skv{n}b"));
        sh(&["ip", "netns", "add", &netns]);
        let host = Self {
            netns: netns.clone(),
            ip: ip.clone(),
            gateway: gateway.clone(),
            node_ip: ip.clone(),
        };
        sh(&[
            "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        sh(&["ip", "link", "set", &inner, "netns", &netns]);
        sh(&["ip", "addr", "add", &format!("{gateway}/30"), "dev", &outer]);
        sh(&["ip", "link", "set", &outer, "up"]);
        host.exec(&["ip", "link", "set", "lo", "up"]);
        host.exec(&["ip", "addr", "add", &format!("{ip}/30"), "dev", &inner]);
        host.exec(&["ip", "link", "set", &inner, "up"]);
        host
    }

    /// Link this host directly to `other` with a veth pair; returns (this end's address, the
    /// other end's address), a /30 of 10.234.0.0/16.
    pub fn link(&self, other: &TestHost) -> (String, String) {
        let n: u32 = rand::random::<u32>() % 16_000;
        let (a, b) = (n / 64, (n % 64) * 4);
        let (mine, theirs) = (
            format!("10.234.{a}.{}", b + 1),
            format!("10.234.{a}.{}", b + 2),
        );
        let (x, y) = (format!("skl{n}a"), format!("skl{n}b"));
        sh(&[
            "ip",
            "link",
            "add",
            &x,
            "netns",
            &self.netns,
            "type",
            "veth",
            "peer",
            "name",
            &y,
            "netns",
            &other.netns,
        ]);
        self.exec(&["ip", "addr", "add", &format!("{mine}/30"), "dev", &x]);
        self.exec(&["ip", "link", "set", &x, "up"]);
        other.exec(&["ip", "addr", "add", &format!("{theirs}/30"), "dev", &y]);
        other.exec(&["ip", "link", "set", &y, "up"]);
        (mine, theirs)
    }

    /// Run `script` with busybox sh inside the host; its stdout.
    pub fn sh(&self, script: &str) -> String {
        String::from_utf8_lossy(&self.try_exec(&["busybox", "sh", "-c", script]).stdout)
            .into_owned()
    }

    /// Run a command inside the host; panics on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.netns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Run a command inside the host.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.netns];
        full.extend_from_slice(args);
        try_sh(&full)
    }

    /// Fetch `http://addr/path` from inside the host with busybox wget (whose own `-T` timeout
    /// crashes Debian's build, hence `timeout`), after checking that
    /// the address routes to the host's own bridge and nowhere else. The error says what
    /// wget said and how the host's network looked.
    pub fn http_get(&self, addr: &str, path: &str) -> Result<String, String> {
        let ip = addr.split(':').next().unwrap_or(addr);
        let route = self.exec(&["ip", "route", "get", ip]);
        assert!(
            route.contains("dev skiff0"),
            "{ip} does not route to the test host's pod bridge: {route}"
        );
        let out = self.try_exec(&[
            "timeout",
            "5",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{addr}{path}"),
        ]);
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let look =
            |args: &[&str]| String::from_utf8_lossy(&self.try_exec(args).stdout).into_owned();
        Err(format!(
            "wget http://{addr}{path} ({}): {} {}\naddresses:\n{}routes:\n{}links:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
            look(&["ip", "-br", "addr"]),
            look(&["ip", "route"]),
            look(&["ip", "-br", "link"]),
        ))
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // The veth goes with the namespace.
        let _ = try_sh(&["ip", "netns", "del", &self.netns]);
    }
}

/// A private containerd: own root, state and socket under a test folder.
pub struct Containerd {
    /// Its socket.
    pub socket: PathBuf,
    /// The OCI runtime's state folder (on containerd's tmpfs state).
    pub oci_runtime_root: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Start one under `dir`.
    pub fn start(dir: &Path) -> Self {
        let dir = dir.join("containerd");
        std::fs::create_dir_all(&dir).expect("containerd dir");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        // containerd's state (task bundles, shim sockets) and the OCI runtime's state are
        // rewritten on every container start: tmpfs, as /run is on a usual host.
        let state = dir.join("state");
        std::fs::create_dir_all(&state).expect("containerd state dir");
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "mode=0711",
            "tmpfs",
            &state.display().to_string(),
        ]);
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n",
                dir.display(),
                socket.display()
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("containerd is not installed (Debian: apt-get install containerd runc)");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            socket,
            oci_runtime_root: state.join("runc"),
            dir,
            child: Some(child),
        }
    }

    /// The bundle folder containerd made for the task of container `id` (agent namespace).
    pub fn task_bundle(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task/skiff")
            .join(id)
    }

    /// `ctr` against this containerd, in the agent's namespace.
    pub fn ctr(&self, args: &[&str]) -> String {
        let sock = self.socket.display().to_string();
        let mut full = vec!["ctr", "-a", &sock, "-n", "skiff"];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// The ids of the containers (`ctr containers ls -q`).
    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .lines()
            .map(String::from)
            .collect()
    }

    /// The active snapshots (container root filesystems, not image layers).
    pub fn active_snapshots(&self) -> Vec<String> {
        self.ctr(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter(|l| l.trim_end().ends_with("Active"))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let sock = self.socket.display().to_string();
        // Containers first: their shims outlive containerd otherwise.
        let tasks = try_sh(&["ctr", "-a", &sock, "-n", "skiff", "tasks", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).lines() {
            let _ = try_sh(&[
                "ctr", "-a", &sock, "-n", "skiff", "tasks", "kill", "-a", "-s", "SIGKILL", id,
            ]);
        }
        std::thread::sleep(Duration::from_millis(300));
        for id in String::from_utf8_lossy(&tasks.stdout).lines() {
            let _ = try_sh(&[
                "ctr", "-a", &sock, "-n", "skiff", "tasks", "delete", "-f", id,
            ]);
        }
        // A test may end with pods still running: the agent removes a pod's cgroups only
        // when the pod goes, and left behind they pile up over many runs of the suite.
        let containers = try_sh(&["ctr", "-a", &sock, "-n", "skiff", "containers", "ls", "-q"]);
        let ids: Vec<String> = String::from_utf8_lossy(&containers.stdout)
            .lines()
            .map(String::from)
            .collect();
        remove_pod_cgroups_of(&ids);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_processes_mentioning(&sock);
        // Its state tmpfs, in the same test folder: no shim is left to use it.
        if let Some(test_dir) = self.dir.parent() {
            unmount_under(test_dir);
        }
    }
}

/// Remove the cgroups of these containers' pods. A container id starts with the first 12
/// hex digits of its pod's uid (`skiff_node::pod_worker::slot::container_id`).
fn remove_pod_cgroups_of(container_ids: &[String]) {
    let prefixes: Vec<&str> = container_ids
        .iter()
        .filter_map(|id| id.split('-').next())
        .filter(|p| p.len() == 12)
        .collect();
    if prefixes.is_empty() {
        return;
    }
    for uid in skiff_node::cgroups::pod_uids() {
        let compact = uid.replace('-', "");
        if prefixes.iter().any(|p| compact.starts_with(p)) {
            skiff_node::cgroups::remove_pod_parent(&uid);
        }
    }
}

fn kill_processes_mentioning(needle: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = try_sh(&["umount", "-l", p]);
    }
}

/// A `skiff node` process inside a test host.
pub struct Agent {
    /// Node name.
    pub name: String,
    /// Its data folder.
    pub data_dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// Start an agent named `name` in `host`, against `endpoints`, on `containerd`.
    pub fn start(
        name: &str,
        host: &TestHost,
        endpoints: &[String],
        containerd: &Containerd,
        dir: &Path,
        extra: &[&str],
    ) -> Self {
        let data_dir = dir.join(format!("agent-{name}"));
        let mut args: Vec<String> = vec![
            "node".into(),
            "--name".into(),
            name.into(),
            "--netns".into(),
            host.netns.clone(),
            "--node-ip".into(),
            host.node_ip.clone(),
            "--endpoints".into(),
            endpoints.join(","),
            "--containerd-socket".into(),
            containerd.socket.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--heartbeat-ms".into(),
            "1000".into(),
            "--oci-runtime-root".into(),
            containerd.oci_runtime_root.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Self {
            name: name.into(),
            log: dir.join(format!("agent-{name}.log")),
            data_dir,
            args,
            child: None,
        };
        a.restart();
        a
    }

    /// Start the process (again).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "agent {} runs", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(crate::binary("skiff"))
            .args(&self.args)
            .env("SKIFF_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn skiff node");
        self.child = Some(child);
    }

    /// `kill -9` the agent (its containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Resident memory of its process, in bytes (from /proc): `VmRSS`, or another field of
    /// `/proc/PID/status` such as `RssAnon` (its own heap and stacks) or `RssFile` (mapped
    /// files, mostly the `skiff` binary, shared with other skiff processes).
    pub fn memory_bytes(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// CPU time its process has used (user + system), in milliseconds.
    pub fn cpu_ms(&self) -> Option<f64> {
        crate::process_cpu_ms(self.child.as_ref()?.id())
    }

    /// Resident memory of its process, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.memory_bytes("VmRSS")
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Network namespaces of its pods (from their network records).
    pub fn pod_netns(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.data_dir.join("pods")) {
            for e in entries.flatten() {
                let uid = e.file_name().to_string_lossy().into_owned();
                let short: String = uid
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(20)
                    .collect();
                out.push(format!("skiff-{short}"));
            }
        }
        out
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        for ns in self.pod_netns() {
            let _ = try_sh(&["ip", "netns", "del", &ns]);
        }
        skiff_node::runtime::made_ahead::sandboxes::remove_namespaces(&self.data_dir.join("cni"));
    }
}
