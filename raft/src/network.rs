//! Raft RPCs to peers over tonic: openraft's messages serialised with bincode inside a
//! `RaftRequest`, one reused HTTP/2 channel per peer address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_proto::pb::raft_client::RaftClient;
use skiff_proto::pb::RaftRequest;
use skiff_proto::transport::{self, MAX_MESSAGE_BYTES};
use tonic::transport::Channel;

use crate::autopilot::contact::PeerContact;
use crate::types::{NodeId, TypeConfig};

/// Channels to other members by address, shared by Raft replication and request forwarding
/// so each peer has one connection; over mutual TLS when the member has credentials.
#[derive(Clone)]
pub struct PeerChannels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<skiff_proto::tls::ClientTls>,
}

impl PeerChannels {
    /// Channels that present `credentials` and expect peers to be control nodes of the same
    /// CA; plaintext without.
    pub fn new(
        credentials: Option<&skiff_proto::tls::LiveCredentials>,
    ) -> Result<Self, skiff_proto::tls::TlsError> {
        Ok(Self {
            by_addr: Default::default(),
            tls: credentials
                .map(|c| c.client_tls(skiff_proto::tls::CONTROL_SERVER_NAME))
                .transpose()?,
        })
    }

    /// The channel to `addr`, created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = transport::channel(addr, self.tls.as_ref())?;
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// A Raft RPC client on `channel` that sends and accepts messages up to the store's limit.
pub(crate) fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A Raft request of this member: its cluster, its protocol version, the payload.
pub(crate) fn raft_request(cluster_id: String, payload: Vec<u8>) -> RaftRequest {
    RaftRequest {
        cluster_id,
        payload,
        protocol: crate::versions::RAFT_PROTOCOL,
    }
}

/// Send an encoded AppendEntries outside openraft's replication (see
/// [`crate::eager_replication`]); the reply is not decoded.
pub(crate) async fn send_append(
    channel: Channel,
    cluster_id: String,
    payload: Vec<u8>,
) -> Result<(), tonic::Status> {
    raft_client(channel)
        .append_entries(raft_request(cluster_id, payload))
        .await
        .map(drop)
}

/// Builds a [`PeerClient`] per target for openraft.
#[derive(Clone)]
pub struct Network {
    cluster_id: String,
    channels: PeerChannels,
    contact: PeerContact,
}

impl Network {
    /// A network for the cluster `cluster_id`, using `channels`; each answer is noted in
    /// `contact`.
    pub fn new(cluster_id: String, channels: PeerChannels, contact: PeerContact) -> Self {
        Self {
            cluster_id,
            channels,
            contact,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            cluster_id: self.cluster_id.clone(),
            channel: self.channels.get(&node.addr).map_err(|e| e.to_string()),
            contact: self.contact.clone(),
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    cluster_id: String,
    channel: Result<Channel, String>,
    contact: PeerContact,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    async fn send<Req, Resp, E>(
        &mut self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send_payload(kind, payload, option).await
    }

    /// [`Self::send`] of a request already serialised.
    async fn send_payload<Resp, E>(
        &mut self,
        kind: RpcKind,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self.channel.clone().map_err(|e| {
            RPCError::Unreachable(Unreachable::new(&Msg(format!("{}: {e}", self.addr))))
        })?;
        let request = raft_request(self.cluster_id.clone(), payload);
        let mut client = raft_client(channel);
        let call = async {
            match kind {
                RpcKind::Append => client.append_entries(request).await,
                RpcKind::Vote => client.vote(request).await,
                RpcKind::Snapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Ok(Ok(r)) => {
                self.contact.answered(self.target);
                r.into_inner()
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                    "{}: {}",
                    self.addr,
                    status.message()
                )))))
            }
            Ok(Err(status)) => {
                return Err(RPCError::Network(NetworkError::new(&Msg(format!(
                    "{}: {}",
                    self.addr,
                    status.message()
                )))))
            }
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&Msg(format!(
                    "{}: timed out",
                    self.addr
                )))))
            }
        };
        let result: Result<Resp, E> = bincode::deserialize(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// The most bytes of entries one AppendEntries carries (a single larger entry still goes
/// alone). openraft gives each AppendEntries one heartbeat interval to be answered, the
/// follower's write and fsync included, and sends the same entries again when it is not: a
/// batch of large objects that a loaded follower cannot take in that time is sent forever,
/// each try costing both members a copy of it (seen: two members at a full core each for
/// ten minutes, every message timing out, filling a store with 512 KiB objects). Small
/// objects never come near it; large ones go a few per message. Well under a message's
/// limit (`MAX_MESSAGE_BYTES`), which the peer enforces.
const MAX_APPEND_BYTES: usize = 1 << 20;

/// How many of `entries`, from the first, serialise into at most `limit` bytes (at least one).
fn entries_that_fit(entries: &[openraft::Entry<TypeConfig>], limit: usize) -> u64 {
    let mut total = 0u64;
    let mut fit = 0u64;
    for e in entries {
        total += bincode::serialized_size(e).unwrap_or(u64::MAX / 2);
        if total > limit as u64 {
            break;
        }
        fit += 1;
    }
    fit.max(1)
}

#[derive(Clone, Copy)]
enum RpcKind {
    Append,
    Vote,
    Snapshot,
}

/// How soon replication retries a member it could not reach. openraft's default, 500 ms, is
/// longer than an election timeout: a member restarted after a crash heard from nobody, started
/// an election, and its vote request unseated the sitting leader. Connecting is cheap to retry.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(50);

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_RETRY))
    }

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // Counted before anything is copied. Only the entries that fit go, and openraft hears
        // how far they reached and goes on from there (its partial success: a refusal with a
        // hint would be logged as an error and forgotten after ten messages).
        let fit = entries_that_fit(&rpc.entries, MAX_APPEND_BYTES) as usize;
        let partial = fit < rpc.entries.len();
        rpc.entries.truncate(fit);
        let last_sent = rpc.entries.last().map(|e| e.log_id);
        let payload =
            bincode::serialize(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply: AppendEntriesResponse<NodeId> =
            self.send_payload(RpcKind::Append, payload, &option).await?;
        Ok(match reply {
            AppendEntriesResponse::Success if partial => {
                AppendEntriesResponse::PartialSuccess(last_sent)
            }
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(RpcKind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(RpcKind::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;

    #[test]
    fn as_many_entries_as_fit_are_counted_and_never_none() {
        let entry = |index| openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        };
        let entries: Vec<_> = (1..=5).map(entry).collect();
        let one = bincode::serialized_size(&entries[0]).unwrap_or(0) as usize;
        assert_eq!(entries_that_fit(&entries, 2 * one), 2);
        assert_eq!(entries_that_fit(&entries, 2 * one + one / 2), 2);
        assert_eq!(entries_that_fit(&entries, 100 * one), 5);
        assert_eq!(entries_that_fit(&entries, 0), 1, "one entry always goes");
    }
}
