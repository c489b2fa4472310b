//! Limits that keep one caller from hurting the others: a request rate and a number of open
//! watches per caller (by the holder its certificate names). Admins — control nodes, the admin
//! group and users with the admin role — are not limited, as Kubernetes exempts
//! `system:masters` from its API priority and fairness.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Status;

use super::caller::Caller;
use super::rules::Role;

/// The limits' settings; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// Requests per second per caller (bursts of twice as many).
    pub requests_per_second: u32,
    /// Watches open at once per caller.
    pub max_watches: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 200,
            max_watches: 100,
        }
    }
}

/// The limits of one member.
#[derive(Clone)]
pub struct Limits {
    settings: LimitSettings,
    rate: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

/// An open watch, counted against its caller until dropped.
pub struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, usize>>>,
    subject: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = w.get_mut(&self.subject) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.remove(&self.subject);
            }
        }
    }
}

fn limited(caller: &Caller) -> bool {
    caller.role != Role::Admin
}

impl Limits {
    /// Limits with `settings`.
    pub fn new(settings: LimitSettings) -> Self {
        let rate = NonZeroU32::new(settings.requests_per_second).map(|per_second| {
            let burst = per_second.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
            Arc::new(RateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ))
        });
        Self {
            settings,
            rate,
            watches: Arc::default(),
        }
    }

    /// Let one request of `caller` through, or refuse it with RESOURCE_EXHAUSTED and when to
    /// retry (also in the `retry-after-ms` metadata).
    pub fn admit(&self, caller: &Caller) -> Result<(), Status> {
        let Some(rate) = self.rate.as_ref().filter(|_| limited(caller)) else {
            return Ok(());
        };
        match rate.check_key(&caller.subject) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let ms = wait.as_millis().max(1);
                let mut status = Status::resource_exhausted(format!(
                    "{} is over its {} requests per second; retry in {ms} ms",
                    caller.subject, self.settings.requests_per_second
                ));
                if let Ok(v) = ms.to_string().parse() {
                    status.metadata_mut().insert("retry-after-ms", v);
                }
                Err(status)
            }
        }
    }

    /// Count one more open watch of `caller`, or refuse it with RESOURCE_EXHAUSTED.
    pub fn open_watch(&self, caller: &Caller) -> Result<Option<WatchSlot>, Status> {
        if self.settings.max_watches == 0 || !limited(caller) {
            return Ok(None);
        }
        let mut w = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let open = w.entry(caller.subject.clone()).or_default();
        if *open >= self.settings.max_watches {
            return Err(Status::resource_exhausted(format!(
                "{} has {} watches open, its limit; close one first",
                caller.subject, *open
            )));
        }
        *open += 1;
        Ok(Some(WatchSlot {
            watches: self.watches.clone(),
            subject: caller.subject.clone(),
        }))
    }
}
