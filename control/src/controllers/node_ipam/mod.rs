//! Node IPAM: every Node gets a pod CIDR (`spec.podCIDR`) carved from the cluster's pod range,
//! one block per node, never two nodes the same block. Agents wait for theirs before they
//! wire pods. The write is a compare-and-swap on the Node, so a leader hand-over that
//! reconciles twice cannot hand a block out twice: the loser's update is a conflict and it
//! re-reads.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec};
use skiff_proto::objects::Api;

use super::context::{Ctx, Kind};

/// An IPv4 range `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{l:?} is not a prefix length 0-32"))?;
        let mask = mask(len);
        if u32::from(addr) & !mask != 0 {
            return Err(format!("{s:?} has host bits set"));
        }
        Ok(Self { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The `index`th block of prefix `block_len` inside `range`, if there is one.
pub fn nth_block(range: Cidr, block_len: u8, index: u32) -> Option<Cidr> {
    if block_len < range.len || block_len > 32 {
        return None;
    }
    let count = 1u64 << (block_len - range.len);
    if u64::from(index) >= count {
        return None;
    }
    let size = 1u64 << (32 - block_len);
    let addr = u64::from(u32::from(range.addr)) + u64::from(index) * size;
    Some(Cidr {
        addr: Ipv4Addr::from(addr as u32),
        len: block_len,
    })
}

/// The first block of `range` that no node holds. Block 0 is skipped: its first address would
/// be the range's own network address, which some tools treat specially.
pub fn first_free(range: Cidr, block_len: u8, taken: &BTreeSet<String>) -> Option<Cidr> {
    (1u32..)
        .map_while(|i| nth_block(range, block_len, i))
        .find(|b| !taken.contains(&b.to_string()))
}

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    let Ok(range) = ctx.settings.cluster_cidr.parse::<Cidr>() else {
        tracing::error!(cidr = %ctx.settings.cluster_cidr, "the cluster pod range is not a CIDR; no pod CIDRs are handed out");
        return;
    };
    let mut trigger = ctx.trigger(&[Kind::Nodes]);
    loop {
        reconcile(&ctx, range).await;
        trigger.wait(Duration::from_secs(5)).await;
    }
}

async fn reconcile(ctx: &Ctx, range: Cidr) {
    let nodes = ctx.nodes.list();
    let mut taken: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    let api: Api<Node> = Api::new(ctx.client.clone(), "");
    for node in nodes {
        if node.spec.as_ref().is_some_and(|s| s.pod_cidr.is_some()) {
            continue;
        }
        // Hollow nodes run no pods; they keep the range for real ones.
        if node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("skiff.dev/hollow"))
        {
            continue;
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        let Some(block) = first_free(range, ctx.settings.node_cidr_prefix, &taken) else {
            tracing::warn!(node = %name, range = %range, "the pod range is exhausted; node gets no pod CIDR");
            continue;
        };
        let mut next = (*node).clone();
        let spec = next.spec.get_or_insert_with(NodeSpec::default);
        spec.pod_cidr = Some(block.to_string());
        spec.pod_cidrs = Some(vec![block.to_string()]);
        match api.update(&next).await {
            Ok(_) => {
                tracing::info!(node = %name, pod_cidr = %block, "pod CIDR assigned");
                taken.insert(block.to_string());
            }
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "assigning a pod CIDR; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_carved_in_order_and_skip_taken_ones() {
        let range: Cidr = "10.244.0.0/16".parse().unwrap();
        assert_eq!(
            nth_block(range, 24, 1).unwrap().to_string(),
            "10.244.1.0/24"
        );
        assert_eq!(
            nth_block(range, 24, 255).unwrap().to_string(),
            "10.244.255.0/24"
        );
        assert!(nth_block(range, 24, 256).is_none());
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

    #[test]
    fn malformed_ranges_are_refused_with_the_reason() {
        assert!("10.0.0.1/16"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("host bits"));
        assert!("10.0.0.0"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("ADDRESS/PREFIX"));
        assert!("10.0.0.0/33"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("prefix"));
    }
}
