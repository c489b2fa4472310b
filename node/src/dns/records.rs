//! What the cluster domain answers, as Kubernetes' DNS specification and CoreDNS' kubernetes
//! plugin give it, computed from Service and Endpoints objects:
//!
//! | name                                   | answer                                          |
//! |----------------------------------------|-------------------------------------------------|
//! | `svc.ns.svc.D`                         | A: the ClusterIP; headless: the ready endpoints |
//! | `svc.ns.svc.D` (ExternalName)          | CNAME to the external name                      |
//! | `_port._proto.svc.ns.svc.D`            | SRV per named port (headless: per endpoint)     |
//! | `host.svc.ns.svc.D` (headless)         | A: the endpoint with that hostname or dashed IP |
//! | `a-b-c-d.ns.pod.D`                     | A: a.b.c.d (CoreDNS' `pods insecure`)           |
//! | anything else under D                  | NXDOMAIN                                        |
//!
//! Pure over a [`ClusterView`], so the table is tested without a server.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Service};

/// Seconds answers may be cached (CoreDNS' kubernetes plugin's default): a change is seen
/// by clients within this, by the server as soon as its watch delivers it.
pub const TTL: u32 = 5;

/// The objects names are answered from.
pub trait ClusterView {
    /// The Service `ns/name`.
    fn service(&self, ns: &str, name: &str) -> Option<Arc<Service>>;
    /// The Endpoints `ns/name`.
    fn endpoints(&self, ns: &str, name: &str) -> Option<Arc<Endpoints>>;
}

/// The answer to one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Records of the asked type (and the records they lead to, for SRV).
    Records {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section (addresses of SRV targets).
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of the asked type.
    NoData,
    /// The name does not exist in the cluster domain.
    NxDomain,
    /// The name is outside the cluster domain: someone else's to answer.
    NotOurs,
}

/// The cluster domain.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `cluster.local.`, fully qualified and lower case.
    pub domain: Name,
}

impl Zone {
    /// The zone of `domain` (`cluster.local`).
    pub fn new(domain: &str) -> Result<Self, String> {
        let mut name = Name::from_str(domain).map_err(|e| format!("{domain:?}: {e}"))?;
        name.set_fqdn(true);
        Ok(Self {
            domain: name.to_lowercase(),
        })
    }

    /// The zone's SOA, for negative answers.
    pub fn soa(&self) -> Record {
        let ns = Name::from_str("ns.dns")
            .and_then(|n| n.append_domain(&self.domain))
            .unwrap_or_else(|_| self.domain.clone());
        let mail = Name::from_str("hostmaster")
            .and_then(|n| n.append_domain(&self.domain))
            .unwrap_or_else(|_| self.domain.clone());
        Record::from_rdata(
            self.domain.clone(),
            TTL,
            RData::SOA(SOA::new(ns, mail, 1, 7200, 1800, 86400, TTL)),
        )
    }

    /// Answer `rtype` for `name`.
    pub fn answer(&self, view: &dyn ClusterView, name: &Name, rtype: RecordType) -> Answer {
        let name = name.to_lowercase();
        if !self.domain.zone_of(&name) {
            return Answer::NotOurs;
        }
        let depth = name.num_labels() - self.domain.num_labels();
        let labels: Vec<String> = name
            .iter()
            .take(usize::from(depth))
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let found = match labels.as_slice() {
            // The zone itself and its two subtrees exist, with nothing of their own.
            [] | ["svc"] | ["pod"] | [_, "svc"] | [_, "pod"] => return Answer::NoData,
            [service, ns, "svc"] => self.service(view, &name, ns, service),
            [port, proto, service, ns, "svc"]
                if port.starts_with('_') && proto.starts_with('_') =>
            {
                self.srv(view, &name, ns, service, &port[1..], &proto[1..])
            }
            [host, service, ns, "svc"] => self.endpoint(view, &name, ns, service, host),
            [dashed, _ns, "pod"] => dashed_ip(dashed)
                .map(|ip| Found::addresses(vec![a(&name, ip)]))
                .ok_or(()),
            _ => Err(()),
        };
        match found {
            Err(()) => Answer::NxDomain,
            Ok(found) => found.select(rtype),
        }
    }

