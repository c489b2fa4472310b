//! Control nodes of the run, one per host namespace, started as real `skiff control`
//! processes on data directories of the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::{Credentials, LiveCredentials};
use skiff_proto::{Client, ClientConfig};

use crate::delay::DelayProxy;
use crate::net::TestNet;
use crate::powercut::PowerCutMount;

/// Port every control node listens on, inside its own host.
pub const PORT: u16 = 7401;

/// One control node.
pub struct Node {
    /// Member id (= host number).
    pub id: u8,
    /// `host:port`.
    pub addr: String,
    child: Option<Child>,
    paused: bool,
    data_dir: PathBuf,
    log: PathBuf,
    /// Started with `--join` (a member re-added after removal) instead of the initial cluster.
    join: bool,
}

/// The control nodes.
pub struct ChaosCluster {
    /// Nodes by id order.
    pub nodes: Vec<Node>,
    initial: String,
    cluster_id: String,
    skiff: PathBuf,
    /// Power-cut filesystems under the data directories, by node (power-cut scenarios only);
    /// dropped after the nodes are killed.
    mounts: BTreeMap<u8, PowerCutMount>,
    /// The delay proxy between hosts (delay scenarios only).
    pub delay: Option<DelayProxy>,
    /// Flags added to every node's command line.
    node_args: Vec<String>,
    /// The cluster CA, written into each node's data directory before every start (a wiped
    /// member gets it back); the run is secured as users run Skiff.
    ca: ClusterCa,
    /// The workload's credentials.
    admin: Credentials,
    admin_tls: LiveCredentials,
}

/// How the run's clients reach the cluster: endpoints and credentials.
#[derive(Debug, Clone)]
pub struct Access {
    /// Control node addresses.
    pub endpoints: Vec<String>,
    /// The admin's credentials (mutual TLS).
    pub tls: LiveCredentials,
}

impl Access {
    /// A client of these endpoints with `config`'s timings and the credentials.
    pub fn client(&self, config: ClientConfig) -> Client {
        self.client_of(&self.endpoints, config)
    }

    /// A client of `endpoints` with the credentials.
    pub fn client_of(&self, endpoints: &[String], config: ClientConfig) -> Client {
        Client::with_config(
            endpoints,
            ClientConfig {
                tls: Some(self.tls.clone()),
                ..config
            },
        )
        .expect("valid endpoints")
    }
}

fn skiff_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("skiff")
}

impl ChaosCluster {
    /// Start one control node on each host of `net`, data under `dir`; with `power_cut`,
    /// each data directory is a power-cut filesystem (see [`ChaosCluster::power_cut`]).
    pub fn start(
        net: &TestNet,
        dir: &Path,
        power_cut: bool,
        node_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        let skiff = skiff_binary();
        anyhow::ensure!(
            skiff.exists(),
            "{} is not built (cargo build --workspace --bins)",
            skiff.display()
        );
        let initial = (1..=net.hosts)
            .map(|i| format!("{i}={}:{PORT}", net.addr(i)))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = format!("chaos-{}", net.net);
        let ca = ClusterCa::generate(&cluster_id)?;
        let admin = ca.issue_admin("chaos")?;
        let admin_tls = LiveCredentials::new(admin.clone())?;
        let mut c = Self {
            nodes: Vec::new(),
            initial,
            ca,
            admin,
            admin_tls,
            cluster_id,
            skiff,
            mounts: BTreeMap::new(),
            delay: None,
            node_args,
        };
        for i in 1..=net.hosts {
            let mut node = Node {
                id: i,
                addr: format!("{}:{PORT}", net.addr(i)),
                child: None,
                paused: false,
                data_dir: dir.join(format!("node-{i}")),
                log: dir.join(format!("node-{i}.log")),
                join: false,
            };
            if power_cut {
                let backing = dir.join(format!("node-{i}.durable"));
                c.mounts
                    .insert(i, PowerCutMount::mount(&backing, &node.data_dir)?);
            }
            c.spawn(net, &mut node)?;
            c.nodes.push(node);
        }
        Ok(c)
    }

