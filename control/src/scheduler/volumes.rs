//! What a pod's volume claims ask of its node: a bound claim's volume may be reachable from
//! some nodes only (its node affinity: a `local-path` folder is on one node); a claim of a
//! `WaitForFirstConsumer` class waits for the scheduler to pick the node, which it writes on
//! the claim (`volume.kubernetes.io/selected-node`) before binding the pod, and the volume
//! controller provisions there.

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaim, Pod,
};
use serde_json::json;
use skiff_proto::objects::{Api, ApiError};
use skiff_proto::Client;

use crate::controllers::context::Ctx;
use crate::controllers::runner::ObjectKey;
use crate::controllers::volume::{class_of, SELECTED_NODE};

/// The volume side of placing one pod.
#[derive(Debug, Default)]
pub struct VolumeAsk {
    /// Selectors the node must match (one per constrained volume).
    pub nodes: Vec<NodeSelector>,
    /// Claims that wait for the pod's node, to be told it.
    pub select_node: Vec<ObjectKey>,
}

fn on_node(name: &str) -> NodeSelector {
    NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![name.to_string()]),
            }]),
            match_expressions: None,
        }],
    }
}

/// What `pod`'s claims ask, or why it cannot be placed yet (as the scheduler words it).
pub fn ask(ctx: &Ctx, pod: &Pod) -> Result<VolumeAsk, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let mut out = VolumeAsk::default();
    let claims = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref());
    for c in claims {
        let Some(claim) = ctx.claims.get(ns, &c.claim_name) else {
            return Err(format!(
                "persistentvolumeclaim {:?} not found",
                c.claim_name
            ));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!(
                "persistentvolumeclaim {:?} is being deleted",
                c.claim_name
            ));
        }
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|v| !v.is_empty());
        if let Some(volume) = volume {
            // A volume not seen yet may be bound to one node: the pod waits to know.
            let Some(pv) = ctx.volumes.get("", volume) else {
                return Err(format!("persistentvolume {volume:?} not found"));
            };
            let affinity = pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref()?.required.clone());
            out.nodes.extend(affinity);
            continue;
        }
        let selected = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SELECTED_NODE));
        if let Some(node) = selected {
            // Its volume is being made there.
            out.nodes.push(on_node(node));
            continue;
        }
        let waits = class_of(ctx, &claim)
            .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        if !waits {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        out.select_node.push(ObjectKey::of(&*claim));
    }
    Ok(out)
}

/// Write `node` on each of `claims` as the node their first consumer goes to.
pub async fn tell_claims(
    client: &Client,
    claims: &[ObjectKey],
    node: &str,
) -> Result<(), ApiError> {
    for c in claims {
        let api: Api<PersistentVolumeClaim> = Api::new(client.clone(), &c.namespace);
        let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
        api.patch(&c.name, &patch).await?;
    }
    Ok(())
}
