//! nftables scripts for the service proxy, in one table of the proxy's own. A service port
//! with N ready backends lives in the sets and maps of "bucket N": `services_N` holds its
//! `ClusterIP . protocol . port`, `backends_N_tcp` (or `_udp`) maps
//! `ClusterIP . protocol . port . i` (i < N) to backend i, and one rule per bucket and
//! protocol DNATs with `numgen random mod N` — exactly even, with no chain per service. NodePorts have their own sets and maps the same way. A service port
//! without a ready backend is in `noendpoints` and refused at once.
//!
//! An endpoint change is a handful of element updates in one `nft -f` transaction; no chain
//! is touched unless a new bucket appears (then the few base-chain rules are rewritten in the
//! same transaction). What is masqueraded, as kube-proxy does: NodePort traffic (so replies
//! return through the node that took it), ClusterIP traffic from outside the cluster's pod
//! range (other hosts routing to a ClusterIP), and hairpin traffic (a pod reaching itself
//! through its Service: `hairpin` holds `backend . backend` for every backend). Pod-to-service
//! traffic otherwise keeps the client pod's address, on this node and across nodes; the node's
//! own connections keep theirs too. A full sync replaces the table atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::model::ServicePort;
use super::ProxyConfig;

/// The mark of packets to masquerade.
const MASQ_MARK: &str = "0x4000";

/// A set or map of the table and its elements (key → value; sets have no value).
type Objects = BTreeMap<String, BTreeMap<String, Option<String>>>;

fn elements(desired: &BTreeMap<String, ServicePort>) -> Objects {
    let mut o: Objects = BTreeMap::new();
    for p in desired.values() {
        let proto = p.protocol.nft();
        let vip = format!("{} . {proto} . {}", p.cluster_ip, p.port);
        let np = p.node_port.map(|n| format!("{proto} . {n}"));
        let n = p.backends.len();
        if n == 0 {
            o.entry("noendpoints".into()).or_default().insert(vip, None);
            if let Some(np) = np {
                o.entry("noendpoint_nodeports".into())
                    .or_default()
                    .insert(np, None);
            }
            continue;
        }
        o.entry(format!("services_{n}"))
            .or_default()
            .insert(vip.clone(), None);
        if let Some(np) = &np {
            o.entry(format!("nodeports_{n}"))
                .or_default()
                .insert(np.clone(), None);
        }
        for (i, (ip, port)) in p.backends.iter().enumerate() {
            let to = Some(format!("{ip} . {port}"));
            o.entry(format!("backends_{n}_{proto}"))
                .or_default()
                .insert(format!("{vip} . {i}"), to.clone());
            if let Some(np) = &np {
                o.entry(format!("npbackends_{n}_{proto}"))
                    .or_default()
                    .insert(format!("{np} . {i}"), to);
            }
        }
    }
    o
}

/// How many service ports each backend address serves: `hairpin` holds the addresses
/// counted here, and an update removes one only when no service port has it any more.
pub type HairpinCounts = BTreeMap<std::net::Ipv4Addr, usize>;

/// The backend counts of `ports`.
pub fn hairpin_counts(ports: &BTreeMap<String, ServicePort>) -> HairpinCounts {
    let mut counts = HairpinCounts::new();
    for p in ports.values() {
        for (ip, _) in &p.backends {
            *counts.entry(*ip).or_default() += 1;
        }
    }
    counts
}

fn hairpin_element(ip: &std::net::Ipv4Addr) -> String {
    format!("{ip} . {ip}")
}

