//! The pod network across nodes: every other node's pod CIDR is reachable from this node and
//! its pods, with no NAT between pods (Kubernetes' network model). The agent learns the other
//! nodes from the Node objects it watches and programs the kernel's own data path, one peer at
//! a time as Nodes come, change and go.
//!
//! ```text
//! Node informer ─▶ peers (name → pod CIDR, InternalIP) ─diff─▶ vxlan: route + neighbour + fdb
//!                                                          └─▶ host-gw: route via the peer
//! egress: pod traffic leaving the pod and service ranges is masqueraded (nftables)
//! ```
//!
//! Every route it adds carries its own routing protocol number ([`ROUTE_PROTOCOL`]), so a
//! restarted agent finds what it programmed before and removes what no Node needs any more
//! (a node deleted while the agent was down, a change of mode) without touching other routes.

mod condition;
pub mod egress;
pub mod host_gw;
pub mod peer;
pub mod vxlan;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use skiff_proto::cidr::Cidr;
use skiff_proto::objects::{Informer, InformerEvent, Selection};
use skiff_proto::Client;

pub use self::peer::Peer;
use crate::cni::run;
use crate::error::{Error, Result};

/// The routing protocol number on the routes the pod network owns (`ip route ... proto N`).
pub const ROUTE_PROTOCOL: &str = "210";

/// How pod traffic crosses to other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Encapsulated in VXLAN between the nodes' addresses: works across routed networks.
    Vxlan,
    /// Routed to the peer's address as the next hop: hosts on one L2 segment, no overhead.
    HostGw,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "vxlan" => Ok(Self::Vxlan),
            "host-gw" => Ok(Self::HostGw),
            other => Err(format!("{other:?} is not a pod network (vxlan or host-gw)")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Vxlan => "vxlan",
            Self::HostGw => "host-gw",
        })
    }
}

/// This node's place in the pod network.
#[derive(Debug, Clone)]
pub struct PodNetworkConfig {
    /// How traffic crosses to other nodes.
    pub mode: Mode,
    /// This node's name (its own Node is no peer).
    pub node_name: String,
    /// This node's address, the underlay's end here.
    pub node_ip: Ipv4Addr,
    /// This node's pod CIDR.
    pub pod_cidr: Cidr,
    /// The cluster's pod range.
    pub cluster_cidr: Cidr,
    /// The cluster's service range.
    pub service_cidr: Cidr,
    /// The VXLAN network id (`skiff.<vni>` is the device): clusters beside each other on one
    /// host take different ones.
    pub vni: u32,
    /// The nftables table (family ip) of the egress masquerade.
    pub egress_table: String,
}

/// Make this node's side ready before any pod is wired: forwarding on, the VXLAN device (or
/// none), the egress rules. Returns the MTU pods get (the underlay's, less the encapsulation).
pub async fn prepare(cfg: &PodNetworkConfig) -> Result<u32> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| Error::Command {
        command: "enabling IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)".into(),
        message: e.to_string(),
    })?;
    let underlay = underlay_mtu(cfg.node_ip).await?;
    let mtu = match cfg.mode {
        Mode::Vxlan => vxlan::prepare(cfg, underlay).await?,
        Mode::HostGw => {
            vxlan::remove_device(cfg.vni).await?;
            underlay
        }
    };
    egress::install(cfg).await?;
    Ok(mtu)
}

/// The MTU of the device that holds `ip`.
async fn underlay_mtu(ip: Ipv4Addr) -> Result<u32> {
    let out = run("ip", &["-4", "-o", "addr", "show"]).await?;
    let dev = out
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.nth(1)?;
            let addr = f.nth(1)?.split('/').next()?;
            (addr == ip.to_string()).then(|| dev.to_string())
        })
        .ok_or_else(|| Error::InvalidSpec {
            field: "--node-ip".into(),
            reason: format!("{ip} is not an address of this host"),
        })?;
    // Not /sys/class/net: sysfs shows the devices of the namespace that mounted it, which
    // is not this one when the agent runs in a host namespace of its own.
    let link = run("ip", &["-o", "link", "show", "dev", &dev]).await?;
    link.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| Error::Command {
            command: format!("ip -o link show dev {dev}"),
            message: format!("no MTU in {link:?}"),
        })
}

