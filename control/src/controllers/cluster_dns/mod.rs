//! The `kube-dns` Service: every node agent serves the cluster DNS on its pod bridge's
//! address (its pod CIDR's first), and this controller keeps `kube-system/kube-dns` naming
//! them, as Kubernetes clusters name CoreDNS, so that manifests and tools that look for it
//! find it: a Service without a selector (ports 53 UDP and TCP) whose Endpoints are the DNS
//! addresses of the Ready nodes, made when the first node serves DNS. Pods themselves ask
//! their own node's address directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_proto::cidr::Cidr;
use skiff_proto::objects::{Api, ApiError};

use super::context::Ctx;
use super::ownership::revision_of;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The controller's name.
pub const NAME: &str = "cluster-dns";
/// The Service's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The Service's name.
pub const SERVICE: &str = "kube-dns";

fn key() -> ObjectKey {
    ObjectKey::new(NAMESPACE, SERVICE)
}

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    Runner::new(
        ClusterDns { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.nodes.subscribe(), |_: &Node| vec![key()])
    .watches(ctx.services.subscribe(), |s: &Service| {
        (ObjectKey::of(s) == key()).then(key).into_iter().collect()
    })
    .watches(ctx.endpoints.subscribe(), |e: &Endpoints| {
        (ObjectKey::of(e) == key()).then(key).into_iter().collect()
    })
    .run()
    .await
}

/// Keeps `kube-system/kube-dns`.
pub struct ClusterDns {
    ctx: Arc<Ctx>,
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("k8s-app".to_string(), "kube-dns".to_string()),
        ("kubernetes.io/name".to_string(), "SkiffDNS".to_string()),
    ])
}

fn meta() -> ObjectMeta {
    ObjectMeta {
        name: Some(SERVICE.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn ports() -> Vec<(&'static str, &'static str)> {
    vec![("dns", "UDP"), ("dns-tcp", "TCP")]
}

/// The DNS addresses of `nodes` that are Ready, by node name.
pub fn dns_addresses(nodes: &[Arc<Node>]) -> Vec<EndpointAddress> {
    let mut out: Vec<EndpointAddress> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| {
            let cidr: Cidr = n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
            Some(EndpointAddress {
                ip: cidr.first_host().to_string(),
                node_name: n.metadata.name.clone(),
                ..Default::default()
            })
        })
        .collect();
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    out
}

impl Reconciler for ClusterDns {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, _key: &ObjectKey) -> Result<Action, ReconcileError> {
        let services: Api<Service> = Api::new(self.ctx.client.clone(), NAMESPACE);
        let addresses = dns_addresses(&self.ctx.nodes.list());
        let exists = self.ctx.services.get(NAMESPACE, SERVICE).is_some();
        // A control plane without nodes serves no DNS: nothing to name yet.
        if addresses.is_empty() && !exists {
            return Ok(Action::done());
        }
        if !exists {
            let svc = Service {
                metadata: meta(),
                spec: Some(ServiceSpec {
                    ports: Some(
                        ports()
                            .into_iter()
                            .map(|(name, protocol)| ServicePort {
                                name: Some(name.into()),
                                protocol: Some(protocol.into()),
                                port: 53,
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match services.create(&svc).await {
                Ok(s) => {
                    tracing::info!(cluster_ip = ?s.spec.and_then(|s| s.cluster_ip), "kube-dns Service made")
                }
                Err(ApiError::Client(skiff_proto::ClientError::Rejected(s)))
                    if s.code() == tonic::Code::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        let want = (!addresses.is_empty()).then(|| {
            vec![EndpointSubset {
                addresses: Some(addresses),
                not_ready_addresses: None,
                ports: Some(
                    ports()
                        .into_iter()
                        .map(|(name, protocol)| EndpointPort {
                            name: Some(name.into()),
                            protocol: Some(protocol.into()),
                            port: 53,
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }]
        });
        let api: Api<Endpoints> = Api::new(self.ctx.client.clone(), NAMESPACE);
        let written = match self.ctx.endpoints.get(NAMESPACE, SERVICE) {
            Some(current) if current.subsets == want => return Ok(Action::done()),
            Some(current) => {
                let mut next = (*current).clone();
                next.subsets = want;
                next.metadata.resource_version = None;
                api.update(&next).await?
            }
            None => match api
                .create(&Endpoints {
                    metadata: meta(),
                    subsets: want,
                })
                .await
            {
                Ok(e) => e,
                // Made meanwhile (the cache was behind): the next pass updates it.
                Err(ApiError::Client(skiff_proto::ClientError::Rejected(s)))
                    if s.code() == tonic::Code::AlreadyExists =>
                {
                    return Ok(Action::done())
                }
                Err(e) => return Err(e.into()),
            },
        };
        Ok(Action::done().wrote(revision_of(&written.metadata)))
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        vec![key()]
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};

    use super::*;

    fn node(name: &str, cidr: Option<&str>, ready: bool) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn ready_nodes_with_a_pod_cidr_serve_dns_on_its_first_address() {
        let nodes = [
            node("b", Some("10.244.2.0/24"), true),
            node("a", Some("10.244.1.0/24"), true),
            node("down", Some("10.244.3.0/24"), false),
            node("new", None, true),
        ];
        let got: Vec<(String, Option<String>)> = dns_addresses(&nodes)
            .into_iter()
            .map(|a| (a.ip, a.node_name))
            .collect();
        assert_eq!(
            got,
            [
                ("10.244.1.1".to_string(), Some("a".to_string())),
                ("10.244.2.1".to_string(), Some("b".to_string()))
            ]
        );
    }
}
