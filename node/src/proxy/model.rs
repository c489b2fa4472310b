//! What the service proxy should program, from Services and Endpoints: one entry per service
//! port, with its virtual address, its node port and the ready backends. A pure function, so
//! its rules (named ports, headless and ExternalName services skipped) have table tests.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Endpoints, Service};

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// nftables' name.
    pub fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One service port as programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name/protocol`, for logs.
    pub id: String,
    /// The ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The protocol.
    pub protocol: Protocol,
    /// The service port.
    pub port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
    /// Ready backends, sorted.
    pub backends: Vec<(Ipv4Addr, u16)>,
}

/// A short, stable key of a service port.
pub fn port_key(id: &str) -> String {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("svc-{h:016x}")
}

/// Every service port to program, by its key.
pub fn desired<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    endpoints: &BTreeMap<(String, String), &'a Endpoints>,
) -> BTreeMap<String, ServicePort> {
    let mut out = BTreeMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue; // headless, ExternalName, or not allocated yet
        };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let ep = endpoints.get(&(ns.clone(), name.clone()));
        for p in spec.ports.iter().flatten() {
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => continue,
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            let mut backends: Vec<(Ipv4Addr, u16)> = Vec::new();
            for subset in ep.iter().flat_map(|e| e.subsets.iter().flatten()) {
                let target = subset.ports.iter().flatten().find(|ep_port| {
                    ep_port.name.clone().unwrap_or_default() == port_name
                        && ep_port.protocol.as_deref().unwrap_or("TCP")
                            == p.protocol.as_deref().unwrap_or("TCP")
                });
                let Some(target) = target.and_then(|t| u16::try_from(t.port).ok()) else {
                    continue;
                };
                for a in subset.addresses.iter().flatten() {
                    if let Ok(addr) = a.ip.parse::<Ipv4Addr>() {
                        backends.push((addr, target));
                    }
                }
            }
            backends.sort();
            backends.dedup();
            let id = format!("{ns}/{name}:{port_name}/{}", protocol.nft());
            out.insert(
                port_key(&id),
                ServicePort {
                    id,
                    cluster_ip: ip,
                    protocol,
                    port,
                    node_port: p
                        .node_port
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n != 0),
                    backends,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        EndpointAddress, EndpointPort, EndpointSubset, ServicePort as SvcPort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn svc(name: &str, ip: &str, ports: Vec<(&str, i32, Option<i32>)>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(n, p, np)| SvcPort {
                            name: Some(n.into()).filter(|n: &String| !n.is_empty()),
                            port: p,
                            node_port: np,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn eps(name: &str, ips: &[&str], ports: Vec<(&str, i32)>) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(
                    ips.iter()
                        .map(|ip| EndpointAddress {
                            ip: ip.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(n, p)| EndpointPort {
                            name: Some(n.into()).filter(|n: &String| !n.is_empty()),
                            port: p,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn named_ports_map_to_their_endpoint_ports() {
        let s = svc(
            "web",
            "10.96.0.10",
            vec![("http", 80, Some(30080)), ("admin", 81, None)],
        );
        let e = eps(
            "web",
            &["10.244.1.3", "10.244.1.2"],
            vec![("http", 8080), ("admin", 9090)],
        );
        let eps_map = BTreeMap::from([(("default".to_string(), "web".to_string()), &e)]);
        let d = desired([&s], &eps_map);
        assert_eq!(d.len(), 2);
        let http = d.values().find(|p| p.port == 80).unwrap();
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.backends,
            vec![
                ("10.244.1.2".parse().unwrap(), 8080),
                ("10.244.1.3".parse().unwrap(), 8080)
            ]
        );
        let admin = d.values().find(|p| p.port == 81).unwrap();
        assert_eq!(admin.backends[0].1, 9090);
    }

    #[test]
    fn headless_and_unallocated_services_are_skipped_and_no_endpoints_is_empty() {
        let headless = svc("h", "None", vec![("", 80, None)]);
        let lonely = svc("l", "10.96.0.11", vec![("", 80, None)]);
        let d = desired([&headless, &lonely], &BTreeMap::new());
        assert_eq!(d.len(), 1);
        assert!(d.values().next().unwrap().backends.is_empty());
    }

    #[test]
    fn port_keys_are_stable_and_distinct() {
        assert_eq!(
            port_key("default/web:http/tcp"),
            port_key("default/web:http/tcp")
        );
        assert_ne!(
            port_key("default/web:http/tcp"),
            port_key("default/web:admin/tcp")
        );
        assert!(port_key("x").len() <= 31);
    }
}