    fn service(
        &self,
        view: &dyn ClusterView,
        name: &Name,
        ns: &str,
        service: &str,
    ) -> Result<Found, ()> {
        let svc = view.service(ns, service).ok_or(())?;
        let spec = svc.spec.as_ref().ok_or(())?;
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec
                .external_name
                .as_deref()
                .and_then(|t| Name::from_str(t).ok())
                .map(|mut t| {
                    t.set_fqdn(true);
                    t
                })
                .ok_or(())?;
            return Ok(Found {
                cname: Some(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::CNAME(CNAME(target)),
                )),
                ..Found::default()
            });
        }
        match spec.cluster_ip.as_deref() {
            Some("None") => Ok(Found::addresses(
                ready_addresses(view, ns, service)
                    .into_iter()
                    .map(|(ip, _)| a(name, ip))
                    .collect(),
            )),
            Some(ip) => {
                let ip = ip.parse().map_err(|_| ())?;
                Ok(Found::addresses(vec![a(name, ip)]))
            }
            None => Ok(Found::default()),
        }
    }

    fn srv(
        &self,
        view: &dyn ClusterView,
        name: &Name,
        ns: &str,
        service: &str,
        port: &str,
        proto: &str,
    ) -> Result<Found, ()> {
        let svc = view.service(ns, service).ok_or(())?;
        let spec = svc.spec.as_ref().ok_or(())?;
        let port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref() == Some(port)
                    && p.protocol
                        .as_deref()
                        .unwrap_or("TCP")
                        .eq_ignore_ascii_case(proto)
            })
            .ok_or(())?;
        // `_port._proto.` off the question: `service.ns.svc.D`.
        let service_name = name.base_name().base_name();
        let mut found = Found::default();
        if spec.cluster_ip.as_deref() == Some("None") {
            for (ip, host) in ready_addresses(view, ns, service) {
                let target = Name::from_str(&host)
                    .and_then(|h| h.append_domain(&service_name))
                    .map_err(|_| ())?;
                found.srv.push(srv(name, port.port, &target));
                found.additional.push(a(&target, ip));
            }
        } else {
            found.srv.push(srv(name, port.port, &service_name));
            if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
                found.additional.push(a(&service_name, ip));
            }
        }
        Ok(found)
    }

    fn endpoint(
        &self,
        view: &dyn ClusterView,
        name: &Name,
        ns: &str,
        service: &str,
        host: &str,
    ) -> Result<Found, ()> {
        let svc = view.service(ns, service).ok_or(())?;
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) != Some("None") {
            return Err(());
        }
        let ips: Vec<Record> = ready_addresses(view, ns, service)
            .into_iter()
            .filter(|(_, h)| h == host)
            .map(|(ip, _)| a(name, ip))
            .collect();
        if ips.is_empty() {
            return Err(());
        }
        Ok(Found::addresses(ips))
    }
}

/// What a name has, before the asked type picks from it.
#[derive(Debug, Default)]
struct Found {
    a: Vec<Record>,
    srv: Vec<Record>,
    additional: Vec<Record>,
    cname: Option<Record>,
}

impl Found {
    fn addresses(a: Vec<Record>) -> Self {
        Self {
            a,
            ..Self::default()
        }
    }

    fn select(self, rtype: RecordType) -> Answer {
        // A CNAME answers every type: the client follows it.
        let answers = match (self.cname, rtype) {
            (Some(c), _) => vec![c],
            (None, RecordType::A) => self.a,
            (None, RecordType::SRV) => self.srv,
            (None, RecordType::ANY) => self.a.into_iter().chain(self.srv).collect(),
            _ => Vec::new(),
        };
        if answers.is_empty() {
            return Answer::NoData;
        }
        let additionals = if rtype == RecordType::SRV {
            self.additional
        } else {
            Vec::new()
        };
        Answer::Records {
            answers,
            additionals,
        }
    }
}

fn a(name: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))
}

fn srv(name: &Name, port: i32, target: &Name) -> Record {
    let port = u16::try_from(port).unwrap_or(0);
    Record::from_rdata(
        name.clone(),
        TTL,
        RData::SRV(SRV::new(0, 100, port, target.clone())),
    )
}

/// `10-244-1-5` → 10.244.1.5.
fn dashed_ip(label: &str) -> Option<Ipv4Addr> {
    label.replace('-', ".").parse().ok()
}

