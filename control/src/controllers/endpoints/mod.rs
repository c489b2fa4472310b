//! The Endpoints controller: for each Service with a selector, the addresses of the pods it
//! selects (ready ones as `addresses`, others as `notReadyAddresses`) and its ports, with
//! named target ports resolved against each pod's container ports.
//!
//! Keyed by Service; a pod's change queues the Services that select it, before and after
//! the change (a pod whose labels changed leaves one Service for another).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_proto::objects::{Api, ApiError};

use super::cache;
use super::context::Ctx;
use super::ownership::is_ready;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The controller's name.
pub const NAME: &str = "endpoints";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let pods_ctx = ctx.clone();
    Runner::new(
        EndpointsController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.services.subscribe(), |s: &Service| {
        vec![ObjectKey::of(s)]
    })
    .watches(ctx.endpoints.subscribe(), |e: &Endpoints| {
        vec![ObjectKey::of(e)]
    })
    .watches(ctx.pods.subscribe(), move |p: &Pod| {
        services_selecting(&pods_ctx, p)
    })
    .run()
    .await
}

fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

/// The Services of a pod's namespace whose selector matches its labels.
fn services_selecting(ctx: &Ctx, p: &Pod) -> Vec<ObjectKey> {
    let ns = p.metadata.namespace.as_deref().unwrap_or("");
    let labels = p.metadata.labels.clone().unwrap_or_default();
    ctx.services
        .by_index(cache::NAMESPACE, ns)
        .iter()
        .filter(|s| {
            selector_of(s).is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .map(|s| ObjectKey::of(&**s))
        .collect()
}

/// Pods that may match `selector` in `namespace`: those with its first label.
fn candidates(ctx: &Ctx, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<Arc<Pod>> {
    match selector.iter().next() {
        Some((k, v)) => ctx
            .pods
            .by_index(cache::LABEL, &cache::label_value(namespace, k, v)),
        None => Vec::new(),
    }
}

/// Keeps one Service's Endpoints.
pub struct EndpointsController {
    ctx: Arc<Ctx>,
}

impl Reconciler for EndpointsController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(svc) = self.ctx.services.get(&key.namespace, &key.name) else {
            return Ok(Action::done());
        };
        reconcile(&self.ctx, &svc).await?;
        Ok(Action::done())
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.services.object_keys()
    }
}

fn target_port(pod: &Pod, target: &IntOrString) -> Option<i32> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// A service port resolved for one pod: name, port number, protocol.
type ResolvedPort = (String, i32, String);

/// The subsets a Service's Endpoints should hold.
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let Some(spec) = &svc.spec else { return vec![] };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return vec![];
    };
    let ns = svc.metadata.namespace.as_deref();
    // Pods grouped by their resolved port list, as Kubernetes groups subsets.
    let mut groups: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for p in pods {
        if p.metadata.namespace.as_deref() != ns || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let ports: Vec<ResolvedPort> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                Some((
                    sp.name.clone().unwrap_or_default(),
                    target_port(p, &target)?,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        let address = EndpointAddress {
            ip,
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: p.metadata.namespace.clone(),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
                ..Default::default()
            }),
            // A pod that names this Service as its subdomain is known by its hostname in
            // it (`host.service.ns.svc.cluster.local`), as Kubernetes' controller sets.
            hostname: p
                .spec
                .as_ref()
                .filter(|s| s.subdomain.is_some() && s.subdomain == svc.metadata.name)
                .and_then(|s| s.hostname.clone()),
        };
        let entry = groups.entry(ports).or_default();
        if is_ready(p) {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

async fn reconcile(ctx: &Ctx, svc: &Service) -> Result<(), ApiError> {
    let Some(selector) = selector_of(svc) else {
        return Ok(()); // endpoints of a selector-less Service are the user's
    };
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let want = subsets(svc, &candidates(ctx, &ns, selector));
    let want = if want.is_empty() { None } else { Some(want) };
    let api: Api<Endpoints> = Api::new(ctx.client.clone(), &ns);
    match ctx.endpoints.get(&ns, &name) {
        Some(current) if current.subsets == want => {}
        Some(current) => {
            let mut next = (*current).clone();
            next.subsets = want;
            next.metadata.resource_version = None;
            api.update(&next).await?;
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: svc.metadata.labels.clone(),
                    ..Default::default()
                },
                subsets: want,
            };
            match api.create(&ep).await {
                // Made meanwhile (the cache was behind): the next pass updates it.
                Err(ApiError::Client(skiff_proto::ClientError::Rejected(s)))
                    if s.code() == tonic::Code::AlreadyExists => {}
                r => {
                    r?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    use super::*;

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn ready_and_not_ready_pods_with_named_ports_resolved() {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ports: Some(vec![ServicePort {
                    name: Some("web".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let subsets = subsets(
            &svc,
            &[
                pod("b", "10.0.0.2", true),
                pod("a", "10.0.0.1", true),
                pod("c", "10.0.0.3", false),
            ],
        );
        assert_eq!(subsets.len(), 1);
        let s = &subsets[0];
        let ips: Vec<&str> = s
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ips, vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(s.not_ready_addresses.as_ref().map(|a| a.len()), Some(1));
        assert_eq!(s.ports.as_ref().map(|p| p[0].port), Some(8080));
    }
}
