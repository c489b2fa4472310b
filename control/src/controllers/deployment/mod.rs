//! The Deployment controller: one ReplicaSet per pod template (named by the template's
//! hash), rolled out with RollingUpdate (maxSurge / maxUnavailable, counting only available
//! pods) or Recreate, with a revision history for `rollout undo`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use skiff_proto::objects::{Api, ApiError};

use super::cache;
use super::context::Ctx;
use super::ownership::{controller_ref, revision_of};
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// Label that ties a ReplicaSet and its pods to one template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Annotation with a ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// The controller's name.
pub const NAME: &str = "deployment";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    Runner::new(
        DeploymentController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.deployments.subscribe(), |d: &Deployment| {
        vec![ObjectKey::of(d)]
    })
    .watches(ctx.replicasets.subscribe(), |rs: &ReplicaSet| {
        cache::controller_key(rs, "Deployment")
            .into_iter()
            .collect()
    })
    .run()
    .await
}

/// Reconciles one Deployment.
pub struct DeploymentController {
    ctx: Arc<Ctx>,
}

impl Reconciler for DeploymentController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(d) = self.ctx.deployments.get(&key.namespace, &key.name) else {
            return Ok(Action::done());
        };
        let mut last = 0;
        match reconcile(&self.ctx, &d, &mut last).await {
            Ok(()) => Ok(Action::done().wrote(last)),
            Err(e) => Err(ReconcileError::after_write(last, e)),
        }
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.deployments.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.replicasets.wait_for(revision, timeout).await;
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// The hash that names a template's ReplicaSet (the hash label itself left out).
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let mut t = template.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(HASH_LABEL);
            if l.is_empty() {
                m.labels = None;
            }
        }
        if *m == ObjectMeta::default() {
            t.metadata = None;
        }
    }
    let text = serde_json::to_string(&t).unwrap_or_default();
    // Letters and digits Kubernetes uses for generated names.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = fnv(&text);
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The revision of a ReplicaSet.
pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `maxSurge` / `maxUnavailable` against `replicas`: surge rounds up, unavailable down.
pub fn resolve(v: Option<&IntOrString>, replicas: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = pct * i64::from(replicas);
            (if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            }) as i32
        }
    }
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(
    rs: &ReplicaSet,
    f: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32,
) -> i32 {
    rs.status.as_ref().map(f).unwrap_or(0)
}

/// Whether the ReplicaSet's status reflects its current spec.
fn settled(rs: &ReplicaSet) -> bool {
    rs.status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0)
        >= rs.metadata.generation.unwrap_or(0)
}

/// Available pods of a ReplicaSet, never more than it is asked to keep.
fn available_of(rs: &ReplicaSet) -> i32 {
    status_of(rs, |s| s.available_replicas.unwrap_or(0)).min(replicas_of(rs))
}

async fn scale(api: &Api<ReplicaSet>, rs: &ReplicaSet, replicas: i32) -> Result<u64, ApiError> {
    if replicas_of(rs) == replicas {
        return Ok(0);
    }
    let patch = json!({"metadata": {"resourceVersion": rs.metadata.resource_version}, "spec": {"replicas": replicas}});
    let r = api
        .patch(rs.metadata.name.as_deref().unwrap_or(""), &patch)
        .await?;
    Ok(revision_of(&r.metadata))
}

