//! The hosts of a local cluster of several nodes (`skiff up --nodes N`, N ≥ 2), as kind
//! makes its node containers: each node is a network namespace acting as a host, with its own
//! address on a bridge of the cluster's (the "LAN"), a default route through this host, and its
//! own agent and containerd. This host is on the LAN too (its first address), so the agents
//! reach the control plane there and the control plane reaches the agents; the nodes' traffic
//! out (image pulls, forwarded DNS) is masqueraded to this host's address, in an nftables
//! table of the cluster's own. Removing the namespaces removes everything inside them (pod
//! bridges, VXLAN devices, their nftables tables); the LAN bridge and the table go after.
//!
//! ```text
//! this host: control nodes (0.0.0.0:port) ── LAN bridge <bridge>lan 10.X.0.1/24 ── NAT out
//!              ├─veth─ netns <bridge>-<node 1>: eth0 10.X.0.2, skiff node, pods
//!              └─veth─ netns <bridge>-<node 2>: eth0 10.X.0.3, skiff node, pods
//! ```

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::Context as _;
use skiff_proto::cidr::Cidr;

use super::network::LocalNetwork;

/// One node's host.
#[derive(Debug, Clone)]
pub struct NodeHost {
    /// The node's name.
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its address on the LAN.
    pub ip: Ipv4Addr,
}

/// The LAN and the node hosts on it.
#[derive(Debug)]
pub struct Hosts {
    /// The LAN bridge.
    pub lan: String,
    /// This host's address on it (where agents reach the control plane).
    pub gateway: Ipv4Addr,
    /// The nodes.
    pub nodes: Vec<NodeHost>,
    nat_table: String,
    range: Cidr,
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Like [`run`], for removals: what is already gone is what was wanted.
fn remove(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        let e = e.to_string();
        if !["Cannot find device", "No such file", "does not exist"]
            .iter()
            .any(|m| e.contains(m))
        {
            eprintln!("{e}");
        }
    }
}

impl Hosts {
    /// The LAN of `net`'s slot: 10.(160+slot).0.0/24.
    pub fn range_of(net: &LocalNetwork) -> Cidr {
        let slot: u8 = net.bridge.trim_start_matches("skiff").parse().unwrap_or(0);
        Cidr {
            addr: Ipv4Addr::new(10, 160 + slot, 0, 0),
            len: 24,
        }
    }

    /// What [`Hosts::create`] makes for `names`, without making it.
    pub fn plan(net: &LocalNetwork, names: &[String]) -> Self {
        let range = Self::range_of(net);
        let [a, b, c, _] = range.addr.octets();
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| NodeHost {
                name: name.clone(),
                netns: format!("{}-{name}", net.bridge),
                ip: Ipv4Addr::new(a, b, c, 2 + i as u8),
            })
            .collect();
        Self {
            lan: format!("{}lan", net.bridge),
            gateway: Ipv4Addr::new(a, b, c, 1),
            nodes,
            nat_table: format!("{}_up", net.proxy_table),
            range,
        }
    }

    /// Make the LAN, the node hosts and the NAT out; what an earlier run left is made again.
    pub fn create(net: &LocalNetwork, names: &[String]) -> anyhow::Result<Self> {
        let hosts = Self::plan(net, names);
        hosts.remove();
        let lan = hosts.lan.as_str();
        run("ip", &["link", "add", lan, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/{}", hosts.gateway, hosts.range.len),
                "dev",
                lan,
            ],
        )?;
        run("ip", &["link", "set", lan, "up"])?;
        for (i, node) in hosts.nodes.iter().enumerate() {
            let ns = node.netns.as_str();
            let port = format!("{lan}{}", i + 1);
            run("ip", &["netns", "add", ns])?;
            run(
                "ip",
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            )?;
            run("ip", &["link", "set", &port, "master", lan])?;
            run("ip", &["link", "set", &port, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns, "ip"];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            inside(&["link", "set", "lo", "up"])?;
            inside(&[
                "addr",
                "add",
                &format!("{}/{}", node.ip, hosts.range.len),
                "dev",
                "eth0",
            ])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["route", "add", "default", "via", &hosts.gateway.to_string()])?;
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .context("enabling IPv4 forwarding for the nodes' traffic out")?;
        let t = &hosts.nat_table;
        let script = format!(
            "table ip {t} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {range} oifname != \"{lan}\" masquerade\n  }}\n}}\n",
            range = hosts.range,
        );
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("running nft")?;
        if let Some(mut stdin) = nft.stdin.take() {
            std::io::Write::write_all(&mut stdin, script.as_bytes())?;
        }
        if !nft.wait()?.success() {
            anyhow::bail!("nft: the nodes' NAT table {t} was refused");
        }
        Ok(hosts)
    }

    /// Remove the node hosts (and all inside them), the LAN and the NAT table.
    pub fn remove(&self) {
        for node in &self.nodes {
            remove("ip", &["netns", "del", &node.netns]);
        }
        remove("ip", &["link", "del", &self.lan]);
        remove("nft", &["delete", "table", "ip", &self.nat_table]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_has_its_own_lan_and_nodes_take_its_addresses_in_order() {
        let net = LocalNetwork::slot(2);
        let hosts = Hosts::plan(&net, &["local-1".into(), "local-2".into()]);
        assert_eq!(hosts.lan, "skiff2lan");
        assert_eq!(hosts.gateway.to_string(), "10.162.0.1");
        assert_eq!(hosts.nodes[1].netns, "skiff2-local-2");
        assert_eq!(hosts.nodes[1].ip.to_string(), "10.162.0.3");
        assert_eq!(hosts.nat_table, "skiff2_up");
    }
}
