//! Watch histories: each watcher's events must be in revision order, never duplicated, and,
//! since every write of the workload falls under the watched prefix and each write that
//! changes something takes the next revision, contiguous — no revision skipped between the
//! first and the last a watcher saw, across its reconnects. Every event must also match the
//! final history: the value at that revision is one some client wrote.

use std::collections::{BTreeMap, HashSet};

use super::Verdict;
use crate::history::SeenEvent;

const NAME: &str = "watch";

/// Check the events of all watchers against the writes known by revision (`revision →
/// (key, value)` from acknowledged writes) and the set of values any client tried to write.
pub fn check(
    events: &[SeenEvent],
    acked: &BTreeMap<u64, (String, Option<String>)>,
    written: &HashSet<String>,
) -> Verdict {
    let mut by_watcher: BTreeMap<u32, Vec<&SeenEvent>> = BTreeMap::new();
    for e in events {
        by_watcher.entry(e.watcher).or_default().push(e);
    }
    let mut total = 0;
    for (w, evs) in &by_watcher {
        total += evs.len();
        let mut seen = HashSet::new();
        let mut last: Option<u64> = None;
        for e in evs {
            if !seen.insert((e.revision, e.key.clone())) {
                return Verdict::fail(
                    NAME,
                    format!(
                        "watcher {w}: event at revision {} for {} delivered twice",
                        e.revision, e.key
                    ),
                );
            }
            if let Some(l) = last {
                if e.revision < l {
                    return Verdict::fail(
                        NAME,
                        format!("watcher {w}: revision went back from {l} to {}", e.revision),
                    );
                }
                if e.revision > l + 1 {
                    return Verdict::fail(
                        NAME,
                        format!(
                            "watcher {w}: revisions {}..={} missing",
                            l + 1,
                            e.revision - 1
                        ),
                    );
                }
            }
            last = Some(e.revision);
            if let Some((key, value)) = acked.get(&e.revision) {
                if key != &e.key || value != &e.value {
                    return Verdict::fail(
                        NAME,
                        format!("watcher {w}: revision {} shows {}={:?}, but the write acknowledged at it was {key}={value:?}", e.revision, e.key, e.value),
                    );
                }
            } else if let Some(v) = &e.value {
                if !written.contains(v) {
                    return Verdict::fail(
                        NAME,
                        format!(
                            "watcher {w}: revision {} shows value {v:?} that no client wrote",
                            e.revision
                        ),
                    );
                }
            }
        }
    }
    if total == 0 {
        return Verdict::fail(NAME, "no watch events were recorded");
    }
    Verdict::pass(
        NAME,
        format!(
            "{} watchers, {total} events: ordered, no gaps, no duplicates",
            by_watcher.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: u64, v: &str) -> SeenEvent {
        SeenEvent {
            watcher: 1,
            revision: rev,
            key: "k".into(),
            value: Some(v.into()),
        }
    }

    fn acked() -> BTreeMap<u64, (String, Option<String>)> {
        (1..=4)
            .map(|r| (r, ("k".to_string(), Some(format!("v{r}")))))
            .collect()
    }

    fn written() -> HashSet<String> {
        (1..=4).map(|r| format!("v{r}")).collect()
    }

    #[test]
    fn ordered_contiguous_events_pass() {
        let evs: Vec<_> = (1..=4).map(|r| ev(r, &format!("v{r}"))).collect();
        assert!(check(&evs, &acked(), &written()).ok);
    }

    #[test]
    fn duplicated_event_is_rejected() {
        let evs = vec![ev(1, "v1"), ev(2, "v2"), ev(2, "v2"), ev(3, "v3")];
        assert!(!check(&evs, &acked(), &written()).ok);
    }

    #[test]
    fn missing_event_is_rejected() {
        let evs = vec![ev(1, "v1"), ev(3, "v3")];
        let v = check(&evs, &acked(), &written());
        assert!(!v.ok && v.detail.contains("missing"), "{v:?}");
    }

    #[test]
    fn event_going_back_in_time_is_rejected() {
        let evs = vec![ev(1, "v1"), ev(2, "v2"), ev(1, "v1")];
        assert!(!check(&evs, &acked(), &written()).ok);
    }

    #[test]
    fn event_with_wrong_value_is_rejected() {
        let evs = vec![ev(1, "v1"), ev(2, "v3")];
        assert!(!check(&evs, &acked(), &written()).ok);
    }
}
