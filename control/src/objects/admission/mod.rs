//! Admission: an incoming object is decoded into its Kubernetes type (so wrong types are
//! refused with the field's path), given Kubernetes' defaults, and validated; every problem
//! is reported with its field. What comes out is the object as stored.
//!
//! Each kind's strategy ([`super::kinds`]) admits through [`typed`] with its own defaults and
//! checks, which live here by family: [`pod`] (also pod templates; [`unsupported`] names the
//! fields the agent does not carry out), [`workloads`], [`stateful_set`], [`batch`], [`policy`],
//! [`storage`], [`service`], [`other`].

pub mod batch;
pub mod other;
pub mod pod;
pub mod policy;
pub mod service;
pub mod stateful_set;
pub mod storage;
pub mod unsupported;
pub mod workloads;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use skiff_proto::kinds::KindInfo;

use super::error::{FieldError, ObjectError, Result};
use super::kinds::Strategy;
use super::names;

/// Largest total size of an object's annotations.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

fn invalid(kind: &KindInfo, obj: &Value, errors: Vec<FieldError>) -> ObjectError {
    ObjectError::Invalid {
        kind: kind.kind.to_string(),
        name: obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        errors,
    }
}

/// Check that `obj` declares `kind` (filling in apiVersion and kind when absent).
pub fn check_type(kind: &KindInfo, obj: &mut Value) -> Result<()> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ObjectError::bad("object", "must be a JSON object"));
    };
    let api_version = kind.api_version();
    let declared_kind = map.get("kind").and_then(Value::as_str).map(str::to_string);
    let declared_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut errors = Vec::new();
    match declared_kind.as_deref() {
        None => {
            map.insert("kind".into(), kind.kind.into());
        }
        Some(k) if k == kind.kind => {}
        Some(k) => errors.push(FieldError::new(
            "kind",
            format!(
                "{k:?} does not match the resource {:?} ({})",
                kind.plural, kind.kind
            ),
        )),
    }
    match declared_version.as_deref() {
        None => {
            map.insert("apiVersion".into(), api_version.into());
        }
        Some(v) if v == api_version => {}
        Some(v) => errors.push(FieldError::new(
            "apiVersion",
            format!("{v:?} is not served for {}; use {api_version:?}", kind.kind),
        )),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(kind, obj, errors))
    }
}

fn validate_meta(strategy: &dyn Strategy, meta: &ObjectMeta) -> Vec<FieldError> {
    let kind = strategy.info();
    let mut errors = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => errors.push(FieldError::new(
            "metadata.name",
            "Required value: name or generateName is required",
        )),
        Some(name) => {
            if let Some(e) = strategy.name_rule(name) {
                errors.push(FieldError::new("metadata.name", e));
            }
        }
    }
    if kind.namespaced {
        if let Some(e) = meta.namespace.as_deref().and_then(names::dns1123_label) {
            errors.push(FieldError::new("metadata.namespace", e));
        }
    }
    for (k, v) in meta.labels.iter().flatten() {
        if let Some(e) = names::qualified_name(k) {
            errors.push(FieldError::new("metadata.labels", e));
        }
        if let Some(e) = names::label_value(v) {
            errors.push(FieldError::new(format!("metadata.labels[{k}]"), e));
        }
    }
    let mut annotations_size = 0;
    for (k, v) in meta.annotations.iter().flatten() {
        annotations_size += k.len() + v.len();
        if let Some(e) = names::qualified_name(k) {
            errors.push(FieldError::new("metadata.annotations", e));
        }
    }
    if annotations_size > ANNOTATIONS_MAX_BYTES {
        errors.push(FieldError::new(
            "metadata.annotations",
            format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
        ));
    }
    for (i, f) in meta.finalizers.iter().flatten().enumerate() {
        if let Some(e) = names::qualified_name(f) {
            errors.push(FieldError::new(format!("metadata.finalizers[{i}]"), e));
        }
    }
    let mut controllers = 0;
    for (i, o) in meta.owner_references.iter().flatten().enumerate() {
        let f = format!("metadata.ownerReferences[{i}]");
        for (field, v) in [
            ("apiVersion", &o.api_version),
            ("kind", &o.kind),
            ("name", &o.name),
            ("uid", &o.uid),
        ] {
            if v.is_empty() {
                errors.push(FieldError::new(format!("{f}.{field}"), "Required value"));
            }
        }
        if o.controller == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        errors.push(FieldError::new(
            "metadata.ownerReferences",
            "Invalid value: only one reference can have Controller set to true",
        ));
    }
    errors
}

