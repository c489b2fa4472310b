//! Applying transactions: deterministic, over the stored state plus the changes of the batch
//! being applied (an overlay), so every write of a batch sees the writes before it and the
//! whole batch lands in one atomic engine write.

use std::collections::{BTreeMap, HashMap};

use super::recent_ids::{BucketKey, RecentIds};
use super::spaces::{
    AppliedState, HistorySpace, KvSpace, RequestBucketSpace, RequestSpace, StoredKv,
};
use crate::engine::{Engine, Result, WriteBatch};
use crate::keyspace::TypedRead;
use crate::mvcc::{Compare, Event, EventKind, KeyValue, Op, OpResult, Txn, TxnResult};
use crate::types::{RequestId, Write};

/// How long a request id is remembered for retries, in the entries' own clock.
pub const REQUEST_ID_TTL_MS: u64 = 2 * 60 * 1000;

/// At most this many history records are compacted per applied batch, to bound apply work.
const COMPACT_STEP: u64 = 256;
/// At most this many request buckets are expired per applied batch.
const EXPIRE_STEP: usize = 64;

/// The changes of one apply call, not yet written.
pub(crate) struct Overlay<'a, E: Engine> {
    engine: &'a E,
    recent: &'a RecentIds,
    kv: BTreeMap<Vec<u8>, Option<StoredKv>>,
    requests: HashMap<RequestId, TxnResult>,
    /// Request ids first seen in this batch, in order.
    new_ids: Vec<RequestId>,
    pub(crate) batch: WriteBatch,
    /// Events in apply order, with their revision.
    pub(crate) events: Vec<(u64, Event)>,
    pub(crate) state: AppliedState,
}

fn to_kv(key: &[u8], s: &StoredKv) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: s.value.clone(),
        create_revision: s.create_revision,
        mod_revision: s.mod_revision,
        version: s.version,
    }
}

impl<'a, E: Engine> Overlay<'a, E> {
    pub(crate) fn new(engine: &'a E, state: AppliedState, recent: &'a RecentIds) -> Self {
        Self {
            engine,
            recent,
            kv: BTreeMap::new(),
            requests: HashMap::new(),
            new_ids: Vec::new(),
            batch: WriteBatch::default(),
            events: Vec::new(),
            state,
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<StoredKv>> {
        match self.kv.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.engine.get_in::<KvSpace>(&key.to_vec()),
        }
    }

    /// Live keys starting with `prefix`, merging the stored state with this batch's changes.
    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, StoredKv)>> {
        let mut merged: BTreeMap<Vec<u8>, StoredKv> = self
            .engine
            .scan_prefix_in::<KvSpace>(prefix, 0)?
            .into_iter()
            .collect();
        for (k, v) in self.kv.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn compare_holds(&self, c: &Compare) -> Result<bool> {
        Ok(match c {
            Compare::ModRevision { key, revision } => {
                self.get(key)?.map(|kv| kv.mod_revision).unwrap_or(0) == *revision
            }
            Compare::Exists { key } => self.get(key)?.is_some(),
            Compare::Absent { key } => self.get(key)?.is_none(),
        })
    }

    /// Apply one client write at `time_ms`; returns its result.
    pub(crate) fn apply_write(&mut self, write: &Write, time_ms: u64) -> Result<TxnResult> {
        if write.request_id != 0 {
            if let Some(done) = self.requests.get(&write.request_id) {
                return Ok(done.clone());
            }
            if self.recent.may_contain(write.request_id) {
                if let Some((_, done)) = self.engine.get_in::<RequestSpace>(&write.request_id)? {
                    return Ok(done);
                }
            }
        }
        let result = self.apply_txn(&write.txn)?;
        if write.request_id != 0 {
            self.requests.insert(write.request_id, result.clone());
            self.batch
                .put::<RequestSpace>(&write.request_id, &(time_ms, result.clone()));
            self.new_ids.push(write.request_id);
        }
        Ok(result)
    }

    fn apply_txn(&mut self, txn: &Txn) -> Result<TxnResult> {
        let mut succeeded = true;
        for c in &txn.compares {
            if !self.compare_holds(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let rev = self.state.revision + 1;
        let mut changed = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.apply_op(op, rev, &mut changed)?);
        }
        if !changed.is_empty() {
            self.state.revision = rev;
            self.events.extend(changed.into_iter().map(|ev| (rev, ev)));
        }
        Ok(TxnResult {
            succeeded,
            revision: self.state.revision,
            ops: results,
        })
    }

    fn apply_op(&mut self, op: &Op, rev: u64, changed: &mut Vec<Event>) -> Result<OpResult> {
        match op {
            Op::Put { key, value } => Ok(OpResult::Put {
                prev: self.put(key, value, rev, changed)?,
            }),
            Op::PutNoPrev { key, value } => {
                self.put(key, value, rev, changed)?;
                Ok(OpResult::Put { prev: None })
            }
            Op::Delete { key } => {
                let prev = match self.get(key)? {
                    Some(p) => vec![(key.clone(), p)],
                    None => vec![],
                };
                Ok(OpResult::Delete {
                    prev: self.delete_all(prev, rev, changed),
                })
            }
            Op::DeletePrefix { prefix } => {
                let doomed = self.keys_with_prefix(prefix)?;
                Ok(OpResult::Delete {
                    prev: self.delete_all(doomed, rev, changed),
                })
            }
            Op::Get { key } => Ok(OpResult::Get {
                kv: self.get(key)?.map(|s| to_kv(key, &s)),
            }),
        }
    }

    /// Set `key` at revision `rev`; returns its previous value.
    fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        rev: u64,
        changed: &mut Vec<Event>,
    ) -> Result<Option<KeyValue>> {
        let prev = self.get(key)?;
        let next = StoredKv {
            value: value.to_vec(),
            create_revision: prev.as_ref().map(|p| p.create_revision).unwrap_or(rev),
            mod_revision: rev,
            version: prev.as_ref().map(|p| p.version + 1).unwrap_or(1),
        };
        let prev_kv = prev.as_ref().map(|p| to_kv(key, p));
        changed.push(Event {
            kind: EventKind::Put,
            kv: to_kv(key, &next),
            prev: prev_kv.clone(),
        });
        let key = key.to_vec();
        self.batch.put::<KvSpace>(&key, &next);
        self.kv.insert(key, Some(next));
        Ok(prev_kv)
    }

