//! A kind's change feed, with a queue of its own for each subscriber: a change is held until
//! every subscriber has taken it, and no longer. (A broadcast ring keeps its last N changes,
//! decoded objects and all, until something overwrites them: at 16,384 changes per kind that
//! was most of what the leader held beyond its caches.) A subscriber that falls further behind
//! than its queue holds misses changes and is told so once, and then reconciles every key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

/// Why [`Receiver::recv`] returned no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Changes were missed: the subscriber's queue was full.
    Lagged,
    /// The feed is gone.
    Closed,
}

/// Why [`Receiver::try_recv`] returned no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// None is waiting.
    Empty,
    /// Changes were missed: the subscriber's queue was full.
    Lagged,
    /// The feed is gone.
    Closed,
}

struct Subscriber<T> {
    tx: mpsc::Sender<T>,
    lagged: Arc<AtomicBool>,
}

/// The sending side.
pub struct Feed<T> {
    capacity: usize,
    subscribers: Mutex<Vec<Subscriber<T>>>,
}

impl<T: Clone> Feed<T> {
    /// A feed whose subscribers each hold up to `capacity` changes not yet taken.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// Changes sent from now on.
    pub fn subscribe(&self) -> Receiver<T> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        self.lock().push(Subscriber {
            tx,
            lagged: lagged.clone(),
        });
        Receiver { rx, lagged }
    }

    /// Queue `change` for every subscriber; one whose queue is full misses it and is told.
    pub fn send(&self, change: T) {
        let mut subscribers = self.lock();
        subscribers.retain(|s| !s.tx.is_closed());
        for s in subscribers.iter() {
            if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send(change.clone()) {
                s.lagged.store(true, Ordering::Release);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Subscriber<T>>> {
        // A panic while holding the lock leaves the list whole: each step is one push or
        // one retain.
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One subscriber's side.
pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    lagged: Arc<AtomicBool>,
}

impl<T> Receiver<T> {
    /// The next change, waiting for one; [`RecvError::Lagged`] once after changes were missed.
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        if self.take_lag() {
            return Err(RecvError::Lagged);
        }
        self.rx.recv().await.ok_or(RecvError::Closed)
    }

    /// The next change if one is waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if self.take_lag() {
            return Err(TryRecvError::Lagged);
        }
        self.rx.try_recv().map_err(|e| match e {
            mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            mpsc::error::TryRecvError::Disconnected => TryRecvError::Closed,
        })
    }

    /// Whether changes were missed. What is still queued goes too: whoever is told reads
    /// every key afresh, and the cache it reads is as new as any queued change.
    fn take_lag(&mut self) -> bool {
        if !self.lagged.swap(false, Ordering::AcqRel) {
            return false;
        }
        while self.rx.try_recv().is_ok() {}
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_subscriber_takes_every_change_once_in_order() {
        let feed = Feed::new(8);
        let (mut a, mut b) = (feed.subscribe(), feed.subscribe());
        for i in 0..5 {
            feed.send(i);
        }
        for rx in [&mut a, &mut b] {
            for i in 0..5 {
                assert_eq!(rx.recv().await, Ok(i));
            }
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        }
    }

    #[tokio::test]
    async fn a_change_taken_by_everyone_is_held_no_longer() {
        let feed = Feed::new(8);
        let mut rx = feed.subscribe();
        let change = Arc::new("an object");
        feed.send(change.clone());
        assert_eq!(Arc::strong_count(&change), 2, "queued for the subscriber");
        drop(rx.recv().await);
        assert_eq!(Arc::strong_count(&change), 1, "nothing keeps it once taken");
    }

    #[tokio::test]
    async fn a_subscriber_behind_is_told_once_and_the_others_miss_nothing() {
        let feed = Feed::new(2);
        let (mut slow, mut fast) = (feed.subscribe(), feed.subscribe());
        for i in 0..4 {
            feed.send(i);
            assert_eq!(fast.recv().await, Ok(i));
        }
        assert_eq!(slow.recv().await, Err(RecvError::Lagged));
        feed.send(4);
        assert_eq!(
            slow.recv().await,
            Ok(4),
            "after the lag, changes come again"
        );
        assert_eq!(fast.recv().await, Ok(4));
    }

    #[tokio::test]
    async fn receivers_hear_the_feed_end_and_a_dropped_one_is_forgotten() {
        let feed = Feed::new(2);
        let (mut kept, gone) = (feed.subscribe(), feed.subscribe());
        drop(gone);
        feed.send(1);
        assert_eq!(feed.lock().len(), 1);
        drop(feed);
        assert_eq!(kept.recv().await, Ok(1));
        assert_eq!(kept.recv().await, Err(RecvError::Closed));
        assert_eq!(kept.try_recv(), Err(TryRecvError::Closed));
    }
}
