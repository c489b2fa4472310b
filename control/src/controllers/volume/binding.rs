//! One pass over a claim: let it go once no pod uses it (it is being deleted); give it the
//! default class if it names none; bind it to the volume it names, to an available one, or
//! to one made for it (`local-path`, once its first pod has a node).
//!
//! A bind writes the volume's claim reference first (compare-and-swap on the volume, so two
//! claims never take one volume), then the claim's volume name, then both statuses; a pass
//! cut short anywhere is finished by the next one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, PersistentVolumeStatus,
};
use serde_json::json;
use skiff_proto::objects::Api;

use super::provision::{self, best_match, local_path_root, local_path_volume, reference};
use super::{class_of, default_class, SELECTED_NODE};
use crate::controllers::cache;
use crate::controllers::context::Ctx;
use crate::controllers::events::Involved;
use crate::controllers::ownership::revision_of;
use crate::controllers::runner::writes::Writes;
use crate::controllers::runner::{Action, ReconcileError};
use crate::objects::admission::storage::{LOCAL_PATH_PROVISIONER, PVC_PROTECTION};

/// Component name on Events.
const COMPONENT: &str = "persistentvolume-controller";

fn phase(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.status.as_ref()?.phase.as_deref()
}

fn volume_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()?
        .volume_name
        .as_deref()
        .filter(|v| !v.is_empty())
}

/// Whether a pod that has not finished mounts `claim`.
fn in_use(ctx: &Ctx, claim: &PersistentVolumeClaim) -> bool {
    let key = format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or(""),
        claim.metadata.name.as_deref().unwrap_or("")
    );
    ctx.pods.by_index(cache::CLAIM, &key).iter().any(|p| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    })
}

/// Whether a pod that has not finished mounts `claim`, by a fresh list of its namespace's
/// pods: the caches may not show a pod made a moment ago, and the claim's data is at stake.
async fn in_use_now(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
) -> Result<bool, skiff_proto::objects::ApiError> {
    let ns = claim.metadata.namespace.as_deref().unwrap_or("");
    let name = claim.metadata.name.as_deref().unwrap_or("");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::new(ctx.client.clone(), ns);
    let (list, _) = pods.list("", "").await?;
    Ok(list.iter().any(|p| {
        let finished = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        !finished
            && p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .any(|c| c.claim_name == name)
    }))
}

/// Run one pass over `claim`.
pub async fn sync(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Result<Action, ReconcileError> {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::new(ctx.client.clone(), &ns);
    let mut writes = Writes::default();

    if claim.metadata.deletion_timestamp.is_some() {
        let protected = claim
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == PVC_PROTECTION);
        if protected && !in_use(ctx, claim) && !in_use_now(ctx, claim).await? {
            let kept: Vec<&String> = claim
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != PVC_PROTECTION)
                .collect();
            let patch = json!({"metadata": {"finalizers": kept,
                "resourceVersion": claim.metadata.resource_version}});
            writes.note(api.patch(&name, &patch).await, |c| revision_of(&c.metadata));
        }
        return writes.outcome();
    }

    let bound_volume = volume_name(claim).map(str::to_string);
    if phase(claim) == Some("Bound") && bound_volume.is_some() {
        return Ok(Action::done());
    }
    let named_class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref());
    if named_class.is_none() && bound_volume.is_none() {
        if let Some(class) = default_class(ctx) {
            let patch = json!({"metadata": {"resourceVersion": claim.metadata.resource_version},
                "spec": {"storageClassName": class.metadata.name}});
            writes.note(api.patch(&name, &patch).await, |c| revision_of(&c.metadata));
            return writes.outcome();
        }
    }
    let class = class_of(ctx, claim);
    let involved = Involved::of(claim);

    // The volume it is bound to, or will be.
    let volume = match &bound_volume {
        Some(v) => ctx.volumes.get("", v),
        None => {
            let selected = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SELECTED_NODE))
                .cloned();
            let waits = class
                .as_ref()
                .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
            if waits && selected.is_none() {
                ctx.recorder.record(
                    &involved,
                    "Normal",
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                    COMPONENT,
                );
                return Ok(Action::done());
            }
            let node = selected.as_deref().and_then(|n| ctx.nodes.get("", n));
            // A volume reserved for this claim already (made by an earlier pass).
            let reserved = ctx
                .volumes
                .by_index(cache::CLAIM, &format!("{ns}/{name}"))
                .into_iter()
                .find(|pv| {
                    // Made for it, or reserved for it by name (a reference without a uid).
                    pv.spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .is_some_and(|r| r.uid.is_none() || r.uid == claim.metadata.uid)
                        && pv.metadata.deletion_timestamp.is_none()
                });
            match reserved.or_else(|| {
                best_match(ctx.volumes.iter(), claim, class.as_deref(), node.as_deref())
            }) {
                Some(pv) => Some(pv),
                None => {
                    return provision(ctx, claim, class, selected, node, &involved, writes).await
                }
            }
        }
    };
    let Some(pv) = volume else {
        ctx.recorder.record(
            &involved,
            "Warning",
            "VolumeMissing",
            &format!(
                "the claim names volume {:?}, which does not exist",
                bound_volume.unwrap_or_default()
            ),
            COMPONENT,
        );
        return Ok(Action::requeue_after(Duration::from_secs(10)));
    };
    bind(ctx, claim, &pv, writes).await
}

