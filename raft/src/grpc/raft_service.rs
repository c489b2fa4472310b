//! The server side of Raft RPCs: checks the cluster id, hands the message to openraft.

use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_proto::pb::raft_server::Raft as RaftRpc;
use skiff_proto::pb::{RaftReply, RaftRequest};
use skiff_proto::status;
use tonic::{Request, Response, Status};

use crate::types::Raft;

/// Serves Raft RPCs for one member.
pub struct RaftService {
    raft: Raft,
    cluster_id: String,
}

impl RaftService {
    /// Serve `raft` of cluster `cluster_id`.
    pub fn new(raft: Raft, cluster_id: String) -> Self {
        Self { raft, cluster_id }
    }

    fn decode<T: DeserializeOwned>(&self, req: RaftRequest) -> Result<T, Status> {
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
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(request.into_inner())?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(request.into_inner())?;
        reply(&self.raft.install_snapshot(rpc).await)
    }
}
