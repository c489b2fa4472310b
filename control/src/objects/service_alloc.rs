//! Service address allocation: ClusterIPs from the service range and NodePorts from
//! 30000-32767. Each address is held by a key of its own (`/registry/core/serviceips/<ip>`,
//! `/registry/core/servicenodeports/<protocol>/<port>`) written in the same transaction as the
//! Service, under an "absent" compare: two Services never hold the same address, also across
//! a leader change, and a deleted Service's addresses are freed by its delete.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::Value;
use skiff_raft::mvcc::{Compare, Op};

use super::admission::service::NODE_PORT_RANGE;
use super::error::{ObjectError, Result};

const IP_PREFIX: &str = "/registry/core/serviceips/";
const PORT_PREFIX: &str = "/registry/core/servicenodeports/";

/// The service range, as `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRange {
    base: u32,
    len: u8,
}

impl Default for ServiceRange {
    fn default() -> Self {
        Self {
            base: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
            len: 12,
        }
    }
}

impl std::str::FromStr for ServiceRange {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // The CIDR syntax is the node IPAM's; a service range also needs room for addresses.
        let c: skiff_proto::cidr::Cidr = s
            .parse()
            .map_err(|e: skiff_proto::cidr::CidrError| e.to_string())?;
        if !(8..=30).contains(&c.len) {
            return Err(format!(
                "{:?} is not a prefix length 8-30",
                c.len.to_string()
            ));
        }
        Ok(Self {
            base: u32::from(c.addr),
            len: c.len,
        })
    }
}

impl std::fmt::Display for ServiceRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX << (32 - u32::from(len))
}

impl ServiceRange {
    /// Whether `ip` is a usable address of the range (not its network or broadcast address).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v & mask(self.len) == self.base && v != self.base && v != self.base | !mask(self.len)
    }

    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.len))
    }
}

/// What a write of a Service must also claim and release.
#[derive(Debug, Default)]
pub struct Claims {
    /// "Still free" compares.
    pub compares: Vec<Compare>,
    /// Keys that hold the new addresses, and deletes of freed ones.
    pub ops: Vec<Op>,
}

impl Claims {
    fn claim(&mut self, key: String, owner: &str) {
        self.compares.push(Compare::Absent {
            key: key.clone().into_bytes(),
        });
        self.ops.push(Op::PutNoPrev {
            key: key.into_bytes(),
            value: owner.as_bytes().to_vec(),
        });
    }
}

fn ip_key(ip: &str) -> String {
    format!("{IP_PREFIX}{ip}")
}

fn port_key(protocol: &str, port: i64) -> String {
    format!("{PORT_PREFIX}{}/{port}", protocol.to_ascii_lowercase())
}

/// Which keys under `prefix` are held now (this member's state; the compares catch a race).
pub type Taken = HashSet<String>;