/// Keep the routes to every other node's pods in step with the Node objects, until the
/// process ends; the outcome is the Node's `NetworkUnavailable` condition.
pub async fn run_peers(client: Client, cfg: PodNetworkConfig) {
    let (nodes, mut events) = Informer::<Node>::start(client.clone(), Selection::default());
    let mut condition = condition::Reporter::new(client, cfg.node_name.clone());
    let mut programmed: Option<BTreeMap<String, Peer>> = None;
    let mut relist = false;
    loop {
        let first = tokio::select! {
            e = events.recv() => e,
            // A failed pass is retried without waiting for the next change.
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)), if programmed.is_none() && relist => Some(InformerEvent::Synced),
        };
        let Some(first) = first else { return };
        let mut changed = Vec::new();
        for e in std::iter::once(first).chain(std::iter::from_fn(|| events.try_recv().ok())) {
            match e {
                InformerEvent::Synced => relist = true,
                InformerEvent::Applied { object, .. } | InformerEvent::Deleted(object) => {
                    changed.push(object.metadata.name.clone().unwrap_or_default())
                }
            }
        }
        let desired: BTreeMap<String, Peer> = nodes
            .list()
            .iter()
            .filter_map(|n| Peer::of(n, &cfg))
            .map(|p| (p.name.clone(), p))
            .collect();
        match programmed.as_mut().filter(|_| !relist) {
            None => match sync_all(&cfg, &desired).await {
                Ok(()) => {
                    tracing::info!(peers = desired.len(), mode = %cfg.mode, "pod network: full sync");
                    condition
                        .report(
                            None,
                            &format!("routes to {} peers ({})", desired.len(), cfg.mode),
                        )
                        .await;
                    programmed = Some(desired);
                    relist = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "pod network: full sync failed; retrying");
                    condition.report(Some(&e.to_string()), "").await;
                    programmed = None;
                    relist = true;
                }
            },
            Some(current) => {
                for name in changed {
                    let (old, new) = (current.get(&name), desired.get(&name));
                    if old == new {
                        continue;
                    }
                    let result = async {
                        if let Some(old) = old {
                            remove(&cfg, old).await?;
                        }
                        if let Some(new) = new {
                            add(&cfg, new).await?;
                        }
                        Ok::<_, Error>(())
                    }
                    .await;
                    match result {
                        Ok(()) => {
                            tracing::info!(node = %name, peer = ?new, "pod network: peer updated");
                            match new {
                                Some(p) => current.insert(name, p.clone()),
                                None => current.remove(&name),
                            };
                        }
                        Err(e) => {
                            tracing::error!(node = %name, error = %e, "pod network: peer update failed; resyncing");
                            condition.report(Some(&e.to_string()), "").await;
                            programmed = None;
                            relist = true;
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// A command whose target may already be gone: that is what was wanted.
pub(crate) async fn run_absent_ok(program: &str, args: &[&str]) -> Result<()> {
    match run(program, args).await {
        Ok(_) => Ok(()),
        Err(Error::Command { message, .. })
            if ["No such", "Cannot find", "not found", "does not exist"]
                .iter()
                .any(|m| message.contains(m)) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn add(cfg: &PodNetworkConfig, peer: &Peer) -> Result<()> {
    match cfg.mode {
        Mode::Vxlan => vxlan::add(cfg.vni, peer).await,
        Mode::HostGw => host_gw::add(peer).await,
    }
}

async fn remove(cfg: &PodNetworkConfig, peer: &Peer) -> Result<()> {
    match cfg.mode {
        Mode::Vxlan => vxlan::remove(cfg.vni, peer).await,
        Mode::HostGw => host_gw::remove(peer).await,
    }
}

/// Program every peer, and remove the routes this agent owns that no peer needs.
async fn sync_all(cfg: &PodNetworkConfig, desired: &BTreeMap<String, Peer>) -> Result<()> {
    let wanted: Vec<Cidr> = desired.values().map(|p| p.pod_cidr).collect();
    for route in owned_routes().await? {
        if !wanted.contains(&route.dst) {
            run_absent_ok(
                "ip",
                &[
                    "route",
                    "del",
                    &route.dst.to_string(),
                    "proto",
                    ROUTE_PROTOCOL,
                ],
            )
            .await?;
            // A VXLAN peer's route goes through its VTEP address, inside the pod range.
            match route.via {
                Some(vtep) if cfg.mode == Mode::Vxlan && cfg.cluster_cidr.contains(vtep) => {
                    vxlan::forget(cfg.vni, vtep).await?
                }
                _ => {}
            }
        }
    }
    for peer in desired.values() {
        add(cfg, peer).await?;
    }
    Ok(())
}

/// A route the pod network programmed.
#[derive(Debug)]
struct OwnedRoute {
    dst: Cidr,
    via: Option<Ipv4Addr>,
}

async fn owned_routes() -> Result<Vec<OwnedRoute>> {
    let out = run("ip", &["-4", "route", "show", "proto", ROUTE_PROTOCOL]).await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dst = f.next()?.parse().ok()?;
            let via = l
                .split_whitespace()
                .skip_while(|w| *w != "via")
                .nth(1)
                .and_then(|v| v.parse().ok());
            Some(OwnedRoute { dst, via })
        })
        .collect())
}
