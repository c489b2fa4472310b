//! The gRPC server of a control node: Raft peer RPCs, the Kv, Cluster and Objects APIs and the
//! NodeAgent proxy (logs, exec, image import) on one listener, built from the shared server builder in `skiff-proto`.

use std::future::Future;

use skiff_proto::pb::auth_server::AuthServer;
use skiff_proto::pb::cluster_server::ClusterServer;
use skiff_proto::pb::kv_server::KvServer;
use skiff_proto::pb::node_agent_server::NodeAgentServer;
use skiff_proto::pb::objects_server::ObjectsServer;
use skiff_proto::pb::raft_server::RaftServer;
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder;
use skiff_proto::transport::{self, MAX_MESSAGE_BYTES};
use skiff_raft::grpc::cluster_service::ClusterService;
use skiff_raft::grpc::kv_service::KvService;
use skiff_raft::grpc::raft_service::RaftService;
use skiff_raft::RaftNode;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use crate::auth::gate::Gate;
use crate::auth::guard::{GuardedCluster, GuardedKv, GuardedNodeAgent, GuardedObjects};
use crate::auth::service::AuthService;
use crate::node_proxy::NodeProxy;
use crate::objects::service_alloc::ServiceRange;
use crate::objects::{ObjectService, ObjectStore};
use crate::ops::api_metrics::{ApiMetrics, Measured};

/// What a member's server knows of security beyond its own credentials.
pub struct Security {
    /// The cluster CA, when this member holds it.
    pub ca: Option<ClusterCa>,
    /// Whether roles are enforced (`--authorization roles`, the default); off, every holder
    /// of a certificate is an admin (`always-allow`, as Kubernetes' `AlwaysAllow` mode).
    pub authorize: bool,
    /// Seals Secrets at rest (`--encryption-key-file`).
    pub sealer: Option<std::sync::Arc<crate::objects::encryption::Sealer>>,
    /// Per-caller request rate and watch limits.
    pub limits: crate::auth::limits::LimitSettings,
}

/// What a member's server counts, for its operations endpoint.
#[derive(Debug, Clone, Default)]
pub struct ServerMetrics {
    /// The object watches.
    pub watches: crate::objects::watch::WatchMetrics,
    /// The API's requests.
    pub api: ApiMetrics,
}

/// Why a member's server stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The member's credentials could not be made into TLS settings.
    #[error("the member's credentials: {0}")]
    Tls(#[from] skiff_proto::tls::TlsError),
    /// The server failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// Serve `node` on `listener` until `shutdown` resolves; Services get ClusterIPs from
/// `service_range`. With the member's credentials (`node.config().tls`) only mutual TLS
/// connections from holders of the cluster CA's certificates are accepted, and every request
/// passes the [`Gate`] (unless `security.authorize` is off); the CA signs the certificates
/// admins ask for.
pub async fn serve(
    node: RaftNode,
    service_range: ServiceRange,
    security: Security,
    metrics: ServerMetrics,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let raft = RaftServer::new(RaftService::new(node.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Raft's peer RPCs (votes, appends, snapshots, forwarded writes) are for members only: a
    // user's or an agent's certificate cannot cast a vote or append to the log. Which member
    // it is, Raft itself checks.
    let raft = InterceptedService::new(
        raft,
        holder::only_control_nodes(node.config().tls.is_some(), "Raft"),
    );
    let gate = Gate::new(
        ObjectStore::new(node.clone()).with_sealer(security.sealer.clone()),
        node.config().tls.is_some() && security.authorize,
    )
    .with_limits(security.limits);
    let kv = KvServer::new(GuardedKv::new(KvService::new(node.clone()), gate.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let cluster = ClusterServer::new(GuardedCluster::new(
        ClusterService::new(node.clone()),
        gate.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let objects = ObjectsServer::new(GuardedObjects::new(
        ObjectService::new(
            ObjectStore::new(node.clone())
                .with_service_range(service_range)
                .with_sealer(security.sealer.clone()),
            metrics.watches,
        ),
        gate.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let node_agent = NodeAgentServer::new(GuardedNodeAgent::new(
        NodeProxy::new(ObjectStore::new(node.clone())),
        gate.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let auth = AuthServer::new(AuthService::new(gate, security.ca));
    let health = crate::ops::grpc_health::service(node.clone());
    let tls = node
        .config()
        .tls
        .as_ref()
        .map(|c| c.server_tls(true))
        .transpose()?;
    let api = metrics.api;
    let router = transport::server()
        .add_service(raft)
        .add_service(Measured::new(kv, api.clone()))
        .add_service(Measured::new(cluster, api.clone()))
        .add_service(Measured::new(objects, api.clone()))
        .add_service(Measured::new(node_agent, api.clone()))
        .add_service(Measured::new(auth, api))
        .add_service(health);
    Ok(transport::serve(router, listener, tls, shutdown).await?)
}