fn kind_of(obj: &Value) -> &str {
    obj.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

/// NodePort Services have node ports; LoadBalancer ones too unless they say
/// `allocateLoadBalancerNodePorts: false`.
fn wants_node_ports(obj: &Value) -> bool {
    match kind_of(obj) {
        "NodePort" => true,
        "LoadBalancer" => obj
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

fn pick_ip(range: ServiceRange, taken: &Taken) -> Option<String> {
    let size = range.size();
    // A random start, then the next free one: spread out, and found even when nearly full.
    let start = rand::thread_rng().gen_range(1..size - 1);
    (0..size - 2)
        .map(|i| range.base + 1 + (start - 1 + i) % (size - 2))
        .map(|v| Ipv4Addr::from(v).to_string())
        .find(|ip| !taken.contains(&ip_key(ip)))
}

fn pick_port(protocol: &str, taken: &Taken, also: &HashSet<String>) -> Option<i64> {
    let lo = i64::from(*NODE_PORT_RANGE.start());
    let n = i64::from(*NODE_PORT_RANGE.end()) - lo + 1;
    let start = rand::thread_rng().gen_range(0..n);
    (0..n).map(|i| lo + (start + i) % n).find(|p| {
        let k = port_key(protocol, *p);
        !taken.contains(&k) && !also.contains(&k)
    })
}

fn invalid(field: &str, value: impl std::fmt::Display, why: &str) -> ObjectError {
    ObjectError::bad(field, format!("Invalid value: {value}: {why}"))
}

/// Addresses for a new Service: the asked-for ones if free, otherwise free ones; written into
/// `obj`. `taken` holds the keys of every held address.
pub fn for_create(
    range: ServiceRange,
    obj: &mut Value,
    owner: &str,
    taken: &Taken,
) -> Result<Claims> {
    let mut claims = Claims::default();
    if kind_of(obj) == "ExternalName" {
        return Ok(claims);
    }
    let asked = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if asked != "None" {
        let ip = if asked.is_empty() {
            pick_ip(range, taken).ok_or_else(|| {
                ObjectError::bad(
                    "spec.clusterIP",
                    format!("the service range {range} is full"),
                )
            })?
        } else {
            let parsed: Ipv4Addr = asked.parse().map_err(|_| {
                invalid(
                    "spec.clusterIP",
                    format!("{asked:?}"),
                    "must be an IPv4 address",
                )
            })?;
            if !range.contains(parsed) {
                return Err(invalid(
                    "spec.clusterIP",
                    format!("{asked:?}"),
                    &format!(
                        "provided IP is not in the valid range. The range of valid IPs is {range}"
                    ),
                ));
            }
            if taken.contains(&ip_key(&asked)) {
                return Err(invalid(
                    "spec.clusterIP",
                    format!("{asked:?}"),
                    "provided IP is already allocated",
                ));
            }
            asked
        };
        claims.claim(ip_key(&ip), owner);
        obj["spec"]["clusterIP"] = Value::from(ip.clone());
        obj["spec"]["clusterIPs"] = Value::from(vec![ip]);
    }
    if wants_node_ports(obj) {
        claim_ports(obj, None, owner, taken, &mut claims)?;
    }
    Ok(claims)
}

/// Node ports of `obj`'s ports: kept from `current` where a port is unchanged, asked-for ones
/// claimed if free, missing ones allocated.
fn claim_ports(
    obj: &mut Value,
    current: Option<&Value>,
    owner: &str,
    taken: &Taken,
    claims: &mut Claims,
) -> Result<HashSet<String>> {
    let held: HashSet<String> = current.map(held_port_keys).unwrap_or_default();
    let mut mine: HashSet<String> = HashSet::new();
    let ports = obj
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(ports.len());
    for (i, mut p) in ports.into_iter().enumerate() {
        let protocol = p
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string();
        let asked = p
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0);
        // An update without a nodePort keeps the one the same port had.
        let kept = asked.or_else(|| {
            current?
                .pointer("/spec/ports")?
                .as_array()?
                .iter()
                .find_map(|c| {
                    let same = c.get("port") == p.get("port")
                        && c.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == protocol;
                    same.then(|| c.get("nodePort").and_then(Value::as_i64))
                        .flatten()
                })
        });
        let port = match kept {
            Some(n) => {
                let key = port_key(&protocol, n);
                if mine.contains(&key) {
                    return Err(invalid(
                        &format!("spec.ports[{i}].nodePort"),
                        n,
                        "duplicate nodePort",
                    ));
                }
                if !held.contains(&key) {
                    if taken.contains(&key) {
                        return Err(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            n,
                            "provided port is already allocated",
                        ));
                    }
                    claims.claim(key.clone(), owner);
                }
                mine.insert(key);
                n
            }
            None => {
                let n = pick_port(&protocol, taken, &mine).ok_or_else(|| {
                    ObjectError::bad(
                        format!("spec.ports[{i}].nodePort"),
                        "the node port range is full",
                    )
                })?;
                let key = port_key(&protocol, n);
                claims.claim(key.clone(), owner);
                mine.insert(key);
                n
            }
        };
        p["nodePort"] = Value::from(port);
        out.push(p);
    }
    if let Some(spec) = obj.get_mut("spec") {
        spec["ports"] = Value::from(out);
    }
    Ok(mine)
}

fn held_port_keys(obj: &Value) -> HashSet<String> {
    if !wants_node_ports(obj) {
        return HashSet::new();
    }
    obj.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let n = p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)?;
            Some(port_key(
                p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
                n,
            ))
        })
        .collect()
}

fn held_ip_key(obj: &Value) -> Option<String> {
    obj.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(ip_key)
}

