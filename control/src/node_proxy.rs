//! The `NodeAgent` service on control nodes: each call (logs, exec, image import) is passed on
//! to the agent of the pod's node, found from the Pod's `spec.nodeName` and the Node's
//! `InternalIP` and agent port (`status.daemonEndpoints.kubeletEndpoint.port`). Clients
//! thus reach every node through any control node.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use serde_json::Value;
use skiff_proto::pb::node_agent_client::NodeAgentClient;
use skiff_proto::pb::node_agent_server::NodeAgent;
use skiff_proto::pb::{
    ExecRequest, ExecResponse, ImportImageChunk, ImportImageResponse, LogsChunk, LogsRequest,
};
use skiff_proto::transport::{self, MAX_MESSAGE_BYTES};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::objects::ObjectStore;

/// Passes `NodeAgent` calls on to node agents.
pub struct NodeProxy {
    store: ObjectStore,
}

impl NodeProxy {
    /// A proxy that looks pods and nodes up in `store`.
    pub fn new(store: ObjectStore) -> Self {
        Self { store }
    }

    async fn object(&self, resource: &str, namespace: &str, name: &str) -> Result<Value, Status> {
        let (bytes, _) = self
            .store
            .get(resource, namespace, name, false)
            .await
            .map_err(Status::from)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("{resource} {name}: {e}")))
    }

    async fn agent_of_node(&self, node: &str) -> Result<NodeAgentClient<Channel>, Status> {
        let n = self.object("nodes", "", node).await?;
        let ip = n
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
            })
            .and_then(|x| x.get("address").and_then(Value::as_str))
            .ok_or_else(|| {
                Status::failed_precondition(format!("node {node:?} reports no InternalIP"))
            })?;
        let port = n
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_i64)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "node {node:?} runs no agent API (a hollow node?)"
                ))
            })?;
        // Agents serve mutual TLS when this member has credentials: it presents its own and
        // expects an agent's certificate of the same CA.
        let tls = self
            .store
            .node()
            .config()
            .tls
            .as_ref()
            .map(|c| c.client_tls(skiff_proto::tls::NODE_SERVER_NAME))
            .transpose()
            .map_err(|e| Status::internal(format!("this member's credentials: {e}")))?;
        let channel = transport::channel(&format!("{ip}:{port}"), tls.as_ref())
            .map_err(|e| Status::internal(format!("node {node:?} agent address: {e}")))?;
        Ok(NodeAgentClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    async fn agent_of_pod(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<NodeAgentClient<Channel>, Status> {
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let p = self.object("pods", ns, pod).await?;
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Status::failed_precondition(format!("pod {pod:?} is not scheduled to a node yet"))
            })?;
        self.agent_of_node(node).await
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogsChunk, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAgent for NodeProxy {
    type LogsStream = LogStream;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let r = request.into_inner();
        let mut agent = self.agent_of_pod(&r.namespace, &r.pod).await?;
        let stream = agent.logs(r).await?.into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = request.into_inner();
        let mut agent = self.agent_of_pod(&r.namespace, &r.pod).await?;
        agent.exec(r).await
    }

    async fn import_image(
        &self,
        request: Request<Streaming<ImportImageChunk>>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("node: the import stream is empty"))??;
        if first.node.is_empty() {
            return Err(Status::invalid_argument(
                "node: the first chunk must name the node",
            ));
        }
        let mut agent = self.agent_of_node(&first.node).await?;
        // A client stream that breaks ends the forwarded one; the agent then refuses the
        // truncated archive.
        let rest = incoming
            .take_while(|c| futures::future::ready(c.is_ok()))
            .filter_map(|c| futures::future::ready(c.ok()));
        let outgoing = futures::stream::once(async move { first }).chain(rest);
        agent.import_image(outgoing).await
    }
}
