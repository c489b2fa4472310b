//! Pods: Kubernetes' defaults for a pod spec and its validation. Workloads reuse both for
//! their pod templates, with the field path of the template.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_proto::quantity;

use super::super::error::FieldError;
use super::super::names;

/// Fill in what Kubernetes fills in for an omitted field.
pub fn default_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    let host_network = spec.host_network == Some(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
        if host_network {
            // A pod on the node's network listens on the node's ports: Kubernetes records
            // them as host ports, so the scheduler keeps two such pods apart.
            for p in c.ports.iter_mut().flatten() {
                if p.host_port.is_none_or(|h| h == 0) {
                    p.host_port = Some(p.container_port);
                }
            }
        }
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        let image = c.image.as_deref().unwrap_or("");
        // The tag follows the last ':' after the last '/'; a digest pins the image.
        let last = image.rsplit('/').next().unwrap_or(image);
        let tag = last.split_once(':').map(|(_, t)| t);
        let latest = !image.contains('@') && matches!(tag, None | Some("latest"));
        c.image_pull_policy = Some(if latest { "Always" } else { "IfNotPresent" }.into());
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

fn default_probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(h) = p.http_get.as_mut() {
        h.path.get_or_insert_with(|| "/".into());
        h.scheme.get_or_insert_with(|| "HTTP".into());
    }
}

/// Defaults of a whole pod.
pub fn default(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        default_spec(spec);
    }
}

/// Validate a pod.
pub fn validate(pod: &Pod) -> Vec<FieldError> {
    match &pod.spec {
        Some(spec) => validate_spec(spec, "spec"),
        None => vec![FieldError::new("spec", "Required value")],
    }
}