/// Roll `d` forward; `last` gets the revision of each ReplicaSet write (awaited on the
/// ReplicaSet cache before the next pass).
async fn reconcile(ctx: &Ctx, d: &Deployment, last: &mut u64) -> Result<(), ApiError> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(()); // the garbage collector takes it from here
    }
    let Some(spec) = &d.spec else { return Ok(()) };
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::new(ctx.client.clone(), &ns);
    let replicas = spec.replicas.unwrap_or(1);
    let hash = template_hash(&spec.template);

    let mut owned: Vec<Arc<ReplicaSet>> = cache::controlled_by(&ctx.replicasets, &ns, &uid);
    owned.sort_by_key(|rs| revision(&rs.metadata));
    let max_revision = owned
        .iter()
        .map(|rs| revision(&rs.metadata))
        .max()
        .unwrap_or(0);
    let new_rs = owned
        .iter()
        .find(|rs| rs.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash))
        .cloned();
    let olds: Vec<Arc<ReplicaSet>> = owned
        .iter()
        .filter(|rs| rs.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) != Some(&hash))
        .cloned()
        .collect();
    let paused = spec.paused == Some(true);

    let new_rs = match new_rs {
        Some(rs) => {
            // An old template brought back (undo) becomes the newest revision again.
            if revision(&rs.metadata) < max_revision && !paused {
                let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}, "resourceVersion": rs.metadata.resource_version}});
                let r = api
                    .patch(rs.metadata.name.as_deref().unwrap_or(""), &patch)
                    .await?;
                *last = (*last).max(revision_of(&r.metadata));
                return Ok(());
            }
            Some(rs)
        }
        None if paused => None,
        None => {
            let mut template = spec.template.clone();
            let meta = template.metadata.get_or_insert_with(Default::default);
            meta.labels
                .get_or_insert_with(BTreeMap::new)
                .insert(HASH_LABEL.into(), hash.clone());
            let mut selector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(HASH_LABEL.into(), hash.clone());
            let recreate =
                spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
            let initial = if olds.is_empty() && !recreate {
                replicas
            } else {
                0
            };
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{hash}")),
                    namespace: Some(ns.clone()),
                    labels: meta.labels.clone(),
                    annotations: Some(BTreeMap::from([(
                        REVISION.to_string(),
                        (max_revision + 1).to_string(),
                    )])),
                    owner_references: Some(vec![controller_ref(
                        "apps/v1",
                        "Deployment",
                        &d.metadata,
                    )]),
                    ..Default::default()
                },
                spec: Some(ReplicaSetSpec {
                    replicas: Some(initial),
                    min_ready_seconds: spec.min_ready_seconds,
                    selector,
                    template: Some(template),
                }),
                status: None,
            };
            let created = api.create(&rs).await?;
            tracing::info!(deployment = %name, replicaset = created.metadata.name.as_deref().unwrap_or(""), "new ReplicaSet");
            *last = (*last).max(revision_of(&created.metadata));
            return Ok(());
        }
    };

    if let Some(new_rs) = new_rs.as_ref().filter(|_| !paused) {
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        if recreate {
            let old_pods: i32 = olds.iter().map(|rs| status_of(rs, |s| s.replicas)).sum();
            for rs in &olds {
                *last = (*last).max(scale(&api, rs, 0).await?);
            }
            if old_pods == 0 && olds.iter().all(|rs| replicas_of(rs) == 0) {
                *last = (*last).max(scale(&api, new_rs, replicas).await?);
            }
        } else {
            let ru = spec
                .strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref());
            let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, true);
            let mut unavailable =
                resolve(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false);
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            // Scale up the new ReplicaSet within replicas + maxSurge.
            let total: i32 = owned.iter().map(|rs| replicas_of(rs)).sum();
            let room = replicas + surge - total;
            let new_target = if room > 0 {
                (replicas_of(new_rs) + room).min(replicas)
            } else {
                replicas_of(new_rs).min(replicas)
            };
            let new_target = if olds.iter().all(|rs| replicas_of(rs) == 0) {
                replicas
            } else {
                new_target
            };
            *last = (*last).max(scale(&api, new_rs, new_target).await?);
            // Scale down old ones while at least replicas - maxUnavailable stay available,
            // counting only what each ReplicaSet's controller has reported for its current
            // spec: a status from before a scale-down would overcount.
            if owned.iter().any(|rs| !settled(rs)) {
                return Ok(());
            }
            let available: i32 = owned.iter().map(|rs| available_of(rs)).sum();
            let min_available = replicas - unavailable;
            // Old pods that are not available can go at once: they add nothing.
            let mut budget = (available - min_available).max(0);
            for rs in &olds {
                let current = replicas_of(rs);
                if current == 0 {
                    continue;
                }
                let unhealthy = (current - available_of(rs)).max(0);
                let cut = (unhealthy + budget).min(current);
                let over = (total - replicas - surge).max(0);
                let cut = cut.max(over.min(current));
                if cut > 0 {
                    budget = (budget - (cut - unhealthy).max(0)).max(0);
                    *last = (*last).max(scale(&api, rs, current - cut).await?);
                }
            }
        }
        // Old, empty ReplicaSets beyond the history limit go.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&Arc<ReplicaSet>> = olds
            .iter()
            .filter(|rs| replicas_of(rs) == 0 && status_of(rs, |s| s.replicas) == 0)
            .collect();
        if empty.len() > limit {
            for rs in empty.iter().take(empty.len() - limit) {
                api.delete(
                    rs.metadata.name.as_deref().unwrap_or(""),
                    &Default::default(),
                )
                .await?;
            }
        }
    }

    // Status.
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| owned.iter().map(|rs| f(rs)).sum::<i32>();
    let updated = new_rs
        .as_ref()
        .map(|rs| status_of(rs, |s| s.replicas))
        .unwrap_or(0);
    let available = sum(&|rs| status_of(rs, |s| s.available_replicas.unwrap_or(0)));
    let ready = sum(&|rs| status_of(rs, |s| s.ready_replicas.unwrap_or(0)));
    let total = sum(&|rs| status_of(rs, |s| s.replicas));
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let min_available =
        replicas - resolve(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false);
    let complete = updated == replicas && total == replicas && available == replicas;
    let condition = |type_: &str, ok: bool, reason: &str, message: String| DeploymentCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        ..Default::default()
    };
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        conditions: Some(vec![
            condition(
                "Available",
                available >= min_available,
                if available >= min_available {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                },
                format!("{available} of {replicas} replicas available"),
            ),
            condition(
                "Progressing",
                true,
                if complete {
                    "NewReplicaSetAvailable"
                } else {
                    "ReplicaSetUpdated"
                },
                format!(
                    "ReplicaSet {:?} {}",
                    new_rs
                        .as_ref()
                        .and_then(|r| r.metadata.name.clone())
                        .unwrap_or_default(),
                    if complete {
                        "has successfully progressed"
                    } else {
                        "is progressing"
                    }
                ),
            ),
        ]),
        ..Default::default()
    };
    let new_revision = new_rs
        .as_ref()
        .map(|rs| revision(&rs.metadata))
        .unwrap_or(0);
    let current_revision = revision(&d.metadata);
    let old_status = d.status.clone().map(|mut s| {
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = None;
            c.last_update_time = None;
        }
        s
    });
    if old_status.as_ref() != Some(&status)
        || (new_revision != 0 && new_revision != current_revision)
    {
        let dapi: Api<Deployment> = Api::new(ctx.client.clone(), &ns);
        if new_revision != 0 && new_revision != current_revision {
            let patch = json!({"metadata": {"annotations": {REVISION: new_revision.to_string()}}});
            // Deployment writes do not count toward `last`, which is awaited on the
            // ReplicaSet cache.
            dapi.patch(&name, &patch).await?;
        }
        let mut next = d.clone();
        next.metadata.resource_version = None;
        next.status = Some(status);
        dapi.update_status(&next).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailability_down() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(resolve(Some(&pct), 10, true), 3);
        assert_eq!(resolve(Some(&pct), 10, false), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(0)), 10, false), 0);
    }

    #[test]
    fn template_hash_ignores_its_own_label() {
        let mut t = PodTemplateSpec::default();
        let h = template_hash(&t);
        t.metadata = Some(ObjectMeta {
            labels: Some(BTreeMap::from([(HASH_LABEL.to_string(), h.clone())])),
            ..Default::default()
        });
        assert_eq!(template_hash(&t), h);
        assert_eq!(h.len(), 10);
    }
}
