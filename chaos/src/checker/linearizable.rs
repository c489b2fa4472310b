//! Linearizability of register histories, key by key (registers compose), by a
//! Wing–Gong search with memoisation, as Knossos and Porcupine do.
//!
//! Operations that failed are dropped (they had no effect). Operations with an unknown
//! outcome are optional, as Jepsen treats them: a write or compare-and-set that may have taken
//! effect can be placed anywhere after its invocation, or nowhere (see [`searchable`] for how
//! that is decided without searching it); an unknown read tells
//! nothing and is dropped. The history is linearizable if every ok operation can be placed
//! at one instant between its invocation and completion, in an order the register allows.

use std::collections::{BTreeMap, HashSet};

use super::Verdict;
use crate::history::{Operation, Outcome, RegisterOp};

const NAME: &str = "linearizable";

/// Largest number of search states explored per key before giving up as "unknown".
const MAX_STATES: usize = 5_000_000;

#[derive(Clone)]
struct Op {
    op: RegisterOp,
    invoke: u64,
    /// `u64::MAX` for unknown outcomes.
    complete: u64,
    index: usize,
}

/// Check every key's history.
pub fn check(history: &[Operation]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut total = 0;
    for (key, ops) in by_key {
        total += ops.len();
        match check_key(&ops) {
            KeyResult::Linearizable => {}
            KeyResult::Violation(detail) => {
                return Verdict::fail(NAME, format!("key {key}: {detail}"))
            }
            KeyResult::TooLarge => {
                return Verdict::fail(NAME, format!("key {key}: search space too large to decide"))
            }
        }
    }
    Verdict::pass(NAME, format!("{total} operations linearizable"))
}

enum KeyResult {
    Linearizable,
    Violation(String),
    TooLarge,
}

/// The values some ok operation saw: a read's value, a successful compare-and-set's `from`.
fn observed_values<'a>(ops: &[&'a Operation]) -> HashSet<&'a str> {
    ops.iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| match &o.op {
            RegisterOp::Read { value } => value.as_deref(),
            RegisterOp::Cas {
                from,
                swapped: true,
                ..
            } => Some(from.as_str()),
            _ => None,
        })
        .collect()
}

/// The operations the search must place, sorted by invocation.
///
/// Values are unique, so an unknown write (or compare-and-set) whose value nobody saw never
/// has to be placed to explain a read, and one whose value someone saw must be placed: the
/// first kind is dropped, the second becomes required with no completion bound. That keeps
/// every search state's placed set a prefix plus a small window, so long histories stay
/// tractable. A dropped write could still explain a failed compare (the register held some
/// value other than `from`), so a failed compare that completed after a dropped write was
/// invoked is not checked (it is the weakest observation; the reads around it still are).
fn searchable(ops: &[&Operation]) -> Vec<Op> {
    let observed = observed_values(ops);
    let mut dropped_invokes: Vec<u64> = Vec::new();
    for o in ops.iter().filter(|o| o.outcome == Outcome::Unknown) {
        match &o.op {
            RegisterOp::Write { value } | RegisterOp::Cas { to: value, .. }
                if !observed.contains(value.as_str()) =>
            {
                dropped_invokes.push(o.invoke_us);
            }
            _ => {}
        }
    }
    let first_dropped = dropped_invokes.iter().copied().min().unwrap_or(u64::MAX);
    let mut list: Vec<Op> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        let complete = match (o.outcome, &o.op) {
            (Outcome::Fail, _) | (Outcome::Unknown, RegisterOp::Read { .. }) => continue,
            (Outcome::Unknown, RegisterOp::Write { value } | RegisterOp::Cas { to: value, .. }) => {
                if !observed.contains(value.as_str()) {
                    continue;
                }
                u64::MAX
            }
            (Outcome::Ok, RegisterOp::Cas { swapped: false, .. })
                if first_dropped < o.complete_us =>
            {
                continue
            }
            (Outcome::Ok, _) => o.complete_us,
        };
        list.push(Op {
            op: o.op.clone(),
            invoke: o.invoke_us,
            complete,
            index: i,
        });
    }
    list.sort_by_key(|o| o.invoke);
    list
}

/// A search state: the first unplaced operation, the placed ones past it, and where the
/// next candidate scan starts.
#[derive(Clone)]
struct Frame {
    state: Option<String>,
    next: usize,
    placed_op: Option<usize>,
    lo: usize,
    above: Vec<usize>,
}

