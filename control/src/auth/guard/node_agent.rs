//! Logs, exec and image imports through the control plane, behind the gate.

use skiff_proto::pb::node_agent_server::NodeAgent;
use skiff_proto::pb::{
    ExecRequest, ExecResponse, ImportImageChunk, ImportImageResponse, LogsRequest,
};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::gate::Gate;
use crate::auth::request::ObjectAsk;
use crate::auth::rules::Verb;
use crate::node_proxy::NodeProxy;

/// [`NodeProxy`] behind the gate.
pub struct GuardedNodeAgent {
    inner: NodeProxy,
    gate: Gate,
}

impl GuardedNodeAgent {
    /// `inner`, each request asked of `gate` first.
    pub fn new(inner: NodeProxy, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

#[tonic::async_trait]
impl NodeAgent for GuardedNodeAgent {
    type LogsStream = <NodeProxy as NodeAgent>::LogsStream;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.get_ref();
        let ask = || {
            ObjectAsk::new(
                self.gate.registry(),
                Verb::Logs,
                "pods",
                &r.namespace,
                &r.pod,
            )
        };
        self.gate.object(&request, ask).await?;
        self.inner.logs(request).await
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = request.get_ref();
        let ask = || {
            ObjectAsk::new(
                self.gate.registry(),
                Verb::Exec,
                "pods",
                &r.namespace,
                &r.pod,
            )
        };
        self.gate.object(&request, ask).await?;
        self.inner.exec(request).await
    }

    async fn import_image(
        &self,
        request: Request<Streaming<ImportImageChunk>>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        self.gate.call(&request, Verb::Import).await?;
        self.inner.import_image(request).await
    }
}
