//! A cluster of several nodes: a three-member control plane in the root namespace, and per
//! node a test host joined to one LAN ([`super::lan`]), its own containerd and its own
//! `skiff node`, as a rack of machines would run them.
//!
//! ```text
//! root netns: control nodes (10.235.X.1) ─┐
//!   host n1 (skiff node, containerd) ──────┼─ LAN bridge (10.235.X.0/24, its own netns)
//!   host n2 (skiff node, containerd) ──────┘
//! ```

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use skiff_proto::objects::Api;
use tracing::info;

use super::image::OciImage;
use super::lan::Lan;
use super::world::{node_token, ok, skiffctl, wait_until};
use super::{Agent, Containerd, TestHost};
use crate::{init_tracing, Cluster, MemberOptions};

/// One node: its host, containerd and agent.
pub struct TestNode {
    /// The agent (dropped first).
    pub agent: Agent,
    /// Its containerd.
    pub containerd: Containerd,
    /// Its host.
    pub host: TestHost,
}

/// Several nodes and their control plane. Dropped in order: nodes, LAN, control plane.
pub struct Nodes {
    /// The nodes, `n1`, `n2`, ...
    pub nodes: Vec<TestNode>,
    /// The LAN between them.
    pub lan: Lan,
    /// The control plane.
    pub cluster: Cluster,
    token: String,
    flags: Vec<String>,
}

/// Start a control plane and `n` nodes whose agents take `agent_flags`.
pub async fn nodes(n: usize, agent_flags: &[&str]) -> Nodes {
    nodes_with(n, agent_flags, &[]).await
}

/// [`nodes`] with `control_flags` for the control members (`--node-grace-seconds 2`).
pub async fn nodes_with(n: usize, agent_flags: &[&str], control_flags: &[&str]) -> Nodes {
    init_tracing();
    info!(
        n,
        ?agent_flags,
        "phase: a three-member control plane and {n} nodes on one LAN"
    );
    let cluster = Cluster::start(
        3,
        MemberOptions {
            listen_any: true,
            extra_args: control_flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        },
    );
    cluster.wait_leader(Duration::from_secs(10)).await;
    let token = node_token(&cluster).await;
    let mut all = Nodes {
        nodes: Vec::new(),
        lan: Lan::create(),
        cluster,
        token,
        flags: agent_flags.iter().map(|f| f.to_string()).collect(),
    };
    for _ in 0..n {
        all.add_node().await;
    }
    all
}

impl Nodes {
    /// Start one more node and wait until it is Ready with a pod CIDR; returns its name.
    pub async fn add_node(&mut self) -> String {
        let name = format!("n{}", self.nodes.len() + 1);
        let mut host = TestHost::create();
        self.lan.attach(&mut host);
        let containerd = Containerd::start(&self.cluster.dir().join(&name));
        // The nodes' resolvers are the test's own, on the LAN (see `upstream_dns`): forwarded
        // names never leave the machine.
        let resolv_conf = self.cluster.dir().join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            format!("nameserver {}\n", self.lan.root_address()),
        )
        .expect("resolv.conf");
        let resolv_conf = resolv_conf.display().to_string();
        let mut flags: Vec<&str> = vec!["--token", &self.token, "--resolv-conf", &resolv_conf];
        flags.extend(self.flags.iter().map(String::as_str));
        let agent = Agent::start(
            &name,
            &host,
            &self.cluster.endpoints_via(&self.lan.root_address()),
            &containerd,
            self.cluster.dir(),
            &flags,
        );
        let nodes: Api<Node> = Api::new(self.cluster.client(), "");
        wait_until(
            Duration::from_secs(30),
            &format!("node {name} Ready with a pod CIDR"),
            || async {
                nodes.get(&name).await.is_ok_and(|n| {
                    n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some()
                        && n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
            },
        )
        .await;
        self.nodes.push(TestNode {
            agent,
            containerd,
            host,
        });
        name
    }

    /// Import the busybox image (marked `marker`) as `image` on every Ready node, as a user
    /// does (`skiffctl image import FILE`); what skiffctl printed.
    pub fn import_busybox(&self, image: &str, marker: &str) -> String {
        let archive = self.cluster.dir().join(format!("{marker}.tar"));
        std::fs::write(&archive, OciImage::busybox(marker).archive(image)).expect("archive");
        ok(&skiffctl(
            &self.cluster,
            &["image", "import", &archive.display().to_string()],
            None,
        ))
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.agent.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The node named `name`, to stop or restart its agent.
    pub fn node_mut(&mut self, name: &str) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.agent.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }
}
