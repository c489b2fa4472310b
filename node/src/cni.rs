//! Pod networking with the standard CNI plugins: a network namespace per pod ([`crate::netns`]),
//! wired by `loopback` and by `bridge` with `host-local` addresses from the node's pod CIDR.
//! The node's bridge is created up front with the pod CIDR's gateway address, and the
//! cluster's pod range and service range are routed to it, so that a packet no rule catches
//! stays on the node instead of following the default route.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use skiff_proto::cidr::Cidr;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Error, Result};

/// The CNI network's name (host-local keeps its records in a folder of this name).
pub const NETWORK_NAME: &str = "skiff";

/// What a pod worker needs of the node's pod network: a wired namespace per pod, and its
/// release. The agent's is [`NetworkConfig`] (the CNI plugins); unit tests use one in memory.
pub trait PodNetworking: Send + Sync + 'static {
    /// Make the namespace `name` and wire it.
    fn setup(&self, name: &str) -> impl std::future::Future<Output = Result<PodNetwork>> + Send;

    /// Release the address and remove the namespace `name` of the pod whose folder is
    /// `pod_dir`; missing parts are fine.
    fn teardown_pod(
        &self,
        name: &str,
        pod_dir: &Path,
    ) -> impl std::future::Future<Output = Result<()>> + Send;

    /// Release `net`, the network of namespace `name` (before any record of it was written).
    fn release(
        &self,
        name: &str,
        net: &PodNetwork,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

impl PodNetworking for NetworkConfig {
    async fn setup(&self, name: &str) -> Result<PodNetwork> {
        NetworkConfig::setup(self, name).await
    }

    async fn teardown_pod(&self, name: &str, pod_dir: &Path) -> Result<()> {
        NetworkConfig::teardown_pod(self, name, pod_dir).await
    }

    async fn release(&self, name: &str, net: &PodNetwork) -> Result<()> {
        self.teardown(name, net.cni_id.as_deref()).await
    }
}

/// The node's pod network settings.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Where the CNI plugins are.
    pub plugin_dir: PathBuf,
    /// The node's bridge.
    pub bridge: String,
    /// This node's pod CIDR (from the control plane).
    pub pod_cidr: String,
    /// The cluster's pod range (routed to the bridge).
    pub cluster_cidr: String,
    /// The cluster's service range (routed to the bridge).
    pub service_cidr: String,
    /// host-local's allocation records.
    pub ipam_dir: PathBuf,
    /// The pods' MTU (the underlay's, less any encapsulation); the plugin's default if none.
    pub mtu: Option<u32>,
}

/// A pod's network: its namespace and address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodNetwork {
    /// `/run/netns/<name>`, or the agent's own for a pod on the node's network.
    pub netns: PathBuf,
    /// The pod's IPv4 address.
    pub ip: String,
    /// The container id the plugins wired it under, when not the namespace's name (a
    /// namespace from the warm pool keeps the id it was wired with; the plugins release its
    /// address by that id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_id: Option<String>,
    /// The sandbox container that holds the namespace and the shim the pod's containers
    /// join, when the warm pool made one (see `runtime::sandbox`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The pod is on the node's own network (`hostNetwork`): nothing was wired for it and
    /// nothing is released after it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
}

impl PodNetwork {
    /// The record's file name in a pod folder.
    pub const RECORD: &'static str = "network.json";

    /// The node's own network, at address `ip`: the agent's namespace (the node's, where
    /// agents of several test hosts share one machine), named through this process so it
    /// holds as long as the agent runs; a restarted agent names its own again.
    pub fn on_host(ip: &str) -> Self {
        Self {
            netns: PathBuf::from(format!("/proc/{}/ns/net", std::process::id())),
            ip: ip.to_string(),
            cni_id: None,
            sandbox: None,
            host: true,
        }
    }

