//! The Kv gRPC service: range, put, delete, txn, watch and status on any member.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use skiff_proto::pb::kv_server::Kv;
use skiff_proto::pb::{self};
use skiff_proto::status;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert::{self, event_to_pb, kv_to_pb, store_error};
use super::forward::{self, is_forwarded, mark};
use crate::mvcc::{Op, OpResult, Txn, TxnResult};
use crate::node::RaftNode;
use crate::state_machine::{WatchError, WatchFilter, WatchMessage};
use crate::types::Write;

/// Default period of watch progress (bookmark) events.
const DEFAULT_PROGRESS: Duration = Duration::from_secs(1);

/// Serves the Kv API of one member.
pub struct KvService {
    node: RaftNode,
}

impl KvService {
    /// Serve `node`.
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }

    fn write_reply<T>(&self, msg: T) -> Response<T> {
        forward::write_reply(&self.node, msg)
    }

    fn header(&self, revision: u64) -> pb::ResponseHeader {
        let term = self.node.raft().metrics().borrow().current_term;
        pb::ResponseHeader {
            member_id: self.node.id(),
            revision,
            raft_term: term,
        }
    }
}

/// Where objects live: written only through the Objects API, where validation, defaults and
/// allocations apply, never by a raw Kv write.
const RESERVED: &[u8] = b"/registry/";

/// Refuse a write that would touch the object key space: a put or delete of a key in it, or
/// a prefix delete that covers any of it (the empty prefix included).
fn refuse_reserved(txn: &Txn) -> Result<(), Status> {
    let touches = |op: &Op| match op {
        Op::Put { key, .. } | Op::PutNoPrev { key, .. } | Op::Delete { key } => {
            key.starts_with(RESERVED)
        }
        Op::DeletePrefix { prefix } => prefix.starts_with(RESERVED) || RESERVED.starts_with(prefix),
        Op::Get { .. } => false,
    };
    match txn
        .success
        .iter()
        .chain(&txn.failure)
        .find(|op| touches(op))
    {
        None => Ok(()),
        Some(op) => {
            let key = match op {
                Op::Put { key, .. } | Op::PutNoPrev { key, .. } | Op::Delete { key } => key,
                Op::DeletePrefix { prefix } => prefix,
                Op::Get { key } => key,
            };
            Err(Status::permission_denied(format!(
                "key {:?}: the object key space ({}) is reserved; objects are written through the Objects API (skiffctl apply, create, delete), never the raw kv API",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(RESERVED)
            )))
        }
    }
}