/// Admit `obj` as a `K` for `strategy`: the declared type checked, decoded (a wrong type is
/// refused with its path), given `default`, then the metadata and `validate` checked.
pub fn typed<K>(
    strategy: &dyn Strategy,
    mut obj: Value,
    default: fn(&mut K),
    validate: fn(&K) -> Vec<FieldError>,
) -> Result<Value>
where
    K: DeserializeOwned + Serialize + Metadata<Ty = ObjectMeta>,
{
    let kind = strategy.info();
    check_type(kind, &mut obj)?;
    let mut typed: K = match serde_path_to_error::deserialize(&obj) {
        Ok(t) => t,
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." {
                "object".to_string()
            } else {
                path
            };
            return Err(invalid(
                kind,
                &obj,
                vec![FieldError::new(field, e.inner().to_string())],
            ));
        }
    };
    default(&mut typed);
    let mut errors = validate_meta(strategy, typed.metadata());
    errors.extend(validate(&typed));
    if !errors.is_empty() {
        return Err(invalid(kind, &obj, errors));
    }
    serde_json::to_value(&typed).map_err(|e| ObjectError::bad("object", e.to_string()))
}

/// Refuse the update of `current` to `next` (both admitted `K`s) if `changes` finds fields
/// that may not change.
pub fn typed_changes<K: DeserializeOwned>(
    kind: &KindInfo,
    current: &Value,
    next: &Value,
    changes: fn(&K, &K) -> Vec<FieldError>,
) -> Result<()> {
    let decode = |v: &Value| serde_json::from_value::<K>(v.clone()).ok();
    let (Some(a), Some(b)) = (decode(current), decode(next)) else {
        return Ok(());
    };
    let errors = changes(&a, &b);
    if errors.is_empty() {
        return Ok(());
    }
    Err(invalid(kind, next, errors))
}

