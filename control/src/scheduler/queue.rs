//! The scheduler's queue of pods waiting for a node, as Kubernetes' scheduling queue: active
//! pods by priority, then age; pods that fit nowhere wait aside until a node changes or a
//! retry period passes.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::controllers::runner::ObjectKey;

/// Order among active pods: higher priority first, then older first, then by key.
type Order = (Reverse<i32>, i64, ObjectKey);

#[derive(Debug)]
enum State {
    Active,
    /// Fit nowhere: why, and since when.
    Unschedulable {
        message: String,
        since: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    order: Order,
    state: State,
}

/// Pods waiting for a node.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    active: BTreeSet<Order>,
    entries: HashMap<ObjectKey, Entry>,
}

impl SchedulingQueue {
    /// A pending pod, with its priority and creation time (Unix seconds): queued if new.
    pub fn add(&mut self, key: ObjectKey, priority: i32, created: i64) {
        if self.entries.contains_key(&key) {
            return;
        }
        let order = (Reverse(priority), created, key.clone());
        self.active.insert(order.clone());
        self.entries.insert(
            key,
            Entry {
                order,
                state: State::Active,
            },
        );
    }

    /// The pod is bound or gone: it leaves the queue.
    pub fn remove(&mut self, key: &ObjectKey) {
        if let Some(e) = self.entries.remove(key) {
            self.active.remove(&e.order);
        }
    }

    /// The next pod to place; it stays known until bound, removed or unschedulable.
    pub fn pop(&mut self) -> Option<ObjectKey> {
        let order = self.active.pop_first()?;
        Some(order.2)
    }

    /// Back to the active pods (a bind failed, or an assumption lapsed).
    pub fn requeue(&mut self, key: &ObjectKey) {
        if let Some(e) = self.entries.get_mut(key) {
            e.state = State::Active;
            self.active.insert(e.order.clone());
        }
    }

    /// `key` fits nowhere now, because of `message`; the message it had before, if any.
    pub fn unschedulable(&mut self, key: &ObjectKey, message: String) -> Option<String> {
        let e = self.entries.get_mut(key)?;
        self.active.remove(&e.order);
        match std::mem::replace(
            &mut e.state,
            State::Unschedulable {
                message,
                since: Instant::now(),
            },
        ) {
            State::Unschedulable { message, .. } => Some(message),
            State::Active => None,
        }
    }

    /// A node changed: every pod that fit nowhere is tried again.
    pub fn nodes_changed(&mut self) {
        self.retry_older_than(Duration::ZERO);
    }

    /// Pods that fit nowhere for at least `period` are tried again.
    pub fn retry_older_than(&mut self, period: Duration) {
        for e in self.entries.values_mut() {
            if let State::Unschedulable { since, .. } = &e.state {
                if since.elapsed() >= period {
                    self.active.insert(e.order.clone());
                }
            }
        }
    }

    /// The message of a pod that fit nowhere last time it was tried.
    pub fn message(&self, key: &ObjectKey) -> Option<&str> {
        match &self.entries.get(key)?.state {
            State::Unschedulable { message, .. } => Some(message),
            State::Active => None,
        }
    }

    /// Pods waiting (active or aside).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no pod waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pods ready to be tried now.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Forget everything (after missed changes).
    pub fn clear(&mut self) {
        self.active.clear();
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> ObjectKey {
        ObjectKey::new("default", n)
    }

    #[test]
    fn higher_priority_then_older_pods_go_first_and_each_once() {
        let mut q = SchedulingQueue::default();
        q.add(key("young"), 0, 20);
        q.add(key("old"), 0, 10);
        q.add(key("urgent"), 100, 30);
        q.add(key("old"), 0, 10);
        assert_eq!(q.pop(), Some(key("urgent")));
        assert_eq!(q.pop(), Some(key("old")));
        assert_eq!(q.pop(), Some(key("young")));
        assert_eq!(q.pop(), None);
        assert_eq!(q.len(), 3, "popped pods stay known until bound");
        q.remove(&key("old"));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn an_unschedulable_pod_waits_aside_until_a_node_changes() {
        let mut q = SchedulingQueue::default();
        q.add(key("p"), 0, 1);
        assert_eq!(q.pop(), Some(key("p")));
        assert_eq!(q.unschedulable(&key("p"), "no room".into()), None);
        assert_eq!(q.pop(), None);
        assert_eq!(q.message(&key("p")), Some("no room"));
        q.retry_older_than(Duration::from_secs(60));
        assert_eq!(q.pop(), None, "not yet due");
        q.nodes_changed();
        assert_eq!(q.pop(), Some(key("p")));
        assert_eq!(
            q.unschedulable(&key("p"), "still no room".into()),
            Some("no room".into())
        );
    }
}