fn check_key(ops: &[&Operation]) -> KeyResult {
    let list = searchable(ops);
    let n = list.len();
    let mut done = vec![0u64; n.div_ceil(64)];
    let mut seen: HashSet<(usize, Vec<usize>, Option<String>)> = HashSet::new();
    let mut budget = MAX_STATES;
    let mut deepest = 0usize;
    let mut stack = vec![Frame {
        state: None,
        next: 0,
        placed_op: None,
        lo: 0,
        above: Vec::new(),
    }];
    while let Some(top) = stack.last().cloned() {
        if top.lo == n {
            return KeyResult::Linearizable;
        }
        // The earliest completion among unplaced ops bounds what may go next; an op invoked
        // after a bound cannot complete before it, so the scan stops there.
        let mut deadline = u64::MAX;
        let mut j = top.lo;
        while j < n && list[j].invoke <= deadline {
            if !is_set(&done, j) {
                deadline = deadline.min(list[j].complete);
            }
            j += 1;
        }
        let mut advanced = false;
        let mut j = top.next.max(top.lo);
        while j < n && list[j].invoke <= deadline {
            if !is_set(&done, j) {
                if let Some(after) = step(&top.state, &list[j].op) {
                    // The placed set after placing j: advance the prefix over placed ops.
                    let mut above = top.above.clone();
                    let pos = above.binary_search(&j).unwrap_or_else(|p| p);
                    above.insert(pos, j);
                    let mut lo = top.lo;
                    while above.first() == Some(&lo) {
                        above.remove(0);
                        lo += 1;
                    }
                    if seen.insert((lo, above.clone(), after.clone())) {
                        set(&mut done, j, true);
                        if let Some(t) = stack.last_mut() {
                            t.next = j + 1;
                        }
                        stack.push(Frame {
                            state: after,
                            next: 0,
                            placed_op: Some(j),
                            lo,
                            above,
                        });
                        deepest = deepest.max(lo);
                        advanced = true;
                        break;
                    }
                }
            }
            j += 1;
        }
        if advanced {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return KeyResult::TooLarge;
            }
            continue;
        }
        // Dead end: undo the op that led here.
        match stack.pop() {
            Some(Frame {
                placed_op: Some(j), ..
            }) => set(&mut done, j, false),
            _ => break,
        }
    }
    // Report the first op that could never be placed after the deepest prefix.
    let first_bad = list
        .get(deepest)
        .map(|o| ops[o.index])
        .map(|o| {
            format!(
                "{:?} by process {} [{}µs..{}µs]",
                o.op, o.process, o.invoke_us, o.complete_us
            )
        })
        .unwrap_or_default();
    KeyResult::Violation(format!(
        "no linearization exists; the search stalls around {first_bad}"
    ))
}

fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set(bits: &mut [u64], i: usize, v: bool) {
    if v {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}

/// The register's next state after `op`, or `None` if `op` cannot happen in `state`.
fn step(state: &Option<String>, op: &RegisterOp) -> Option<Option<String>> {
    match op {
        RegisterOp::Read { value } => (value == state).then(|| state.clone()),
        RegisterOp::Write { value } => Some(Some(value.clone())),
        RegisterOp::Cas {
            from,
            to,
            swapped: true,
        } => (state.as_deref() == Some(from)).then(|| Some(to.clone())),
        RegisterOp::Cas {
            from,
            swapped: false,
            ..
        } => (state.as_deref() != Some(from)).then(|| state.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        process: u32,
        op: RegisterOp,
        invoke_us: u64,
        complete_us: u64,
        outcome: Outcome,
    ) -> Operation {
        Operation {
            process,
            key: "k".into(),
            op,
            invoke_us,
            complete_us,
            outcome,
            revision: None,
        }
    }
    fn w(v: &str) -> RegisterOp {
        RegisterOp::Write { value: v.into() }
    }
    fn r(v: Option<&str>) -> RegisterOp {
        RegisterOp::Read {
            value: v.map(String::from),
        }
    }

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            op(1, w("1"), 0, 10, Outcome::Ok),
            op(2, r(Some("1")), 20, 30, Outcome::Ok),
        ];
        assert!(check(&h).ok);
    }

    #[test]
    fn stale_read_is_rejected() {
        // Write 2 completed before the read began, yet the read saw 1.
        let h = vec![
            op(1, w("1"), 0, 10, Outcome::Ok),
            op(1, w("2"), 20, 30, Outcome::Ok),
            op(2, r(Some("1")), 40, 50, Outcome::Ok),
        ];
        let v = check(&h);
        assert!(!v.ok, "{v:?}");
    }

    #[test]
    fn lost_write_is_rejected() {
        // An acknowledged write, then a final read that does not see it.
        let h = vec![
            op(1, w("1"), 0, 10, Outcome::Ok),
            op(2, r(None), 20, 30, Outcome::Ok),
        ];
        assert!(!check(&h).ok);
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let h = vec![
            op(1, w("1"), 0, 10, Outcome::Ok),
            op(1, w("2"), 20, 40, Outcome::Ok),
            op(2, r(Some("1")), 25, 35, Outcome::Ok),
        ];
        assert!(check(&h).ok);
    }

    #[test]
    fn unknown_write_may_or_may_not_have_happened() {
        let took = vec![
            op(1, w("1"), 0, 10, Outcome::Unknown),
            op(2, r(Some("1")), 20, 30, Outcome::Ok),
        ];
        assert!(check(&took).ok);
        let did_not = vec![
            op(1, w("1"), 0, 10, Outcome::Unknown),
            op(2, r(None), 20, 30, Outcome::Ok),
        ];
        assert!(check(&did_not).ok);
    }

    #[test]
    fn failed_write_must_not_be_seen() {
        let h = vec![
            op(1, w("1"), 0, 10, Outcome::Fail),
            op(2, r(Some("1")), 20, 30, Outcome::Ok),
        ];
        assert!(!check(&h).ok);
    }

    #[test]
    fn cas_outcomes_are_checked() {
        let ok = vec![
            op(1, w("1"), 0, 10, Outcome::Ok),
            op(
                2,
                RegisterOp::Cas {
                    from: "1".into(),
                    to: "2".into(),
                    swapped: true,
                },
                20,
                30,
                Outcome::Ok,
            ),
            op(
                3,
                RegisterOp::Cas {
                    from: "1".into(),
                    to: "3".into(),
                    swapped: false,
                },
                40,
                50,
                Outcome::Ok,
            ),
            op(1, r(Some("2")), 60, 70, Outcome::Ok),
        ];
        assert!(check(&ok).ok);
        // Two compare-and-sets from the same value cannot both succeed.
        let double = vec![
            op(1, w("1"), 0, 10, Outcome::Ok),
            op(
                2,
                RegisterOp::Cas {
                    from: "1".into(),
                    to: "2".into(),
                    swapped: true,
                },
                20,
                30,
                Outcome::Ok,
            ),
            op(
                3,
                RegisterOp::Cas {
                    from: "1".into(),
                    to: "3".into(),
                    swapped: true,
                },
                40,
                50,
                Outcome::Ok,
            ),
        ];
        assert!(!check(&double).ok);
    }

    #[test]
    fn a_long_history_with_unknowns_is_decided_quickly() {
        // 200,000 operations by two processes, with an unknown write every 100 that is
        // sometimes read afterwards and sometimes never seen.
        let mut h = Vec::new();
        let mut t = 0;
        let mut last = None;
        for i in 0..100_000u64 {
            let v = format!("v{i}");
            let outcome = if i % 100 == 0 {
                Outcome::Unknown
            } else {
                Outcome::Ok
            };
            h.push(op(1, w(&v), t, t + 5, outcome));
            let seen = if outcome == Outcome::Unknown && i % 200 == 0 {
                last.clone()
            } else {
                Some(v.clone())
            };
            last = seen.clone();
            h.push(op(2, r(seen.as_deref()), t + 6, t + 9, Outcome::Ok));
            t += 10;
        }
        let started = std::time::Instant::now();
        assert!(check(&h).ok);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn a_read_of_an_unknown_write_before_it_was_invoked_is_rejected() {
        let h = vec![
            op(1, w("1"), 0, 10, Outcome::Ok),
            op(2, r(Some("2")), 20, 30, Outcome::Ok),
            op(1, w("2"), 40, 50, Outcome::Unknown),
        ];
        assert!(!check(&h).ok);
    }

    #[test]
    fn an_unseen_unknown_write_may_explain_a_failed_compare() {
        let h = vec![
            op(1, w("a"), 0, 10, Outcome::Ok),
            op(2, w("b"), 20, 30, Outcome::Unknown),
            op(
                3,
                RegisterOp::Cas {
                    from: "a".into(),
                    to: "c".into(),
                    swapped: false,
                },
                40,
                50,
                Outcome::Ok,
            ),
        ];
        assert!(check(&h).ok);
    }
}
