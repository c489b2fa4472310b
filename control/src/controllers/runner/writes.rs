//! What one reconcile pass wrote: the last revision (so the runner waits for its caches to
//! show it), the first failure, and when to look again.

use std::time::Duration;

use skiff_proto::objects::ApiError;

use super::{Action, ReconcileError};

/// What one pass wrote, for the runner.
#[derive(Default)]
pub struct Writes {
    last: u64,
    failed: Option<ApiError>,
    look_again: Option<Duration>,
}

impl Writes {
    /// Take the outcome of one write: its revision (by `revision`) if it worked; a delete
    /// of what is gone already counts as done. Whether it worked.
    pub fn note<T>(&mut self, r: Result<T, ApiError>, revision: impl Fn(&T) -> u64) -> bool {
        match r {
            Ok(v) => {
                self.last = self.last.max(revision(&v));
                true
            }
            // Gone already: what a delete was for.
            Err(ApiError::Client(skiff_proto::ClientError::Rejected(s)))
                if s.code() == tonic::Code::NotFound =>
            {
                true
            }
            Err(e) => {
                self.failed.get_or_insert(e);
                false
            }
        }
    }

    /// A write that worked, at `revision`.
    pub fn wrote(&mut self, revision: u64) {
        self.last = self.last.max(revision);
    }

    /// A write that failed.
    pub fn fail(&mut self, e: ApiError) {
        self.failed.get_or_insert(e);
    }

    /// Look again within `d`.
    pub fn again_in(&mut self, d: Duration) {
        self.look_again = Some(self.look_again.map_or(d, |x| x.min(d)));
    }

    /// The runner's answer: the last write's revision, the first failure, the next look.
    pub fn outcome(self) -> Result<Action, ReconcileError> {
        if let Some(e) = self.failed {
            return Err(ReconcileError::after_write(self.last, e));
        }
        let action = Action::done().wrote(self.last);
        Ok(match self.look_again {
            Some(d) => action.or_requeue_after(d),
            None => action,
        })
    }
}