/// Refuse `value` at `field` unless it is one of `allowed`, naming them.
pub(super) fn one_of(
    errors: &mut Vec<FieldError>,
    field: String,
    value: Option<&str>,
    allowed: &[&str],
) {
    if let Some(v) = value {
        if !allowed.contains(&v) {
            errors.push(FieldError::new(
                field,
                format!(
                    "Unsupported value: {v:?}: supported values: {}",
                    allowed
                        .iter()
                        .map(|a| format!("{a:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
}

/// Validate a pod spec found at `path` (`spec`, or `spec.template.spec`).
pub fn validate_spec(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if spec.containers.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.containers"),
            "Required value: a pod needs at least one container",
        ));
    }
    one_of(
        &mut errors,
        format!("{path}.restartPolicy"),
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
    );
    one_of(
        &mut errors,
        format!("{path}.dnsPolicy"),
        spec.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errors.push(FieldError::new(
                format!("{path}.terminationGracePeriodSeconds"),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(d) = spec.active_deadline_seconds {
        if d <= 0 {
            errors.push(FieldError::new(
                format!("{path}.activeDeadlineSeconds"),
                "must be greater than 0",
            ));
        }
    }
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if let Some(e) = names::dns1123_subdomain(n) {
            errors.push(FieldError::new(format!("{path}.nodeName"), e));
        }
    }
    for (k, v) in spec.node_selector.iter().flatten() {
        if let Some(e) = names::qualified_name(k) {
            errors.push(FieldError::new(format!("{path}.nodeSelector"), e));
        }
        if let Some(e) = names::label_value(v) {
            errors.push(FieldError::new(format!("{path}.nodeSelector[{k}]"), e));
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let f = format!("{path}.tolerations[{i}]");
        one_of(
            &mut errors,
            format!("{f}.operator"),
            t.operator.as_deref(),
            &["Exists", "Equal"],
        );
        one_of(
            &mut errors,
            format!("{f}.effect"),
            t.effect.as_deref(),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
        if t.operator.as_deref() == Some("Exists")
            && t.value.as_deref().is_some_and(|v| !v.is_empty())
        {
            errors.push(FieldError::new(
                format!("{f}.operator"),
                "value must be empty when operator is Exists",
            ));
        }
    }

    // Volumes: unique valid names; mounts must name one.
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let f = format!("{path}.volumes[{i}].name");
        if let Some(e) = names::dns1123_label(&v.name) {
            errors.push(FieldError::new(f, e));
        } else if !volumes.insert(v.name.as_str()) {
            errors.push(FieldError::new(f, format!("Duplicate value: {:?}", v.name)));
        }
    }

    let mut container_names = BTreeSet::new();
    // Init containers run before the others, so each list has host ports of its own (as in
    // Kubernetes; on the node's network each container port is one).
    let (mut init_host_ports, mut host_ports) = (BTreeSet::new(), BTreeSet::new());
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("{path}.initContainers[{i}]"), c, true))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{path}.containers[{i}]"), c, false)),
        );
    for (f, c, init) in all {
        if let Some(e) = names::dns1123_label(&c.name) {
            errors.push(FieldError::new(format!("{f}.name"), e));
        } else if !container_names.insert(c.name.as_str()) {
            errors.push(FieldError::new(
                format!("{f}.name"),
                format!(
                    "Duplicate value: {:?}: container names must be unique within a pod",
                    c.name
                ),
            ));
        }
        let ports = match init {
            true => &mut init_host_ports,
            false => &mut host_ports,
        };
        validate_container(c, &f, &volumes, ports, &mut errors);
        if spec.host_network == Some(true) {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                if p.host_port.is_some_and(|h| h != p.container_port) {
                    errors.push(FieldError::new(
                        format!("{f}.ports[{j}].containerPort"),
                        format!(
                            "Invalid value: {}: must match `hostPort` when `hostNetwork` is true",
                            p.container_port
                        ),
                    ));
                }
            }
        }
    }
    errors.extend(super::unsupported::refused_fields(spec, path));
    errors
}

fn validate_container(
    c: &Container,
    f: &str,
    volumes: &BTreeSet<&str>,
    host_ports: &mut BTreeSet<(i32, String)>,
    errors: &mut Vec<FieldError>,
) {
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errors.push(FieldError::new(format!("{f}.image"), "Required value"));
    }
    one_of(
        errors,
        format!("{f}.imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
    );
    let mut port_names = BTreeSet::new();
    for (j, p) in c.ports.iter().flatten().enumerate() {
        validate_container_port(
            p,
            &format!("{f}.ports[{j}]"),
            &mut port_names,
            host_ports,
            errors,
        );
    }
    for (j, e) in c.env.iter().flatten().enumerate() {
        if let Some(r) = names::env_var_name(&e.name) {
            errors.push(FieldError::new(format!("{f}.env[{j}].name"), r));
        }
        if e.value.is_some() && e.value_from.is_some() {
            errors.push(FieldError::new(
                format!("{f}.env[{j}].valueFrom"),
                "may not be specified when `value` is not empty",
            ));
        }
        let resource = e
            .value_from
            .as_ref()
            .and_then(|v| v.resource_field_ref.as_ref());
        if let Some(r) = resource {
            const RESOURCES: [&str; 6] = [
                "limits.cpu",
                "limits.memory",
                "limits.ephemeral-storage",
                "requests.cpu",
                "requests.memory",
                "requests.ephemeral-storage",
            ];
            one_of(
                errors,
                format!("{f}.env[{j}].valueFrom.resourceFieldRef.resource"),
                Some(r.resource.as_str()),
                &RESOURCES,
            );
        }
    }
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            errors.push(FieldError::new(
                format!("{f}.volumeMounts[{j}].name"),
                format!("Not found: {:?}: no volume of this name in the pod", m.name),
            ));
        }
        if !m.mount_path.starts_with('/') {
            errors.push(FieldError::new(
                format!("{f}.volumeMounts[{j}].mountPath"),
                "must be an absolute path",
            ));
        }
    }
    if let Some(r) = &c.resources {
        for (which, list) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, q) in list.iter().flatten() {
                match quantity::parse(&q.0) {
                    Err(e) => errors.push(FieldError::new(
                        format!("{f}.resources.{which}[{name}]"),
                        e.to_string(),
                    )),
                    Ok(v) if v.millis < 0 => errors.push(FieldError::new(
                        format!("{f}.resources.{which}[{name}]"),
                        "must be greater than or equal to 0",
                    )),
                    Ok(_) => {}
                }
            }
        }
        for (name, requested) in r.requests.iter().flatten() {
            let Some(limit) = r.limits.as_ref().and_then(|l| l.get(name)) else {
                continue;
            };
            if let (Ok(req), Ok(lim)) = (quantity::parse(&requested.0), quantity::parse(&limit.0)) {
                if req > lim {
                    errors.push(FieldError::new(
                        format!("{f}.resources.requests[{name}]"),
                        format!("Invalid value: {:?}: must be less than or equal to {name} limit of {:?}", requested.0, limit.0),
                    ));
                }
            }
        }
    }
    for (which, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            validate_probe(p, &format!("{f}.{which}"), errors);
        }
    }
}

