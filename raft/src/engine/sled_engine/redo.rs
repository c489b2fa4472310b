//! The redo record: a batch's operations, length-prefixed, written before the batch so that
//! a crash part way through can be finished when the engine opens again.

use super::BatchOp;

const PUT: u8 = 1;
const DELETE: u8 = 2;

pub(super) fn encoded_len(ops: &[BatchOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            BatchOp::Put(k, v) => 9 + k.len() + v.len(),
            BatchOp::Delete(k) => 5 + k.len(),
        })
        .sum()
}

/// `len` is [`encoded_len`] of `ops`.
pub(super) fn encode(ops: &[BatchOp], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let bytes = |b: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    };
    for op in ops {
        match op {
            BatchOp::Put(k, v) => {
                out.push(PUT);
                bytes(k, &mut out);
                bytes(v, &mut out);
            }
            BatchOp::Delete(k) => {
                out.push(DELETE);
                bytes(k, &mut out);
            }
        }
    }
    out
}

/// `None` when the record is not what [`encode`] wrote.
pub(super) fn decode(mut rec: &[u8]) -> Option<Vec<BatchOp>> {
    fn bytes(rec: &mut &[u8]) -> Option<Vec<u8>> {
        let (len, rest) = rec.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (b, rest) = rest.split_at(len);
        *rec = rest;
        Some(b.to_vec())
    }
    let mut ops = Vec::new();
    while let Some((&kind, rest)) = rec.split_first() {
        rec = rest;
        ops.push(match kind {
            PUT => {
                let k = bytes(&mut rec)?;
                BatchOp::Put(k, bytes(&mut rec)?)
            }
            DELETE => BatchOp::Delete(bytes(&mut rec)?),
            _ => return None,
        });
    }
    Some(ops)
}