    fn delete_all(
        &mut self,
        doomed: Vec<(Vec<u8>, StoredKv)>,
        rev: u64,
        changed: &mut Vec<Event>,
    ) -> Vec<KeyValue> {
        let mut prevs = Vec::with_capacity(doomed.len());
        for (key, prev) in doomed {
            let prev_kv = to_kv(&key, &prev);
            let tombstone = KeyValue {
                key: key.clone(),
                value: vec![],
                create_revision: 0,
                mod_revision: rev,
                version: 0,
            };
            changed.push(Event {
                kind: EventKind::Delete,
                kv: tombstone,
                prev: Some(prev_kv.clone()),
            });
            self.batch.delete::<KvSpace>(&key);
            self.kv.insert(key, None);
            prevs.push(prev_kv);
        }
        prevs
    }

    /// Record this batch's history and request ids, each as one record; returns the request
    /// bucket written, if any.
    pub(crate) fn record_batch(
        &mut self,
        time_ms: u64,
        log_index: u64,
    ) -> Option<(BucketKey, Vec<RequestId>)> {
        if let Some((last, _)) = self.events.last() {
            self.batch.put::<HistorySpace>(last, &self.events);
        }
        if self.new_ids.is_empty() {
            return None;
        }
        let ids = std::mem::take(&mut self.new_ids);
        let key = (time_ms, u128::from(log_index));
        self.batch.put::<RequestBucketSpace>(&key, &ids);
        Some((key, ids))
    }

    /// Forget request ids older than the TTL and history beyond the retained window; returns
    /// the request bucket through which no bucket is left once this batch is written.
    pub(crate) fn expire(
        &mut self,
        now_ms: u64,
        retain_revisions: u64,
    ) -> Result<Option<BucketKey>> {
        let cutoff = now_ms.saturating_sub(REQUEST_ID_TTL_MS);
        let mut gone_through = None;
        if cutoff > 0 {
            let old = self.engine.scan_in::<RequestBucketSpace>(
                std::ops::Bound::Unbounded,
                std::ops::Bound::Excluded(&(cutoff, 0)),
                EXPIRE_STEP,
            )?;
            // The scan returns the oldest buckets first: deleting all it found leaves none
            // below the cutoff, or (when it hit its limit) none up to the last one found.
            gone_through = Some(match old.last() {
                Some((last, _)) if old.len() == EXPIRE_STEP => *last,
                _ => (cutoff - 1, u128::MAX),
            });
            for (bucket, ids) in old {
                for id in ids {
                    self.batch.delete::<RequestSpace>(&id);
                }
                self.batch.delete::<RequestBucketSpace>(&bucket);
            }
        }
        let target = self.state.revision.saturating_sub(retain_revisions);
        if target > self.state.compacted {
            // Whole batch records only: a record reaching past the target stays.
            let doomed = self.engine.scan_in::<HistorySpace>(
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(&target),
                COMPACT_STEP as usize,
            )?;
            for (last, _) in doomed {
                self.batch.delete::<HistorySpace>(&last);
                self.state.compacted = self.state.compacted.max(last);
            }
        }
        Ok(gone_through)
    }
}