/// The first operation's result of a single-operation write.
fn first_op(result: TxnResult) -> (u64, Option<OpResult>) {
    (result.revision, result.ops.into_iter().next())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        if req.key.is_empty() && !req.prefix {
            return Err(status::invalid(
                "key",
                "must not be empty (use prefix to list)",
            ));
        }
        // Planted for the chaos suite's self-test: skip the read index everywhere.
        let stale = req.stale || cfg!(feature = "planted-bug-stale-read");
        if !stale {
            let local = || async { self.node.read_barrier().await };
            let routed = forward::route(&self.node, forwarded).await?;
            match routed {
                forward::Route::Local => local().await.map_err(store_error)?,
                forward::Route::Leader(ch) => {
                    return forward::kv(ch).range(mark(Request::new(req))).await;
                }
            }
        }
        let start_after = (!req.start_after.is_empty()).then_some(req.start_after.as_slice());
        let r = self
            .node
            .state()
            .range(&req.key, req.prefix, start_after, req.limit as usize)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::RangeResponse {
            header: Some(self.header(r.revision)),
            kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
            more: r.more,
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let req = request.into_inner();
        let request_id = convert::request_id("request_id", &req.request_id)?;
        let span = tracing::debug_span!("put", key = %String::from_utf8_lossy(&req.key));
        let op = convert::put_op("put", req)?;
        let write = Write {
            request_id,
            txn: Txn {
                success: vec![op],
                ..Default::default()
            },
        };
        refuse_reserved(&write.txn)?;
        let (rev, op) = first_op(
            self.node
                .propose(write)
                .instrument(span)
                .await
                .map_err(store_error)?,
        );
        let prev_kv = match op {
            Some(OpResult::Put { prev }) => prev.map(kv_to_pb),
            _ => None,
        };
        Ok(self.write_reply(pb::PutResponse {
            header: Some(self.header(rev)),
            prev_kv,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = request.into_inner();
        let request_id = convert::request_id("request_id", &req.request_id)?;
        let span = tracing::debug_span!("delete", key = %String::from_utf8_lossy(&req.key), prefix = req.prefix);
        let op = convert::delete_op("delete", req)?;
        let write = Write {
            request_id,
            txn: Txn {
                success: vec![op],
                ..Default::default()
            },
        };
        refuse_reserved(&write.txn)?;
        let (rev, op) = first_op(
            self.node
                .propose(write)
                .instrument(span)
                .await
                .map_err(store_error)?,
        );
        let prev = match op {
            Some(OpResult::Delete { prev }) => prev,
            _ => vec![],
        };
        Ok(self.write_reply(pb::DeleteResponse {
            header: Some(self.header(rev)),
            deleted: prev.len() as u64,
            prev_kvs: prev.into_iter().map(kv_to_pb).collect(),
        }))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        let request_id = convert::request_id("request_id", &req.request_id)?;
        let write = Write {
            request_id,
            txn: convert::txn_from_pb(req)?,
        };
        refuse_reserved(&write.txn)?;
        let span = tracing::debug_span!("txn", request_id = %format!("{request_id:032x}"));
        let result = self
            .node
            .propose(write)
            .instrument(span)
            .await
            .map_err(store_error)?;
        let header = self.header(result.revision);
        Ok(self.write_reply(convert::txn_result_to_pb(result, header)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let state = self.node.state().clone();
        let current = state.revision();
        let compacted = state.state().compacted;
        let start = if req.start_revision == 0 {
            current + 1
        } else {
            req.start_revision
        };
        if start <= compacted {
            return Err(status::expired(start, compacted));
        }
        let every = match req.progress_interval_ms {
            0 => DEFAULT_PROGRESS,
            ms => Duration::from_millis(ms.into()),
        };
        let filter = WatchFilter {
            key: req.key,
            prefix: req.prefix,
        };
        let rx = state.watch(filter, start, every);
        let member_id = self.node.id();
        let metrics = self.node.raft().metrics();
        let header = move |revision: u64| pb::ResponseHeader {
            member_id,
            revision,
            raft_term: metrics.borrow().current_term,
        };
        // The first message tells the client where the watch starts, so a reconnect never
        // skips or repeats.
        let created = pb::WatchResponse {
            header: Some(header(start - 1)),
            events: vec![],
            progress: true,
        };
        let stream = futures::stream::unfold((rx, Some(created)), move |(mut rx, first)| {
            let header = header.clone();
            async move {
                if let Some(first) = first {
                    return Some((Ok(first), (rx, None)));
                }
                let msg = rx.recv().await?;
                let item = match msg {
                    Ok(WatchMessage::Events(events)) => {
                        let rev = events.last().map(|(r, _)| *r).unwrap_or(0);
                        Ok(pb::WatchResponse {
                            header: Some(header(rev)),
                            events: events.into_iter().map(|(_, e)| event_to_pb(e)).collect(),
                            progress: false,
                        })
                    }
                    Ok(WatchMessage::Progress(rev)) => Ok(pb::WatchResponse {
                        header: Some(header(rev)),
                        events: vec![],
                        progress: true,
                    }),
                    Err(WatchError::Expired {
                        requested,
                        compacted,
                    }) => Err(status::expired(requested, compacted)),
                    Err(e @ WatchError::Storage(_)) => Err(Status::internal(e.to_string())),
                };
                Some((item, (rx, None)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let m = self.node.raft().metrics().borrow().clone();
        let backups = self.node.config().backups.clone();
        let data_dir = self.node.config().data_dir.clone();
        let disk = tokio::task::spawn_blocking(move || crate::disk::usage(&data_dir))
            .await
            .unwrap_or_default();
        let learner = !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.node.id());
        Ok(Response::new(pb::StatusResponse {
            member_id: self.node.id(),
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            revision: self.node.state().revision(),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            cluster_id: self.node.config().cluster_id.clone(),
            learner,
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            certificate_not_after: self
                .node
                .config()
                .tls
                .as_ref()
                .and_then(|c| skiff_proto::tls::holder::not_after(&c.current().cert).ok())
                .unwrap_or(0),
            data_bytes: disk.data_bytes,
            disk_total_bytes: disk.total_bytes,
            disk_free_bytes: disk.free_bytes,
            newest_backup_at: crate::backup::schedule::newest_at(&backups.dir).unwrap_or(0),
            backup_interval_seconds: backups.interval.as_secs(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_into_the_object_key_space_are_refused_naming_it() {
        let put = Txn::put("/registry/core/pods/default/p", "x");
        let err = refuse_reserved(&put).expect_err("reserved");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("/registry/"), "{}", err.message());
        let wipe = Txn {
            success: vec![Op::DeletePrefix {
                prefix: b"/".to_vec(),
            }],
            ..Default::default()
        };
        assert!(
            refuse_reserved(&wipe).is_err(),
            "a prefix delete covering it"
        );
        assert!(refuse_reserved(&Txn::put("/greeting", "hello")).is_ok());
        let reads = Txn {
            success: vec![Op::Get {
                key: b"/registry/x".to_vec(),
            }],
            ..Default::default()
        };
        assert!(refuse_reserved(&reads).is_ok(), "reading is not writing");
    }
}