fn validate_container_port(
    p: &ContainerPort,
    f: &str,
    port_names: &mut BTreeSet<String>,
    host_ports: &mut BTreeSet<(i32, String)>,
    errors: &mut Vec<FieldError>,
) {
    if !(1..=65535).contains(&p.container_port) {
        errors.push(FieldError::new(
            format!("{f}.containerPort"),
            format!(
                "Invalid value: {}: must be between 1 and 65535, inclusive",
                p.container_port
            ),
        ));
    }
    if let Some(h) = p.host_port.filter(|h| *h != 0) {
        if !(1..=65535).contains(&h) {
            errors.push(FieldError::new(
                format!("{f}.hostPort"),
                format!("Invalid value: {h}: must be between 1 and 65535, inclusive"),
            ));
        } else if !host_ports.insert((h, p.protocol.clone().unwrap_or_default())) {
            errors.push(FieldError::new(
                format!("{f}.hostPort"),
                format!("Duplicate value: {h}"),
            ));
        }
    }
    one_of(
        errors,
        format!("{f}.protocol"),
        p.protocol.as_deref(),
        &["TCP", "UDP", "SCTP"],
    );
    if let Some(n) = &p.name {
        if let Some(e) = names::iana_svc_name(n) {
            errors.push(FieldError::new(format!("{f}.name"), e));
        } else if !port_names.insert(n.clone()) {
            errors.push(FieldError::new(
                format!("{f}.name"),
                format!("Duplicate value: {n:?}"),
            ));
        }
    }
}

fn validate_probe(p: &Probe, f: &str, errors: &mut Vec<FieldError>) {
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.grpc.is_some(),
    ]
    .into_iter()
    .filter(|h| *h)
    .count();
    if handlers != 1 {
        errors.push(FieldError::new(
            f.to_string(),
            "must specify exactly one handler type (exec, httpGet, tcpSocket or grpc)",
        ));
    }
    for (name, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v {
            let min = if name == "initialDelaySeconds" { 0 } else { 1 };
            if v < min {
                errors.push(FieldError::new(
                    format!("{f}.{name}"),
                    format!("must be greater than or equal to {min}"),
                ));
            }
        }
    }
    let port = p
        .http_get
        .as_ref()
        .map(|h| &h.port)
        .or(p.tcp_socket.as_ref().map(|t| &t.port));
    if let Some(port) = port {
        let field = if p.http_get.is_some() {
            "httpGet.port"
        } else {
            "tcpSocket.port"
        };
        if let Some(e) = port_reference(port) {
            errors.push(FieldError::new(format!("{f}.{field}"), e));
        }
    }
}

/// A port given as a number (1-65535) or a port name.
pub fn port_reference(port: &IntOrString) -> Option<String> {
    match port {
        IntOrString::Int(n) if !(1..=65535).contains(n) => Some(format!(
            "Invalid value: {n}: must be between 1 and 65535, inclusive"
        )),
        IntOrString::Int(_) => None,
        IntOrString::String(s) => names::iana_svc_name(s),
    }
}
