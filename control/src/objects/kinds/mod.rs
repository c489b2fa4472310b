//! The kind registry: each served kind's rules in one strategy, so that the generic store
//! never asks which kind it holds, and adding a kind is one strategy module plus one
//! registry entry.
//!
//! ```text
//!  store: create / update / patch / apply / delete
//!     │ registry.resolve("pods") ─▶ Strategy
//!     ├─ prepare_create      fields a new object starts with (a Pod's phase)
//!     ├─ admit               typed decode, defaults, validation (names by `name_rule`)
//!     ├─ check_update        fields that may not change (a Job's template)
//!     ├─ claims / release    allocations written with the object (a Service's addresses)
//!     ├─ grace_on_delete     kept for a graceful stop (a bound Pod)
//!     ├─ check_delete        refused deletes (the built-in Namespaces)
//!     └─ cascade             what goes with it (everything in a Namespace)
//! ```

pub mod config_map;
pub mod controller_revision;
pub mod cron_job;
pub mod daemon_set;
pub mod deployment;
pub mod endpoints;
pub mod event;
pub mod job;
pub mod join_token;
pub mod lease;
pub mod namespace;
pub mod node;
pub mod persistent_volume;
pub mod persistent_volume_claim;
pub mod pod;
pub mod pod_disruption_budget;
pub mod pod_security;
pub mod replica_set;
pub mod replication_controller;
pub mod secret;
pub mod service;
pub mod stateful_set;
pub mod storage_class;
pub mod user;

use std::sync::Arc;

use serde_json::Value;
use skiff_proto::kinds::KindInfo;
use skiff_raft::mvcc::{KeyValue, Op};

use super::error::{ObjectError, Result};
use super::names;
use super::patch::schema::{self, Schema};
use super::service_alloc::{Claims, ServiceRange};

/// What a strategy may read of the store: this member's state (a compare in the write
/// catches anything that changed since).
pub trait StoreView {
    /// Every key and value under `prefix`.
    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>>;
}

/// The rules of one kind.
pub trait Strategy: Send + Sync + 'static {
    /// Its names, group, scope and whether it has a status subresource.
    fn info(&self) -> &'static KindInfo;

    /// Decode `obj` as the kind's type, give it the kind's defaults and validate it
    /// ([`super::admission::typed`] does this for a `k8s-openapi` type); what comes out is
    /// what is stored. Every problem names its field.
    fn admit(&self, obj: Value) -> Result<Value>;

    /// Why `name` is not a valid name of this kind, if it is not (DNS-1123 subdomain unless
    /// the kind says otherwise).
    fn name_rule(&self, name: &str) -> Option<String> {
        names::dns1123_subdomain(name)
    }

    /// Refuse an update of `current` to `next` (both admitted) that changes what may not
    /// change once the object exists.
    fn check_update(&self, _current: &Value, _next: &Value) -> Result<()> {
        Ok(())
    }

    /// Fields a new object starts with, before admission.
    fn prepare_create(&self, _obj: &mut Value) {}

    /// Allocations `next` holds, claimed in its own write: compares that they are still
    /// free and the keys that hold them. `current` is the stored object on an update.
    fn claims(
        &self,
        _view: &dyn StoreView,
        _current: Option<&Value>,
        _next: &mut Value,
        _owner: &str,
    ) -> Result<Claims> {
        Ok(Claims::default())
    }

    /// Refuse `obj` for what other objects say of it (a Pod against its namespace's Pod
    /// Security level); checked on every create and spec change.
    fn check_policy(&self, _view: &dyn StoreView, _obj: &Value) -> Result<()> {
        Ok(())
    }

    /// Whether objects of the kind hold allocations that [`Strategy::release`] frees.
    fn holds_claims(&self) -> bool {
        false
    }

    /// Writes that free what `obj` held, in the transaction that removes it.
    fn release(&self, _obj: &Value) -> Vec<Op> {
        Vec::new()
    }

    /// How the kind's fields merge in strategic merge patches and `apply` (its list fields'
    /// merge keys).
    fn merge_schema(&self) -> &'static Schema {
        &schema::OBJECT
    }

    /// Refuse to delete the object named `name`.
    fn check_delete(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Seconds `obj` is kept, marked for deletion, before it goes (`asked`: the grace period
    /// the caller gave, if any); 0 removes it at once.
    fn grace_on_delete(&self, _obj: &Value, _asked: Option<i64>) -> i64 {
        0
    }

    /// Writes that remove what goes with `obj`, in the transaction that removes it.
    fn cascade(
        &self,
        _view: &dyn StoreView,
        _registry: &Registry,
        _obj: &Value,
    ) -> Result<Vec<Op>> {
        Ok(Vec::new())
    }
}

/// The served kinds.
#[derive(Clone)]
pub struct Registry {
    strategies: Vec<Arc<dyn Strategy>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.strategies.iter().map(|s| s.info().kind))
            .finish()
    }
}