/// Addresses for an update from `current` to `next`: the cluster IP is immutable (kept when
/// `next` leaves it out), node ports are kept, claimed or freed as the ports change.
pub fn for_update(current: &Value, next: &mut Value, owner: &str, taken: &Taken) -> Result<Claims> {
    let mut claims = Claims::default();
    if kind_of(next) == "ExternalName" || kind_of(current) == "ExternalName" {
        if kind_of(next) != kind_of(current) {
            return Err(ObjectError::bad(
                "spec.type",
                "changing to or from ExternalName is not supported; delete and create the Service",
            ));
        }
        return Ok(claims);
    }
    let held_ip = current
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    let asked = next
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    if asked.is_empty() {
        if !held_ip.is_empty() {
            next["spec"]["clusterIP"] = Value::from(held_ip);
            if let Some(ips) = current.pointer("/spec/clusterIPs") {
                next["spec"]["clusterIPs"] = ips.clone();
            }
        }
    } else if asked != held_ip {
        return Err(invalid(
            "spec.clusterIP",
            format!("{asked:?}"),
            "field is immutable",
        ));
    }
    let before = held_port_keys(current);
    let after = if wants_node_ports(next) {
        claim_ports(next, Some(current), owner, taken, &mut claims)?
    } else {
        for p in next
            .pointer_mut("/spec/ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        }
        HashSet::new()
    };
    for key in before.difference(&after) {
        claims.ops.push(Op::Delete {
            key: key.clone().into_bytes(),
        });
    }
    Ok(claims)
}

/// Deletes of every address `obj` holds, for the transaction that removes it.
pub fn release(obj: &Value) -> Vec<Op> {
    held_ip_key(obj)
        .into_iter()
        .chain(held_port_keys(obj))
        .map(|k| Op::Delete {
            key: k.into_bytes(),
        })
        .collect()
}

/// The key prefixes the allocator reads.
pub const PREFIXES: [&str; 2] = [IP_PREFIX, PORT_PREFIX];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claimed_keys(c: &Claims) -> Vec<String> {
        c.ops
            .iter()
            .filter_map(|o| match o {
                Op::Put { key, .. } | Op::PutNoPrev { key, .. } => {
                    Some(String::from_utf8_lossy(key).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_service_gets_a_free_ip_in_the_range() {
        let range: ServiceRange = "10.96.0.0/30".parse().unwrap();
        // A /30 has two usable addresses; .1 is taken.
        let taken: Taken = [ip_key("10.96.0.1")].into();
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        let c = for_create(range, &mut svc, "default/web", &taken).unwrap();
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.2");
        assert_eq!(claimed_keys(&c), vec![ip_key("10.96.0.2")]);
        let full: Taken = [ip_key("10.96.0.1"), ip_key("10.96.0.2")].into();
        let e = for_create(range, &mut json!({"spec": {}}), "x", &full).unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
    }

    #[test]
    fn an_asked_for_address_must_be_free_and_in_range() {
        let range = ServiceRange::default();
        let taken: Taken = [ip_key("10.96.0.10"), port_key("TCP", 30080)].into();
        let mut svc = json!({"spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}});
        let e = for_create(range, &mut svc, "x", &taken)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.clusterIP") && e.contains("already allocated"),
            "{e}"
        );
        let mut svc = json!({"spec": {"clusterIP": "192.168.1.1"}});
        let e = for_create(range, &mut svc, "x", &taken)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in the valid range"), "{e}");
        let mut svc =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        let e = for_create(range, &mut svc, "x", &taken)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.ports[0].nodePort") && e.contains("already allocated"),
            "{e}"
        );
    }

    #[test]
    fn node_ports_are_allocated_kept_and_freed() {
        let range = ServiceRange::default();
        let mut svc =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        let c = for_create(range, &mut svc, "x", &Taken::new()).unwrap();
        let np = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!(NODE_PORT_RANGE.contains(&(np as i32)));
        assert_eq!(claimed_keys(&c).len(), 2);
        // An update that leaves nodePort out keeps it, and the IP.
        let mut next =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        let c = for_update(&svc, &mut next, "x", &Taken::new()).unwrap();
        assert_eq!(next["spec"]["ports"][0]["nodePort"].as_i64(), Some(np));
        assert_eq!(next["spec"]["clusterIP"], svc["spec"]["clusterIP"]);
        assert!(c.ops.is_empty());
        // Back to ClusterIP: the port is freed.
        let mut back = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        let c = for_update(&svc, &mut back, "x", &Taken::new()).unwrap();
        assert!(matches!(&c.ops[..], [Op::Delete { .. }]));
        assert_eq!(release(&svc).len(), 2);
        // The cluster IP cannot change.
        let mut moved = json!({"spec": {"clusterIP": "10.96.9.9"}});
        let e = for_update(&svc, &mut moved, "x", &Taken::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("immutable"), "{e}");
    }
}
