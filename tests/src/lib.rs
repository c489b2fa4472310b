//! Harness for end-to-end tests: real `skiff control` processes on loopback, each with its
//! own data directory, that tests start, `kill -9`, pause and restart. Every cluster is
//! secured as users run it: a cluster CA in each member's data directory, mutual TLS on every
//! connection, and an admin's credentials for the test's clients and skiffctl.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skiff_proto::config_file::ConfigFile;
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;
use skiff_proto::tls::Credentials;
use skiff_proto::{Client, ClientConfig};

pub mod node_env;
pub mod skiff_up;

/// The condition of type `kind` in an object's `status.conditions` (JSON), if it has one.
pub fn condition(object: &serde_json::Value, kind: &str) -> Option<serde_json::Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

/// The keys written after revision `from` up to `to` (inclusive), under `prefix`, each with the
/// revision it was written at; read from the store's change history, so nothing in between is
/// missed.
pub async fn keys_written_between(
    client: &Client,
    prefix: &str,
    from: u64,
    to: u64,
) -> Vec<(String, u64)> {
    let mut keys = Vec::new();
    if to <= from {
        return keys;
    }
    let mut changes = client.watch(prefix, true, from + 1);
    let mut seen = from;
    while seen < to {
        match changes.recv().await.expect("watch").expect("watch event") {
            skiff_proto::WatchEvent::Events(events) => {
                for e in events {
                    let kv = e.kv.expect("kv");
                    seen = seen.max(kv.mod_revision);
                    if kv.mod_revision <= to {
                        keys.push((
                            String::from_utf8_lossy(&kv.key).into_owned(),
                            kv.mod_revision,
                        ));
                    }
                }
            }
            skiff_proto::WatchEvent::Progress(r) => seen = seen.max(r),
        }
    }
    keys
}

/// The object `kind/namespace/name` as JSON, read linearizably; panics if it cannot be read.
pub async fn object_json(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: &str,
) -> serde_json::Value {
    let got = client
        .get_object(kind, namespace, name, false)
        .await
        .unwrap_or_else(|e| panic!("reading {kind} {namespace}/{name}: {e}"));
    serde_json::from_slice(&got.object)
        .unwrap_or_else(|e| panic!("{kind} {namespace}/{name} is not JSON: {e}"))
}

/// Path of a binary built from this workspace (`skiff`, `skiffctl`).
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// Run skiffctl with the client config `config` (`SKIFFCONFIG`).
pub fn skiffctl_with(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("skiffctl"))
        .args(args)
        .env("SKIFFCONFIG", config)
        .output()
        .expect("skiffctl runs")
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One plain HTTP/1.1 request with `content_type` and `body` (both may be empty): the status
/// code (0 when the address does not answer) and the whole response, head and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !content_type.is_empty() {
        head += &format!("Content-Type: {content_type}\r\n");
    }
    head += &format!("Content-Length: {}\r\n\r\n", body.len());
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
        return (0, String::new());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, resp)
}

/// `GET path` on `addr` over plain HTTP/1.1: the status code and the body (code 0 when the
/// address does not answer).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (code, resp) = http_request(addr, "GET", path, "", b"");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A free port (bound on every address, then released), never one this process handed out
/// before (two members of one cluster once got the same). Taken below the kernel's ephemeral
/// range: a port from that range can be taken, between this check and the server's bind, by
/// any outgoing connection of the tests running beside (a `skiff up` once failed that way).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let range = 10_000..ephemeral_start.max(10_100);
    loop {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), range.clone());
        if TcpListener::bind(("0.0.0.0", port)).is_err() {
            continue;
        }
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
}

/// Start a tracing subscriber for a test, once.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_TEST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Settings passed to every member.
#[derive(Debug, Clone, Default)]
pub struct MemberOptions {
    /// Extra flags for `skiff control`.
    pub extra_args: Vec<String>,
    /// Listen on every address (advertising loopback), so test hosts in network namespaces
    /// reach the members through their gateway.
    pub listen_any: bool,
    /// No cluster CA: plaintext connections (the store benchmark against a plaintext etcd).
    pub plaintext: bool,
    /// Serve each member's metrics endpoint (`--metrics-listen`) on a port of its own.
    pub metrics: bool,
    /// Start a new cluster from this backup: member 1's data directory is made by
    /// `skiff control restore`, the others start empty.
    pub restore_from: Option<PathBuf>,
    /// Seal Secrets with this key file (another cluster's, to read its restored Secrets)
    /// instead of a new one.
    pub encryption_key_from: Option<PathBuf>,
}

