//! One watcher's events: first a bookmark at the revision it starts after, then the history
//! from its start up to the revision at which it joined the hub (read and decoded for it
//! alone: only a watcher resuming from the past has any), then its queue. Bookmarks carry the
//! hub's revision when the queue is empty, so a watcher of something quiet still learns how
//! far the store is.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use skiff_raft::state_machine::{WatchError, WatchFilter};
use tokio::time::{Interval, MissedTickBehavior};

use super::super::error::{ObjectError, Result};
use super::change::{self, Filter};
use super::hub::{Inner, Queue, Registration};
use super::ObjectEvent;

/// A stream of object event batches.
pub type ObjectEventStream = Pin<Box<dyn Stream<Item = Result<Vec<ObjectEvent>>> + Send>>;

/// Revisions of history read in one go.
const HISTORY_CHUNK: u64 = 128;
/// A batch is closed once it holds this many bytes of objects (a single larger object still
/// goes alone).
const BATCH_BYTES: usize = 1 << 20;
/// Most events in one batch.
const BATCH_EVENTS: usize = 256;

/// Everything a watcher's stream needs.
pub(super) struct Watcher {
    pub inner: Arc<Inner>,
    /// Held for its drop, which takes the watcher out of the hub.
    pub _registration: Registration,
    pub filter: Arc<Filter>,
    /// The keys its history reads select.
    pub history: WatchFilter,
    /// The first revision it wants.
    pub start: u64,
    /// Its queue has every change after this revision.
    pub joined_at: u64,
    pub queue: Queue,
    pub bookmark_every: Duration,
}

struct State {
    w: Watcher,
    /// The next revision of history to read (history is done once past `joined_at`).
    next: u64,
    /// The last revision the client was told of (an event or a bookmark).
    told: u64,
    ticker: Interval,
    started: bool,
    done: bool,
}

/// The watcher's stream.
pub(super) fn start(w: Watcher) -> ObjectEventStream {
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + w.bookmark_every,
        w.bookmark_every,
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = State {
        next: w.start,
        told: w.start - 1,
        w,
        ticker,
        started: false,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        let item = s.next_batch().await?;
        s.done = item.is_err();
        Some((item, s))
    }))
}

impl State {
    async fn next_batch(&mut self) -> Option<Result<Vec<ObjectEvent>>> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(Ok(vec![ObjectEvent::bookmark(self.told)]));
        }
        while self.next <= self.w.joined_at {
            match self.history_batch() {
                Ok(events) if events.is_empty() => {}
                other => return Some(other),
            }
        }
        loop {
            tokio::select! {
                first = self.w.queue.rx.recv() => {
                    let Some(first) = first else {
                        // The hub closed the queue: cut off, or its feed failed.
                        let ended = self.w.queue.ended.get()?;
                        return Some(Err(ended.error(self.told)));
                    };
                    return Some(Ok(self.queued_batch(first)));
                }
                _ = self.ticker.tick() => {
                    // Read the hub's revision before looking at the queue: if the queue is
                    // empty then, every change up to that revision has been received.
                    let dispatched = self.w.inner.dispatched();
                    if self.w.queue.rx.is_empty() {
                        self.told = self.told.max(dispatched);
                        return Some(Ok(vec![ObjectEvent::bookmark(self.told)]));
                    }
                }
            }
        }
    }

    /// `first` and whatever else is queued, up to a batch.
    fn queued_batch(&mut self, first: change::Delivery) -> Vec<ObjectEvent> {
        let mut out = Vec::new();
        let (mut bytes, mut freed) = (0, 0);
        let mut item = Some(first);
        while let Some((kind, change)) = item.take() {
            freed += change.size();
            bytes += change.object.len();
            self.told = change.revision;
            out.push(ObjectEvent {
                kind,
                object: change.object.clone(),
                revision: change.revision,
            });
            if bytes < BATCH_BYTES && out.len() < BATCH_EVENTS {
                item = self.w.queue.rx.try_recv().ok();
            }
        }
        self.w
            .queue
            .queued_bytes
            .fetch_sub(freed, Ordering::Relaxed);
        out
    }

    /// The next stretch of history, decoded for this watcher.
    fn history_batch(&mut self) -> Result<Vec<ObjectEvent>> {
        let store = &self.w.inner.store;
        let upto = self.w.joined_at.min(self.next + HISTORY_CHUNK - 1);
        let events = store
            .node()
            .state()
            .history_between(&self.w.history, self.next, upto)
            .map_err(|e| match e {
                WatchError::Expired {
                    requested,
                    compacted,
                } => ObjectError::Expired {
                    requested,
                    compacted,
                },
                WatchError::Storage(reason) => ObjectError::Corrupt {
                    key: "watch history".into(),
                    reason,
                },
            })?;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut delivered_upto = upto;
        for (revision, ev) in events {
            // Cut only between revisions, so a batch never splits one.
            if bytes >= BATCH_BYTES
                && out
                    .last()
                    .is_some_and(|e: &ObjectEvent| e.revision != revision)
            {
                delivered_upto = revision - 1;
                break;
            }
            let Some(c) = change::decode(store, revision, ev).map_err(|u| u.error)? else {
                continue;
            };
            if let Some(kind) = self.w.filter.event_type(&c) {
                bytes += c.object.len();
                out.push(ObjectEvent {
                    kind,
                    object: c.object,
                    revision,
                });
            }
        }
        self.next = delivered_upto + 1;
        if let Some(last) = out.last() {
            self.told = last.revision;
        }
        Ok(out)
    }
}