    /// The network recorded in pod folder `dir`, if any.
    pub fn read_record(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(dir.join(Self::RECORD)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Record it in pod folder `dir`, for a restarted agent to find.
    pub fn write_record(&self, dir: &Path) -> std::io::Result<()> {
        let record = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(Self::RECORD), record)
    }
}

/// Run a host command; its stderr becomes the error.
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Command {
            command: format!("{program} {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NetworkConfig {
    fn parsed_pod_cidr(&self) -> Result<Cidr> {
        self.pod_cidr.parse().map_err(|e| Error::InvalidSpec {
            field: "spec.podCIDR".into(),
            reason: format!("{e}"),
        })
    }

    /// The bridge's address: the pod CIDR's first, as host-local hands out the gateway.
    pub fn gateway(&self) -> Result<std::net::Ipv4Addr> {
        Ok(self.parsed_pod_cidr()?.first_host())
    }

    /// Create the bridge with the gateway address and route the pod and service ranges to it.
    pub async fn prepare_host(&self) -> Result<()> {
        let len = self.parsed_pod_cidr()?.len;
        let gw = self.gateway()?;
        if run("ip", &["link", "show", &self.bridge]).await.is_err() {
            run("ip", &["link", "add", &self.bridge, "type", "bridge"]).await?;
        }
        run(
            "ip",
            &[
                "addr",
                "replace",
                &format!("{gw}/{len}"),
                "dev",
                &self.bridge,
            ],
        )
        .await?;
        run("ip", &["link", "set", &self.bridge, "up"]).await?;
        for range in [&self.cluster_cidr, &self.service_cidr] {
            run("ip", &["route", "replace", range, "dev", &self.bridge]).await?;
        }
        std::fs::create_dir_all(&self.ipam_dir).map_err(Error::io(&self.ipam_dir))?;
        Ok(())
    }

    fn bridge_conf(&self) -> serde_json::Value {
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir,
            },
        });
        if let Some(mtu) = self.mtu {
            conf["mtu"] = mtu.into();
        }
        conf
    }

    async fn plugin(
        &self,
        plugin: &str,
        command: &'static str,
        id: &str,
        netns: &Path,
        conf: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let cni_err = |message: String| Error::Cni {
            plugin: plugin.into(),
            command,
            message,
        };
        let mut child = Command::new(self.plugin_dir.join(plugin))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env(
                "CNI_IFNAME",
                if plugin == "loopback" { "lo" } else { "eth0" },
            )
            .env("CNI_PATH", &self.plugin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| cni_err(format!("{}: {e}", self.plugin_dir.join(plugin).display())))?;
        let input = serde_json::to_vec(conf).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .await
                .map_err(|e| cni_err(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| cni_err(e.to_string()))?;
        if !out.status.success() {
            // Plugins report errors as JSON on stdout.
            let msg = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| {
                    let m = v.get("msg")?.as_str()?.to_string();
                    let d = v.get("details").and_then(|d| d.as_str()).unwrap_or("");
                    Some(if d.is_empty() { m } else { format!("{m}: {d}") })
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
            return Err(cni_err(msg));
        }
        if out.stdout.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| cni_err(format!("result: {e}")))
    }

    /// Create the namespace `name` and wire it; returns its address.
    pub async fn setup(&self, name: &str) -> Result<PodNetwork> {
        let netns = crate::netns::create(name)?;
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let bridge = self.bridge_conf();
        // `lo` and `eth0` are independent, so the two plugins run side by side (as
        // containerd's CNI library runs a pod's networks).
        let (lo_added, bridge_added) = tokio::join!(
            self.plugin("loopback", "ADD", name, &netns, &lo),
            self.plugin("bridge", "ADD", name, &netns, &bridge),
        );
        let result = match lo_added.and(bridge_added) {
            Ok(r) => r,
            Err(e) => {
                // Leave nothing half-made: the next attempt starts clean.
                let _ = self.teardown(name, None).await;
                return Err(e);
            }
        };
        let ip = result
            .pointer("/ips/0/address")
            .and_then(|a| a.as_str())
            .and_then(|a| a.split('/').next())
            .ok_or_else(|| Error::Cni {
                plugin: "bridge".into(),
                command: "ADD",
                message: format!("no address in the result {result}"),
            })?
            .to_string();
        Ok(PodNetwork {
            netns,
            ip,
            cni_id: None,
            sandbox: None,
            host: false,
        })
    }

    /// Release the address and remove the namespace `name` of the pod whose folder is
    /// `pod_dir`, by the CNI id its network record names (a warm network's) or else `name`.
    pub async fn teardown_pod(&self, name: &str, pod_dir: &Path) -> Result<()> {
        let cni_id = PodNetwork::read_record(pod_dir).and_then(|n| n.cni_id);
        self.teardown(name, cni_id.as_deref()).await
    }

    /// Release the address and remove the namespace `name`; missing parts are fine.
    /// `cni_id` is the id it was wired under when that was not `name`.
    pub async fn teardown(&self, name: &str, cni_id: Option<&str>) -> Result<()> {
        let netns = crate::netns::path(name);
        let ns_arg: PathBuf = if netns.exists() {
            netns
        } else {
            PathBuf::new()
        };
        let id = cni_id.unwrap_or(name);
        self.plugin("bridge", "DEL", id, &ns_arg, &self.bridge_conf())
            .await?;
        crate::netns::delete(name)
    }
}
