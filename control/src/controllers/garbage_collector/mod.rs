//! The garbage collector: dependents whose owners are all gone are deleted (background
//! cascade); an owner being deleted in the foreground waits for its dependents
//! (`foregroundDeletion`); an orphaning delete releases them (`orphan`).
//!
//! Keyed by object (the kinds of [`RESOURCES`]). An object's change queues itself and
//! its owners (a foreground delete waits on its dependents); an object deleted, or being
//! deleted, also queues its dependents (they may be orphans now). An owner the caches do not
//! show is looked up in the store before its dependents go, so a dependent created right
//! after its owner is never taken for an orphan.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::json;
use skiff_proto::informer::Cacheable;
use skiff_proto::kinds;
use skiff_proto::objects::DeleteParams;
use skiff_proto::pb::delete_object_request::Propagation;
use skiff_proto::ClientError;

use super::cache::{self, Watched};
use super::context::Ctx;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// Finalizer of a foreground delete.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an orphaning delete.
pub const ORPHAN: &str = "orphan";

/// The controller's name.
pub const NAME: &str = "garbage-collector";

/// The kinds the collector looks after, by resource: those that own, and those owned.
const RESOURCES: [&str; 10] = [
    "deployments",
    "replicasets",
    "replicationcontrollers",
    "daemonsets",
    "statefulsets",
    "controllerrevisions",
    "persistentvolumeclaims",
    "cronjobs",
    "jobs",
    "pods",
];

/// One kind's cache as the collector reads it.
trait Tracked: Send + Sync {
    fn meta(&self, namespace: &str, name: &str) -> Option<ObjectMeta>;
    fn keys(&self) -> Vec<ObjectKey>;
    /// The key and metadata of every object that names `uid` as an owner.
    fn owned_by(&self, uid: &str) -> Vec<(ObjectKey, ObjectMeta)>;
}

impl<K: Cacheable> Tracked for Watched<K> {
    fn meta(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        self.get(namespace, name).map(|o| o.metadata().clone())
    }

    fn keys(&self) -> Vec<ObjectKey> {
        self.object_keys()
    }

    fn owned_by(&self, uid: &str) -> Vec<(ObjectKey, ObjectMeta)> {
        self.by_index(cache::OWNER, uid)
            .into_iter()
            .map(|o| (ObjectKey::of(&*o), o.metadata().clone()))
            .collect()
    }
}

/// The cache of `resource`, one of [`RESOURCES`].
fn cache_of<'a>(ctx: &'a Ctx, resource: &str) -> Option<&'a dyn Tracked> {
    Some(match resource {
        "deployments" => &ctx.deployments,
        "replicasets" => &ctx.replicasets,
        "replicationcontrollers" => &ctx.replicationcontrollers,
        "daemonsets" => &ctx.daemonsets,
        "statefulsets" => &ctx.statefulsets,
        "controllerrevisions" => &ctx.revisions,
        "persistentvolumeclaims" => &ctx.claims,
        "cronjobs" => &ctx.cronjobs,
        "jobs" => &ctx.jobs,
        "pods" => &ctx.pods,
        _ => return None,
    })
}

/// One object the collector looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GcKey {
    /// Its resource (`pods`, ...).
    pub resource: &'static str,
    /// Its namespace and name.
    pub object: ObjectKey,
}

impl std::fmt::Display for GcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.resource, self.object)
    }
}

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let runner = Runner::new(
        GarbageCollector { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    );
    let runner = watch(runner, &ctx, "deployments", |c| &c.deployments);
    let runner = watch(runner, &ctx, "replicasets", |c| &c.replicasets);
    let runner = watch(runner, &ctx, "replicationcontrollers", |c| {
        &c.replicationcontrollers
    });
    let runner = watch(runner, &ctx, "daemonsets", |c| &c.daemonsets);
    let runner = watch(runner, &ctx, "statefulsets", |c| &c.statefulsets);
    let runner = watch(runner, &ctx, "controllerrevisions", |c| &c.revisions);
    let runner = watch(runner, &ctx, "persistentvolumeclaims", |c| &c.claims);
    let runner = watch(runner, &ctx, "cronjobs", |c| &c.cronjobs);
    let runner = watch(runner, &ctx, "jobs", |c| &c.jobs);
    let runner = watch(runner, &ctx, "pods", |c| &c.pods);
    runner.run().await
}

