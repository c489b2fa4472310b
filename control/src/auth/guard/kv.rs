//! The raw kv API behind the gate: admins only, but any holder of a certificate may ask a
//! member's status (clients find the leader with it).

use skiff_proto::pb::kv_server::Kv;
use skiff_proto::pb::{self};
use skiff_raft::grpc::kv_service::KvService;
use tonic::{Request, Response, Status};

use crate::auth::gate::Gate;
use crate::auth::rules::Verb;

/// [`KvService`] behind the gate.
pub struct GuardedKv {
    inner: KvService,
    gate: Gate,
}

impl GuardedKv {
    /// `inner`, each request asked of `gate` first.
    pub fn new(inner: KvService, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

#[tonic::async_trait]
impl Kv for GuardedKv {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.gate.call(&request, Verb::Kv).await?;
        self.inner.range(request).await
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.gate.call(&request, Verb::Kv).await?;
        self.inner.put(request).await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.gate.call(&request, Verb::Kv).await?;
        self.inner.delete(request).await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        self.gate.call(&request, Verb::Kv).await?;
        self.inner.txn(request).await
    }

    type WatchStream = <KvService as Kv>::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.gate.call(&request, Verb::Kv).await?;
        self.inner.watch(request).await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.gate.authenticated(&request).await?;
        self.inner.status(request).await
    }
}
