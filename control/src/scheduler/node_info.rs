//! What the scheduler knows of each node: allocatable resources, what is placed on it
//! (bound pods plus its own assumed placements), labels, taints and used host ports.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use skiff_proto::quantity;

/// Resources a pod asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Millicores.
    pub cpu_millis: i128,
    /// Bytes × 1000.
    pub memory_millis: i128,
}

/// The requests of a pod: the sum over its containers, or the largest init container's if
/// bigger, as Kubernetes computes them.
pub fn requests_of(pod: &Pod) -> Requests {
    let Some(spec) = &pod.spec else {
        return Requests::default();
    };
    let of = |c: &k8s_openapi::api::core::v1::Container, res: &str| -> i128 {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(res))
            .and_then(|q| quantity::parse(&q.0).ok())
            .map(|q| q.millis)
            .unwrap_or(0)
    };
    let sum = |res: &str| spec.containers.iter().map(|c| of(c, res)).sum::<i128>();
    let init_max = |res: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| of(c, res))
            .max()
            .unwrap_or(0)
    };
    Requests {
        cpu_millis: sum("cpu").max(init_max("cpu")),
        memory_millis: sum("memory").max(init_max("memory")),
    }
}

/// Host ports a pod asks for, as (port, protocol).
pub fn host_ports(pod: &Pod) -> Vec<(i32, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            p.host_port
                .filter(|h| *h > 0)
                .map(|h| (h, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        })
        .collect()
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// The Ready condition is True.
    pub ready: bool,
    /// Allocatable cpu (millicores), memory (bytes × 1000), pods.
    pub allocatable: (i128, i128, i64),
    /// Requested by what is placed.
    pub requested: Requests,
    /// Pods placed.
    pub pods: i64,
    /// Host ports in use, with how many placed pods use each.
    pub ports: HashMap<(i32, String), u32>,
    /// Pods placed per controlling owner uid.
    pub per_owner: HashMap<String, i64>,
}

fn allocatable(node: &Node, res: &str) -> Option<i128> {
    let status = node.status.as_ref()?;
    let q = status
        .allocatable
        .as_ref()
        .and_then(|a| a.get(res))
        .or(status.capacity.as_ref().and_then(|c| c.get(res)))?;
    quantity::parse(&q.0).ok().map(|q| q.millis)
}

/// What one placed pod adds to its node, kept to take it back out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node.
    pub node: String,
    /// Its requests.
    pub requests: Requests,
    /// Its host ports.
    pub ports: Vec<(i32, String)>,
    /// Its controlling owner's uid.
    pub owner: Option<String>,
}

impl Placement {
    /// What `pod` adds to `node`.
    pub fn of(pod: &Pod, node: &str, owner: Option<&str>) -> Self {
        Self {
            node: node.to_string(),
            requests: requests_of(pod),
            ports: host_ports(pod),
            owner: owner.map(str::to_string),
        }
    }
}

impl NodeInfo {
    /// A node with nothing placed yet.
    pub fn new(node: &Node) -> Self {
        let mut me = Self {
            name: String::new(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            unschedulable: false,
            ready: false,
            allocatable: (0, 0, 0),
            requested: Requests::default(),
            pods: 0,
            ports: HashMap::new(),
            per_owner: HashMap::new(),
        };
        me.refresh(node);
        me
    }

    /// Take the node's own fields (labels, taints, conditions, allocatable) from `node`,
    /// keeping what is placed on it.
    pub fn refresh(&mut self, node: &Node) {
        self.ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        self.unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        self.allocatable = (
            allocatable(node, "cpu").unwrap_or(0),
            allocatable(node, "memory").unwrap_or(0),
            allocatable(node, "pods")
                .map(|p| (p / 1000) as i64)
                .unwrap_or(110),
        );
    }

    /// Account for `pod` placed here.
    pub fn place(&mut self, pod: &Pod, owner: Option<&str>) {
        self.add(&Placement::of(pod, &self.name.clone(), owner));
    }

    /// Account for a placement.
    pub fn add(&mut self, p: &Placement) {
        self.requested.cpu_millis += p.requests.cpu_millis;
        self.requested.memory_millis += p.requests.memory_millis;
        self.pods += 1;
        for port in &p.ports {
            *self.ports.entry(port.clone()).or_default() += 1;
        }
        if let Some(o) = &p.owner {
            *self.per_owner.entry(o.clone()).or_default() += 1;
        }
    }

    /// Take a placement back out.
    pub fn remove(&mut self, p: &Placement) {
        self.requested.cpu_millis -= p.requests.cpu_millis;
        self.requested.memory_millis -= p.requests.memory_millis;
        self.pods -= 1;
        for port in &p.ports {
            if let Some(n) = self.ports.get_mut(port) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(port);
                }
            }
        }
        if let Some(o) = &p.owner {
            if let Some(n) = self.per_owner.get_mut(o) {
                *n -= 1;
                if *n <= 0 {
                    self.per_owner.remove(o);
                }
            }
        }
    }
}
