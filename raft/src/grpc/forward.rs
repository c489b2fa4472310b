//! Forwarding calls that need the leader. A call that arrives at a follower is sent on to the
//! leader once, marked as forwarded; a forwarded call that finds no leader here is answered
//! `UNAVAILABLE`, so forwarding never loops and the client retries.

use std::future::Future;
use std::time::Duration;

use skiff_proto::client::LEADER_METADATA;
use skiff_proto::pb::cluster_client::ClusterClient;
use skiff_proto::pb::kv_client::KvClient;
use skiff_proto::status;
use skiff_proto::transport::MAX_MESSAGE_BYTES;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::error::StoreError;
use crate::grpc::convert::store_error;
use crate::node::RaftNode;

/// Metadata key that marks a forwarded call.
pub const FORWARDED: &str = "skiff-forwarded";

/// Whether `req` was forwarded by another member.
pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

/// Mark `req` as forwarded.
pub fn mark<T>(mut req: Request<T>) -> Request<T> {
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}

/// A write's reply. A follower's names the leader it forwarded to, so that the client
/// can send its next writes there directly and spare both members the forwarding hop.
pub fn write_reply<T>(node: &RaftNode, msg: T) -> tonic::Response<T> {
    let mut resp = tonic::Response::new(msg);
    if let Some((id, addr)) = node.leader() {
        if id != node.id() {
            if let Ok(v) = addr.parse() {
                resp.metadata_mut().insert(LEADER_METADATA, v);
            }
        }
    }
    resp
}

/// Where a call should run.
pub enum Route {
    /// Here: this member is the leader.
    Local,
    /// On the leader at this channel.
    Leader(Channel),
}

/// Decide where a leader-only call runs, waiting briefly for an election if needed.
pub async fn route(node: &RaftNode, forwarded: bool) -> Result<Route, Status> {
    let leader = node
        .wait_leader()
        .await
        .ok_or_else(|| status::unavailable("no leader"))?;
    if leader.0 == node.id() {
        return Ok(Route::Local);
    }
    if forwarded {
        return Err(status::unavailable(format!(
            "not the leader; leader is {} at {}",
            leader.0, leader.1
        )));
    }
    let ch = node
        .channels()
        .get(&leader.1)
        .map_err(|e| status::unavailable(format!("leader address {}: {e}", leader.1)))?;
    Ok(Route::Leader(ch))
}

/// A Kv client to the leader.
pub fn kv(ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A Cluster client to the leader.
pub fn cluster(ch: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Run a leader-only call: locally when this member leads, else on the leader. If leadership
/// moves away while the local call runs, the call goes to the new leader (writes carry a
/// request id, so this never applies one twice).
pub async fn leader_call<R, L, LF, F, FF>(
    node: &RaftNode,
    forwarded: bool,
    mut local: L,
    mut remote: F,
) -> Result<R, Status>
where
    L: FnMut() -> LF,
    LF: Future<Output = Result<R, StoreError>>,
    F: FnMut(Channel) -> FF,
    FF: Future<Output = Result<tonic::Response<R>, Status>>,
{
    for _ in 0..3 {
        match route(node, forwarded).await? {
            Route::Local => match local().await {
                Ok(r) => return Ok(r),
                Err(StoreError::NotLeader { .. }) if !forwarded => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(store_error(e)),
            },
            Route::Leader(ch) => return remote(ch).await.map(|r| r.into_inner()),
        }
    }
    Err(status::unavailable("leadership is changing"))
}