/// The ready addresses of a Service's Endpoints, each with its DNS hostname (the endpoint's
/// hostname, or its address with dashes), without repeats.
fn ready_addresses(view: &dyn ClusterView, ns: &str, service: &str) -> Vec<(Ipv4Addr, String)> {
    let Some(ep) = view.endpoints(ns, service) else {
        return Vec::new();
    };
    let mut out: Vec<(Ipv4Addr, String)> = Vec::new();
    for address in ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
    {
        let Ok(ip) = address.ip.parse::<Ipv4Addr>() else {
            continue;
        };
        let host = address
            .hostname
            .clone()
            .unwrap_or_else(|| address.ip.replace('.', "-"));
        if !out.iter().any(|(i, _)| *i == ip) {
            out.push((ip, host));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    #[derive(Default)]
    struct View {
        services: BTreeMap<(String, String), Arc<Service>>,
        endpoints: BTreeMap<(String, String), Arc<Endpoints>>,
    }

    impl ClusterView for View {
        fn service(&self, ns: &str, name: &str) -> Option<Arc<Service>> {
            self.services.get(&(ns.into(), name.into())).cloned()
        }
        fn endpoints(&self, ns: &str, name: &str) -> Option<Arc<Endpoints>> {
            self.endpoints.get(&(ns.into(), name.into())).cloned()
        }
    }

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn view() -> View {
        let mut v = View::default();
        let port = ServicePort {
            name: Some("http".into()),
            port: 80,
            ..Default::default()
        };
        let mut add = |name: &str, spec: ServiceSpec, ips: &[(&str, Option<&str>)]| {
            v.services.insert(
                ("shop".into(), name.into()),
                Arc::new(Service {
                    metadata: meta("shop", name),
                    spec: Some(spec),
                    ..Default::default()
                }),
            );
            v.endpoints.insert(
                ("shop".into(), name.into()),
                Arc::new(Endpoints {
                    metadata: meta("shop", name),
                    subsets: Some(vec![EndpointSubset {
                        addresses: Some(
                            ips.iter()
                                .map(|(ip, host)| EndpointAddress {
                                    ip: ip.to_string(),
                                    hostname: host.map(Into::into),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    }]),
                }),
            );
        };
        add(
            "web",
            ServiceSpec {
                cluster_ip: Some("10.96.0.20".into()),
                ports: Some(vec![port.clone()]),
                ..Default::default()
            },
            &[("10.244.1.5", None)],
        );
        add(
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ports: Some(vec![port]),
                ..Default::default()
            },
            &[("10.244.1.7", Some("db-0")), ("10.244.2.9", None)],
        );
        add(
            "search",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("search.example.test".into()),
                ..Default::default()
            },
            &[],
        );
        v
    }

    fn ask(name: &str, rtype: RecordType) -> Answer {
        let zone = Zone::new("cluster.local").unwrap();
        zone.answer(&view(), &Name::from_str(name).unwrap(), rtype)
    }

    fn rdata(answer: Answer) -> Vec<String> {
        match answer {
            Answer::Records { answers, .. } => {
                answers.iter().map(|r| r.data().to_string()).collect()
            }
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn services_pods_and_ports_answer_as_kubernetes_dns_says() {
        let cases: &[(&str, RecordType, &[&str])] = &[
            (
                "web.shop.svc.cluster.local.",
                RecordType::A,
                &["10.96.0.20"],
            ),
            (
                "WEB.Shop.svc.cluster.local.",
                RecordType::A,
                &["10.96.0.20"],
            ),
            (
                "db.shop.svc.cluster.local.",
                RecordType::A,
                &["10.244.1.7", "10.244.2.9"],
            ),
            (
                "db-0.db.shop.svc.cluster.local.",
                RecordType::A,
                &["10.244.1.7"],
            ),
            (
                "10-244-2-9.db.shop.svc.cluster.local.",
                RecordType::A,
                &["10.244.2.9"],
            ),
            (
                "10-244-1-5.shop.pod.cluster.local.",
                RecordType::A,
                &["10.244.1.5"],
            ),
            (
                "_http._tcp.web.shop.svc.cluster.local.",
                RecordType::SRV,
                &["0 100 80 web.shop.svc.cluster.local."],
            ),
            (
                "_http._tcp.db.shop.svc.cluster.local.",
                RecordType::SRV,
                &[
                    "0 100 80 db-0.db.shop.svc.cluster.local.",
                    "0 100 80 10-244-2-9.db.shop.svc.cluster.local.",
                ],
            ),
            (
                "search.shop.svc.cluster.local.",
                RecordType::A,
                &["search.example.test."],
            ),
            ("web.shop.svc.cluster.local.", RecordType::AAAA, &["NoData"]),
            ("svc.cluster.local.", RecordType::A, &["NoData"]),
            (
                "nothing.shop.svc.cluster.local.",
                RecordType::A,
                &["NxDomain"],
            ),
            (
                "_grpc._tcp.web.shop.svc.cluster.local.",
                RecordType::SRV,
                &["NxDomain"],
            ),
            (
                "x.web.shop.svc.cluster.local.",
                RecordType::A,
                &["NxDomain"],
            ),
            ("example.test.", RecordType::A, &["NotOurs"]),
        ];
        for (name, rtype, want) in cases {
            assert_eq!(rdata(ask(name, *rtype)), *want, "{name} {rtype}");
        }
    }

    #[test]
    fn srv_answers_carry_their_targets_addresses() {
        let Answer::Records { additionals, .. } =
            ask("_http._tcp.db.shop.svc.cluster.local.", RecordType::SRV)
        else {
            panic!("records");
        };
        let names: Vec<String> = additionals
            .iter()
            .map(|r| format!("{} {}", r.name(), r.data()))
            .collect();
        assert_eq!(
            names,
            [
                "db-0.db.shop.svc.cluster.local. 10.244.1.7",
                "10-244-2-9.db.shop.svc.cluster.local. 10.244.2.9"
            ]
        );
    }
}
