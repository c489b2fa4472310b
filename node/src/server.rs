//! The agent's own gRPC API (`NodeAgent`): container logs (with follow and `--previous`),
//! exec, and OCI archive imports. Control nodes proxy clients' calls here; the agent answers
//! from its pod cache, its log files and containerd.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use skiff_proto::pb::node_agent_server::{NodeAgent, NodeAgentServer};
use skiff_proto::pb::{
    ExecRequest, ExecResponse, ImportImageChunk, ImportImageResponse, LogsChunk, LogsRequest,
};
use skiff_proto::tls::holder;
use skiff_proto::transport::{self, MAX_MESSAGE_BYTES};
use tokio::io::AsyncWriteExt;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::agent::Agent;
use crate::pod_worker::logs;
use crate::runtime::{labels, ContainerRuntime, ProcessState};

/// The `NodeAgent` service of one agent.
pub struct AgentService {
    agent: Arc<Agent>,
    /// The largest image archive an import may send.
    max_import_bytes: u64,
}

/// Serve the agent's API on `listener` until the process ends. With `tls` (the node's
/// credentials) only mutual TLS connections are accepted, and of those only control nodes' calls: logs,
/// exec and image import reach the agent through the control plane, never directly. An image
/// import larger than `max_import_bytes` is refused (and its partial archive removed).
pub async fn serve(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    tls: Option<skiff_proto::tls::ServerTls>,
    max_import_bytes: u64,
) -> Result<(), tonic::transport::Error> {
    let health_of = agent.clone();
    let svc = NodeAgentServer::new(AgentService {
        agent,
        max_import_bytes,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let secured = tls.is_some();
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(health_of, reporter));
    let router = transport::server()
        .add_service(health)
        .add_service(InterceptedService::new(
            svc,
            holder::only_control_nodes(secured, "the node agent"),
        ));
    transport::serve(router, listener, tls, std::future::pending()).await
}

/// The standard gRPC health service on the agent's port (`grpc.health.v1.Health`, for
/// orchestrators that probe gRPC): SERVING once the agent knows its pods (its cache has
/// listed them from the control plane), NOT_SERVING before.
async fn report_health(agent: Arc<Agent>, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let status = if agent.pods.revision() > 0 {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            for name in ["", "skiff.v1.NodeAgent"] {
                reporter.set_service_status(name, status).await;
            }
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A pod's container as the agent resolves it: folder, name, current container and attempt.
struct Target {
    dir: std::path::PathBuf,
    container: String,
    current: Option<(String, u32, ProcessState)>,
}

impl AgentService {
    async fn resolve(&self, namespace: &str, pod: &str, container: &str) -> Result<Target, Status> {
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let p = self
            .agent
            .pods
            .get(ns, pod)
            .ok_or_else(|| Status::not_found(format!("pods {pod:?} not found on this node")))?;
        let names: Vec<String> = p
            .spec
            .iter()
            .flat_map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .chain(s.containers.iter())
            })
            .map(|c| c.name.clone())
            .collect();
        let app: Vec<String> = p
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| c.name.clone())
            .collect();
        let container = if container.is_empty() {
            if app.len() == 1 {
                app[0].clone()
            } else {
                return Err(Status::invalid_argument(format!(
                    "container: a container name must be specified for pod {pod}, choose one of: [{}]",
                    app.join(" ")
                )));
            }
        } else if names.iter().any(|n| n == container) {
            container.to_string()
        } else {
            return Err(Status::invalid_argument(format!(
                "container: container {container} is not valid for pod {pod}"
            )));
        };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let current = self
            .agent
            .ctx
            .runtime
            .list()
            .await
            .map_err(Status::from)?
            .into_iter()
            .filter(|c| c.label(labels::POD_UID) == uid && c.label(labels::CONTAINER) == container)
            .max_by_key(|c| c.attempt())
            .map(|c| (c.id.clone(), c.attempt(), c.state.clone()));
        Ok(Target {
            dir: self.agent.ctx.pods_dir.join(uid),
            container,
            current,
        })
    }
}

