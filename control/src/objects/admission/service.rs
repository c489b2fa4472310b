//! Services and Endpoints: defaults (type ClusterIP, protocol TCP, targetPort = port) and
//! validation of ports, types and addresses. Address allocation is the service allocator's.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::error::FieldError;
use super::super::names;
use super::pod::port_reference;

/// The NodePort range.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;

/// Defaults of a Service, as Kubernetes gives them on a single-stack IPv4 cluster: what is
/// stored is what `kubectl get -o yaml` shows there, so a re-applied manifest finds them in
/// place and nothing differs.
pub fn default_service(s: &mut Service) {
    let Some(spec) = s.spec.as_mut() else {
        return;
    };
    let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    spec.session_affinity.get_or_insert_with(|| "None".into());
    if kind == "ExternalName" {
        return;
    }
    spec.internal_traffic_policy
        .get_or_insert_with(|| "Cluster".into());
    if kind == "NodePort" || kind == "LoadBalancer" {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if kind == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let selects = spec.selector.as_ref().is_some_and(|s| !s.is_empty());
    spec.ip_family_policy.get_or_insert_with(|| {
        // Kubernetes asks both families for a headless Service without a selector: its
        // endpoints, written by someone else, may be of either.
        if headless && !selects {
            "RequireDualStack".into()
        } else {
            "SingleStack".into()
        }
    });
    spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        p.target_port.get_or_insert(IntOrString::Int(p.port));
    }
}

/// The address families and policy of a Service on a single-stack IPv4 cluster.
fn validate_ip_families(spec: &ServiceSpec, headless: bool, errors: &mut Vec<FieldError>) {
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        if family != "IPv4" {
            errors.push(FieldError::new(
                format!("spec.ipFamilies[{i}]"),
                format!(
                    "Unsupported value: {family:?}: this cluster is single-stack IPv4 (supported values: \"IPv4\")"
                ),
            ));
        }
    }
    match spec.ip_family_policy.as_deref() {
        None | Some("SingleStack") | Some("PreferDualStack") => {}
        Some("RequireDualStack") if headless => {}
        Some("RequireDualStack") => errors.push(FieldError::new(
            "spec.ipFamilyPolicy",
            "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
        )),
        Some(other) => errors.push(FieldError::new(
            "spec.ipFamilyPolicy",
            format!(
                "Unsupported value: {other:?}: supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""
            ),
        )),
    }
}

/// Validate a Service.
pub fn validate_service(s: &Service) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &s.spec else {
        return vec![FieldError::new("spec", "Required value")];
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&kind) {
        errors.push(FieldError::new("spec.type", format!("Unsupported value: {kind:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"")));
    }
    if kind == "ExternalName" {
        match spec.external_name.as_deref() {
            Some(n) if names::dns1123_subdomain(n).is_none() => {}
            Some(n) => errors.push(FieldError::new(
                "spec.externalName",
                names::dns1123_subdomain(n).unwrap_or_default(),
            )),
            None => errors.push(FieldError::new("spec.externalName", "Required value")),
        }
        return errors;
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        if ip.parse::<IpAddr>().is_err() {
            errors.push(FieldError::new(
                "spec.clusterIP",
                format!("Invalid value: {ip:?}: must be a valid IP address, \"None\" or empty"),
            ));
        }
    }
    validate_ip_families(spec, headless, &mut errors);
    if headless && kind != "ClusterIP" {
        errors.push(FieldError::new(
            "spec.clusterIP",
            format!("Invalid value: \"None\": may not be set to 'None' for {kind} services"),
        ));
    }
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() && !headless {
        errors.push(FieldError::new("spec.ports", "Required value"));
    }
    let mut port_names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        match &p.name {
            Some(n) if !n.is_empty() => {
                if let Some(e) = names::dns1123_label(n) {
                    errors.push(FieldError::new(format!("{f}.name"), e));
                } else if !port_names.insert(n.clone()) {
                    errors.push(FieldError::new(
                        format!("{f}.name"),
                        format!("Duplicate value: {n:?}"),
                    ));
                }
            }
            _ if ports.len() > 1 => errors.push(FieldError::new(
                format!("{f}.name"),
                "Required value: ports must be named when a service has more than one",
            )),
            _ => {}
        }
        if !(1..=65535).contains(&p.port) {
            errors.push(FieldError::new(
                format!("{f}.port"),
                format!(
                    "Invalid value: {}: must be between 1 and 65535, inclusive",
                    p.port
                ),
            ));
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            errors.push(FieldError::new(
                format!("{f}.protocol"),
                format!(
                    "Unsupported value: {protocol:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""
                ),
            ));
        }
        if !seen.insert((p.port, protocol.to_string())) {
            errors.push(FieldError::new(
                f.clone(),
                format!("Duplicate value: port {} {protocol}", p.port),
            ));
        }
        if let Some(e) = p.target_port.as_ref().and_then(port_reference) {
            errors.push(FieldError::new(format!("{f}.targetPort"), e));
        }
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            if kind == "ClusterIP" {
                errors.push(FieldError::new(
                    format!("{f}.nodePort"),
                    "Forbidden: may not be used when `type` is 'ClusterIP'",
                ));
            } else if !NODE_PORT_RANGE.contains(&np) {
                errors.push(FieldError::new(format!("{f}.nodePort"), format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767")));
            }
        }
    }
    for (k, v) in spec.selector.iter().flatten() {
        if let Some(e) = names::qualified_name(k) {
            errors.push(FieldError::new("spec.selector", e));
        }
        if let Some(e) = names::label_value(v) {
            errors.push(FieldError::new(format!("spec.selector[{k}]"), e));
        }
    }
    errors
}

/// Validate Endpoints.
pub fn validate_endpoints(e: &Endpoints) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, s) in e.subsets.iter().flatten().enumerate() {
        let addresses = s.addresses.iter().flatten().map(|a| ("addresses", a));
        let not_ready = s
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| ("notReadyAddresses", a));
        for (j, (which, a)) in addresses.chain(not_ready).enumerate() {
            if a.ip.parse::<IpAddr>().is_err() {
                errors.push(FieldError::new(
                    format!("subsets[{i}].{which}[{j}].ip"),
                    format!("Invalid value: {:?}: must be a valid IP address", a.ip),
                ));
            }
        }
        for (j, p) in s.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&p.port) {
                errors.push(FieldError::new(
                    format!("subsets[{i}].ports[{j}].port"),
                    format!(
                        "Invalid value: {}: must be between 1 and 65535, inclusive",
                        p.port
                    ),
                ));
            }
        }
    }
    errors
}
