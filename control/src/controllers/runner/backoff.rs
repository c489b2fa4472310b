//! Per-key exponential back-off for failed reconciles: a key that keeps failing waits
//! longer each time (doubling, up to a cap), a key that succeeds starts again from the base.
//! Other keys are not slowed by one that fails.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Back-off of each failing key.
#[derive(Debug)]
pub struct KeyBackoff<K> {
    base: Duration,
    cap: Duration,
    failures: HashMap<K, u32>,
}

impl<K: Eq + Hash> KeyBackoff<K> {
    /// Start at `base`, double per failure, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: HashMap::new(),
        }
    }

    /// `key` failed again: how long it waits before its next reconcile.
    pub fn failed(&mut self, key: K) -> Duration {
        let n = self.failures.entry(key).or_insert(0);
        let delay = self
            .base
            .checked_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap);
        *n = n.saturating_add(1);
        delay
    }

    /// `key` succeeded: its next failure waits the base again.
    pub fn reset(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// How many times in a row `key` has failed.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_per_failure_up_to_the_cap_and_resets_on_success() {
        let mut b = KeyBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..6).map(|_| b.failed("a").as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        // Another key is not slowed by the first.
        assert_eq!(b.failed("b"), Duration::from_millis(100));
        b.reset(&"a");
        assert_eq!(b.failures(&"a"), 0);
        assert_eq!(b.failed("a"), Duration::from_millis(100));
    }

    #[test]
    fn a_long_streak_of_failures_never_overflows() {
        let mut b = KeyBackoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(b.failed("a") <= Duration::from_secs(30));
        }
    }
}
