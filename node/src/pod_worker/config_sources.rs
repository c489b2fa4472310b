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

/// The container's environment, resolved in order (later `$(VAR)` see earlier ones).
pub async fn environment(
    api: &impl PodApi,
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
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
            } else {
                return Err(ConfigError(format!(
                    "env {}: valueFrom.resourceFieldRef is not supported",
                    var.name
                )));
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
