//! The server side of Raft RPCs: checks the cluster id, hands the message to openraft.

use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_proto::pb::raft_server::Raft as RaftRpc;
use skiff_proto::pb::{RaftReply, RaftRequest};
use skiff_proto::status;
use tonic::{Request, Response, Status};

use crate::forwarder::ForwardOutcome;
use crate::node::RaftNode;
use crate::types::Write;

/// Serves Raft RPCs for one member.
pub struct RaftService {
    node: RaftNode,
    cluster_id: String,
}

impl RaftService {
    /// Serve the Raft RPCs of `node`.
    pub fn new(node: RaftNode) -> Self {
        let cluster_id = node.config().cluster_id.clone();
        Self { node, cluster_id }
    }

    fn decode<T: DeserializeOwned>(&self, req: RaftRequest) -> Result<T, Status> {
        crate::versions::check_peer_protocol(req.protocol)?;
        if req.cluster_id != self.cluster_id {
            // A member of another cluster: refuse rather than let it disturb our terms.
            return Err(Status::permission_denied(format!(
                "cluster id mismatch: this member belongs to {:?}, the request to {:?}",
                self.cluster_id, req.cluster_id
            )));
        }
        bincode::deserialize(&req.payload).map_err(|e| status::invalid("payload", e))
    }
}

fn reply<T: Serialize>(v: &T) -> Result<Response<RaftReply>, Status> {
    let payload = bincode::serialize(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(request.into_inner())?;
        reply(&self.node.raft().append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(request.into_inner())?;
        reply(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(request.into_inner())?;
        reply(&self.node.raft().install_snapshot(rpc).await)
    }

    async fn forward_writes(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let writes: Vec<Write> = self.decode(request.into_inner())?;
        // Proposed concurrently so the batcher coalesces them into few entries.
        let results =
            futures::future::join_all(writes.into_iter().map(|w| self.node.write(w))).await;
        let outcomes: Vec<ForwardOutcome> = results.into_iter().map(ForwardOutcome::from).collect();
        reply(&outcomes)
    }

    async fn read_index(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let () = self.decode(request.into_inner())?;
        self.node
            .read_barrier()
            .await
            .map_err(super::convert::store_error)?;
        reply(&self.node.state().revision())
    }

    async fn campaign(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let wanted: crate::handover::CampaignRequest = self.decode(request.into_inner())?;
        let held = self
            .node
            .raft()
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or(0);
        if held < wanted.index {
            return Err(Status::failed_precondition(format!(
                "this member holds the log up to {held}, the leader's ends at {}",
                wanted.index
            )));
        }
        tracing::info!(leader_last = %wanted, "campaigning at the leader's request");
        self.node
            .raft()
            .trigger()
            .elect()
            .await
            .map_err(|e| status::unavailable(format!("member unavailable: {e}")))?;
        reply(&())
    }
}
