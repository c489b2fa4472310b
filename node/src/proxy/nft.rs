//! nftables scripts for the service proxy. One table of the proxy's own; a map from
//! `ClusterIP . protocol . port` and one from `protocol . nodePort` to a chain per service
//! port, which either DNATs to a random ready backend or rejects at once when there is none.
//! Packets to services are marked and masqueraded, so replies come back through the node
//! (hairpin, NodePort from other hosts). Changes are scripts run by `nft -f` as one
//! transaction: a full sync flushes and rebuilds the table atomically; an update touches only
//! the chains and map elements that changed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::ServicePort;

/// The mark of packets to masquerade.
const MASQ_MARK: &str = "0x4000";

fn rule(p: &ServicePort) -> String {
    let proto = p.protocol.nft();
    if p.backends.is_empty() {
        // Refused at once instead of left to time out.
        return match proto {
            "tcp" => "meta l4proto tcp reject with tcp reset".into(),
            _ => "reject".into(),
        };
    }
    let mut map = String::new();
    for (i, (ip, port)) in p.backends.iter().enumerate() {
        if i > 0 {
            map.push_str(", ");
        }
        let _ = write!(map, "{i} : {ip} . {port}");
    }
    format!(
        "meta l4proto {proto} meta mark set meta mark | {MASQ_MARK} dnat ip to numgen random mod {} map {{ {map} }}",
        p.backends.len()
    )
}

fn service_element(chain: &str, p: &ServicePort) -> String {
    format!(
        "{} . {} . {} : goto {chain}",
        p.cluster_ip,
        p.protocol.nft(),
        p.port
    )
}

fn service_key(p: &ServicePort) -> String {
    format!("{} . {} . {}", p.cluster_ip, p.protocol.nft(), p.port)
}

fn node_port_key(p: &ServicePort) -> Option<String> {
    p.node_port.map(|n| format!("{} . {n}", p.protocol.nft()))
}

/// The whole table, replacing whatever is there (one atomic transaction).
pub fn full(table: &str, desired: &BTreeMap<String, ServicePort>) -> String {
    let mut s = String::with_capacity(256 + desired.len() * 256);
    // Create-then-delete, so the delete never fails on a first start.
    let _ = writeln!(s, "table ip {table} {{}}\ndelete table ip {table}");
    let _ = writeln!(s, "table ip {table} {{");
    let _ = writeln!(
        s,
        "  map services {{ type ipv4_addr . inet_proto . inet_service : verdict; }}"
    );
    let _ = writeln!(
        s,
        "  map nodeports {{ type inet_proto . inet_service : verdict; }}"
    );
    for hook in [("prerouting", "dstnat"), ("output", "-100")] {
        let _ = writeln!(
            s,
            "  chain {0} {{\n    type nat hook {0} priority {1}; policy accept;\n    ip daddr . meta l4proto . th dport vmap @services\n    fib daddr type local meta l4proto . th dport vmap @nodeports\n  }}",
            hook.0, hook.1
        );
    }
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    meta mark & {MASQ_MARK} == {MASQ_MARK} masquerade\n  }}"
    );
    for (chain, p) in desired {
        let _ = writeln!(s, "  chain {chain} {{\n    {}\n  }}", rule(p));
    }
    let _ = writeln!(s, "}}");
    append_elements(&mut s, table, desired.iter());
    s
}

