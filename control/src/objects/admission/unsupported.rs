//! Pod fields the node agent does not carry out yet, refused at admission with their path
//! (in pods and in every workload's pod template), so that a manifest never runs as if they
//! were honoured when they are not. Each leaves this list when the agent learns it.

use k8s_openapi::api::core::v1::PodSpec;

use super::super::error::FieldError;

const WHY: &str = "Forbidden: not supported by Skiff's node agent";

fn refuse(errors: &mut Vec<FieldError>, field: String) {
    errors.push(FieldError::new(field, WHY));
}

/// The unsupported fields `spec` (at `path`) sets.
pub fn refused_fields(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    // The pod's containers do not share one process namespace (there is no pause process
    // to hold it), so they cannot see each other's processes.
    if spec.share_process_namespace == Some(true) {
        refuse(&mut errors, format!("{path}.shareProcessNamespace"));
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let supported = v.empty_dir.is_some()
            || v.host_path.is_some()
            || v.config_map.is_some()
            || v.secret.is_some()
            || v.persistent_volume_claim.is_some();
        if !supported {
            errors.push(FieldError::new(
                format!("{path}.volumes[{i}]"),
                format!(
                    "Unsupported value: volume {:?}: the node agent mounts emptyDir, hostPath, \
                     configMap, secret and persistentVolumeClaim volumes",
                    v.name
                ),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_the_agent_would_ignore_are_named() {
        let spec: PodSpec = serde_json::from_value(json!({
            "shareProcessNamespace": true,
            "imagePullSecrets": [{"name": "regcred"}],
            "containers": [{
                "name": "c", "image": "x",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "livenessProbe": {"grpc": {"port": 9090}},
                "readinessProbe": {"httpGet": {"port": 80, "scheme": "HTTPS"}},
                "lifecycle": {"postStart": {"exec": {"command": ["true"]}},
                              "preStop": {"exec": {"command": ["true"]}}},
                "env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
            }],
        }))
        .unwrap();
        let fields: Vec<String> = refused_fields(&spec, "spec")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.shareProcessNamespace"]);
        // What the agent does: the node's namespaces, a preStop exec hook, HTTPS and gRPC
        // probes, pull secrets, host ports.
        let fine: PodSpec = serde_json::from_value(json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "imagePullSecrets": [{"name": "regcred"}],
            "containers": [{
            "name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": 8080}],
            "readinessProbe": {"httpGet": {"port": 80, "scheme": "HTTPS",
                               "httpHeaders": [{"name": "X", "value": "y"}]}},
            "livenessProbe": {"grpc": {"port": 9090}},
            "lifecycle": {"preStop": {"exec": {"command": ["true"]}}},
        }]}))
        .unwrap();
        assert!(refused_fields(&fine, "spec").is_empty());
    }
}
