//! `skiff-test-grpc-health PORT`: gRPC's standard health service, answering SERVING for the
//! server as a whole (`""`) and for `ready`, NOT_SERVING for `down`; any other service is
//! NOT_FOUND. Pods run it to test the agent's gRPC probes.

use std::net::SocketAddr;

use tonic_health::ServingStatus;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: skiff-test-grpc-health PORT"))?
        .parse()?;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("ready", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("down", ServingStatus::NotServing)
        .await;
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(addr)
        .await?;
    Ok(())
}