fn append_elements<'a>(
    s: &mut String,
    table: &str,
    items: impl Iterator<Item = (&'a String, &'a ServicePort)>,
) {
    let mut services = Vec::new();
    let mut node_ports = Vec::new();
    for (chain, p) in items {
        services.push(service_element(chain, p));
        if let Some(k) = node_port_key(p) {
            node_ports.push(format!("{k} : goto {chain}"));
        }
    }
    // Large element lists in a few statements: one per 1,000 keeps nft's parser quick.
    for chunk in services.chunks(1000) {
        let _ = writeln!(
            s,
            "add element ip {table} services {{ {} }}",
            chunk.join(", ")
        );
    }
    for chunk in node_ports.chunks(1000) {
        let _ = writeln!(
            s,
            "add element ip {table} nodeports {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The changes from `applied` to `desired`, or `None` when there are none.
pub fn update(
    table: &str,
    applied: &BTreeMap<String, ServicePort>,
    desired: &BTreeMap<String, ServicePort>,
) -> Option<String> {
    let mut s = String::new();
    let mut added: Vec<(&String, &ServicePort)> = Vec::new();
    for (chain, old) in applied {
        match desired.get(chain) {
            Some(new) if new == old => {}
            Some(new) => {
                if rule(new) != rule(old) {
                    let _ = writeln!(
                        s,
                        "flush chain ip {table} {chain}\nadd rule ip {table} {chain} {}",
                        rule(new)
                    );
                }
                if service_key(new) != service_key(old) {
                    let _ = writeln!(
                        s,
                        "delete element ip {table} services {{ {} }}",
                        service_key(old)
                    );
                    let _ = writeln!(
                        s,
                        "add element ip {table} services {{ {} }}",
                        service_element(chain, new)
                    );
                }
                if node_port_key(new) != node_port_key(old) {
                    if let Some(k) = node_port_key(old) {
                        let _ = writeln!(s, "delete element ip {table} nodeports {{ {k} }}");
                    }
                    if let Some(k) = node_port_key(new) {
                        let _ = writeln!(
                            s,
                            "add element ip {table} nodeports {{ {k} : goto {chain} }}"
                        );
                    }
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "delete element ip {table} services {{ {} }}",
                    service_key(old)
                );
                if let Some(k) = node_port_key(old) {
                    let _ = writeln!(s, "delete element ip {table} nodeports {{ {k} }}");
                }
                let _ = writeln!(s, "delete chain ip {table} {chain}");
            }
        }
    }
    for (chain, new) in desired {
        if !applied.contains_key(chain) {
            let _ = writeln!(
                s,
                "add chain ip {table} {chain}\nadd rule ip {table} {chain} {}",
                rule(new)
            );
            added.push((chain, new));
        }
    }
    append_elements(&mut s, table, added.into_iter());
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::super::model::Protocol;
    use super::*;

    fn port(backends: &[(&str, u16)], node_port: Option<u16>) -> ServicePort {
        ServicePort {
            id: "default/web:/tcp".into(),
            cluster_ip: "10.96.0.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
            backends: backends
                .iter()
                .map(|(ip, p)| (ip.parse().unwrap(), *p))
                .collect(),
        }
    }

    #[test]
    fn a_full_sync_rebuilds_the_table_in_one_script() {
        let d = BTreeMap::from([(
            "svc-a".to_string(),
            port(&[("10.244.1.2", 8080)], Some(30080)),
        )]);
        let s = full("skiff", &d);
        assert!(s.starts_with("table ip skiff {}\ndelete table ip skiff\n"));
        assert!(s.contains("dnat ip to numgen random mod 1 map { 0 : 10.244.1.2 . 8080 }"));
        assert!(s.contains("add element ip skiff services { 10.96.0.10 . tcp . 80 : goto svc-a }"));
        assert!(s.contains("add element ip skiff nodeports { tcp . 30080 : goto svc-a }"));
    }

    #[test]
    fn an_endpoint_change_touches_only_its_chain() {
        let before = BTreeMap::from([
            ("svc-a".to_string(), port(&[("10.244.1.2", 8080)], None)),
            ("svc-b".to_string(), port(&[], None)),
        ]);
        let mut after = before.clone();
        after.insert(
            "svc-a".into(),
            port(&[("10.244.1.2", 8080), ("10.244.1.3", 8080)], None),
        );
        let s = update("skiff", &before, &after).unwrap();
        assert!(s.starts_with("flush chain ip skiff svc-a\nadd rule ip skiff svc-a"));
        assert!(!s.contains("svc-b"));
        assert!(!s.contains("element"));
        assert!(update("skiff", &after, &after).is_none());
    }

    #[test]
    fn no_backends_rejects_and_removed_services_go() {
        let before = BTreeMap::from([("svc-a".to_string(), port(&[], Some(30080)))]);
        assert!(full("skiff", &before).contains("reject with tcp reset"));
        let s = update("skiff", &before, &BTreeMap::new()).unwrap();
        assert!(s.contains("delete element ip skiff services { 10.96.0.10 . tcp . 80 }"));
        assert!(s.contains("delete element ip skiff nodeports { tcp . 30080 }"));
        assert!(s.ends_with("delete chain ip skiff svc-a\n"));
    }
}
