//! Reads of the live key space at one consistent revision.

use std::ops::Bound;

use super::spaces::{KvSpace, StoredKv};
use super::SmShared;
use crate::engine::{Engine, Result};
use crate::keyspace::{prefix_end, KeySpace, TypedRead};
use crate::mvcc::KeyValue;

/// The answer to a range read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// Matching keys in key order, at most `limit`.
    pub kvs: Vec<KeyValue>,
    /// The store revision the read saw.
    pub revision: u64,
    /// More keys matched than `limit` allowed.
    pub more: bool,
}

fn to_kv(key: Vec<u8>, s: StoredKv) -> KeyValue {
    KeyValue {
        key,
        value: s.value,
        create_revision: s.create_revision,
        mod_revision: s.mod_revision,
        version: s.version,
    }
}

impl<E: Engine> SmShared<E> {
    /// Read `key`, or every key starting with it when `prefix` is set, from `start_after`
    /// (exclusive, for paging) on; at most `limit` keys (`0` = all).
    pub fn range(
        &self,
        key: &[u8],
        prefix: bool,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<RangeResult> {
        let guard = self.state();
        let revision = guard.revision;
        if !prefix {
            let kvs = self
                .engine
                .get_in::<KvSpace>(&key.to_vec())?
                .map(|s| to_kv(key.to_vec(), s))
                .into_iter()
                .collect();
            return Ok(RangeResult {
                kvs,
                revision,
                more: false,
            });
        }
        let mut start = KvSpace::raw_key(&key.to_vec());
        let start_bound = match start_after {
            Some(after) if after >= key => {
                start = KvSpace::raw_key(&after.to_vec());
                Bound::Excluded(start)
            }
            _ => Bound::Included(start),
        };
        let end = match prefix_end(&KvSpace::raw_key(&key.to_vec())) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let fetch = if limit == 0 { 0 } else { limit + 1 };
        let raw = self.engine.scan(start_bound, end, fetch)?;
        drop(guard);
        let more = limit != 0 && raw.len() > limit;
        let mut kvs = Vec::with_capacity(raw.len().min(limit.max(1)));
        for (k, v) in raw
            .into_iter()
            .take(if limit == 0 { usize::MAX } else { limit })
        {
            let stored: StoredKv =
                bincode::deserialize(&v).map_err(|source| crate::engine::EngineError::Decode {
                    space: KvSpace::NAME,
                    source,
                })?;
            kvs.push(to_kv(k[1..].to_vec(), stored));
        }
        Ok(RangeResult {
            kvs,
            revision,
            more,
        })
    }
}