fn buckets(o: &Objects) -> BTreeSet<usize> {
    o.keys()
        .filter_map(|k| {
            k.strip_prefix("backends_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

/// The protocols a service port may have.
const PROTOCOLS: [&str; 2] = ["tcp", "udp"];

// The data of the backend maps is typed per protocol (`ip daddr . tcp dport`, `ip daddr .
// udp dport`): nft 1.0 fails to read `th dport` back from a map's stored type ("conflicting
// protocols specified: ip vs. th") once the map exists in the kernel, and a map typed `tcp
// dport` makes its DNAT rule match TCP only.
fn declare(s: &mut String, table: &str, n: usize) {
    let _ = writeln!(
        s,
        "add set ip {table} services_{n} {{ typeof ip daddr . meta l4proto . th dport; }}"
    );
    let _ = writeln!(
        s,
        "add set ip {table} nodeports_{n} {{ typeof meta l4proto . th dport; }}"
    );
    for proto in PROTOCOLS {
        let _ = writeln!(
            s,
            "add map ip {table} backends_{n}_{proto} {{ typeof ip daddr . meta l4proto . th dport . numgen random mod {n} : ip daddr . {proto} dport; }}"
        );
        let _ = writeln!(
            s,
            "add map ip {table} npbackends_{n}_{proto} {{ typeof meta l4proto . th dport . numgen random mod {n} : ip daddr . {proto} dport; }}"
        );
    }
}

fn base_rules(s: &mut String, cfg: &ProxyConfig, ns: &BTreeSet<usize>) {
    let table = &cfg.table;
    for chain in ["prerouting", "output"] {
        let _ = writeln!(s, "flush chain ip {table} {chain}");
        let add = |s: &mut String, rule: String| {
            let _ = writeln!(s, "add rule ip {table} {chain} {rule}");
        };
        add(s, "ip daddr . meta l4proto . th dport @noendpoints meta l4proto tcp reject with tcp reset".into());
        add(
            s,
            "ip daddr . meta l4proto . th dport @noendpoints reject".into(),
        );
        add(s, "fib daddr type local meta l4proto . th dport @noendpoint_nodeports meta l4proto tcp reject with tcp reset".into());
        add(
            s,
            "fib daddr type local meta l4proto . th dport @noendpoint_nodeports reject".into(),
        );
        let (mark, from_outside) = if chain == "prerouting" {
            (
                format!("meta mark set meta mark | {MASQ_MARK} "),
                format!("ip saddr != {} ", cfg.cluster_cidr),
            )
        } else {
            (String::new(), String::new())
        };
        for n in ns {
            if !from_outside.is_empty() {
                add(
                    s,
                    format!(
                        "{from_outside}ip daddr . meta l4proto . th dport @services_{n} {mark}"
                    ),
                );
            }
            for proto in PROTOCOLS {
                add(
                    s,
                    format!(
                        "meta l4proto {proto} ip daddr . meta l4proto . th dport @services_{n} dnat ip to ip daddr . meta l4proto . th dport . numgen random mod {n} map @backends_{n}_{proto}"
                    ),
                );
                add(
                    s,
                    format!(
                        "meta l4proto {proto} fib daddr type local meta l4proto . th dport @nodeports_{n} {mark}dnat ip to meta l4proto . th dport . numgen random mod {n} map @npbackends_{n}_{proto}"
                    ),
                );
            }
        }
    }
}

fn add_elements(s: &mut String, table: &str, object: &str, items: &[(&String, &Option<String>)]) {
    // Large lists in statements of 1,000: quick for nft's parser.
    for chunk in items.chunks(1000) {
        let list: Vec<String> = chunk
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k} : {v}"),
                None => (*k).clone(),
            })
            .collect();
        let _ = writeln!(
            s,
            "add element ip {table} {object} {{ {} }}",
            list.join(", ")
        );
    }
}

/// The whole table, replacing whatever is there (one atomic transaction).
pub fn full(cfg: &ProxyConfig, desired: &BTreeMap<String, ServicePort>) -> String {
    let table = &cfg.table;
    let o = elements(desired);
    let ns = buckets(&o);
    let mut s = String::with_capacity(1024 + desired.len() * 160);
    // Create-then-delete, so the delete never fails on a first start.
    let _ = writeln!(
        s,
        "table ip {table} {{}}\ndelete table ip {table}\nadd table ip {table}"
    );
    let _ = writeln!(
        s,
        "add set ip {table} noendpoints {{ typeof ip daddr . meta l4proto . th dport; }}"
    );
    let _ = writeln!(
        s,
        "add set ip {table} noendpoint_nodeports {{ typeof meta l4proto . th dport; }}"
    );
    let _ = writeln!(
        s,
        "add set ip {table} hairpin {{ typeof ip saddr . ip daddr; }}"
    );
    for n in &ns {
        declare(&mut s, table, *n);
    }
    let _ = writeln!(s, "add chain ip {table} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}");
    let _ = writeln!(
        s,
        "add chain ip {table} output {{ type nat hook output priority -100; policy accept; }}"
    );
    let _ = writeln!(s, "add chain ip {table} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}");
    let _ = writeln!(
        s,
        "add rule ip {table} postrouting meta mark & {MASQ_MARK} == {MASQ_MARK} masquerade"
    );
    let _ = writeln!(
        s,
        "add rule ip {table} postrouting ct status dnat ip saddr . ip daddr @hairpin masquerade"
    );
    base_rules(&mut s, cfg, &ns);
    let hairpin: Vec<String> = hairpin_counts(desired)
        .keys()
        .map(hairpin_element)
        .collect();
    let hairpin: Vec<(&String, &Option<String>)> = hairpin.iter().map(|h| (h, &None)).collect();
    add_elements(&mut s, table, "hairpin", &hairpin);
    for (object, items) in &o {
        let items: Vec<(&String, &Option<String>)> = items.iter().collect();
        add_elements(&mut s, table, object, &items);
    }
    s
}

/// The buckets a full sync of `desired` declares.
pub fn declared_by(desired: &BTreeMap<String, ServicePort>) -> BTreeSet<usize> {
    buckets(&elements(desired))
}

/// The changes from `applied` to `desired`, or `None` when there are none. `declared` holds
/// the buckets whose sets, maps and rules exist; a bucket once declared stays (empty) until
/// the next full sync, so a service moving between backend counts touches elements only.
/// `hairpin` holds the backend counts of everything programmed, and is brought up to date.
pub fn update(
    cfg: &ProxyConfig,
    applied: &BTreeMap<String, ServicePort>,
    desired: &BTreeMap<String, ServicePort>,
    declared: &mut BTreeSet<usize>,
    hairpin: &mut HairpinCounts,
) -> Option<String> {
    let table = &cfg.table;
    let (old, new) = (elements(applied), elements(desired));
    let mut s = String::new();
    let fresh: Vec<usize> = buckets(&new).difference(declared).copied().collect();
    for n in &fresh {
        declare(&mut s, table, *n);
    }
    if !fresh.is_empty() {
        declared.extend(fresh.iter().copied());
        base_rules(&mut s, cfg, declared);
    }
    let empty = BTreeMap::new();
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for object in names {
        let (was, now) = (
            old.get(object).unwrap_or(&empty),
            new.get(object).unwrap_or(&empty),
        );
        let gone: Vec<&String> = was
            .iter()
            .filter(|(k, v)| now.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        for chunk in gone.chunks(1000) {
            let keys: Vec<&str> = chunk.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(
                s,
                "delete element ip {table} {object} {{ {} }}",
                keys.join(", ")
            );
        }
        let added: Vec<(&String, &Option<String>)> = now
            .iter()
            .filter(|(k, v)| was.get(*k) != Some(*v))
            .collect();
        add_elements(&mut s, table, object, &added);
    }
    let (gone, came) = (hairpin_counts(applied), hairpin_counts(desired));
    let touched: BTreeSet<&std::net::Ipv4Addr> = gone.keys().chain(came.keys()).collect();
    for ip in touched {
        let before = hairpin.get(ip).copied().unwrap_or(0);
        let after = (before + came.get(ip).copied().unwrap_or(0))
            .saturating_sub(gone.get(ip).copied().unwrap_or(0));
        if after == 0 {
            hairpin.remove(ip);
        } else {
            hairpin.insert(*ip, after);
        }
        let verb = match (before > 0, after > 0) {
            (true, false) => "delete",
            (false, true) => "add",
            _ => continue,
        };
        let _ = writeln!(
            s,
            "{verb} element ip {table} hairpin {{ {} }}",
            hairpin_element(ip)
        );
    }
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::super::model::Protocol;
    use super::*;

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            table: "skiff".into(),
            cluster_cidr: "10.244.0.0/16".into(),
            sync_timing: crate::stats::AgentStats::default().proxy_sync,
        }
    }

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
            port(&[("10.244.1.2", 8080), ("10.244.1.3", 8080)], Some(30080)),
        )]);
        let s = full(&cfg(), &d);
        assert!(s.starts_with("table ip skiff {}\ndelete table ip skiff\n"));
        assert!(s.contains("numgen random mod 2 map @backends_2_tcp"));
        // Only ClusterIP traffic from outside the pod range is marked for masquerade (not
        // pods', nor the node's own); NodePort traffic is; hairpin traffic is.
        assert!(s.contains("add rule ip skiff prerouting ip saddr != 10.244.0.0/16 ip daddr . meta l4proto . th dport @services_2 meta mark set meta mark | 0x4000"));
        assert!(s.contains(
            "add rule ip skiff prerouting meta l4proto tcp ip daddr . meta l4proto . th dport @services_2 dnat"
        ));
        assert!(s.contains("add rule ip skiff prerouting meta l4proto udp fib daddr type local meta l4proto . th dport @nodeports_2 meta mark set meta mark | 0x4000 dnat"));
        assert!(s.contains(
            "add element ip skiff hairpin { 10.244.1.2 . 10.244.1.2, 10.244.1.3 . 10.244.1.3 }"
        ));
        assert!(s.contains(
            "add rule ip skiff output meta l4proto udp ip daddr . meta l4proto . th dport @services_2 dnat"
        ));
        assert!(s.contains("add element ip skiff services_2 { 10.96.0.10 . tcp . 80 }"));
        assert!(s.contains("add element ip skiff backends_2_tcp { 10.96.0.10 . tcp . 80 . 0 : 10.244.1.2 . 8080, 10.96.0.10 . tcp . 80 . 1 : 10.244.1.3 . 8080 }"));
        assert!(s.contains(
            "add element ip skiff npbackends_2_tcp { tcp . 30080 . 0 : 10.244.1.2 . 8080"
        ));
    }

    #[test]
    fn an_endpoint_change_is_element_updates_only() {
        let before = BTreeMap::from([(
            "svc-a".to_string(),
            port(&[("10.244.1.2", 8080), ("10.244.1.3", 8080)], None),
        )]);
        let mut after = before.clone();
        after.insert(
            "svc-a".into(),
            port(&[("10.244.1.2", 8080), ("10.244.1.4", 8080)], None),
        );
        let mut hairpin = hairpin_counts(&before);
        let s = update(
            &cfg(),
            &before,
            &after,
            &mut declared_by(&before),
            &mut hairpin,
        )
        .unwrap();
        assert_eq!(
            s,
            "delete element ip skiff backends_2_tcp { 10.96.0.10 . tcp . 80 . 1 }\n\
             add element ip skiff backends_2_tcp { 10.96.0.10 . tcp . 80 . 1 : 10.244.1.4 . 8080 }\n\
             delete element ip skiff hairpin { 10.244.1.3 . 10.244.1.3 }\n\
             add element ip skiff hairpin { 10.244.1.4 . 10.244.1.4 }\n"
        );
        assert_eq!(hairpin, hairpin_counts(&after));
        assert!(update(
            &cfg(),
            &after,
            &after,
            &mut declared_by(&after),
            &mut hairpin
        )
        .is_none());
    }

    #[test]
    fn a_backend_two_services_share_stays_in_hairpin_until_neither_has_it() {
        let shared = |n: usize| {
            let mut p = port(&[("10.244.1.2", 8080)], None);
            p.cluster_ip = format!("10.96.0.{n}").parse().unwrap();
            p
        };
        let all = BTreeMap::from([("a".to_string(), shared(1)), ("b".to_string(), shared(2))]);
        let mut hairpin = hairpin_counts(&all);
        let only_a = BTreeMap::from([("a".to_string(), shared(1))]);
        let s = update(
            &cfg(),
            &only_a,
            &BTreeMap::new(),
            &mut declared_by(&all),
            &mut hairpin,
        )
        .unwrap();
        assert!(!s.contains("hairpin"), "b still has it: {s}");
        let only_b = BTreeMap::from([("b".to_string(), shared(2))]);
        let s = update(
            &cfg(),
            &only_b,
            &BTreeMap::new(),
            &mut declared_by(&all),
            &mut hairpin,
        )
        .unwrap();
        assert!(s.contains("delete element ip skiff hairpin { 10.244.1.2 . 10.244.1.2 }"));
        assert!(hairpin.is_empty());
    }

    #[test]
    fn a_new_bucket_declares_its_maps_and_rules_and_empty_services_reject() {
        let before = BTreeMap::from([("svc-a".to_string(), port(&[], Some(30080)))]);
        assert!(full(&cfg(), &before)
            .contains("add element ip skiff noendpoints { 10.96.0.10 . tcp . 80 }"));
        let after = BTreeMap::from([(
            "svc-a".to_string(),
            port(&[("10.244.1.2", 8080)], Some(30080)),
        )]);
        let mut declared = declared_by(&before);
        let mut hairpin = hairpin_counts(&before);
        let s = update(&cfg(), &before, &after, &mut declared, &mut hairpin).unwrap();
        assert!(s.contains("add map ip skiff backends_1_tcp"));
        assert!(s.contains("flush chain ip skiff prerouting"));
        assert!(s.contains("delete element ip skiff noendpoints { 10.96.0.10 . tcp . 80 }"));
        assert!(s.contains("add element ip skiff services_1 { 10.96.0.10 . tcp . 80 }"));
        let s = update(
            &cfg(),
            &after,
            &BTreeMap::new(),
            &mut declared,
            &mut hairpin,
        )
        .unwrap();
        assert!(!s.contains("flush chain"), "bucket 1 stays declared");
        assert!(s.contains("delete element ip skiff services_1 { 10.96.0.10 . tcp . 80 }"));
        assert!(s.contains("delete element ip skiff nodeports_1 { tcp . 30080 }"));
    }
}
