//! One pass over a volume: Available while no claim holds it, Bound once its claim names it,
//! Released when its claim is gone; a released volume of reclaim policy Delete is deleted
//! (its node removes a `local-path` folder once the volume is gone), one of Retain is kept
//! for an operator.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeStatus};
use skiff_proto::objects::{Api, DeleteParams};
use skiff_proto::ClientError;

use crate::controllers::context::Ctx;
use crate::controllers::ownership::revision_of;
use crate::controllers::runner::writes::Writes;
use crate::controllers::runner::{Action, ReconcileError};

/// What the volume's claim reference finds.
enum Claim {
    None,
    /// Its claim exists and names it.
    Bound,
    /// Its claim exists, or may (a reference without a uid), but is not bound to it yet.
    Binding,
    /// The claim it was bound to is gone.
    Gone,
}

async fn claim_state(ctx: &Ctx, pv: &PersistentVolume) -> Result<Claim, ClientError> {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return Ok(Claim::None);
    };
    let (ns, name) = (
        r.namespace.as_deref().unwrap_or(""),
        r.name.as_deref().unwrap_or(""),
    );
    let cached = ctx.claims.get(ns, name);
    let matches = |uid: Option<&str>| r.uid.is_none() || r.uid.as_deref() == uid;
    if let Some(c) = cached.filter(|c| matches(c.metadata.uid.as_deref())) {
        let names_it =
            c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == pv.metadata.name.as_deref();
        return Ok(if names_it {
            Claim::Bound
        } else {
            Claim::Binding
        });
    }
    if r.uid.is_none() {
        return Ok(Claim::Binding); // waits for a claim of that name
    }
    // The caches do not show it: the store decides, so a claim just made is never taken
    // for gone.
    match ctx
        .client
        .get_object("persistentvolumeclaims", ns, name, false)
        .await
    {
        Ok(got) => {
            let uid = serde_json::from_slice::<serde_json::Value>(&got.object)
                .ok()
                .and_then(|v| v.pointer("/metadata/uid")?.as_str().map(str::to_string));
            Ok(if matches(uid.as_deref()) {
                Claim::Binding
            } else {
                Claim::Gone
            })
        }
        Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => Ok(Claim::Gone),
        Err(e) => Err(e),
    }
}

/// Run one pass over `pv`.
pub async fn sync(ctx: &Ctx, pv: &PersistentVolume) -> Result<Action, ReconcileError> {
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::done());
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    let api: Api<PersistentVolume> = Api::new(ctx.client.clone(), "");
    let now = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let mut writes = Writes::default();
    let wanted = match claim_state(ctx, pv).await? {
        Claim::None => "Available",
        Claim::Bound => "Bound",
        Claim::Binding => return Ok(Action::done()),
        Claim::Gone if policy == "Delete" => {
            tracing::info!(volume = %name, "its claim is gone; deleting it (reclaim policy Delete)");
            let r = api.delete(&name, &DeleteParams::default()).await;
            writes.note(r, |_| 0);
            return writes.outcome();
        }
        Claim::Gone => "Released",
    };
    if now != Some(wanted) {
        let mut next = pv.clone();
        next.status = Some(PersistentVolumeStatus {
            phase: Some(wanted.into()),
            ..Default::default()
        });
        writes.note(api.update_status(&next).await, |v| revision_of(&v.metadata));
    }
    writes.outcome()
}
