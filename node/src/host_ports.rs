//! Host ports: a container port with a `hostPort` is reached on the node's own addresses
//! (or its `hostIP` alone) at that port, as the CNI `portmap` plugin maps it: a DNAT in
//! nftables, in a table of its own (`TABLE_hostports`) that this agent rewrites whole, in one
//! transaction, whenever the mappings of its pods change. The scheduler never puts two pods
//! asking for the same host port on one node; should two meet anyway, the first by name
//! keeps it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skiff_proto::objects::Informer;

/// How often the mappings are compared with the pods.
const EVERY: Duration = Duration::from_secs(1);

/// One host port mapping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mapping {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// The port on the node.
    pub host_port: u16,
    /// The one node address it is on, if the pod names one.
    pub host_ip: Option<Ipv4Addr>,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The container's port.
    pub container_port: u16,
}

/// The mappings `pods` (this node's) ask for, in order.
pub fn desired<'a>(pods: impl Iterator<Item = &'a Pod>) -> Vec<Mapping> {
    let mut live: Vec<&Pod> = pods
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        // A pod on the node's network listens on the node's ports itself.
        .filter(|p| p.spec.as_ref().and_then(|s| s.host_network) != Some(true))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    live.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut taken: BTreeMap<(&'static str, u16, Option<Ipv4Addr>), Mapping> = BTreeMap::new();
    for p in live {
        let Some(pod_ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let ports = p
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten());
        for port in ports {
            let Some(host_port) = port
                .host_port
                .and_then(|h| u16::try_from(h).ok())
                .filter(|h| *h != 0)
            else {
                continue;
            };
            let Ok(container_port) = u16::try_from(port.container_port) else {
                continue;
            };
            let protocol = match port.protocol.as_deref() {
                Some("UDP") => "udp",
                _ => "tcp",
            };
            let host_ip = port
                .host_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(|ip| !ip.is_unspecified());
            taken
                .entry((protocol, host_port, host_ip))
                .or_insert(Mapping {
                    protocol,
                    host_port,
                    host_ip,
                    pod_ip,
                    container_port,
                });
        }
    }
    taken.into_values().collect()
}

/// The nft script that makes `table` hold exactly `mappings`.
pub fn render(table: &str, mappings: &[Mapping]) -> String {
    let mut s = format!(
        "add table ip {table}\nflush table ip {table}\n\
         add chain ip {table} prerouting {{ type nat hook prerouting priority -110; }}\n\
         add chain ip {table} output {{ type nat hook output priority -110; }}\n"
    );
    for m in mappings {
        let to = match m.host_ip {
            Some(ip) => format!("ip daddr {ip}"),
            None => "fib daddr type local".to_string(),
        };
        for chain in ["prerouting", "output"] {
            s.push_str(&format!(
                "add rule ip {table} {chain} {to} {} dport {} dnat ip to {}:{}\n",
                m.protocol, m.host_port, m.pod_ip, m.container_port
            ));
        }
    }
    s
}

/// Keep `table` in step with the host ports of the pods `pods` holds (this node's).
pub async fn run(pods: Informer<Pod>, table: String) {
    let mut programmed: Option<Vec<Mapping>> = None;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let list = pods.list();
        let want = desired(list.iter().map(|p| p.as_ref()));
        // Nothing asked and nothing programmed: no table at all.
        if want.is_empty() && programmed.is_none() {
            continue;
        }
        if programmed.as_ref() == Some(&want) {
            continue;
        }
        match crate::proxy::apply(&render(&table, &want)).await {
            Ok(()) => {
                tracing::info!(table = %table, mappings = want.len(), "host ports programmed");
                programmed = Some(want);
            }
            Err(e) => {
                tracing::warn!(table = %table, error = %e, "programming host ports; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn running_pods_map_their_host_ports_and_the_first_by_name_wins_a_clash() {
        let pod = |name: &str, ip: &str, host_ip: Option<&str>| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": "x", "ports": [
                    {"containerPort": 80, "hostPort": 8080, "hostIP": host_ip},
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"},
                    {"containerPort": 9090}]}]},
                "status": {"phase": "Running", "podIP": ip}
            }))
            .unwrap()
        };
        let pods = [pod("b", "10.244.0.3", None), pod("a", "10.244.0.2", None)];
        let m = desired(pods.iter());
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].protocol, m[0].host_port), ("tcp", 8080));
        assert_eq!(m[0].pod_ip, "10.244.0.2".parse::<Ipv4Addr>().unwrap());
        let script = render("skiff_hostports", &m);
        assert!(script.contains(
            "add rule ip skiff_hostports prerouting fib daddr type local tcp dport 8080 dnat ip to 10.244.0.2:80"
        ));
        assert!(script.contains("udp dport 5353 dnat ip to 10.244.0.2:53"));
        let pinned = [pod("c", "10.244.0.4", Some("192.0.2.1"))];
        assert!(render("t", &desired(pinned.iter())).contains("ip daddr 192.0.2.1 tcp dport 8080"));
        let mut on_host = pod("d", "192.0.2.1", None);
        if let Some(s) = on_host.spec.as_mut() {
            s.host_network = Some(true);
        }
        assert!(desired([on_host].iter()).is_empty());
    }
}