/// The `k8s-openapi` traits [`typed`] needs (`Resource`, `Metadata`), for a kind of Skiff's
/// own whose struct has a `metadata: ObjectMeta` field:
/// `object_type!(User, "auth.skiff.dev", "v1", "User", "users", ClusterResourceScope)`.
#[macro_export]
macro_rules! object_type {
    ($ty:ty, $group:literal, $version:literal, $kind:literal, $plural:literal, $scope:ident) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = concat!($group, "/", $version);
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::$scope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

            fn metadata(&self) -> &Self::Ty {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.metadata
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::objects::kinds::Registry;

    fn admit_as(resource: &str, obj: Value) -> Result<Value> {
        let registry = Registry::builtin(Default::default());
        registry.resolve(resource)?.admit(obj)
    }

    fn errors_of(r: Result<Value>) -> String {
        r.expect_err("must be refused").to_string()
    }

    fn deployment(replicas: i64, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}
        })
    }

    #[test]
    fn a_pod_on_the_node_network_takes_its_container_ports_as_host_ports() {
        let pod = |ports: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"hostNetwork": true, "hostPID": true, "hostIPC": true,
                            "containers": [{"name": "c", "image": "busybox:1.36", "ports": ports}]}})
        };
        let mut p = pod(json!([{"containerPort": 9100}]));
        // An init container may use the port its app container takes after it.
        p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox:1.36",
                                              "ports": [{"containerPort": 9100}]}]);
        let p = admit_as("pods", p)
            .expect("a pod on the node network with init and app ports is admitted");
        assert_eq!(p["spec"]["containers"][0]["ports"][0]["hostPort"], 9100);
        assert_eq!(p["spec"]["initContainers"][0]["ports"][0]["hostPort"], 9100);
        let e = errors_of(admit_as(
            "pods",
            pod(json!([{"containerPort": 9100, "hostPort": 8080}])),
        ));
        assert!(
            e.contains("spec.containers[0].ports[0].containerPort")
                && e.contains("must match `hostPort` when `hostNetwork` is true"),
            "{e}"
        );
    }

    #[test]
    fn a_daemon_set_gets_defaults_and_its_update_bounds_are_checked() {
        let ds = |rolling: Value| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                   "spec": {"selector": {"matchLabels": {"app": "agent"}},
                            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
                            "template": {"metadata": {"labels": {"app": "agent"}},
                                         "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}})
        };
        let d = admit_as("daemonsets", ds(json!({}))).unwrap();
        let ru = &d["spec"]["updateStrategy"]["rollingUpdate"];
        assert_eq!(
            (&ru["maxUnavailable"], &ru["maxSurge"]),
            (&json!(1), &json!(0))
        );
        assert_eq!(admit_as("daemonsets", d.clone()).unwrap(), d);
        let e = errors_of(admit_as(
            "daemonsets",
            ds(json!({"maxUnavailable": 0, "maxSurge": 0})),
        ));
        assert!(
            e.contains("spec.updateStrategy.rollingUpdate.maxUnavailable")
                && e.contains("may not be 0"),
            "{e}"
        );
        let e = errors_of(admit_as(
            "daemonsets",
            ds(json!({"maxUnavailable": 1, "maxSurge": "20%"})),
        ));
        assert!(
            e.contains("may not be set when maxSurge is non-zero"),
            "{e}"
        );
        assert!(admit_as(
            "daemonsets",
            ds(json!({"maxUnavailable": 0, "maxSurge": "20%"}))
        )
        .is_ok());
    }

    #[test]
    fn deployment_gets_kubernetes_defaults() {
        let d = admit_as("deployments", deployment(3, json!({"app": "web"}))).unwrap();
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            "25%"
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        // Defaulting twice changes nothing: re-applying stays "unchanged".
        assert_eq!(admit_as("deployments", d.clone()).unwrap(), d);
    }

    #[test]
    fn invalid_workloads_name_the_field() {
        let e = errors_of(admit_as(
            "deployments",
            deployment(-1, json!({"app": "web"})),
        ));
        assert!(
            e.contains("spec.replicas") && e.contains("greater than or equal to 0"),
            "{e}"
        );
        let e = errors_of(admit_as("deployments", deployment(1, json!({"app": "db"}))));
        assert!(
            e.contains("spec.template.metadata.labels") && e.contains("does not match"),
            "{e}"
        );
        let mut bad_name = deployment(1, json!({"app": "web"}));
        bad_name["metadata"]["name"] = json!("Web_1");
        let e = errors_of(admit_as("deployments", bad_name));
        assert!(e.contains("metadata.name") && e.contains("DNS-1123"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_path() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "eighty"}]}]}});
        let e = errors_of(admit_as("pods", pod));
        assert!(
            e.contains("spec.containers[0].ports[0].containerPort"),
            "{e}"
        );
    }

    #[test]
    fn pods_need_unique_container_names_and_valid_ports() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "ports": [{"containerPort": 70000}]},
            {"name": "c", "image": "i"}]}});
        let e = errors_of(admit_as("pods", pod));
        assert!(
            e.contains("spec.containers[1].name") && e.contains("Duplicate"),
            "{e}"
        );
        assert!(
            e.contains("spec.containers[0].ports[0].containerPort"),
            "{e}"
        );
    }

    #[test]
    fn services_default_and_validate() {
        let s = admit_as("services", json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).unwrap();
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        let e = errors_of(admit_as(
            "services",
            json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}}),
        ));
        assert!(e.contains("spec.ports[0].nodePort"), "{e}");
    }

    #[test]
    fn services_get_the_address_family_defaults_of_a_single_stack_cluster() {
        let lb = admit_as("services", json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}})).unwrap();
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(lb["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(admit_as("services", lb.clone()).unwrap(), lb);
        let headless = admit_as("services", json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})).unwrap();
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
        let external = admit_as("services", json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example.test"}})).unwrap();
        assert_eq!(external["spec"]["sessionAffinity"], "None");
        assert!(external["spec"].get("ipFamilies").is_none());
        let e = errors_of(admit_as(
            "services",
            json!({"metadata": {"name": "v6"}, "spec": {"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}}),
        ));
        assert!(
            e.contains("spec.ipFamilies[0]") && e.contains("single-stack"),
            "{e}"
        );
        let e = errors_of(admit_as(
            "services",
            json!({"metadata": {"name": "ds"}, "spec": {"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}}),
        ));
        assert!(e.contains("spec.ipFamilyPolicy"), "{e}");
    }

    #[test]
    fn replication_controllers_take_their_selector_from_the_template() {
        let rc = admit_as("replicationcontrollers", json!({"metadata": {"name": "rc"}, "spec": {"template": {"metadata": {"labels": {"app": "rc"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}})).unwrap();
        assert_eq!(rc["spec"]["selector"], json!({"app": "rc"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "rc"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        let e = errors_of(admit_as(
            "replicationcontrollers",
            json!({"metadata": {"name": "rc"}, "spec": {"selector": {"app": "other"}, "template": {"metadata": {"labels": {"app": "rc"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}}),
        ));
        assert!(e.contains("spec.template.metadata.labels"), "{e}");
    }

    #[test]
    fn kind_must_match_the_resource() {
        let e = errors_of(admit_as(
            "pods",
            json!({"kind": "Service", "metadata": {"name": "x"}}),
        ));
        assert!(e.contains("kind"), "{e}");
    }

    #[test]
    fn secrets_fold_string_data() {
        let s = admit_as(
            "secrets",
            json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}}),
        )
        .unwrap();
        assert_eq!(s["data"]["password"], "aHVudGVyMg==");
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
    }
}