/// One control process.
pub struct Member {
    /// Member id.
    pub id: u64,
    /// host:port.
    pub addr: String,
    /// Data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    listen: String,
}

impl Member {
    /// Whether its process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// CPU time its process has used (user + system), in milliseconds.
    pub fn cpu_ms(&self) -> Option<f64> {
        process_cpu_ms(self.child.as_ref()?.id())
    }

    /// Resident memory of its process, in bytes (from /proc).
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    }
}

/// CPU time process `pid` has used (user + system), in milliseconds (from /proc).
pub fn process_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks * 10.0)
}

/// A cluster of real `skiff control` processes.
pub struct Cluster {
    /// The members, by id.
    pub members: BTreeMap<u64, Member>,
    /// The cluster id.
    pub cluster_id: String,
    /// The cluster CA.
    pub ca: ClusterCa,
    /// The admin's credentials (`user:admin`).
    pub admin: Credentials,
    /// Serving plaintext (no CA in the members' data directories).
    pub plaintext: bool,
    /// Each member's metrics endpoint (host:port), when asked for.
    pub metrics: BTreeMap<u64, String>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Start `n` members that form a new cluster.
    pub fn start(n: u64, opts: MemberOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("skiff-e2e-")
            .tempdir()
            .expect("temp dir");
        let addrs: BTreeMap<u64, String> = (1..=n)
            .map(|i| (i, format!("127.0.0.1:{}", free_port())))
            .collect();
        let initial = addrs
            .iter()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = format!("e2e-{}", rand::random::<u32>());
        let ca = ClusterCa::generate(&cluster_id).expect("cluster CA");
        let admin = ca.issue_admin("admin").expect("admin credentials");
        let mut cluster = Self {
            members: BTreeMap::new(),
            cluster_id: cluster_id.clone(),
            ca,
            admin,
            plaintext: opts.plaintext,
            metrics: BTreeMap::new(),
            dir,
        };
        // Secrets at rest are sealed under a key kept beside the members, outside their data
        // directories, as an operator keeps it.
        match &opts.encryption_key_from {
            Some(from) => {
                std::fs::copy(from, cluster.encryption_key_file()).expect("encryption key file");
            }
            None => {
                let mut key = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
                std::fs::write(
                    cluster.encryption_key_file(),
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key),
                )
                .expect("encryption key file");
            }
        }
        if let Some(backup) = &opts.restore_from {
            let out = Command::new(binary("skiff"))
                .args(["control", "restore"])
                .arg(backup)
                .arg("--data-dir")
                .arg(cluster.dir.path().join("member-1"))
                .args(["--id", "1", "--initial-cluster", &initial])
                .args(["--cluster-id", &cluster_id])
                .output()
                .expect("skiff control restore runs");
            assert!(
                out.status.success(),
                "skiff control restore: {}",
                text(&out.stderr)
            );
        }
        for (id, addr) in &addrs {
            let mut args = vec![
                "--initial-cluster".to_string(),
                initial.clone(),
                "--cluster-id".into(),
                cluster_id.clone(),
            ];
            args.extend(opts.extra_args.iter().cloned());
            if opts.listen_any {
                args.extend(["--advertise".to_string(), addr.clone()]);
            }
            if opts.metrics {
                let at = format!("127.0.0.1:{}", free_port());
                args.extend(["--metrics-listen".to_string(), at.clone()]);
                cluster.metrics.insert(*id, at);
            }
            cluster.add_process(*id, addr.clone(), args, opts.listen_any);
        }
        cluster
    }

    /// Start a process for a new member that waits to be added (`--join`).
    pub fn start_joiner(&mut self, id: u64, opts: MemberOptions) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--join".to_string(),
            "--cluster-id".into(),
            self.cluster_id.clone(),
        ];
        args.extend(opts.extra_args);
        if opts.listen_any {
            args.extend(["--advertise".to_string(), addr.clone()]);
        }
        self.add_process(id, addr.clone(), args, opts.listen_any);
        addr
    }

    /// The key file every member seals Secrets with (`--encryption-key-file`).
    pub fn encryption_key_file(&self) -> PathBuf {
        self.dir.path().join("encryption.key")
    }

    /// How member `id`'s process ended, if it has.
    pub fn exit_status(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let m = self.members.get_mut(&id)?;
        m.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Start member `id` that joins with a join `token` through `server`: it holds nothing of
    /// the cluster (no CA) until the token gets it in. Returns its address.
    pub fn start_token_joiner(&mut self, id: u64, token: &str, server: &str) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let args = vec![
            "--join".to_string(),
            token.to_string(),
            "--server".into(),
            server.to_string(),
        ];
        self.spawn_member(id, addr.clone(), args, false, false);
        addr
    }

    fn add_process(&mut self, id: u64, addr: String, args: Vec<String>, listen_any: bool) {
        let with_ca = !self.plaintext;
        self.spawn_member(id, addr, args, listen_any, with_ca);
    }

    fn spawn_member(
        &mut self,
        id: u64,
        addr: String,
        args: Vec<String>,
        listen_any: bool,
        with_ca: bool,
    ) {
        let data_dir = self.dir.path().join(format!("member-{id}"));
        let log = self.dir.path().join(format!("member-{id}.log"));
        let mut args = args;
        args.push("--encryption-key-file".into());
        args.push(self.encryption_key_file().display().to_string());
        // Joins in tests need not wait out the default ten seconds of stability.
        if !args.iter().any(|a| a == "--member-stabilization") {
            args.extend(["--member-stabilization".into(), "1s".into()]);
        }
        let listen = if listen_any {
            addr.replacen("127.0.0.1", "0.0.0.0", 1)
        } else {
            addr.clone()
        };
        if with_ca {
            self.ca
                .save(&data_dir.join("pki"))
                .expect("the cluster CA in the member's data directory");
        }
        let mut m = Member {
            id,
            listen,
            addr,
            data_dir,
            child: None,
            args,
            log,
        };
        spawn(&mut m);
        self.members.insert(id, m);
    }

    /// Where the cluster's files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Endpoints of all members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.values().map(|m| m.addr.clone()).collect()
    }

    /// Endpoints of all members as reached through `host` (a test host's gateway address);
    /// needs `listen_any`.
    pub fn endpoints_via(&self, host: &str) -> Vec<String> {
        self.members
            .values()
            .map(|m| m.addr.replacen("127.0.0.1", host, 1))
            .collect()
    }

    /// A client of every member, with fail-over, as the admin.
    pub fn client(&self) -> Client {
        self.client_to(&self.endpoints())
    }

    /// A client of one member only, as the admin.
    pub fn client_of(&self, id: u64) -> Client {
        self.client_to(&[self.members[&id].addr.clone()])
    }

    /// A client of `endpoints`, as the admin.
    pub fn client_to(&self, endpoints: &[String]) -> Client {
        Client::with_config(endpoints, self.client_config()).expect("client")
    }

    /// Client settings with the admin's credentials.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            tls: self.credentials().map(live),
            ..Default::default()
        }
    }

    /// The admin's credentials, unless the cluster serves plaintext.
    pub fn credentials(&self) -> Option<&Credentials> {
        (!self.plaintext).then_some(&self.admin)
    }

    /// Credentials for `holder`, issued by the cluster CA (a node agent's, a user's).
    pub fn issue(&self, holder: &Holder) -> Credentials {
        self.ca
            .issue(holder, &[std::net::Ipv4Addr::LOCALHOST.into()])
            .expect("issue")
    }

    /// A skiffctl config file with every member's endpoint and the admin's credentials, for
    /// `SKIFFCONFIG`.
    pub fn config_file(&self) -> PathBuf {
        let path = self.dir.path().join("skiffctl.json");
        ConfigFile::single("e2e", self.endpoints(), self.credentials().cloned())
            .save(&path)
            .expect("skiffctl config");
        path
    }

    /// Wait until a leader is known to a running member; returns its id.
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            for m in self.members.values().filter(|m| m.is_running()) {
                if let Ok(st) = Client::status_of(&m.addr, self.credentials()).await {
                    if st.leader != 0
                        && self.members.get(&st.leader).is_some_and(|l| l.is_running())
                    {
                        return st.leader;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {within:?}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until member `id` (restarted) follows a leader and has applied what the leader
    /// had, within 100 entries; false if not within `within`.
    pub async fn caught_up(&self, id: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let leader = self.wait_leader(within).await;
            let own = Client::status_of(&self.members[&id].addr, self.credentials()).await;
            let lead = Client::status_of(&self.members[&leader].addr, self.credentials()).await;
            if let (Ok(own), Ok(lead)) = (own, lead) {
                if own.leader != 0 && own.applied_index + 100 >= lead.applied_index {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `kill -9` a member.
    pub fn kill9(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("member");
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop a member as an operator or systemd does (SIGTERM) and wait until it has exited.
    pub fn stop(&mut self, id: u64) -> std::process::ExitStatus {
        let m = self.members.get_mut(&id).expect("member");
        let mut child = m.child.take().expect("member is running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("member {id} did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP or SIGCONT a member.
    pub fn pause(&self, id: u64, paused: bool) {
        if let Some(pid) = self.members[&id].pid() {
            let _ = kill(
                pid,
                if paused {
                    Signal::SIGSTOP
                } else {
                    Signal::SIGCONT
                },
            );
        }
    }

    /// Start a stopped member again on the same data directory (given the cluster CA again,
    /// should a test have wiped it).
    pub fn restart(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("member");
        assert!(m.child.is_none(), "member {id} is running");
        if !self.plaintext {
            self.ca
                .save(&m.data_dir.join("pki"))
                .expect("the cluster CA in the member's data directory");
        }
        spawn(m);
    }

    /// The log of a member, for failure messages.
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.members[&id].log).unwrap_or_default()
    }
}

fn spawn(m: &mut Member) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&m.log)
        .expect("log file");
    let child = Command::new(binary("skiff"))
        .arg("control")
        .args(["--id", &m.id.to_string(), "--listen", &m.listen])
        .arg("--data-dir")
        .arg(&m.data_dir)
        .args(&m.args)
        .env(
            "SKIFF_LOG",
            std::env::var("SKIFF_MEMBER_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn skiff control");
    m.child = Some(child);
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.values_mut() {
            if let Some(pid) = m.pid() {
                let _ = kill(pid, Signal::SIGCONT);
            }
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // A failed test keeps its data directories and logs for a post-mortem.
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::TempDir::new().expect("temp dir"));
            eprintln!("cluster files kept in {}", dir.keep().display());
        }
    }
}

/// `credentials` as a client presents them (the tests' certificates are never renewed).
pub fn live(credentials: &Credentials) -> skiff_proto::tls::LiveCredentials {
    skiff_proto::tls::LiveCredentials::new(credentials.clone()).expect("usable credentials")
}

/// The samples of a Prometheus text exposition, by series (`name{labels}` as written),
/// checked line by line as a scraper reads them: every line a comment (`# HELP`, `# TYPE`,
/// `# UNIT`, `# EOF`) or a series with a number; panics naming the first line that is not.
pub fn prometheus_samples(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                ["HELP ", "TYPE ", "UNIT ", "EOF"]
                    .iter()
                    .any(|k| comment.starts_with(k)),
                "not a Prometheus comment: {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a Prometheus sample: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "not a metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}")),
        };
        samples.insert(series.to_string(), value);
    }
    samples
}

/// A process killed when the test ends, pass or fail.
pub struct Proc(pub Child);

impl Proc {
    /// Stop it as systemd does (SIGTERM) and wait until it has exited.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        self.0.wait().expect("waiting for the process")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `skiff control ARGS`, logging to `DIR/NAME.log`.
pub fn control(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    Proc(
        Command::new(binary("skiff"))
            .arg("control")
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("skiff control runs"),
    )
}
