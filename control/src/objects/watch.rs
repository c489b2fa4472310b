//! Object watch over the store's key watch: key events become ADDED, MODIFIED and DELETED
//! object events. With a selector, an object that starts matching is ADDED and one that
//! stops matching is DELETED, as the Kubernetes API server does it.

use std::time::Duration;

use serde_json::Value;
use skiff_proto::kinds::KindInfo;
use skiff_raft::mvcc::{Event, EventKind};
use skiff_raft::state_machine::{WatchError, WatchFilter, WatchMessage};
use std::pin::Pin;

use futures::Stream;

use super::error::{ObjectError, Result};
use super::meta;
use super::selectors::{FieldSelector, Selector};
use super::store::ObjectStore;

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
    /// The object as JSON (after the change; the last state for a delete); empty for a bookmark.
    pub object: Vec<u8>,
    /// The revision of the change.
    pub revision: u64,
}

struct Filter {
    labels: Selector,
    fields: FieldSelector,
}

impl Filter {
    fn everything(&self) -> bool {
        self.labels.is_empty() && self.fields == FieldSelector::default()
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }
}

fn parse(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

fn translate(filter: &Filter, rev: u64, ev: Event) -> Option<ObjectEvent> {
    let event = |kind, stored: &[u8]| ObjectEvent {
        kind,
        object: meta::with_resource_version(stored, rev),
        revision: rev,
    };
    match ev.kind {
        EventKind::Delete => {
            let prev = ev.prev?;
            if filter.everything() || parse(&prev.value).is_some_and(|p| filter.matches(&p)) {
                Some(event(EventType::Deleted, &prev.value))
            } else {
                None
            }
        }
        EventKind::Put => {
            if filter.everything() {
                let kind = if ev.prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                return Some(event(kind, &ev.kv.value));
            }
            let now = parse(&ev.kv.value).is_some_and(|v| filter.matches(&v));
            let before = ev
                .prev
                .as_ref()
                .and_then(|p| parse(&p.value))
                .is_some_and(|v| filter.matches(&v));
            match (before, now) {
                (false, true) => Some(event(EventType::Added, &ev.kv.value)),
                (true, true) => Some(event(EventType::Modified, &ev.kv.value)),
                (true, false) => Some(event(EventType::Deleted, &ev.kv.value)),
                (false, false) => None,
            }
        }
    }
}

fn bookmark(revision: u64) -> ObjectEvent {
    ObjectEvent {
        kind: EventType::Bookmark,
        object: Vec::new(),
        revision,
    }
}

/// A stream of object event batches.
pub type ObjectEventStream = Pin<Box<dyn Stream<Item = Result<Vec<ObjectEvent>>> + Send>>;

/// Start watching `resource`. Batches of events arrive in revision order; the first item
/// is a bookmark at the revision the watch starts after.
pub fn watch(store: &ObjectStore, resource: &str, opts: WatchOptions) -> Result<ObjectEventStream> {
    let kind: &KindInfo = store.kind(resource)?.info();
    let prefix = if kind.namespaced && !opts.namespace.is_empty() {
        format!("{}{}/", kind.key_prefix(), opts.namespace)
    } else {
        kind.key_prefix()
    };
    let state = store.node().state().clone();
    let compacted = state.state().compacted;
    let start = if opts.resource_version == 0 {
        state.revision() + 1
    } else {
        opts.resource_version + 1
    };
    if start <= compacted {
        return Err(ObjectError::Expired {
            requested: start,
            compacted,
        });
    }
    let rx = state.watch(
        WatchFilter {
            key: prefix.into_bytes(),
            prefix: true,
        },
        start,
        opts.bookmark_every,
    );
    let filter = Filter {
        labels: opts.labels,
        fields: opts.fields,
    };
    // Translated as the client reads, on the stream's own task: no extra hop or buffer.
    let first = vec![ObjectEvent {
        kind: EventType::Bookmark,
        object: Vec::new(),
        revision: start - 1,
    }];
    let state = (rx, (filter, store.clone()), Some(first), false);
    let stream = futures::stream::unfold(state, |(mut rx, ctx, first, done)| async move {
        if done {
            return None;
        }
        if let Some(first) = first {
            return Some((Ok(first), (rx, ctx, None, false)));
        }
        let (filter, store) = &ctx;
        let item = match rx.recv().await? {
            Ok(WatchMessage::Events(events)) => {
                let last = events.last().map(|(r, _)| *r).unwrap_or(0);
                let opened: Result<Vec<_>> = events
                    .into_iter()
                    .map(|(rev, mut ev)| store.open_event(&mut ev).map(|()| (rev, ev)))
                    .collect();
                opened.map(|events| {
                    let out: Vec<ObjectEvent> = events
                        .into_iter()
                        .filter_map(|(rev, ev)| translate(filter, rev, ev))
                        .collect();
                    if out.is_empty() {
                        // Everything was filtered out: still tell the client how far it is.
                        vec![bookmark(last)]
                    } else {
                        out
                    }
                })
            }
            Ok(WatchMessage::Progress(rev)) => Ok(vec![bookmark(rev)]),
            Err(WatchError::Expired {
                requested,
                compacted,
            }) => Err(ObjectError::Expired {
                requested,
                compacted,
            }),
            Err(WatchError::Storage(reason)) => Err(ObjectError::Corrupt {
                key: "watch history".into(),
                reason,
            }),
        };
        let done = item.is_err();
        Some((item, (rx, ctx, None, done)))
    });
    Ok(Box::pin(stream))
}
