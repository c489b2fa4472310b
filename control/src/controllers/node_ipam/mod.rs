//! Node IPAM: every Node gets a pod CIDR (`spec.podCIDR`) carved from the cluster's pod range,
//! one block per node, never two nodes the same block. Agents wait for theirs before they
//! wire pods. The write is a compare-and-swap on the Node, so a leader hand-over that
//! reconciles twice cannot hand a block out twice: the loser's update is a conflict and it
//! re-reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec};
use skiff_proto::cidr::Cidr;
use skiff_proto::objects::Api;

use super::context::Ctx;
use super::ownership::revision_of;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The first block of `range` that no node holds. Block 0 is skipped: its first address would
/// be the range's own network address, which some tools treat specially.
pub fn first_free(range: Cidr, block_len: u8, taken: &BTreeSet<String>) -> Option<Cidr> {
    (1u32..)
        .map_while(|i| range.nth_block(block_len, i))
        .find(|b| !taken.contains(&b.to_string()))
}

/// The controller's name.
pub const NAME: &str = "node-ipam";

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let Ok(range) = ctx.settings.cluster_cidr.parse::<Cidr>() else {
        tracing::error!(cidr = %ctx.settings.cluster_cidr, "the cluster pod range is not a CIDR; no pod CIDRs are handed out");
        return;
    };
    Runner::new(
        NodeIpam {
            ctx: ctx.clone(),
            range,
            handed_out: Mutex::new(BTreeMap::new()),
        },
        ctx.metrics.of(NAME),
        RunnerSettings::default(),
    )
    .watches(ctx.nodes.subscribe(), |n: &Node| vec![ObjectKey::of(n)])
    .run()
    .await
}

/// Hands each node a block of the pod range.
pub struct NodeIpam {
    ctx: Arc<Ctx>,
    range: Cidr,
    /// Blocks handed out that the cache may not show yet, and to which node; a block is
    /// picked and recorded here in one step, against the cache as it is then, so two nodes
    /// reconciled at once never get the same one.
    handed_out: Mutex<BTreeMap<String, String>>,
}

impl Reconciler for NodeIpam {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(node) = self.ctx.nodes.get("", &key.name) else {
            return Ok(Action::done());
        };
        if node.spec.as_ref().is_some_and(|s| s.pod_cidr.is_some()) {
            return Ok(Action::done());
        }
        // Hollow nodes run no pods; they keep the range for real ones.
        if node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("skiff.dev/hollow"))
        {
            return Ok(Action::done());
        }
        let block = {
            let mut handed_out = match self.handed_out.lock() {
                Ok(h) => h,
                Err(p) => p.into_inner(),
            };
            // Read under the lock: a block the cache shows is never forgotten before every
            // later pick sees it there (the cache only moves forward).
            let nodes = self.ctx.nodes.list();
            let in_cache: BTreeSet<String> = nodes
                .iter()
                .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
                .collect();
            let node_names: BTreeSet<&str> = nodes
                .iter()
                .filter_map(|n| n.metadata.name.as_deref())
                .collect();
            // Forget a block once the cache shows it, or its node is gone.
            handed_out.retain(|b, n| !in_cache.contains(b) && node_names.contains(n.as_str()));
            let taken: BTreeSet<String> =
                in_cache.iter().chain(handed_out.keys()).cloned().collect();
            let Some(block) = first_free(self.range, self.ctx.settings.node_cidr_prefix, &taken)
            else {
                tracing::warn!(range = %self.range, "the pod range is exhausted; node gets no pod CIDR");
                return Ok(Action::done());
            };
            handed_out.insert(block.to_string(), key.name.clone());
            block
        };
        let mut next = (*node).clone();
        let spec = next.spec.get_or_insert_with(NodeSpec::default);
        spec.pod_cidr = Some(block.to_string());
        spec.pod_cidrs = Some(vec![block.to_string()]);
        let api: Api<Node> = Api::new(self.ctx.client.clone(), "");
        match api.update(&next).await {
            Ok(n) => {
                tracing::info!(pod_cidr = %block, "pod CIDR assigned");
                Ok(Action::done().wrote(revision_of(&n.metadata)))
            }
            Err(e) => {
                // A refusal wrote nothing: the block is free again. Any other failure may
                // have written it: it stays handed out until the cache says.
                let refused = matches!(
                    &e,
                    skiff_proto::objects::ApiError::Client(skiff_proto::ClientError::Rejected(_))
                );
                if refused {
                    if let Ok(mut h) = self.handed_out.lock() {
                        h.remove(&block.to_string());
                    }
                }
                Err(e.into())
            }
        }
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.nodes.object_keys()
    }

    async fn caught_up(&self, revision: u64, timeout: Duration) {
        self.ctx.nodes.wait_for(revision, timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_in_order_skipping_taken_ones() {
        let range: Cidr = "10.244.0.0/16".parse().unwrap();
        let taken = BTreeSet::from(["10.244.1.0/24".to_string()]);
        assert_eq!(
            first_free(range, 24, &taken).unwrap().to_string(),
            "10.244.2.0/24"
        );
    }

    #[test]
    fn an_exhausted_range_hands_out_nothing() {
        let range: Cidr = "10.0.0.0/23".parse().unwrap();
        let taken = BTreeSet::from(["10.0.1.0/24".to_string()]);
        assert!(first_free(range, 24, &taken).is_none());
    }
}
