//! A peer: another node whose pods this node routes to, as its Node object says.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use skiff_proto::cidr::Cidr;

use super::PodNetworkConfig;

/// Another node in the pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its Node's name.
    pub name: String,
    /// Its pod CIDR.
    pub pod_cidr: Cidr,
    /// Its InternalIP.
    pub ip: Ipv4Addr,
}

impl Peer {
    /// The peer `node` is for this node: none for this node itself, or while the Node has no
    /// pod CIDR or InternalIP yet, or one outside the cluster's pod range.
    pub fn of(node: &Node, cfg: &PodNetworkConfig) -> Option<Self> {
        let name = node.metadata.name.clone()?;
        if name == cfg.node_name || node.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let pod_cidr: Cidr = node.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
        if !cfg.cluster_cidr.contains(pod_cidr.addr) || pod_cidr == cfg.pod_cidr {
            return None;
        }
        let ip = node
            .status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .find(|a| a.type_ == "InternalIP")?
            .address
            .parse()
            .ok()?;
        Some(Self { name, pod_cidr, ip })
    }

    /// Its VXLAN endpoint's address: the pod CIDR's network address, which no pod takes.
    pub fn vtep(&self) -> Ipv4Addr {
        self.pod_cidr.addr
    }
}

/// The MAC address of the VXLAN device whose address is `vtep`: derived from it, so every
/// node knows every peer's without publishing it, and a restarted agent makes the same one.
pub fn vtep_mac(vtep: Ipv4Addr) -> String {
    let [a, b, c, d] = vtep.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::pod_network::Mode;

    fn cfg() -> PodNetworkConfig {
        PodNetworkConfig {
            mode: Mode::Vxlan,
            node_name: "a".into(),
            node_ip: "192.0.2.1".parse().unwrap(),
            pod_cidr: "10.244.0.0/24".parse().unwrap(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            vni: 1,
            egress_table: "skiff_egress".into(),
        }
    }

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_peer_needs_a_pod_cidr_in_range_and_an_address_and_is_not_this_node() {
        let c = cfg();
        let b = Peer::of(&node("b", Some("10.244.1.0/24"), Some("192.0.2.2")), &c).unwrap();
        assert_eq!(b.vtep().to_string(), "10.244.1.0");
        assert_eq!(vtep_mac(b.vtep()), "0a:58:0a:f4:01:00");
        assert!(Peer::of(&node("a", Some("10.244.2.0/24"), Some("192.0.2.1")), &c).is_none());
        assert!(Peer::of(&node("c", None, Some("192.0.2.3")), &c).is_none());
        assert!(Peer::of(&node("d", Some("10.244.3.0/24"), None), &c).is_none());
        assert!(Peer::of(&node("e", Some("10.9.0.0/24"), Some("192.0.2.5")), &c).is_none());
    }
}
