//! Object watch: one feed of the store's changes per member, decoded once and fanned out to
//! every watcher that may want each change.
//!
//! ```text
//!  store feed ──▶ hub: decode, open, encode once (Change) ──▶ index: resource, namespace, node
//!  (one watch)                                                   │ candidates only
//!                                                                ▼
//!            gRPC stream ◀── watcher stream ◀── bounded queue (Arc<Change>) ── too far behind:
//!                 ▲               ▲                                             cut off, EXPIRED
//!                 └── history ────┘ (only the stretch before the watcher joined)
//! ```
//!
//! - [`change`]: one stored change as every watcher sees it, and a watcher's filter (an object
//!   that starts matching a selector is ADDED, one that stops matching is DELETED, as the
//!   Kubernetes API server does it).
//! - [`index`]: the watchers of each resource by namespace and by `spec.nodeName`.
//! - [`hub`]: the member's one store watch and the dispatch to queues.
//! - [`stream`]: a watcher's events: history up to the point it joined, then its queue, with
//!   bookmarks.
//! - [`metrics`]: watches open, changes fanned out, watchers cut off.

mod change;
mod hub;
mod index;
pub mod metrics;
mod stream;

use std::time::Duration;

use bytes::Bytes;

pub use hub::WatchHub;
pub use metrics::WatchMetrics;

use super::selectors::{FieldSelector, Selector};

/// What a watch selects and from where.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Empty = every namespace.
    pub namespace: String,
    /// Label selector.
    pub labels: Selector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Deliver changes after this revision; 0 = from now.
    pub resource_version: u64,
    /// Period of bookmarks.
    pub bookmark_every: Duration,
}

/// Kind of an object event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created, or started to match.
    Added,
    /// Changed and still matches.
    Modified,
    /// Deleted, or stopped matching.
    Deleted,
    /// Nothing more matched up to the revision.
    Bookmark,
}

/// One object event.
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    /// What happened.
    pub kind: EventType,
    /// The object as JSON (after the change; the last state for a delete); empty for a
    /// bookmark. Shared by every watcher that gets this change.
    pub object: Bytes,
    /// The revision of the change.
    pub revision: u64,
}

impl ObjectEvent {
    fn bookmark(revision: u64) -> Self {
        Self {
            kind: EventType::Bookmark,
            object: Bytes::new(),
            revision,
        }
    }
}
