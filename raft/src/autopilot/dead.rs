//! Which dead voter, if any, may be removed: Nomad's autopilot rule for dead servers, kept to
//! the fault tolerance the cluster was built for.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::types::NodeId;

/// Fewest voters a removal may leave: below three, one more loss would stop the cluster, so a
/// dead member of a three-voter cluster is removed only once a replacement has joined.
pub const MIN_VOTERS_LEFT: usize = 3;

/// The voter to remove among `voters` (this leader, `me`, included), given how long each has
/// been silent: the one silent longest past `timeout`, if the live voters are a quorum of the
/// current voters (the change must commit) and at least [`MIN_VOTERS_LEFT`] voters remain.
pub fn to_remove(
    me: NodeId,
    voters: &BTreeSet<NodeId>,
    silent_for: impl Fn(NodeId) -> Duration,
    timeout: Duration,
) -> Option<NodeId> {
    let dead: Vec<(NodeId, Duration)> = voters
        .iter()
        .filter(|v| **v != me)
        .map(|v| (*v, silent_for(*v)))
        .filter(|(_, silent)| *silent > timeout)
        .collect();
    let alive = voters.len() - dead.len();
    if dead.is_empty() || alive < voters.len() / 2 + 1 || voters.len() - 1 < MIN_VOTERS_LEFT {
        return None;
    }
    dead.into_iter().max_by_key(|(_, s)| *s).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silent(dead: &'static [(NodeId, u64)]) -> impl Fn(NodeId) -> Duration {
        move |id| {
            dead.iter()
                .find(|(d, _)| *d == id)
                .map(|(_, s)| Duration::from_secs(*s))
                .unwrap_or(Duration::ZERO)
        }
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn a_dead_voter_of_three_waits_for_its_replacement() {
        let three = BTreeSet::from([1, 2, 3]);
        assert_eq!(to_remove(1, &three, silent(&[(3, 60)]), T), None);
        let four = BTreeSet::from([1, 2, 3, 4]);
        assert_eq!(to_remove(1, &four, silent(&[(3, 60)]), T), Some(3));
    }

    #[test]
    fn a_voter_silent_for_less_than_the_timeout_stays() {
        let four = BTreeSet::from([1, 2, 3, 4]);
        assert_eq!(to_remove(1, &four, silent(&[(3, 29)]), T), None);
    }

    #[test]
    fn nothing_is_removed_without_a_live_quorum_and_the_longest_silent_goes_first() {
        let five = BTreeSet::from([1, 2, 3, 4, 5]);
        assert_eq!(to_remove(1, &five, silent(&[(3, 40), (4, 90)]), T), Some(4));
        assert_eq!(
            to_remove(1, &five, silent(&[(3, 40), (4, 90), (5, 31)]), T),
            None
        );
    }

    #[test]
    fn the_leader_never_removes_itself() {
        let four = BTreeSet::from([1, 2, 3, 4]);
        assert_eq!(to_remove(1, &four, silent(&[(1, 600)]), T), None);
    }
}
