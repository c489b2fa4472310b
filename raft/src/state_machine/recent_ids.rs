//! Which request ids the store may hold, so that a write seen for the first time (nearly
//! every write) skips the store lookup only a retried write needs.
//!
//! The answer "absent" must be exact: every replica has to reach the same result for the
//! same entry, so an id the store holds must always be found. Ids go into Bloom filters, one
//! per run of batches; a filter is dropped only once expiry has deleted every bucket it
//! covers from the store (expiry deletes the oldest buckets first, so it knows). The filters
//! are loaded from the store at start and again after a snapshot replaced it.
//!
//! ```text
//!  apply: id ─▶ may_contain? ── no ──▶ apply (a first attempt)
//!                    └──── maybe ──▶ store lookup (a retry, or a false positive)
//! ```

use std::collections::VecDeque;
use std::ops::Bound;

use super::spaces::RequestBucketSpace;
use crate::engine::{Engine, Result};
use crate::keyspace::TypedRead;
use crate::types::RequestId;

/// Ids per filter before a new one starts.
const IDS_PER_FILTER: usize = 32 * 1024;
/// Bits per filter: 16 per id gives about 0.05% false positives with 8 probes.
const BITS: usize = IDS_PER_FILTER * 16;
const PROBES: u64 = 8;

/// The key of a request bucket: (time_ms, log index).
pub(crate) type BucketKey = (u64, u128);

struct Filter {
    bits: Vec<u64>,
    ids: usize,
    /// The newest bucket whose ids are in it.
    last_bucket: BucketKey,
}

impl Filter {
    fn new() -> Self {
        Self {
            bits: vec![0; BITS / 64],
            ids: 0,
            last_bucket: (0, 0),
        }
    }

    fn probes(id: RequestId) -> impl Iterator<Item = usize> {
        let h1 = mix(id as u64 ^ mix((id >> 64) as u64 ^ 0x9e37_79b9_7f4a_7c15));
        // Double hashing needs a second, independent hash (odd, to reach every bit).
        let h2 = mix(h1 ^ 0x2545_f491_4f6c_dd1d) | 1;
        (0..PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % BITS as u64) as usize)
    }

    fn insert(&mut self, id: RequestId) {
        for b in Self::probes(id) {
            self.bits[b / 64] |= 1 << (b % 64);
        }
        self.ids += 1;
    }

    fn may_contain(&self, id: RequestId) -> bool {
        Self::probes(id).all(|b| self.bits[b / 64] & (1 << (b % 64)) != 0)
    }
}

/// splitmix64's finaliser: ids need not be random (a client may count them).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The request ids the store may hold.
pub(crate) struct RecentIds {
    /// Oldest first.
    filters: VecDeque<Filter>,
}

impl RecentIds {
    /// Load every id the store holds (from its request buckets).
    pub(crate) fn load<E: Engine>(engine: &E) -> Result<Self> {
        let mut me = Self {
            filters: VecDeque::new(),
        };
        let mut from: Bound<BucketKey> = Bound::Unbounded;
        loop {
            let page =
                engine.scan_in::<RequestBucketSpace>(from.as_ref(), Bound::Unbounded, 1024)?;
            let Some(last) = page.last().map(|(k, _)| *k) else {
                break;
            };
            for (bucket, ids) in page {
                me.insert_bucket(bucket, &ids);
            }
            from = Bound::Excluded(last);
        }
        Ok(me)
    }

    /// Whether the store may hold `id`; `false` is exact.
    pub(crate) fn may_contain(&self, id: RequestId) -> bool {
        self.filters.iter().any(|f| f.may_contain(id))
    }

    /// The ids of one applied batch, in bucket order.
    pub(crate) fn insert_bucket(&mut self, bucket: BucketKey, ids: &[RequestId]) {
        let filters = &mut self.filters;
        if filters.back().is_none_or(|f| f.ids >= IDS_PER_FILTER) {
            filters.push_back(Filter::new());
        }
        if let Some(f) = filters.back_mut() {
            for id in ids {
                f.insert(*id);
            }
            f.last_bucket = f.last_bucket.max(bucket);
        }
    }

    /// No bucket up to and including `through` is left in the store (the write that
    /// expired them has landed): the oldest filters covering only such buckets go. A filter's
    /// `last_bucket` is the newest of its buckets, so one that a leader with a slower clock
    /// added late, older than buckets already expired, keeps its filter until it is gone too.
    pub(crate) fn expired_through(&mut self, through: BucketKey) {
        // The newest filter keeps taking ids, so it stays.
        while self.filters.len() > 1
            && self
                .filters
                .front()
                .is_some_and(|f| f.last_bucket <= through)
        {
            self.filters.pop_front();
        }
    }

    /// Filters held.
    #[cfg(test)]
    fn filter_count(&self) -> usize {
        self.filters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inserted_id_is_always_found_and_a_new_one_rarely() {
        let mut r = RecentIds {
            filters: VecDeque::new(),
        };
        let ids: Vec<u128> = (0..100_000u128).map(|i| i * 7919 + 13).collect();
        for (n, chunk) in ids.chunks(100).enumerate() {
            r.insert_bucket((n as u64, n as u128), chunk);
        }
        assert!(ids.iter().all(|id| r.may_contain(*id)));
        let false_positives = (1_000_000u128..1_100_000)
            .filter(|id| r.may_contain(*id))
            .count();
        // Four filters of ~0.05% each.
        assert!(false_positives < 1_000, "{false_positives} false positives");
    }

    #[test]
    fn a_filter_goes_only_once_none_of_its_buckets_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = crate::engine::SledEngine::open(dir.path()).expect("open");
        let put = |key: BucketKey, ids: &[u128]| {
            let mut b = crate::engine::WriteBatch::default();
            b.put::<RequestBucketSpace>(&key, &ids.to_vec());
            engine.write(b).expect("write");
        };
        let first: Vec<u128> = (0..IDS_PER_FILTER as u128).collect();
        put((10, 1), &first);
        put((20, 2), &[u128::MAX]);
        let mut r = RecentIds::load(&engine).expect("load");
        assert_eq!(r.filter_count(), 2);
        assert!(r.may_contain(5) && r.may_contain(u128::MAX));
        r.expired_through((9, u128::MAX));
        assert_eq!(
            r.filter_count(),
            2,
            "the first filter's bucket is still stored"
        );
        // A bucket older than the expired ones, added late (a leader with a slower clock),
        // lands in the newest filter, which keeps its newest bucket as its mark.
        r.insert_bucket((5, 3), &[7]);
        r.expired_through((10, 1));
        assert_eq!(r.filter_count(), 1);
        assert!(r.may_contain(u128::MAX), "the newest filter stays");
        assert!(r.may_contain(7), "the late bucket's id is still known");
    }
}
