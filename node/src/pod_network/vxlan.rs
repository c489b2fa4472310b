//! The VXLAN data path, as flannel's `vxlan` backend builds it from the kernel's own parts:
//! one VXLAN device per node holding the node's VTEP address (its pod CIDR's network
//! address, /32), and per peer a route to its pod CIDR via its VTEP address, a permanent
//! neighbour entry giving that address the peer's VTEP MAC, and a forwarding entry sending
//! that MAC to the peer's node address. MACs are derived from VTEP addresses
//! ([`super::peer::vtep_mac`]), so no node has to publish its own.

use super::peer::{vtep_mac, Peer};
use super::{run_absent_ok, PodNetworkConfig, ROUTE_PROTOCOL};
use crate::cni::run;
use crate::error::Result;

/// The VXLAN UDP port (the Linux and flannel default).
pub const PORT: &str = "8472";
/// Bytes each packet gains: outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
const OVERHEAD: u32 = 50;

/// The device's name for VXLAN network `vni` (`skiff.1`, as flannel's `flannel.1`).
pub fn device(vni: u32) -> String {
    format!("skiff.{vni}")
}

/// Make (or keep) this node's VXLAN device on the underlay whose MTU is `underlay`; returns
/// the MTU left for pods.
pub async fn prepare(cfg: &PodNetworkConfig, underlay: u32) -> Result<u32> {
    let dev = device(cfg.vni);
    let mtu = underlay.saturating_sub(OVERHEAD);
    let node_ip = cfg.node_ip.to_string();
    let vni = cfg.vni.to_string();
    // A device made with other settings (another node address after a change) is made again.
    if let Ok(details) = run("ip", &["-d", "link", "show", &dev]).await {
        let same = details.contains(&format!("vxlan id {vni} "))
            && details.contains(&format!("local {node_ip} "))
            && details.contains(&format!("dstport {PORT} "));
        if !same {
            run("ip", &["link", "del", &dev]).await?;
        }
    }
    if run("ip", &["link", "show", &dev]).await.is_err() {
        run(
            "ip",
            &[
                "link",
                "add",
                &dev,
                "type",
                "vxlan",
                "id",
                &vni,
                "local",
                &node_ip,
                "dstport",
                PORT,
                "nolearning",
            ],
        )
        .await?;
    }
    let vtep = cfg.pod_cidr.addr;
    run(
        "ip",
        &[
            "link",
            "set",
            &dev,
            "address",
            &vtep_mac(vtep),
            "mtu",
            &mtu.to_string(),
            "up",
        ],
    )
    .await?;
    run(
        "ip",
        &["addr", "replace", &format!("{vtep}/32"), "dev", &dev],
    )
    .await?;
    Ok(mtu)
}

/// Remove the VXLAN device of `vni`, if there is one (and with it every entry on it).
pub async fn remove_device(vni: u32) -> Result<()> {
    run_absent_ok("ip", &["link", "del", &device(vni)]).await
}

/// Route to `peer`'s pods through the tunnel.
pub async fn add(vni: u32, peer: &Peer) -> Result<()> {
    let dev = device(vni);
    let (vtep, mac) = (peer.vtep().to_string(), vtep_mac(peer.vtep()));
    run(
        "bridge",
        &[
            "fdb",
            "replace",
            &mac,
            "dev",
            &dev,
            "dst",
            &peer.ip.to_string(),
            "self",
            "permanent",
        ],
    )
    .await?;
    run(
        "ip",
        &[
            "neigh",
            "replace",
            &vtep,
            "lladdr",
            &mac,
            "dev",
            &dev,
            "nud",
            "permanent",
        ],
    )
    .await?;
    run(
        "ip",
        &[
            "route",
            "replace",
            &peer.pod_cidr.to_string(),
            "via",
            &vtep,
            "dev",
            &dev,
            "onlink",
            "proto",
            ROUTE_PROTOCOL,
        ],
    )
    .await?;
    Ok(())
}

/// Stop routing to `peer`'s pods.
pub async fn remove(vni: u32, peer: &Peer) -> Result<()> {
    run_absent_ok(
        "ip",
        &[
            "route",
            "del",
            &peer.pod_cidr.to_string(),
            "proto",
            ROUTE_PROTOCOL,
        ],
    )
    .await?;
    forget(vni, peer.vtep()).await
}

/// Remove the neighbour and forwarding entries of the peer whose VTEP address is `vtep`.
pub async fn forget(vni: u32, vtep: std::net::Ipv4Addr) -> Result<()> {
    let dev = device(vni);
    run_absent_ok("ip", &["neigh", "del", &vtep.to_string(), "dev", &dev]).await?;
    run_absent_ok(
        "bridge",
        &["fdb", "del", &vtep_mac(vtep), "dev", &dev, "self"],
    )
    .await
}