/// Make a volume for `claim`, if its class's provisioner is Skiff's and its node is known.
async fn provision(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    class: Option<Arc<k8s_openapi::api::storage::v1::StorageClass>>,
    selected: Option<String>,
    node: Option<Arc<k8s_openapi::api::core::v1::Node>>,
    involved: &Involved,
    mut writes: Writes,
) -> Result<Action, ReconcileError> {
    let warn = |reason: &str, message: &str| {
        ctx.recorder
            .record(involved, "Warning", reason, message, COMPONENT)
    };
    let Some(class) = class else {
        warn(
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        );
        return Ok(Action::done());
    };
    if class.provisioner != LOCAL_PATH_PROVISIONER {
        ctx.recorder.record(
            involved,
            "Normal",
            "ExternalProvisioning",
            &format!(
                "waiting for a volume to be created by the external provisioner {:?}",
                class.provisioner
            ),
            COMPONENT,
        );
        return Ok(Action::done());
    }
    let Some(selected) = selected else {
        warn(
            "ProvisioningFailed",
            "local-path volumes are folders on one node: the class needs volumeBindingMode WaitForFirstConsumer",
        );
        return Ok(Action::done());
    };
    let Some(node) = node else {
        warn(
            "ProvisioningFailed",
            &format!("node {selected:?} of the claim's first pod does not exist"),
        );
        return Ok(Action::requeue_after(Duration::from_secs(10)));
    };
    let root = match local_path_root(&node) {
        Ok(r) => r,
        Err(why) => {
            warn("ProvisioningFailed", &why);
            return Ok(Action::requeue_after(Duration::from_secs(10)));
        }
    };
    let pv = local_path_volume(claim, &class, &selected, &root);
    let api: Api<PersistentVolume> = Api::new(ctx.client.clone(), "");
    let made = api.create(&pv).await;
    if let Err(skiff_proto::objects::ApiError::Client(skiff_proto::ClientError::Rejected(s))) =
        &made
    {
        if s.code() == tonic::Code::AlreadyExists {
            return Ok(Action::done()); // an earlier pass made it; its event brings us back
        }
    }
    if writes.note(made, |v| revision_of(&v.metadata)) {
        ctx.recorder.record(
            involved,
            "Normal",
            "ProvisioningSucceeded",
            &format!(
                "Successfully provisioned volume {} on node {selected}",
                provision::volume_name(claim.metadata.uid.as_deref().unwrap_or(""))
            ),
            COMPONENT,
        );
    }
    writes.outcome()
}

/// Bind `claim` and `pv` to each other, as far as is not done yet.
async fn bind(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    mut writes: Writes,
) -> Result<Action, ReconcileError> {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::new(ctx.client.clone(), &ns);
    let volumes: Api<PersistentVolume> = Api::new(ctx.client.clone(), "");
    let spec = pv.spec.clone().unwrap_or_default();

    // 1. The volume names the claim (a volume reserved for another claim is not taken).
    let mut pv = pv.clone();
    let other_claim = |r: &k8s_openapi::api::core::v1::ObjectReference| {
        (r.uid.is_some() && r.uid != claim.metadata.uid)
            || r.name
                .as_deref()
                .is_some_and(|n| Some(n) != claim.metadata.name.as_deref())
            || r.namespace
                .as_deref()
                .is_some_and(|n| Some(n) != claim.metadata.namespace.as_deref())
    };
    match spec.claim_ref.as_ref() {
        Some(r) if other_claim(r) => {
            ctx.recorder.record(
                &Involved::of(claim),
                "Warning",
                "FailedBinding",
                &format!("volume {pv_name:?} is bound to another claim"),
                COMPONENT,
            );
            return Ok(Action::requeue_after(Duration::from_secs(10)));
        }
        Some(r) if r.uid.is_some() => {}
        _ => {
            let patch = json!({"metadata": {"resourceVersion": pv.metadata.resource_version},
                "spec": {"claimRef": reference(claim)}});
            match volumes.patch(&pv_name, &patch).await {
                Ok(v) => {
                    writes.wrote(revision_of(&v.metadata));
                    pv = v;
                }
                Err(e) => {
                    writes.fail(e);
                    return writes.outcome();
                }
            }
        }
    }
    // 2. The claim names the volume.
    let mut claim = claim.clone();
    if volume_name(&claim) != Some(pv_name.as_str()) {
        let patch = json!({"metadata": {"resourceVersion": claim.metadata.resource_version,
                "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"volumeName": pv_name}});
        match claims.patch(&name, &patch).await {
            Ok(c) => {
                writes.wrote(revision_of(&c.metadata));
                claim = c;
            }
            Err(e) => {
                writes.fail(e);
                return writes.outcome();
            }
        }
    }
    // 3. Both say Bound.
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        pv.status = Some(PersistentVolumeStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        writes.note(volumes.update_status(&pv).await, |v| {
            revision_of(&v.metadata)
        });
    }
    claim.status = Some(PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: spec.access_modes.clone(),
        capacity: spec.capacity.clone(),
        ..Default::default()
    });
    writes.note(claims.update_status(&claim).await, |c| {
        revision_of(&c.metadata)
    });
    writes.outcome()
}