/// `runner` also following the changes of `resource`, whose cache `cache` picks.
fn watch<K: Cacheable>(
    runner: Runner<GarbageCollector>,
    ctx: &Arc<Ctx>,
    resource: &'static str,
    cache: fn(&Ctx) -> &Watched<K>,
) -> Runner<GarbageCollector> {
    let c = ctx.clone();
    runner.watches(cache(ctx).subscribe(), move |o| {
        keys_for(&c, resource, cache(&c), o)
    })
}

fn resource_of_kind(kind: &str) -> Option<&'static str> {
    RESOURCES
        .into_iter()
        .find(|r| kinds::by_resource(r).is_some_and(|k| k.kind == kind))
}

/// The keys an object's change concerns: itself, its owners, and — when it is gone or
/// going — its dependents.
fn keys_for<K: Cacheable>(
    ctx: &Ctx,
    resource: &'static str,
    cache: &Watched<K>,
    o: &K,
) -> Vec<GcKey> {
    let m = o.metadata();
    let ns = m.namespace.clone().unwrap_or_default();
    let mut keys = vec![GcKey {
        resource,
        object: ObjectKey::of(o),
    }];
    for r in m.owner_references.iter().flatten() {
        if let Some(resource) = resource_of_kind(&r.kind) {
            keys.push(GcKey {
                resource,
                object: ObjectKey::new(ns.clone(), r.name.clone()),
            });
        }
    }
    let gone = cache
        .get(&ns, m.name.as_deref().unwrap_or(""))
        .is_none_or(|now| now.metadata().uid != m.uid);
    if gone || m.deletion_timestamp.is_some() {
        if let Some(uid) = m.uid.as_deref() {
            keys.extend(dependents(ctx, uid).into_iter().map(|(k, _)| k));
        }
    }
    keys
}

/// Every object that names `uid` as an owner, with its metadata.
fn dependents(ctx: &Ctx, uid: &str) -> Vec<(GcKey, ObjectMeta)> {
    RESOURCES
        .into_iter()
        .filter_map(|resource| Some((resource, cache_of(ctx, resource)?)))
        .flat_map(|(resource, cache)| {
            cache
                .owned_by(uid)
                .into_iter()
                .map(move |(object, meta)| (GcKey { resource, object }, meta))
        })
        .collect()
}

/// Reconciles one object's ownership.
pub struct GarbageCollector {
    ctx: Arc<Ctx>,
}

