//! What a container takes from the API besides its pod: environment variables (literal,
//! `$(VAR)` references, ConfigMap and Secret keys, pod fields) and the files of ConfigMap and
//! Secret volumes. A missing non-optional source is a `CreateContainerConfigError` that names it.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::api::PodApi;
use crate::runtime::oci_spec::expand;

/// Why a container's configuration cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

/// A ConfigMap or a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// ConfigMap.
    ConfigMap,
    /// Secret.
    Secret,
}

impl SourceKind {
    /// `configmap` or `secret`, as messages name it.
    pub fn word(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmap",
            Self::Secret => "secret",
        }
    }
}

async fn key_of(
    api: &impl PodApi,
    ns: &str,
    kind: SourceKind,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, ConfigError> {
    match api.source_data(ns, kind, name).await? {
        Some(data) => match data.get(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!(
                "couldn't find key {key} in {} {ns}/{name}",
                kind.word()
            ))),
        },
        None if optional => Ok(None),
        None => Err(ConfigError(format!("{} {name:?} not found", kind.word()))),
    }
}

/// A container's resource as the downward API gives it (`resourceFieldRef`): its limit or
/// request divided by `divisor` (default 1), rounded up. A limit not set is the node's
/// allocatable (`node`: cpu millicores and memory bytes, each × 1000 as quantities count),
/// a request not set its limit's value when set, else 0.
fn resource_of(
    pod: &Pod,
    own: &Container,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    node: (i128, i128),
) -> Result<String, String> {
    use skiff_proto::quantity;
    let c = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => own,
        Some(name) => pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|c| c.name == name)
            .ok_or_else(|| format!("resourceFieldRef: no container {name:?} in the pod"))?,
    };
    let (kind, resource) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("resourceFieldRef: unsupported resource {:?}", r.resource))?;
    let of = |map: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| {
        map.and_then(|m| m.get(resource))
            .and_then(|q| quantity::parse(&q.0).ok())
            .map(|q| q.millis)
    };
    let res = c.resources.as_ref();
    let limit = of(res.and_then(|r| r.limits.as_ref()));
    let node_value = match resource {
        "cpu" => node.0,
        "memory" => node.1,
        "ephemeral-storage" => 0,
        _ => {
            return Err(format!(
                "resourceFieldRef: unsupported resource {:?}",
                r.resource
            ))
        }
    };
    let value = match kind {
        "limits" => limit.unwrap_or(node_value),
        "requests" => of(res.and_then(|r| r.requests.as_ref()))
            .or(limit)
            .unwrap_or(0),
        _ => {
            return Err(format!(
                "resourceFieldRef: unsupported resource {:?}",
                r.resource
            ))
        }
    };
    let divisor = match &r.divisor {
        Some(d) => {
            quantity::parse(&d.0)
                .map_err(|e| format!("resourceFieldRef: divisor {:?}: {e}", d.0))?
                .millis
        }
        None => 1000,
    };
    if divisor <= 0 {
        return Err("resourceFieldRef: the divisor must be above zero".into());
    }
    Ok(((value + divisor - 1) / divisor).to_string())
}

fn field_of(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, ConfigError> {
    let m = &pod.metadata;
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ip.to_string(),
        "status.hostIP" => host_ip.to_string(),
        other => {
            if let Some(label) = other
                .strip_prefix("metadata.labels['")
                .and_then(|r| r.strip_suffix("']"))
            {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(label).cloned())
                    .unwrap_or_default()
            } else if let Some(ann) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|r| r.strip_suffix("']"))
            {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(ann).cloned())
                    .unwrap_or_default()
            } else {
                return Err(ConfigError(format!("fieldRef {other:?} is not supported")));
            }
        }
    })
}

/// The container's environment over `base` (the service links), resolved in order (later
/// `$(VAR)` see earlier ones).
pub async fn environment(
    api: &impl PodApi,
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    host_ip: &str,
    base: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = base;
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = if let Some(r) = &from.config_map_ref {
            (
                SourceKind::ConfigMap,
                r.name.clone(),
                r.optional.unwrap_or(false),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                SourceKind::Secret,
                r.name.clone(),
                r.optional.unwrap_or(false),
            )
        } else {
            continue;
        };
        match api.source_data(&ns, kind, &name).await? {
            Some(data) => {
                for (k, v) in data {
                    set(
                        &mut env,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => return Err(ConfigError(format!("{} {name:?} not found", kind.word()))),
        }
    }
    for var in c.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            Some(expand(v, &env))
        } else if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                key_of(
                    api,
                    &ns,
                    SourceKind::ConfigMap,
                    &r.name,
                    &r.key,
                    r.optional.unwrap_or(false),
                )
                .await?
            } else if let Some(r) = &from.secret_key_ref {
                key_of(
                    api,
                    &ns,
                    SourceKind::Secret,
                    &r.name,
                    &r.key,
                    r.optional.unwrap_or(false),
                )
                .await?
            } else if let Some(r) = &from.field_ref {
                Some(field_of(pod, &r.field_path, pod_ip, host_ip)?)
            } else if let Some(r) = &from.resource_field_ref {
                let host = crate::host::read();
                let node = (
                    i128::from(host.cpus) * 1000,
                    i128::from(host.memory_kib) * 1024 * 1000,
                );
                Some(
                    resource_of(pod, c, r, node)
                        .map_err(|e| ConfigError(format!("env {}: {e}", var.name)))?,
                )
            } else {
                Some(String::new())
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(&mut env, var.name.clone(), v);
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn resources_resolve_as_the_downward_api_gives_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [
                {"name": "app", "image": "x", "resources": {
                    "limits": {"cpu": "500m", "memory": "64Mi"},
                    "requests": {"cpu": "250m"}}},
                {"name": "side", "image": "x"}
            ]}
        }))
        .unwrap();
        let spec = pod.spec.clone().unwrap();
        let (app, side) = (&spec.containers[0], &spec.containers[1]);
        let node = (4000, 8 * 1024 * 1024 * 1024 * 1000_i128);
        let get = |c: &Container, resource: &str, divisor: Option<&str>, other: Option<&str>| {
            let r = k8s_openapi::api::core::v1::ResourceFieldSelector {
                container_name: other.map(String::from),
                resource: resource.into(),
                divisor: divisor
                    .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
            };
            resource_of(&pod, c, &r, node)
        };
        assert_eq!(get(app, "limits.cpu", None, None).unwrap(), "1");
        assert_eq!(get(app, "limits.cpu", Some("1m"), None).unwrap(), "500");
        assert_eq!(get(app, "requests.cpu", Some("1m"), None).unwrap(), "250");
        assert_eq!(get(app, "limits.memory", Some("1Mi"), None).unwrap(), "64");
        assert_eq!(get(side, "limits.cpu", None, None).unwrap(), "4");
        assert_eq!(get(side, "requests.memory", None, None).unwrap(), "0");
        assert_eq!(
            get(side, "limits.memory", Some("1Mi"), Some("app")).unwrap(),
            "64"
        );
        assert!(get(app, "limits.gpu", None, None).is_err());
    }

    #[test]
    fn pod_fields_resolve() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(field_of(&pod, "metadata.name", "", "").unwrap(), "web-1");
        assert_eq!(
            field_of(&pod, "status.podIP", "10.0.0.2", "").unwrap(),
            "10.0.0.2"
        );
        assert_eq!(
            field_of(&pod, "metadata.labels['app']", "", "").unwrap(),
            "web"
        );
        assert!(field_of(&pod, "spec.bogus", "", "")
            .unwrap_err()
            .0
            .contains("spec.bogus"));
    }
}
