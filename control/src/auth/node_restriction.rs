//! What a node agent may touch, as Kubernetes' Node authorizer and NodeRestriction admission
//! allow a kubelet: its own Node and Lease, the pods bound to it (read, their status, the end
//! of their deletion) and the Secrets, ConfigMaps and claims those pods use; never another
//! node's.

use serde_json::Value;

use super::request::ObjectAsk;
use super::rules::Verb;
use crate::objects::selectors::{FieldSelector, Selector};
use crate::objects::store::ListOptions;
use crate::objects::{ObjectError, ObjectStore};

/// Where node agents keep their Leases.
pub const LEASE_NAMESPACE: &str = "skiff-system";

/// Whether the agent of `node` may do `ask`; the reason when not.
pub async fn check(store: &ObjectStore, node: &str, ask: &ObjectAsk<'_>) -> Result<(), String> {
    let plural = ask.kind.map(|k| k.plural).unwrap_or("");
    match (ask.verb, plural) {
        (Verb::List | Verb::Watch, "pods") => {
            let own = format!("spec.nodeName={node}");
            if ask.field_selector == own {
                Ok(())
            } else {
                Err(format!(
                    "a node lists and watches only its own pods (fieldSelector {own})"
                ))
            }
        }
        (Verb::Get | Verb::Delete, "pods") => bound_here_or_gone(store, node, ask).await,
        (Verb::Update | Verb::Patch, "pods") if ask.status => {
            bound_here_or_gone(store, node, ask).await
        }
        (Verb::Update | Verb::Patch, "pods") => {
            Err("a node changes only the status of its pods".into())
        }
        (Verb::Get, "secrets" | "configmaps" | "persistentvolumeclaims") => {
            if used_here(store, node, plural, &ask.namespace, &ask.name).await? {
                Ok(())
            } else {
                Err(format!(
                    "no pod on node {node} uses {plural} {}/{}",
                    ask.namespace, ask.name
                ))
            }
        }
        (Verb::Create | Verb::Update | Verb::Patch, "nodes") if ask.name != node => Err(format!(
            "node {node} may change only its own Node, not {:?}",
            ask.name
        )),
        (Verb::Get | Verb::Create | Verb::Update | Verb::Patch, "leases")
            if ask.name != node || ask.namespace != LEASE_NAMESPACE =>
        {
            Err(format!(
                "node {node} may use only its own Lease {LEASE_NAMESPACE}/{node}"
            ))
        }
        _ => Ok(()),
    }
}

/// The pod is bound to `node`, or there is no such pod (the handler answers NotFound).
async fn bound_here_or_gone(
    store: &ObjectStore,
    node: &str,
    ask: &ObjectAsk<'_>,
) -> Result<(), String> {
    let pod = match store.get("pods", &ask.namespace, &ask.name, true).await {
        Ok((bytes, _)) => serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string())?,
        Err(ObjectError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        Some(n) if n == node => Ok(()),
        _ => Err(format!(
            "pod {}/{} is not bound to node {node}",
            ask.namespace, ask.name
        )),
    }
}

/// Whether a pod bound to `node` in `namespace` uses the Secret, ConfigMap or claim `name`.
async fn used_here(
    store: &ObjectStore,
    node: &str,
    plural: &str,
    namespace: &str,
    name: &str,
) -> Result<bool, String> {
    let opts = ListOptions {
        namespace: namespace.to_string(),
        labels: Selector::default(),
        fields: FieldSelector::parse("fieldSelector", &format!("spec.nodeName={node}"))
            .map_err(|e| e.to_string())?,
        stale: true,
        ..Default::default()
    };
    let pods = store.list("pods", &opts).await.map_err(|e| e.to_string())?;
    for bytes in &pods.items {
        let pod: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if let Some(spec) = pod.get("spec") {
            if references(spec, plural).iter().any(|n| n == name) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The names of the Secrets (`plural` "secrets"), ConfigMaps or claims a pod spec refers to:
/// volumes (projected ones too), env and envFrom of every container, image pull secrets.
pub fn references(spec: &Value, plural: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(spec, plural, None, &mut out);
    out
}

fn walk(v: &Value, plural: &str, parent: Option<&str>, out: &mut Vec<String>) {
    let holders: &[&str] = match plural {
        "secrets" => &["secretRef", "secretKeyRef", "secret", "imagePullSecrets"],
        "persistentvolumeclaims" => &["persistentVolumeClaim"],
        _ => &["configMap", "configMapRef", "configMapKeyRef"],
    };
    match v {
        Value::Object(map) => {
            if parent.is_some_and(|p| holders.contains(&p)) {
                let name = map
                    .get("name")
                    .or_else(|| map.get("secretName"))
                    .or_else(|| map.get("claimName"));
                if let Some(n) = name.and_then(Value::as_str) {
                    out.push(n.to_string());
                }
            }
            for (k, child) in map {
                walk(child, plural, Some(k), out);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, plural, parent, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pods_references_are_found_wherever_the_spec_makes_them() {
        let spec = json!({
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol-secret"}},
                {"name": "b", "configMap": {"name": "vol-cm"}},
                {"name": "c", "projected": {"sources": [{"secret": {"name": "proj-secret"}}]}}
            ],
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{
                "name": "c",
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                        {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "from-secret"}}, {"configMapRef": {"name": "from-cm"}}]
            }]
        });
        let mut secrets = references(&spec, "secrets");
        secrets.sort();
        assert_eq!(
            secrets,
            [
                "env-secret",
                "from-secret",
                "proj-secret",
                "pull",
                "vol-secret"
            ]
        );
        let mut cms = references(&spec, "configmaps");
        cms.sort();
        assert_eq!(cms, ["env-cm", "from-cm", "vol-cm"]);
    }
}
