//! Membership behind the gate: anyone with a certificate may list the members (clients find
//! their endpoints there); only admins change them or take backups.

use skiff_proto::pb::cluster_server::Cluster;
use skiff_proto::pb::{self};
use skiff_raft::grpc::cluster_service::ClusterService;
use tonic::{Request, Response, Status};

use crate::auth::gate::Gate;
use crate::auth::rules::Verb;

/// [`ClusterService`] behind the gate.
pub struct GuardedCluster {
    inner: ClusterService,
    gate: Gate,
}

impl GuardedCluster {
    /// `inner`, each request asked of `gate` first.
    pub fn new(inner: ClusterService, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

#[tonic::async_trait]
impl Cluster for GuardedCluster {
    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.gate.authenticated(&request).await?;
        self.inner.member_list(request).await
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.gate.call(&request, Verb::Members).await?;
        self.inner.member_add(request).await
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.gate.call(&request, Verb::Members).await?;
        self.inner.member_promote(request).await
    }

    type BackupStream = <ClusterService as Cluster>::BackupStream;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        self.gate.call(&request, Verb::Backup).await?;
        self.inner.backup(request).await
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.gate.call(&request, Verb::Members).await?;
        self.inner.member_remove(request).await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.gate.call(&request, Verb::Members).await?;
        self.inner.transfer_leader(request).await
    }

    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        self.gate.call(&request, Verb::Members).await?;
        self.inner.compact(request).await
    }
}