fn has(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

impl GarbageCollector {
    fn meta_of(&self, key: &GcKey) -> Option<ObjectMeta> {
        cache_of(&self.ctx, key.resource)?.meta(&key.object.namespace, &key.object.name)
    }

    /// Whether the owner `r` of an object in `namespace` still exists: the caches first, then
    /// (for what they do not show) the store itself.
    async fn owner_exists(
        &self,
        namespace: &str,
        r: &OwnerReference,
        known: &mut HashMap<String, bool>,
    ) -> Result<bool, ClientError> {
        if let Some(&e) = known.get(&r.uid) {
            return Ok(e);
        }
        let cached = resource_of_kind(&r.kind).and_then(|resource| {
            self.meta_of(&GcKey {
                resource,
                object: ObjectKey::new(namespace, r.name.clone()),
            })
        });
        let exists = if cached.is_some_and(|m| m.uid.as_deref() == Some(r.uid.as_str())) {
            true
        } else {
            let Some(kind) = kinds::KINDS
                .iter()
                .find(|k| k.kind == r.kind && k.api_version() == r.api_version)
            else {
                // A kind this collector does not know (one a registry added, say): never
                // taken for gone.
                known.insert(r.uid.clone(), true);
                return Ok(true);
            };
            let ns = if kind.namespaced { namespace } else { "" };
            match self
                .ctx
                .client
                .get_object(kind.plural, ns, &r.name, false)
                .await
            {
                Ok(got) => serde_json::from_slice::<serde_json::Value>(&got.object)
                    .ok()
                    .and_then(|v| v.pointer("/metadata/uid")?.as_str().map(str::to_string))
                    .is_some_and(|u| u == r.uid),
                Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => false,
                Err(e) => return Err(e),
            }
        };
        known.insert(r.uid.clone(), exists);
        Ok(exists)
    }

    async fn delete(
        &self,
        resource: &str,
        key: &ObjectKey,
        propagation: Propagation,
    ) -> Result<(), ClientError> {
        match self
            .ctx
            .client
            .delete_object(
                resource,
                &key.namespace,
                &key.name,
                &DeleteParams {
                    propagation,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_finalizer(
        &self,
        key: &GcKey,
        meta: &ObjectMeta,
        finalizer: &str,
    ) -> Result<(), ClientError> {
        let kept: Vec<&String> = meta
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .collect();
        let patch =
            json!({"metadata": {"finalizers": kept, "resourceVersion": meta.resource_version}});
        self.ctx
            .client
            .patch_object(
                key.resource,
                &key.object.namespace,
                &key.object.name,
                patch.to_string().into_bytes(),
                false,
            )
            .await?;
        Ok(())
    }
}

impl Reconciler for GarbageCollector {
    type Key = GcKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &GcKey) -> Result<Action, ReconcileError> {
        let Some(meta) = self.meta_of(key) else {
            return Ok(Action::done());
        };
        let uid = meta.uid.clone().unwrap_or_default();
        let deleting = meta.deletion_timestamp.is_some();
        // Background: every owner gone → the dependent goes.
        let refs: Vec<&OwnerReference> = meta.owner_references.iter().flatten().collect();
        if !refs.is_empty() && !deleting {
            let mut known = HashMap::new();
            let mut any_left = false;
            for r in &refs {
                if self
                    .owner_exists(&key.object.namespace, r, &mut known)
                    .await?
                {
                    any_left = true;
                    break;
                }
            }
            if !any_left {
                tracing::info!("owner gone; deleting dependent");
                self.delete(key.resource, &key.object, Propagation::Background)
                    .await?;
                return Ok(Action::done());
            }
        }
        if !deleting {
            return Ok(Action::done());
        }
        let deps = dependents(&self.ctx, &uid);
        if has(&meta, ORPHAN) {
            for (d, dmeta) in &deps {
                let kept: Vec<&OwnerReference> = dmeta
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": kept}});
                self.ctx
                    .client
                    .patch_object(
                        d.resource,
                        &d.object.namespace,
                        &d.object.name,
                        patch.to_string().into_bytes(),
                        false,
                    )
                    .await?;
            }
            self.remove_finalizer(key, &meta, ORPHAN).await?;
        } else if has(&meta, FOREGROUND) {
            let blocking: Vec<&(GcKey, ObjectMeta)> = deps
                .iter()
                .filter(|(_, d)| {
                    d.owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
                })
                .collect();
            if blocking.is_empty() {
                self.remove_finalizer(key, &meta, FOREGROUND).await?;
            } else {
                for (d, dmeta) in blocking {
                    if dmeta.deletion_timestamp.is_none() {
                        self.delete(d.resource, &d.object, Propagation::Foreground)
                            .await?;
                    }
                }
            }
        }
        Ok(Action::done())
    }

    fn all_keys(&self) -> Vec<GcKey> {
        RESOURCES
            .into_iter()
            .filter_map(|resource| Some((resource, cache_of(&self.ctx, resource)?)))
            .flat_map(|(resource, cache)| {
                cache
                    .keys()
                    .into_iter()
                    .map(move |object| GcKey { resource, object })
            })
            .collect()
    }
}
