//! One node's world for end-to-end tests: a three-node control plane listening where test
//! hosts reach it, a test host with containerd, a local registry and a `skiff node`; and the
//! helpers tests drive it with (skiffctl, waiting for a condition).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use skiff_proto::objects::Api;
use tracing::info;

use super::registry::Registry;
use super::{Agent, Containerd, TestHost};
use crate::{binary, init_tracing, Cluster, MemberOptions};

/// Run skiffctl against the cluster.
pub fn skiffctl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(binary("skiffctl"))
        .args(args)
        .env("SKIFFCONFIG", cluster.config_file())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skiffctl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("stdin");
    }
    child.wait_with_output().expect("skiffctl output")
}

/// The stdout of a skiffctl that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "skiffctl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `f` holds, or fail naming `what`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything a node test runs on. Dropped in reverse: agent, containerd, registry, host.
pub struct World {
    /// The agent.
    pub agent: Agent,
    /// Its containerd.
    pub containerd: Containerd,
    /// The registry.
    pub registry: Registry,
    /// The same registry over TLS, with a CA of its own that the agent is given
    /// (`--registry-ca`).
    pub private_registry: Registry,
    /// The same registry over plain HTTP to [`LOCKED_LOGIN`] only (`--insecure-registry`).
    pub locked_registry: Registry,
    /// The test host.
    pub host: TestHost,
    /// The control plane.
    pub cluster: Cluster,
}

impl World {
    /// The agent's warm sandboxes ready for a pod: untaken warm namespaces whose sandbox
    /// container has its task created.
    pub fn warm_sandboxes_ready(&self) -> usize {
        let prefix = skiff_node::runtime::made_ahead::sandboxes::prefix_for(
            &self.agent.data_dir.join("cni"),
        );
        let created: Vec<String> = self
            .containerd
            .ctr(&["tasks", "ls"])
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("CREATED"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        skiff_node::netns::names_with_prefix(&prefix)
            .iter()
            .filter(|n| created.contains(n))
            .count()
    }
}

/// A node join token of `cluster`.
pub(crate) async fn node_token(cluster: &Cluster) -> String {
    use skiff_proto::tls::token::{secret_hash, JoinToken};
    let ca = &cluster.credentials().expect("a cluster with a CA").ca;
    let token = JoinToken::generate(ca).expect("token");
    let obj = serde_json::json!({"apiVersion": "auth.skiff.dev/v1", "kind": "JoinToken",
        "metadata": {"name": token.id},
        "spec": {"role": "node", "secretHash": secret_hash(&token.secret)}});
    cluster
        .client()
        .create_object("jointokens", "", serde_json::to_vec(&obj).expect("json"))
        .await
        .expect("a join token");
    token.to_string()
}

/// Start the world; `agent_flags` go to `skiff node`.
/// The user and password [`World::locked_registry`] takes.
pub const LOCKED_LOGIN: (&str, &str) = ("puller", "s3cret");

pub async fn world(agent_flags: &[&str]) -> World {
    init_tracing();
    info!("phase: a three-node control plane, a test host, containerd, a registry and an agent");
    let cluster = Cluster::start(
        3,
        MemberOptions {
            listen_any: true,
            ..Default::default()
        },
    );
    cluster.wait_leader(Duration::from_secs(10)).await;
    let host = TestHost::create();
    let containerd = Containerd::start(cluster.dir());
    let registry = Registry::start(&host.gateway, cluster.dir());
    let (private_registry, private_ca) = registry.twin_over_tls(cluster.dir(), "private-registry");
    let private_ca = format!("{}={}", private_registry.addr, private_ca.display());
    let locked_registry = registry.twin_with_login(
        cluster.dir(),
        "locked-registry",
        LOCKED_LOGIN.0,
        LOCKED_LOGIN.1,
    );
    // The agent joins with a node token, as an operator's node does: it pins the CA by the
    // token's hash and gets its own certificate.
    let token = node_token(&cluster).await;
    let mut flags = vec![
        "--insecure-registry",
        registry.addr.as_str(),
        "--insecure-registry",
        locked_registry.addr.as_str(),
        "--registry-ca",
        private_ca.as_str(),
        "--token",
        token.as_str(),
    ];
    flags.extend_from_slice(agent_flags);
    let agent = Agent::start(
        "n1",
        &host,
        &cluster.endpoints_via(&host.gateway),
        &containerd,
        cluster.dir(),
        &flags,
    );
    let nodes: Api<Node> = Api::new(cluster.client(), "");
    wait_until(
        Duration::from_secs(20),
        "node n1 Ready with a pod CIDR",
        || async {
            nodes.get("n1").await.is_ok_and(|n| {
                n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some()
                    && n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        },
    )
    .await;
    World {
        agent,
        containerd,
        registry,
        private_registry,
        locked_registry,
        host,
        cluster,
    }
}
