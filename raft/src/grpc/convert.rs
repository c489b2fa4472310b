//! Conversions between the protobuf messages and the store's own types, and store errors
//! to gRPC statuses. The one place these mappings live.

use skiff_proto::pb;
use skiff_proto::status;
use skiff_proto::transport::MAX_VALUE_BYTES;
use tonic::Status;

use crate::error::StoreError;
use crate::mvcc::{Compare, Event, EventKind, KeyValue, Op, OpResult, Txn, TxnResult};
use crate::types::RequestId;

/// A stored key-value as protobuf.
pub fn kv_to_pb(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

/// A watch event as protobuf.
pub fn event_to_pb(ev: Event) -> pb::Event {
    pb::Event {
        r#type: match ev.kind {
            EventKind::Put => pb::event::EventType::Put as i32,
            EventKind::Delete => pb::event::EventType::Delete as i32,
        },
        kv: Some(kv_to_pb(ev.kv)),
        prev_kv: ev.prev.map(kv_to_pb),
    }
}

/// The request id of a write: the client's 16 bytes, or a fresh one when it sent none, so
/// that retries between members of one call are still deduplicated.
pub fn request_id(field: &str, bytes: &[u8]) -> Result<RequestId, Status> {
    match bytes.len() {
        0 => Ok(rand::random::<u128>() | 1),
        16 => {
            let id = u128::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| status::invalid(field, "must be 16 bytes"))?,
            );
            if id == 0 {
                return Err(status::invalid(field, "must not be all zeros"));
            }
            Ok(id)
        }
        n => Err(status::invalid(field, format!("must be 16 bytes, got {n}"))),
    }
}

fn check_key(field: &str, key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(status::invalid(field, "must not be empty"));
    }
    if key.len() > 4096 {
        return Err(status::invalid(
            field,
            format!("{} bytes is over the 4096-byte key limit", key.len()),
        ));
    }
    Ok(())
}

/// Validate a put and turn it into an operation.
pub fn put_op(field: &str, p: pb::PutRequest) -> Result<Op, Status> {
    check_key(&format!("{field}.key"), &p.key)?;
    if p.value.len() > MAX_VALUE_BYTES {
        return Err(status::invalid(
            &format!("{field}.value"),
            format!(
                "{} bytes is over the limit of {} bytes (1.5 MiB) for key {:?}",
                p.value.len(),
                MAX_VALUE_BYTES,
                String::from_utf8_lossy(&p.key)
            ),
        ));
    }
    Ok(if p.prev_kv {
        Op::Put {
            key: p.key,
            value: p.value,
        }
    } else {
        Op::PutNoPrev {
            key: p.key,
            value: p.value,
        }
    })
}

/// Validate a delete and turn it into an operation.
pub fn delete_op(field: &str, d: pb::DeleteRequest) -> Result<Op, Status> {
    if d.prefix {
        // An empty prefix deletes everything, which is allowed only on purpose: "/" is the root.
        if d.key.is_empty() {
            return Err(status::invalid(
                &format!("{field}.key"),
                "an empty prefix would delete every key",
            ));
        }
        Ok(Op::DeletePrefix { prefix: d.key })
    } else {
        check_key(&format!("{field}.key"), &d.key)?;
        Ok(Op::Delete { key: d.key })
    }
}

fn txn_op(field: &str, op: pb::TxnOp) -> Result<Op, Status> {
    match op.op {
        Some(pb::txn_op::Op::Put(p)) => put_op(&format!("{field}.put"), p),
        Some(pb::txn_op::Op::Delete(d)) => delete_op(&format!("{field}.delete"), d),
        Some(pb::txn_op::Op::Get(g)) => {
            if g.prefix {
                return Err(status::invalid(
                    &format!("{field}.get.prefix"),
                    "a transaction reads single keys only",
                ));
            }
            check_key(&format!("{field}.get.key"), &g.key)?;
            Ok(Op::Get { key: g.key })
        }
        None => Err(status::invalid(field, "no operation set")),
    }
}

/// Validate a transaction request.
pub fn txn_from_pb(req: pb::TxnRequest) -> Result<Txn, Status> {
    let mut compares = Vec::with_capacity(req.compares.len());
    for (i, c) in req.compares.into_iter().enumerate() {
        let field = format!("compares[{i}]");
        check_key(&format!("{field}.key"), &c.key)?;
        let cmp = match pb::compare::Target::try_from(c.target) {
            Ok(pb::compare::Target::ModRevision) => Compare::ModRevision {
                key: c.key,
                revision: c.mod_revision,
            },
            Ok(pb::compare::Target::Exists) => Compare::Exists { key: c.key },
            Ok(pb::compare::Target::Absent) => Compare::Absent { key: c.key },
            Err(_) => {
                return Err(status::invalid(
                    &format!("{field}.target"),
                    format!("unknown target {}", c.target),
                ))
            }
        };
        compares.push(cmp);
    }
    let ops = |name: &str, list: Vec<pb::TxnOp>| -> Result<Vec<Op>, Status> {
        list.into_iter()
            .enumerate()
            .map(|(i, op)| txn_op(&format!("{name}[{i}]"), op))
            .collect()
    };
    let txn = Txn {
        compares,
        success: ops("success", req.success)?,
        failure: ops("failure", req.failure)?,
    };
    let total = txn.payload_len();
    if total > MAX_VALUE_BYTES + 64 * 1024 {
        return Err(status::invalid(
            "txn",
            format!("{total} bytes of keys and values is over the 1.5 MiB limit"),
        ));
    }
    Ok(txn)
}

/// A transaction result as protobuf.
pub fn txn_result_to_pb(r: TxnResult, header: pb::ResponseHeader) -> pb::TxnResponse {
    let responses = r
        .ops
        .into_iter()
        .map(|op| pb::TxnOpResponse {
            op: Some(match op {
                OpResult::Put { prev } => pb::txn_op_response::Op::Put(pb::PutResponse {
                    header: None,
                    prev_kv: prev.map(kv_to_pb),
                }),
                OpResult::Delete { prev } => pb::txn_op_response::Op::Delete(pb::DeleteResponse {
                    header: None,
                    deleted: prev.len() as u64,
                    prev_kvs: prev.into_iter().map(kv_to_pb).collect(),
                }),
                OpResult::Get { kv } => pb::txn_op_response::Op::Get(pb::RangeResponse {
                    header: None,
                    kvs: kv.map(kv_to_pb).into_iter().collect(),
                    more: false,
                }),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(header),
        succeeded: r.succeeded,
        responses,
    }
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A store error as a gRPC status.
pub fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::NotLeader {
            leader: Some((id, addr)),
        } => status::unavailable(format!("not the leader; leader is {id} at {addr}")),
        StoreError::NotLeader { leader: None } => status::unavailable("no leader"),
        StoreError::Stopped | StoreError::Fatal(_) => {
            status::unavailable(format!("member unavailable: {}", chain(&e)))
        }
        StoreError::Membership(_) | StoreError::Initialize(_) => {
            Status::failed_precondition(chain(&e))
        }
        StoreError::UnknownMember(_) => Status::not_found(chain(&e)),
        StoreError::Handover(
            crate::handover::HandoverError::NotAVoter(_)
            | crate::handover::HandoverError::NoOtherVoter,
        ) => Status::failed_precondition(chain(&e)),
        StoreError::Handover(_) | StoreError::Unstable { .. } => status::unavailable(chain(&e)),
        StoreError::Storage(_) => Status::internal(chain(&e)),
    }
}
