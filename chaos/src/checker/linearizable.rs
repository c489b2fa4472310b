//! Linearizability of register histories, key by key (registers compose), by a
//! Wing–Gong search with memoisation, as Knossos and Porcupine do.
//!
//! Operations that failed are dropped (they had no effect). Operations with an unknown
//! outcome are optional, as Jepsen treats them: a write or compare-and-set that may have taken
//! effect can be placed anywhere after its invocation, or nowhere; an unknown read tells
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
    required: bool,
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

fn check_key(ops: &[&Operation]) -> KeyResult {
    let mut list: Vec<Op> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        match (o.outcome, &o.op) {
            (Outcome::Fail, _) => {}
            (Outcome::Unknown, RegisterOp::Read { .. }) => {}
            (Outcome::Unknown, op) => list.push(Op {
                op: op.clone(),
                invoke: o.invoke_us,
                complete: u64::MAX,
                required: false,
                index: i,
            }),
            (Outcome::Ok, op) => list.push(Op {
                op: op.clone(),
                invoke: o.invoke_us,
                complete: o.complete_us,
                required: true,
                index: i,
            }),
        }
    }
    list.sort_by_key(|o| o.invoke);
    let n = list.len();
    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut budget = MAX_STATES;
    let mut deepest = 0usize;
    // Explicit stack: (state before, candidate position to try next, op placed to get here).
    let mut stack: Vec<(Option<String>, usize, Option<usize>)> = vec![(None, 0, None)];
    let mut placed = 0usize;
    let required_total = list.iter().filter(|o| o.required).count();
    let mut required_placed = 0usize;
    while let Some((state, next, _)) = stack.last().cloned() {
        if required_placed == required_total {
            return KeyResult::Linearizable;
        }
        // The earliest completion among unplaced required ops bounds what may go next.
        let deadline = (0..n)
            .filter(|&j| !is_set(&done, j) && list[j].required)
            .map(|j| list[j].complete)
            .min()
            .unwrap_or(u64::MAX);
        let mut advanced = false;
        let mut j = next;
        while j < n {
            if !is_set(&done, j) && list[j].invoke <= deadline {
                if let Some(after) = step(&state, &list[j].op) {
                    set(&mut done, j, true);
                    if seen.insert((done.clone(), after.clone())) {
                        if let Some(top) = stack.last_mut() {
                            top.1 = j + 1;
                        }
                        stack.push((after, 0, Some(j)));
                        placed += 1;
                        if list[j].required {
                            required_placed += 1;
                        }
                        deepest = deepest.max(placed);
                        advanced = true;
                        break;
                    }
                    set(&mut done, j, false);
                }
            }
            if list[j].invoke > deadline {
                break;
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
        if let Some((_, _, Some(j))) = stack.pop() {
            set(&mut done, j, false);
            placed -= 1;
            if list[j].required {
                required_placed -= 1;
            }
        } else {
            break;
        }
    }
    // Report the first required op that could never be placed after the deepest prefix.
    let first_bad = list
        .iter()
        .filter(|o| o.required)
        .nth(deepest.min(required_total.saturating_sub(1)))
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
}
