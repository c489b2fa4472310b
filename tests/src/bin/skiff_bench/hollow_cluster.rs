//! Three control nodes and a process of hollow nodes, registered and ready: the world of the
//! scheduling and controllers benchmarks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_e2e::{binary, Cluster, MemberOptions};
use skiff_proto::objects::Selection;
use skiff_proto::Client;

/// The hollow-node process; stopped when dropped.
pub struct HollowNodes(Child);

impl Drop for HollowNodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start three control nodes and `nodes` hollow nodes of `cpu` and `memory` each; return once
/// the default namespace exists and every node is registered.
pub async fn start(
    nodes: usize,
    cpu: &str,
    memory: &str,
) -> anyhow::Result<(Cluster, Client, HollowNodes)> {
    let cluster = Cluster::start(3, MemberOptions::default());
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    super::wait_for_default_namespace(&client).await;
    let log = std::fs::File::create(cluster.dir().join("hollow.log"))?;
    let hollow = HollowNodes(
        Command::new(binary("skiff"))
            .args([
                "hollow-node",
                "--count",
                &nodes.to_string(),
                "--prefix",
                "h",
                "--cpu",
                cpu,
                "--memory",
                memory,
            ])
            .env("SKIFFCONFIG", cluster.config_file())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = client
            .list_objects("nodes", &Selection::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        if n >= nodes {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {n} of {nodes} hollow nodes registered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((cluster, client, hollow))
}
