//! Service links: the environment variables Kubernetes gives a container for each Service of
//! its namespace that has a cluster IP, in Docker's link form (`WEB_SERVICE_HOST`,
//! `WEB_SERVICE_PORT`, `WEB_PORT_80_TCP_ADDR`, ...), unless the pod sets
//! `enableServiceLinks: false`. The container's own variables win over them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

/// `my-svc` as an environment variable prefix: `MY_SVC`.
fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// The link variables of `services` (those of `namespace` with a cluster IP), by name.
pub fn variables(
    services: impl Iterator<Item = Arc<Service>>,
    namespace: &str,
) -> Vec<(String, String)> {
    let mut mine: Vec<Arc<Service>> = services
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .collect();
    mine.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::new();
    for s in mine {
        let Some(spec) = &s.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let Some(first) = spec.ports.as_ref().and_then(|p| p.first()) else {
            continue;
        };
        let name = env_name(s.metadata.name.as_deref().unwrap_or(""));
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in spec.ports.iter().flatten() {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(port_name)),
                    p.port.to_string(),
                ));
            }
        }
        let proto_of = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase()
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto_of(first), first.port),
        ));
        for p in spec.ports.iter().flatten() {
            let proto = proto_of(p);
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            out.push((prefix.clone(), format!("{proto}://{ip}:{}", p.port)));
            out.push((format!("{prefix}_PROTO"), proto.clone()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn services_of_the_namespace_with_a_cluster_ip_become_docker_links() {
        let svc = |ns: &str, name: &str, ip: &str| -> Arc<Service> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"clusterIP": ip, "ports": [
                        {"name": "http", "port": 80},
                        {"name": "dns", "port": 53, "protocol": "UDP"}]}
                }))
                .unwrap(),
            )
        };
        let all = [
            svc("shop", "web-front", "10.96.0.10"),
            svc("shop", "headless", "None"),
            svc("other", "db", "10.96.0.11"),
        ];
        let vars = variables(all.into_iter(), "shop");
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("WEB_FRONT_SERVICE_HOST"), Some("10.96.0.10"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT"), Some("80"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT_DNS"), Some("53"));
        assert_eq!(get("WEB_FRONT_PORT"), Some("tcp://10.96.0.10:80"));
        assert_eq!(get("WEB_FRONT_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("WEB_FRONT_PORT_80_TCP_ADDR"), Some("10.96.0.10"));
        assert!(get("HEADLESS_SERVICE_HOST").is_none());
        assert!(get("DB_SERVICE_HOST").is_none());
    }
}
