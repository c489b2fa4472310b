//! The Cluster gRPC service: list members, add a learner, promote it, remove a member.
//! Changes run on the leader; other members forward them.

use skiff_proto::pb::cluster_server::Cluster;
use skiff_proto::pb::{self};
use skiff_proto::status;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::forward::{self, is_forwarded, leader_call, mark};
use crate::error::StoreError;
use crate::handover::HandoverError;
use crate::node::RaftNode;

/// Serves the Cluster API of one member.
pub struct ClusterService {
    node: RaftNode,
}

impl ClusterService {
    /// Serve `node`.
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }

    /// Members as this member sees them; matched indexes are known on the leader only.
    fn list(&self) -> pb::MemberListResponse {
        let m = self.node.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index)
                    .or_else(|| (*id == m.id).then_some(m.last_log_index.unwrap_or(0)))
                    .unwrap_or(0),
            })
            .collect();
        pb::MemberListResponse {
            members,
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
        }
    }
}

fn check_addr(addr: &str) -> Result<(), Status> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| status::invalid("addr", format!("{addr:?} is not host:port")))?;
    if host.is_empty() {
        return Err(status::invalid("addr", format!("{addr:?} has no host")));
    }
    port.parse::<u16>()
        .map_err(|_| status::invalid("addr", format!("{addr:?} has no valid port")))?;
    Ok(())
}

/// How long a compaction may take to produce its snapshot.
const COMPACT_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

#[tonic::async_trait]
impl Cluster for ClusterService {
    type BackupStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

    /// Served by the member asked, once it has confirmed it holds every acknowledged write.
    async fn backup(
        &self,
        _request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        use futures::StreamExt as _;
        let started = std::time::Instant::now();
        let taken = crate::backup::take(&self.node)
            .instrument(tracing::info_span!("backup"))
            .await
            .map_err(|e| match e {
                crate::backup::BackupError::NotCurrent(_) => Status::unavailable(e.to_string()),
                e => Status::internal(e.to_string()),
            })?;
        tracing::info!(
            revision = taken.header.revision,
            took_ms = started.elapsed().as_millis() as u64,
            "backup started; streaming it as it is captured"
        );
        // Read from disk as the client takes it: the member holds a chunk or two, not the file.
        let chunks = taken.into_chunks().map(|c| {
            c.map(|data| pb::BackupChunk { data })
                .map_err(|e| Status::internal(format!("taking the backup: {e}")))
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let local = || async { Ok::<_, StoreError>(self.list()) };
        let remote = |ch| {
            let req = pb::MemberListRequest {};
            async move {
                forward::cluster(ch)
                    .member_list(mark(Request::new(req)))
                    .await
            }
        };
        match leader_call(&self.node, forwarded, local, remote).await {
            Ok(r) => Ok(Response::new(r)),
            // Without a leader, our own view is still worth showing.
            Err(_) => Ok(Response::new(self.list())),
        }
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        if req.id == 0 {
            return Err(status::invalid("id", "member ids start at 1"));
        }
        check_addr(&req.addr)?;
        let span = tracing::info_span!("member_add", member = req.id, addr = %req.addr);
        let local = || async {
            let known = self
                .node
                .raft()
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&req.id)
                .cloned();
            match known {
                Some(n) if n.addr != req.addr => {
                    return Err(StoreError::Membership(
                        openraft::error::ChangeMembershipError::LearnerNotFound(
                            openraft::error::LearnerNotFound { node_id: req.id },
                        ),
                    ))
                }
                _ => {}
            }
            tracing::info!("adding learner; waiting for it to catch up");
            self.node.add_learner(req.id, req.addr.clone()).await?;
            if req.promote {
                let window = self.node.config().autopilot.stabilization;
                tracing::info!(
                    ?window,
                    "caught up; promoting once it has kept up this long"
                );
                crate::autopilot::stabilize::wait_stable(&self.node, req.id, window).await?;
                tracing::info!("promoting to voter");
                self.node.promote(req.id).await?;
            }
            Ok(self.list())
        };
        let remote = |ch| {
            let req = req.clone();
            async move {
                forward::cluster(ch)
                    .member_add(mark(Request::new(req)))
                    .await
            }
        };
        leader_call(&self.node, forwarded, local, remote)
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let local = || async {
            self.node.promote(req.id).await?;
            Ok(self.list())
        };
        let remote = |ch| async move {
            forward::cluster(ch)
                .member_promote(mark(Request::new(req)))
                .await
        };
        leader_call(&self.node, forwarded, local, remote)
            .await
            .map(Response::new)
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let span = tracing::info_span!("member_remove", member = req.id);
        let local = || async {
            self.node.remove(req.id).await?;
            Ok(self.list())
        };
        let remote = |ch| async move {
            forward::cluster(ch)
                .member_remove(mark(Request::new(req)))
                .await
        };
        leader_call(&self.node, forwarded, local, remote)
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let to = (req.id != 0).then_some(req.id);
        let span = tracing::info_span!("transfer_leader", to = req.id);
        let local = || async {
            match self.node.hand_over(to).await {
                Ok(_) => Ok(self.list()),
                Err(HandoverError::NotLeader) => Err(StoreError::NotLeader {
                    leader: self.node.leader(),
                }),
                Err(e) => Err(StoreError::Handover(e)),
            }
        };
        let remote = |ch| async move {
            forward::cluster(ch)
                .transfer_leader(mark(Request::new(req)))
                .await
        };
        leader_call(&self.node, forwarded, local, remote)
            .instrument(span)
            .await
            .map(Response::new)
    }

    /// Served by the member asked: its own snapshot and log.
    async fn compact(
        &self,
        _request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let data_bytes = || {
            let dir = self.node.config().data_dir.clone();
            async move {
                tokio::task::spawn_blocking(move || crate::disk::usage(&dir).data_bytes)
                    .await
                    .unwrap_or(0)
            }
        };
        let before = data_bytes().await;
        let raft = self.node.raft();
        let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| status::unavailable(format!("member unavailable: {e}")))?;
        let m = raft
            .wait(Some(COMPACT_WITHIN))
            .metrics(
                |m| m.snapshot.map(|l| l.index) >= applied,
                "a snapshot of everything applied",
            )
            .await
            .map_err(|e| {
                status::unavailable(format!("no snapshot within {COMPACT_WITHIN:?}: {e}"))
            })?;
        let after = data_bytes().await;
        tracing::info!(before, after, snapshot = ?m.snapshot, purged = ?m.purged, "compacted");
        Ok(Response::new(pb::CompactResponse {
            member_id: self.node.id(),
            data_bytes_before: before,
            data_bytes_after: after,
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        }))
    }
}
