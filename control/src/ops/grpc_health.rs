//! The standard gRPC health service (`grpc.health.v1.Health`) on a member's API port, for
//! load balancers and orchestrators that probe gRPC: the whole server ("") and each API
//! service are SERVING while the member is ready (a leader known, its log applied), as
//! `/readyz` says, and NOT_SERVING otherwise.

use skiff_raft::RaftNode;
use tonic_health::server::{health_reporter, HealthReporter};
use tonic_health::ServingStatus;

/// The services reported besides the whole server.
const SERVICES: &[&str] = &["skiff.v1.Kv", "skiff.v1.Objects", "skiff.v1.Cluster"];

/// The health service of `node`, kept current by a task of its own.
pub fn service(
    node: RaftNode,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = health_reporter();
    tokio::spawn(report(node, reporter));
    service
}

/// How often readiness is looked at again when Raft's metrics do not change: a leader that
/// loses its quorum hears nothing, so nothing changes.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Follow the member's Raft metrics: readiness is looked at again whenever they change, and
/// every [`RECHECK`].
async fn report(node: RaftNode, reporter: HealthReporter) {
    let mut metrics = node.raft().metrics();
    let mut last = None;
    loop {
        let status = match super::not_ready(&node) {
            None => ServingStatus::Serving,
            Some(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            set_all(&reporter, status).await;
            last = Some(status);
        }
        let changed = tokio::time::timeout(RECHECK, metrics.changed()).await;
        if let Ok(Err(_)) = changed {
            // Raft stopped: the member is shutting down.
            set_all(&reporter, ServingStatus::NotServing).await;
            return;
        }
    }
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in std::iter::once("").chain(SERVICES.iter().copied()) {
        reporter.set_service_status(name, status).await;
    }
}
