//! The work queue of one controller, in the manner of Kubernetes' `workqueue`: keys, not
//! events, so a burst of changes to one object is one reconcile.
//!
//! ```text
//!  add(k) ──▶ queued? ──yes──▶ nothing (deduplicated)
//!               │ no
//!               ▼
//!         processing? ──yes──▶ marked dirty: queued again when its reconcile is done
//!               │ no
//!               ▼
//!          ready FIFO ──take()──▶ processing ──done(k)──▶ (dirty? back to the FIFO)
//!
//!  add_after(k, d) ──▶ delayed (earliest due per key) ──due──▶ add(k)
//! ```
//!
//! A key is never handed out twice at once; a key added while queued is queued once.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use tokio::time::Instant;

/// The queue's state; not thread-safe by itself (the runner holds it under a lock).
#[derive(Debug)]
pub struct WorkQueue<K> {
    /// Keys ready to be taken, in arrival order.
    ready: VecDeque<K>,
    /// Keys waiting to be reconciled (in `ready`, or dirty while processing).
    queued: HashSet<K>,
    /// Keys being reconciled now.
    processing: HashSet<K>,
    /// Keys due later, by when: (due, sequence) orders them, the map finds a key's entry.
    delayed: BTreeSet<(Instant, u64, K)>,
    due_of: HashMap<K, (Instant, u64)>,
    sequence: u64,
}

impl<K> Default for WorkQueue<K> {
    fn default() -> Self {
        Self {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            processing: HashSet::new(),
            delayed: BTreeSet::new(),
            due_of: HashMap::new(),
            sequence: 0,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    /// Queue `key` now; `true` if it was not queued already.
    pub fn add(&mut self, key: K) -> bool {
        if !self.queued.insert(key.clone()) {
            return false;
        }
        if !self.processing.contains(&key) {
            self.ready.push_back(key);
        }
        true
    }

    /// Queue `key` at `due`, unless it is due earlier already.
    pub fn add_at(&mut self, key: K, due: Instant) {
        if let Some(&(at, seq)) = self.due_of.get(&key) {
            if at <= due {
                return;
            }
            self.delayed.remove(&(at, seq, key.clone()));
        }
        self.sequence += 1;
        self.delayed.insert((due, self.sequence, key.clone()));
        self.due_of.insert(key, (due, self.sequence));
    }

    /// Move the keys due by `now` to the ready FIFO; the next due time, if any.
    pub fn promote_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(first) = self.delayed.first() {
            if first.0 > now {
                return Some(first.0);
            }
            if let Some((_, _, key)) = self.delayed.pop_first() {
                self.due_of.remove(&key);
                self.add(key);
            }
        }
        None
    }

    /// Take the next ready key; it is processing until [`WorkQueue::done`].
    pub fn take(&mut self) -> Option<K> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    /// The reconcile of `key` is over; a key added meanwhile is ready again.
    pub fn done(&mut self, key: &K) {
        self.processing.remove(key);
        if self.queued.contains(key) {
            self.ready.push_back(key.clone());
        }
    }

    /// Keys waiting now (ready, dirty or delayed).
    pub fn depth(&self) -> usize {
        self.queued.len() + self.due_of.len()
    }

    /// Keys ready to be taken.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_key_added_while_queued_is_queued_once() {
        let mut q = WorkQueue::default();
        assert!(q.add("a"));
        assert!(!q.add("a"));
        assert!(q.add("b"));
        assert_eq!(q.take(), Some("a"));
        assert_eq!(q.take(), Some("b"));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn a_key_is_never_handed_out_twice_at_once() {
        let mut q = WorkQueue::default();
        q.add("a");
        assert_eq!(q.take(), Some("a"));
        // Changed while its reconcile runs: held back, not handed to a second worker.
        q.add("a");
        q.add("a");
        assert_eq!(q.take(), None);
        q.done(&"a");
        // ... and reconciled once more afterwards.
        assert_eq!(q.take(), Some("a"));
        q.done(&"a");
        assert_eq!(q.take(), None);
    }

    #[test]
    fn delayed_keys_come_due_in_order_and_the_earliest_due_wins() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        q.add_at("late", now + Duration::from_secs(2));
        q.add_at("soon", now + Duration::from_secs(1));
        q.add_at("soon", now + Duration::from_secs(5)); // later: ignored
        assert_eq!(q.depth(), 2);
        assert_eq!(q.promote_due(now), Some(now + Duration::from_secs(1)));
        assert_eq!(q.take(), None);
        assert_eq!(
            q.promote_due(now + Duration::from_secs(1)),
            Some(now + Duration::from_secs(2))
        );
        assert_eq!(q.take(), Some("soon"));
        q.add_at("late", now); // sooner: replaces the entry
        assert_eq!(q.promote_due(now + Duration::from_secs(1)), None);
        assert_eq!(q.take(), Some("late"));
        assert_eq!(q.depth(), 0);
    }
}
