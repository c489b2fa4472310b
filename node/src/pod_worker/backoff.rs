//! Restart and pull back-off: the delay doubles with each failure up to a cap (the kubelet's
//! CrashLoopBackOff and ImagePullBackOff: 10 s doubling to 5 min by default).

use std::time::{Duration, Instant};

/// Back-off settings.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl BackoffPolicy {
    /// The delay after the `failures`th failure (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// One back-off: failures so far and when the next try may happen.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// Consecutive failures.
    pub failures: u32,
    /// No try before this.
    pub until: Option<Instant>,
}

impl Backoff {
    /// Record a failure at `now`.
    pub fn fail(&mut self, policy: &BackoffPolicy, now: Instant) {
        self.failures += 1;
        self.until = Some(now + policy.delay(self.failures));
    }

    /// Whether a try is allowed at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| now >= u)
    }

    /// Forget the failures.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = BackoffPolicy::default();
        let secs: Vec<u64> = (1..=8).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(p.delay(60), Duration::from_secs(300));
    }

    #[test]
    fn a_failure_blocks_tries_until_its_delay_passes() {
        let p = BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
        };
        let now = Instant::now();
        let mut b = Backoff::default();
        assert!(b.ready(now));
        b.fail(&p, now);
        assert!(!b.ready(now));
        assert!(b.ready(now + Duration::from_secs(1)));
        b.fail(&p, now);
        assert!(!b.ready(now + Duration::from_secs(1)));
        b.reset();
        assert!(b.ready(now));
    }
}
