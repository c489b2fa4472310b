//! The volume controller, as Kubernetes' PersistentVolume binder with k3s' `local-path`
//! provisioner built in: a claim gets the smallest available volume that fits it, or a new
//! `local-path` volume (a folder on the node its first pod was placed on); volumes follow
//! their claims (Available, Bound, Released, deleted with reclaim policy Delete); a claim
//! being deleted stays while a pod uses it (`kubernetes.io/pvc-protection`).
//!
//! Keyed by claim or by volume: a claim's change reaches itself and its volume, a volume's
//! itself and its claim (or, available, every waiting claim), a pod's the claims it mounts.
//!
//! - [`binding`]: one claim; [`provision`]: matching and making volumes; [`lifecycle`]: one
//!   volume.

pub mod binding;
pub mod lifecycle;
pub mod provision;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use super::context::Ctx;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};
use crate::objects::admission::storage::DEFAULT_CLASS_ANNOTATION;

/// The controller's name.
pub const NAME: &str = "volume";
/// The annotation the scheduler writes on a claim waiting for its first consumer: the node
/// that pod goes to.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// What one reconcile is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VolumeKey {
    /// A claim, by namespace and name.
    Claim(ObjectKey),
    /// A volume, by name.
    Volume(String),
}

impl std::fmt::Display for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Claim(k) => write!(f, "claim {k}"),
            Self::Volume(v) => write!(f, "volume {v}"),
        }
    }
}

/// The StorageClass of `claim`: the one it names, or the default when it names none.
pub fn class_of(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Option<Arc<StorageClass>> {
    match claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
    {
        Some("") => None,
        Some(name) => ctx.storage_classes.get("", name),
        None => default_class(ctx),
    }
}

/// The default StorageClass: the newest of those annotated so, as Kubernetes picks.
pub fn default_class(ctx: &Ctx) -> Option<Arc<StorageClass>> {
    ctx.storage_classes
        .iter()
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
        })
        .max_by_key(|c| super::ownership::created_at(&c.metadata))
}

fn pending_claims(ctx: &Ctx) -> Vec<VolumeKey> {
    ctx.claims
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
        .map(|c| VolumeKey::Claim(ObjectKey::of(&*c)))
        .collect()
}

fn claim_key(namespace: Option<&str>, name: Option<&str>) -> VolumeKey {
    VolumeKey::Claim(ObjectKey::new(
        namespace.unwrap_or_default(),
        name.unwrap_or_default(),
    ))
}

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let (c1, c2) = (ctx.clone(), ctx.clone());
    Runner::new(
        VolumeController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.claims.subscribe(), |c: &PersistentVolumeClaim| {
        let mut keys = vec![VolumeKey::Claim(ObjectKey::of(c))];
        if let Some(v) = c.spec.as_ref().and_then(|s| s.volume_name.clone()) {
            keys.push(VolumeKey::Volume(v));
        }
        keys
    })
    .watches(ctx.volumes.subscribe(), move |v: &PersistentVolume| {
        let mut keys = vec![VolumeKey::Volume(
            v.metadata.name.clone().unwrap_or_default(),
        )];
        match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            Some(r) => keys.push(claim_key(r.namespace.as_deref(), r.name.as_deref())),
            None => keys.extend(pending_claims(&c1)),
        }
        keys
    })
    .watches(ctx.storage_classes.subscribe(), move |_: &StorageClass| {
        pending_claims(&c2)
    })
    .watches(ctx.pods.subscribe(), |p: &Pod| {
        let ns = p.metadata.namespace.as_deref();
        p.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| claim_key(ns, Some(&c.claim_name)))
            .collect()
    })
    .run()
    .await
}

/// Reconciles one claim or volume.
pub struct VolumeController {
    ctx: Arc<Ctx>,
}

impl Reconciler for VolumeController {
    type Key = VolumeKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &VolumeKey) -> Result<Action, ReconcileError> {
        match key {
            VolumeKey::Claim(k) => match self.ctx.claims.get(&k.namespace, &k.name) {
                Some(claim) => binding::sync(&self.ctx, &claim).await,
                None => Ok(Action::done()), // its volume hears of it by its own key
            },
            VolumeKey::Volume(name) => match self.ctx.volumes.get("", name) {
                Some(pv) => lifecycle::sync(&self.ctx, &pv).await,
                None => Ok(Action::done()),
            },
        }
    }

    fn all_keys(&self) -> Vec<VolumeKey> {
        let claims = self
            .ctx
            .claims
            .object_keys()
            .into_iter()
            .map(VolumeKey::Claim);
        let volumes = self
            .ctx
            .volumes
            .object_keys()
            .into_iter()
            .map(|k| VolumeKey::Volume(k.name));
        claims.chain(volumes).collect()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.claims.wait_for(revision, timeout).await;
        self.ctx.volumes.wait_for(revision, timeout).await;
    }
}
