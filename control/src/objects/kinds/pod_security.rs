//! The Pod Security "baseline" level, by namespace label, as Kubernetes' Pod Security
//! Admission enforces it: a pod that asks for the host (privileged containers, hostPath
//! volumes, the host's network, PID or IPC namespace, host ports, capabilities beyond the
//! baseline set) is refused unless its namespace is labelled
//! `pod-security.kubernetes.io/enforce: privileged` (`kube-system` and `skiff-system` are,
//! from the start). Unlike Kubernetes, an unlabelled namespace is held to baseline: secure by
//! default.

use serde_json::Value;

use super::StoreView;
use crate::objects::error::{ObjectError, Result};
use crate::objects::meta::meta_str;

/// The label that sets a namespace's level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Capabilities baseline lets a container add.
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The level of namespace `ns`: its label, or `baseline`.
fn level(view: &dyn StoreView, ns: &str) -> Result<String> {
    let key = skiff_proto::kinds::NAMESPACE.key("", ns);
    let found = view
        .range(&key)?
        .into_iter()
        .find(|kv| kv.key == key.as_bytes());
    let Some(kv) = found else {
        return Ok("baseline".into());
    };
    let obj: Value = serde_json::from_slice(&kv.value).map_err(|e| ObjectError::Corrupt {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    Ok(obj
        .pointer("/metadata/labels")
        .and_then(|l| l.get(ENFORCE_LABEL))
        .and_then(Value::as_str)
        .unwrap_or("baseline")
        .to_string())
}

/// What in `pod` breaks baseline, as Kubernetes words it.
pub fn baseline_violations(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(spec) = pod.get("spec") else {
        return out;
    };
    for (field, what) in [
        ("hostNetwork", "hostNetwork=true"),
        ("hostPID", "hostPID=true"),
        ("hostIPC", "hostIPC=true"),
    ] {
        if spec.get(field).and_then(Value::as_bool) == Some(true) {
            out.push(format!("host namespaces ({what})"));
        }
    }
    let host_paths: Vec<&str> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some())
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    if !host_paths.is_empty() {
        out.push(format!("hostPath volumes ({})", quoted(&host_paths)));
    }
    let containers = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten();
    let (mut privileged, mut caps, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for c in containers {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let sc = c.get("securityContext");
        if sc
            .and_then(|s| s.get("privileged"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            privileged.push(name);
        }
        let added = sc
            .and_then(|s| s.pointer("/capabilities/add"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|c| c.trim_start_matches("CAP_").to_ascii_uppercase());
        for cap in added {
            if !BASELINE_CAPS.contains(&cap.as_str()) {
                caps.push(format!("{name}:{cap}"));
            }
        }
        let host_port = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0);
        if host_port {
            ports.push(name);
        }
    }
    if !privileged.is_empty() {
        out.push(format!(
            "privileged (containers {} must not set securityContext.privileged=true)",
            quoted(&privileged)
        ));
    }
    if !caps.is_empty() {
        out.push(format!(
            "non-default capabilities ({} beyond the baseline set)",
            caps.join(", ")
        ));
    }
    if !ports.is_empty() {
        out.push(format!("hostPort (containers {})", quoted(&ports)));
    }
    out
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuse `pod` if it breaks its namespace's level.
pub fn check(view: &dyn StoreView, pod: &Value) -> Result<()> {
    let ns = meta_str(pod, "namespace").unwrap_or("default");
    if level(view, ns)? == "privileged" {
        return Ok(());
    }
    let broken = baseline_violations(pod);
    if broken.is_empty() {
        return Ok(());
    }
    Err(ObjectError::PolicyDenied(format!(
        "pods {:?} is forbidden: violates PodSecurity \"baseline\" of namespace {ns:?}: {}; label the namespace {ENFORCE_LABEL}=privileged to allow it",
        meta_str(pod, "name").unwrap_or(""),
        broken.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn baseline_names_what_asks_for_the_host() {
        let pod = json!({"spec": {
        "hostNetwork": true,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}],
        "containers": [
            {"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}},
            {"name": "b", "ports": [{"containerPort": 80, "hostPort": 8080}]}
        ]}});
        let v = baseline_violations(&pod);
        assert_eq!(v.len(), 5, "{v:?}");
        assert!(v[0].contains("hostNetwork"));
        assert!(v.iter().any(|x| x.contains("hostPath volumes (\"root\")")));
        assert!(v
            .iter()
            .any(|x| x.contains("privileged") && x.contains("\"a\"")));
        assert!(v
            .iter()
            .any(|x| x.contains("a:NET_ADMIN") && !x.contains("CHOWN")));
        let fine = json!({"spec": {"containers": [{"name": "c", "securityContext": {"runAsUser": 1000}}]}});
        assert!(baseline_violations(&fine).is_empty());
    }
}
