//! The DaemonSet controller: one pod on each node the DaemonSet belongs on (its node selector
//! and affinity, the node's taints against its tolerations and those every daemon pod gets),
//! placed through the scheduler by a required affinity on the node's name; a node joining
//! gets its pod, a node leaving (or tainted NoExecute) loses it; a template change rolls out
//! as `updateStrategy` says (RollingUpdate within `maxUnavailable` or `maxSurge`, OnDelete).
//! Each template it runs is kept as a ControllerRevision (up to `revisionHistoryLimit` of the
//! old ones), for `rollout history|undo`.
//!
//! Keyed by DaemonSet; a pod's change reaches its controlling DaemonSet, a node's joining,
//! leaving or change of labels or taints every DaemonSet (its heartbeats none).
//!
//! - [`placement`]: which nodes, and the pods made; [`sync`]: one pass.

pub mod placement;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::cache;
use super::context::Ctx;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The controller's name.
pub const NAME: &str = "daemonset";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let nodes_ctx = ctx.clone();
    Runner::new(
        DaemonSetController { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.daemonsets.subscribe(), |ds: &DaemonSet| {
        vec![ObjectKey::of(ds)]
    })
    .watches(ctx.pods.subscribe(), |p: &Pod| {
        cache::controller_key(p, "DaemonSet").into_iter().collect()
    })
    .watches_changes(
        ctx.nodes.subscribe(),
        move |n: &Node, before: Option<&Node>| {
            if before.is_some_and(|b| !placement_changed(b, n)) {
                return Vec::new(); // a heartbeat: where daemons belong is the same
            }
            nodes_ctx.daemonsets.object_keys()
        },
    )
    .run()
    .await
}

/// Whether a Node's change may change which DaemonSets belong on it: its labels (selectors
/// and affinity), its taints, or whether it takes new pods.
fn placement_changed(before: &Node, now: &Node) -> bool {
    let spec = |n: &Node| n.spec.as_ref().map(|s| (s.taints.clone(), s.unschedulable));
    before.metadata.labels != now.metadata.labels || spec(before) != spec(now)
}

/// Reconciles one DaemonSet.
pub struct DaemonSetController {
    ctx: Arc<Ctx>,
}

impl Reconciler for DaemonSetController {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(ds) = self.ctx.daemonsets.get(&key.namespace, &key.name) else {
            return Ok(Action::done()); // gone: the garbage collector takes its pods
        };
        sync::sync(&self.ctx, &ds).await
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.daemonsets.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        // Not the revisions' cache: its revision moves only with revisions, and a pass that
        // wrote pods alone would wait out the timeout for it. A revision the cache misses
        // is made again (`AlreadyExists`, nothing written).
        self.ctx.pods.wait_for(revision, timeout).await;
    }
}