impl Registry {
    /// Skiff's built-in kinds, Services allocating from `service_range`.
    pub fn builtin(service_range: ServiceRange) -> Self {
        Self {
            strategies: Vec::new(),
        }
        .with(namespace::NamespaceStrategy)
        .with(pod::PodStrategy)
        .with(replica_set::ReplicaSetStrategy)
        .with(replication_controller::ReplicationControllerStrategy)
        .with(deployment::DeploymentStrategy)
        .with(daemon_set::DaemonSetStrategy)
        .with(stateful_set::StatefulSetStrategy)
        .with(controller_revision::ControllerRevisionStrategy)
        .with(job::JobStrategy)
        .with(cron_job::CronJobStrategy)
        .with(pod_disruption_budget::PodDisruptionBudgetStrategy)
        .with(persistent_volume::PersistentVolumeStrategy)
        .with(persistent_volume_claim::PersistentVolumeClaimStrategy)
        .with(storage_class::StorageClassStrategy)
        .with(service::ServiceStrategy::new(service_range))
        .with(endpoints::EndpointsStrategy)
        .with(node::NodeStrategy)
        .with(config_map::ConfigMapStrategy)
        .with(secret::SecretStrategy)
        .with(event::EventStrategy)
        .with(lease::LeaseStrategy)
        .with(user::UserStrategy)
        .with(join_token::JoinTokenStrategy)
    }

    /// The same registry serving `strategy` too (in place of one of the same resource).
    pub fn with(mut self, strategy: impl Strategy) -> Self {
        let plural = strategy.info().plural;
        self.strategies.retain(|s| s.info().plural != plural);
        self.strategies.push(Arc::new(strategy));
        self
    }

    /// Every served kind.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Strategy> {
        self.strategies.iter().map(|s| &**s)
    }

    /// The kind served under resource name `plural`.
    pub fn by_resource(&self, plural: &str) -> Option<&dyn Strategy> {
        self.iter().find(|s| s.info().plural == plural)
    }

    /// The kind a manifest declares by `apiVersion` and `kind`.
    pub fn by_api_version(&self, api_version: &str, kind: &str) -> Option<&dyn Strategy> {
        self.iter()
            .find(|s| s.info().kind == kind && s.info().api_version() == api_version)
    }

    /// The kind `resource` names (a plural, or any name kubectl accepts), or an error that
    /// lists what is served.
    pub fn resolve(&self, resource: &str) -> Result<&dyn Strategy> {
        self.by_resource(resource)
            .or_else(|| self.iter().find(|s| s.info().is_named(resource)))
            .ok_or_else(|| {
                ObjectError::bad(
                    "resource",
                    format!(
                        "the server does not serve resource {resource:?}; served: {}",
                        self.iter()
                            .map(|s| s.info().plural)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_kind_is_served_once_and_found_by_its_names() {
        let r = Registry::builtin(ServiceRange::default());
        for k in skiff_proto::kinds::KINDS {
            assert_eq!(r.by_resource(k.plural).map(|s| s.info()), Some(k));
        }
        assert_eq!(r.iter().count(), skiff_proto::kinds::KINDS.len());
        assert_eq!(
            r.resolve("deploy").map(|s| s.info().plural).ok(),
            Some("deployments")
        );
        let e = r
            .resolve("widgets")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("widgets") && e.contains("pods"), "{e}");
    }
}
