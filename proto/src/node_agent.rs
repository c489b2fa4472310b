//! Calls of the `NodeAgent` service through the control plane: container logs, exec, and
//! OCI archive imports onto a node.

use tonic::transport::Channel;
use tonic::Streaming;

use crate::client::{Client, ClientError, Result};
use crate::pb::node_agent_client::NodeAgentClient;
use crate::pb::{ExecRequest, ExecResponse, ImportImageChunk, LogsChunk, LogsRequest};
use crate::transport::MAX_MESSAGE_BYTES;

/// Bytes per import chunk.
const IMPORT_CHUNK: usize = 1 << 20;

fn agent(ch: Channel) -> NodeAgentClient<Channel> {
    NodeAgentClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl Client {
    /// A container's log as a stream of chunks (it ends unless `req.follow`).
    pub async fn pod_logs(&self, req: LogsRequest) -> Result<Streaming<LogsChunk>> {
        self.call(|ch| {
            let req = req.clone();
            async move { agent(ch).logs(req).await }
        })
        .await
    }

    /// Run a command in a container. Sent once, never retried: a command is not idempotent.
    pub async fn pod_exec(&self, req: ExecRequest) -> Result<ExecResponse> {
        let (_, ch) = self.current();
        agent(ch)
            .exec(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(ClientError::Rejected)
    }

    /// Import the OCI archive `data` on `node`; returns the image names.
    pub async fn import_image(&self, node: &str, data: Vec<u8>) -> Result<Vec<String>> {
        let mut chunks: Vec<ImportImageChunk> = data
            .chunks(IMPORT_CHUNK)
            .map(|c| ImportImageChunk {
                node: String::new(),
                data: c.to_vec(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(ImportImageChunk::default());
        }
        chunks[0].node = node.to_string();
        self.call(|ch| {
            let chunks = chunks.clone();
            async move { agent(ch).import_image(futures::stream::iter(chunks)).await }
        })
        .await
        .map(|r| r.images)
    }
}
