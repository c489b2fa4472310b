//! A member removed from its cluster (by an operator, or by the autopilot while it was dead)
//! must not come back with its old data: its log and state stopped at its removal, and its
//! votes would only disturb the others. As etcd does, the member asks its peers whether it is
//! still a member; once a leader's answer leaves it out, it stops, naming what to do.

use std::time::Duration;

use skiff_proto::pb;
use tonic::Request;

use crate::grpc::forward;
use crate::node::RaftNode;
use crate::types::NodeId;

/// How often a member asks; the first time soon after it starts.
const ASK_EVERY: Duration = Duration::from_secs(10);
const FIRST_ASK: Duration = Duration::from_secs(1);
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The member is no longer part of its cluster.
#[derive(Debug, thiserror::Error)]
#[error(
    "member {id} was removed from cluster {cluster_id:?} (its members are now {members:?}); \
     its data directory is stale: wipe it and join again as a new member"
)]
pub struct Removed {
    /// This member.
    pub id: NodeId,
    /// Its cluster.
    pub cluster_id: String,
    /// The cluster's members as its leader lists them.
    pub members: Vec<NodeId>,
}

/// Resolves once a peer, speaking for its leader, lists the cluster without this member.
/// Never resolves while the member belongs, or while no peer answers.
pub async fn wait_removed(node: RaftNode) -> Removed {
    tokio::time::sleep(FIRST_ASK).await;
    loop {
        // A member that never held a membership (one waiting to be added) is not asked about.
        if node.is_initialized().await.unwrap_or(false) {
            if let Some(removed) = ask_peers(&node).await {
                return removed;
            }
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

async fn ask_peers(node: &RaftNode) -> Option<Removed> {
    let peers: Vec<String> = {
        let m = node.raft().metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != node.id())
            .map(|(_, n)| n.addr.clone())
            .collect()
    };
    for addr in peers {
        let Ok(channel) = node.channels().get(&addr) else {
            continue;
        };
        let asked = async {
            // The peer must be of this cluster before its list means anything.
            let status = forward::kv(channel.clone())
                .status(pb::StatusRequest {})
                .await
                .ok()?
                .into_inner();
            if status.cluster_id != node.config().cluster_id {
                return None;
            }
            // Not marked as forwarded: the peer passes it on to its leader.
            forward::cluster(channel)
                .member_list(Request::new(pb::MemberListRequest {}))
                .await
                .ok()
                .map(|r| r.into_inner())
        };
        let Ok(Some(list)) = tokio::time::timeout(ANSWER_WITHIN, asked).await else {
            continue;
        };
        if list.leader == 0 || list.leader == node.id() {
            continue;
        }
        if list.members.iter().any(|m| m.id == node.id()) {
            return None;
        }
        return Some(Removed {
            id: node.id(),
            cluster_id: node.config().cluster_id.clone(),
            members: list.members.iter().map(|m| m.id).collect(),
        });
    }
    None
}
