//! Watch: every change since a start revision, in order, exactly once, then live.
//!
//! A watcher subscribes to the live feed first, then reads the retained history from its
//! start revision, then follows the feed, skipping what history already gave it. If it falls
//! behind the feed (the broadcast lags) or a snapshot replaces the state, it goes back to the
//! history; if that part of the history is gone, it ends with [`WatchError::Expired`].
//!
//! ```text
//!   apply ──events──▶ broadcast ──▶ watcher ──(filter)──▶ mpsc ──▶ gRPC stream
//!                                    ▲  lagged / reset
//!                    history (sled) ─┘
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::SmShared;
use crate::engine::Engine;
use crate::mvcc::Event;

/// Events applied by one batch, as published to watchers.
#[derive(Debug, Clone)]
pub struct Published {
    /// The store revision before the batch.
    pub prev_revision: u64,
    /// Events with their revisions, in order.
    pub events: Vec<(u64, Event)>,
    /// The store revision after the batch.
    pub revision: u64,
    /// The state was replaced by a snapshot: watchers must re-read history.
    pub reset: bool,
}

/// What a watcher delivers.
#[derive(Debug, Clone)]
pub enum WatchMessage {
    /// Matching events, in revision order.
    Events(Vec<(u64, Event)>),
    /// Nothing matched up to `revision`; resume from `revision + 1`.
    Progress(u64),
}

/// Why a watch ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WatchError {
    /// The start revision is older than the retained history.
    #[error("revision {requested} is compacted: history is retained after revision {compacted}")]
    Expired {
        /// The revision asked for.
        requested: u64,
        /// The newest compacted revision.
        compacted: u64,
    },
    /// The store failed while reading history.
    #[error("reading watch history: {0}")]
    Storage(String),
}

/// What a watch selects.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    /// The key, or the prefix when `prefix` is set.
    pub key: Vec<u8>,
    /// Match every key that starts with `key`.
    pub prefix: bool,
}

impl WatchFilter {
    /// Whether `key` is selected.
    pub fn matches(&self, key: &[u8]) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key.as_slice()
        }
    }
}

/// Largest number of history revisions read in one go while catching up.
const HISTORY_CHUNK: u64 = 128;

/// Largest payload of one catch-up message. With a small channel this bounds what a slow
/// watcher can hold in memory: a thousand lagging watchers must not exhaust the member.
const MESSAGE_MAX_BYTES: usize = 64 * 1024;

fn event_bytes(e: &Event) -> usize {
    e.kv.key.len() + e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len()) + 64
}

/// Run a watch until the receiver is dropped or the watch fails. `start == 0` means "from now".
pub(crate) async fn run_watch<E: Engine>(
    shared: Arc<SmShared<E>>,
    filter: WatchFilter,
    start: u64,
    progress_every: Duration,
    out: mpsc::Sender<Result<WatchMessage, WatchError>>,
) {
    let mut feed = shared.subscribe();
    let mut next = if start == 0 {
        shared.revision() + 1
    } else {
        start
    };
    let mut ticker = tokio::time::interval(progress_every);
    ticker.tick().await;
    let mut catching_up = true;
    loop {
        if catching_up {
            match catch_up(&shared, &filter, &mut next, &out).await {
                Ok(true) => catching_up = false,
                Ok(false) => return,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            }
        }
        tokio::select! {
            msg = feed.recv() => match msg {
                Ok(p) if p.reset => catching_up = true,
                Ok(p) => {
                    if p.prev_revision >= next {
                        // A batch we never saw: fill the gap from history.
                        catching_up = true;
                        continue;
                    }
                    let events: Vec<_> = p
                        .events
                        .iter()
                        .filter(|(r, e)| *r >= next && filter.matches(&e.kv.key))
                        .cloned()
                        .collect();
                    next = next.max(p.revision + 1);
                    if !events.is_empty() && out.send(Ok(WatchMessage::Events(events))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                if out.send(Ok(WatchMessage::Progress(next - 1))).await.is_err() {
                    return;
                }
            }
            _ = out.closed() => return,
        }
    }
}

/// Deliver history from `next` up to the current revision. Returns `Ok(false)` when the
/// receiver is gone.
async fn catch_up<E: Engine>(
    shared: &SmShared<E>,
    filter: &WatchFilter,
    next: &mut u64,
    out: &mpsc::Sender<Result<WatchMessage, WatchError>>,
) -> Result<bool, WatchError> {
    loop {
        // Past the current revision nothing can be compacted either (compaction stays behind
        // it): caught up.
        let current = shared.revision();
        if *next > current {
            return Ok(true);
        }
        let upto = current.min(*next + HISTORY_CHUNK - 1);
        let events = shared.history_between(filter, *next, upto)?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut delivered_upto = upto;
        for (rev, e) in events {
            // Cut only between revisions, so a resumed watch never splits one.
            if bytes >= MESSAGE_MAX_BYTES
                && batch.last().is_some_and(|(r, _): &(u64, Event)| *r != rev)
            {
                delivered_upto = rev - 1;
                break;
            }
            bytes += event_bytes(&e);
            batch.push((rev, e));
        }
        *next = delivered_upto + 1;
        if !batch.is_empty() && out.send(Ok(WatchMessage::Events(batch))).await.is_err() {
            return Ok(false);
        }
    }
}