    fn spawn(&self, net: &TestNet, node: &mut Node) -> anyhow::Result<()> {
        self.ca.save(&node.data_dir.join("pki"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &net.ns(node.id)])
            .arg(&self.skiff)
            .args([
                "control",
                "--id",
                &node.id.to_string(),
                "--listen",
                &node.addr,
            ])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(if node.join {
                vec!["--join"]
            } else {
                vec!["--initial-cluster", &self.initial]
            })
            .args(["--cluster-id", &self.cluster_id])
            // A member added back becomes a voter after a second of keeping up, not ten.
            .args(["--member-stabilization", "1s"])
            .args(&self.node_args)
            .env("SKIFF_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// How clients reach the cluster.
    pub fn access(&self) -> Access {
        Access {
            endpoints: self.endpoints(),
            tls: self.admin_tls.clone(),
        }
    }

    /// The workload's credentials, as a client presents them.
    pub fn client_tls(&self) -> &LiveCredentials {
        &self.admin_tls
    }

    /// The workload's credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.admin
    }

    /// Endpoints of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Whether node `id` runs (not killed).
    pub fn is_up(&self, id: u8) -> bool {
        self.node(id).is_some_and(|n| n.child.is_some())
    }

    fn node(&self, id: u8) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn node_mut(&mut self, id: u8) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// `kill -9` node `id`. `ip netns exec` execs the program, so the pid is skiff's own.
    pub fn kill9(&mut self, id: u8) {
        if let Some(n) = self.node_mut(id) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            n.paused = false;
        }
    }

    /// Stop node `id` as systemd does (SIGTERM), waiting up to 10 s before `kill -9`.
    pub fn stop(&mut self, id: u8) {
        if let Some(n) = self.node_mut(id) {
            if let Some(mut c) = n.child.take() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !matches!(c.try_wait(), Ok(Some(_))) {
                    if std::time::Instant::now() > deadline {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            n.paused = false;
        }
    }

    /// The last `lines` lines of each node's log, for a report.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(lines).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("node {} log: {}", n.id, tail.join(" | "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Cut the power of nodes `ids` at once: `kill -9`, then everything they wrote and did
    /// not fsync is gone. Returns how many files lost data (0 without power-cut filesystems).
    pub fn power_cut(&mut self, ids: &[u8]) -> usize {
        for id in ids {
            self.kill9(*id);
        }
        // Let requests the dead processes had queued in the FUSE channel drain first, so none
        // lands after the cut.
        std::thread::sleep(std::time::Duration::from_millis(50));
        ids.iter()
            .filter_map(|id| self.mounts.get(id))
            .map(PowerCutMount::cut)
            .sum()
    }

    /// Restart node `id` if it is down.
    pub fn restart(&mut self, net: &TestNet, id: u8) -> anyhow::Result<()> {
        let Some(idx) = self.nodes.iter().position(|n| n.id == id) else {
            return Ok(());
        };
        if self.nodes[idx].child.is_some() {
            return Ok(());
        }
        let mut node = std::mem::replace(
            &mut self.nodes[idx],
            Node {
                id,
                addr: String::new(),
                child: None,
                paused: false,
                data_dir: PathBuf::new(),
                log: PathBuf::new(),
                join: false,
            },
        );
        let r = self.spawn(net, &mut node);
        self.nodes[idx] = node;
        r
    }

    /// Replace node `id` with a fresh, empty member that waits to be added (`--join`): the
    /// second half of removing a member and adding it back.
    pub fn replace_with_empty(&mut self, net: &TestNet, id: u8) -> anyhow::Result<()> {
        self.kill9(id);
        let Some(idx) = self.nodes.iter().position(|n| n.id == id) else {
            return Ok(());
        };
        let dir = self.nodes[idx].data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        self.nodes[idx].join = true;
        self.restart(net, id)
    }

    /// SIGSTOP or SIGCONT node `id`.
    pub fn pause(&mut self, id: u8, paused: bool) {
        if let Some(n) = self.node_mut(id) {
            if let Some(c) = &n.child {
                let _ = kill(
                    Pid::from_raw(c.id() as i32),
                    if paused {
                        Signal::SIGSTOP
                    } else {
                        Signal::SIGCONT
                    },
                );
                n.paused = paused;
            }
        }
    }

    /// Resume every paused node and restart every killed one.
    pub fn heal(&mut self, net: &TestNet) -> anyhow::Result<()> {
        let ids: Vec<u8> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.pause(id, false);
            self.restart(net, id)?;
        }
        Ok(())
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