fn tail(data: Vec<u8>, lines: i64) -> Vec<u8> {
    if lines <= 0 {
        return data;
    }
    let mut count = 0;
    // Skip a trailing newline so "last N lines" counts whole lines.
    let end = if data.last() == Some(&b'\n') {
        data.len() - 1
    } else {
        data.len()
    };
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            count += 1;
            if count == lines {
                return data[i + 1..].to_vec();
            }
        }
    }
    data
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogsChunk, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAgent for AgentService {
    type LogsStream = LogStream;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let r = request.into_inner();
        let t = self.resolve(&r.namespace, &r.pod, &r.container).await?;
        let Some((id, attempt, _)) = t.current.clone() else {
            return Err(Status::failed_precondition(format!(
                "container {:?} in pod {:?} is waiting to start",
                t.container, r.pod
            )));
        };
        let attempt = if r.previous {
            if attempt == 0 {
                return Err(Status::not_found(format!(
                    "previous terminated container {:?} in pod {:?} not found",
                    t.container, r.pod
                )));
            }
            attempt - 1
        } else {
            attempt
        };
        let data = logs::read(&t.dir, &t.container, attempt)
            .map_err(|e| Status::not_found(format!("log of container {:?}: {e}", t.container)))?;
        let data = tail(data, r.tail_lines);
        let file = logs::path(&t.dir, &t.container, attempt);
        let mut offset = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let follow = r.follow && !r.previous;
        let runtime = self.agent.ctx.runtime.clone();
        let stream = async_stream(move |tx| async move {
            if tx.send(Ok(LogsChunk { data })).await.is_err() || !follow {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                if len < offset {
                    // Rotated (copied aside and truncated): carry on from the start.
                    offset = 0;
                }
                if len > offset {
                    let bytes = std::fs::read(&file).unwrap_or_default();
                    let end = (len as usize).min(bytes.len());
                    let start = (offset as usize).min(end);
                    if tx
                        .send(Ok(LogsChunk {
                            data: bytes[start..end].to_vec(),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    offset = end as u64;
                    continue;
                }
                // The container has ended (or was replaced): the log is complete.
                match runtime.inspect(&id).await {
                    Ok(Some(c)) if matches!(c.state, ProcessState::Running { .. }) => {}
                    _ => return,
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = request.into_inner();
        if r.command.is_empty() {
            return Err(Status::invalid_argument(
                "command: must name a program to run",
            ));
        }
        let t = self.resolve(&r.namespace, &r.pod, &r.container).await?;
        let id = match t.current {
            Some((id, _, ProcessState::Running { .. })) => id,
            _ => {
                return Err(Status::failed_precondition(format!(
                    "container {:?} in pod {:?} is not running",
                    t.container, r.pod
                )))
            }
        };
        let timeout = Duration::from_secs(if r.timeout_seconds == 0 {
            60
        } else {
            u64::from(r.timeout_seconds)
        });
        let out = self
            .agent
            .ctx
            .runtime
            .exec(&id, &r.command, timeout)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(ExecResponse {
            exit_code: out.exit_code,
            output: out.output,
        }))
    }

    async fn import_image(
        &self,
        request: Request<Streaming<ImportImageChunk>>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        let mut stream = request.into_inner();
        let dir = self.agent.ctx.pods_dir.with_file_name("imports");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!("{}.tar", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
            let mut received: u64 = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                received += chunk.data.len() as u64;
                if received > self.max_import_bytes {
                    return Err(Status::resource_exhausted(format!(
                        "image archive over this node's import limit of {} bytes (--max-image-import-bytes)",
                        self.max_import_bytes
                    )));
                }
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
            }
            file.flush()
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            self.agent
                .ctx
                .runtime
                .images()
                .import_archive(&path)
                .await
                .map_err(Status::from)
        }
        .await;
        let _ = std::fs::remove_file(&path);
        Ok(Response::new(ImportImageResponse { images: result? }))
    }
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> LogStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<LogsChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n".to_vec(), 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc".to_vec(), 1), b"c");
        assert_eq!(tail(b"a\nb\n".to_vec(), 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n".to_vec(), 0), b"a\nb\n");
    }
}
