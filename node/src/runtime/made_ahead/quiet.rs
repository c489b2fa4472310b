//! When a pool of things made ahead of time ([`super::sandboxes`]) may make more: only while no pod start holds a turn at the start gate and none has taken
//! from the pool for a moment, so that a burst of starts does not share the CPU with it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How long after the last take a pool waits before making more.
const QUIET: Duration = Duration::from_secs(1);

/// The last take from one pool.
#[derive(Default)]
pub struct Quiet {
    last_take: Mutex<Option<Instant>>,
}

impl Quiet {
    /// Something was taken from the pool just now.
    pub fn took(&self) {
        if let Ok(mut t) = self.last_take.lock() {
            *t = Some(Instant::now());
        }
    }

    /// Wait until no pod start holds a turn at `gate` (of `gate_size` turns) and nothing was
    /// taken for a moment.
    pub async fn wait(&self, gate: &Semaphore, gate_size: usize) {
        while !self.is_quiet(gate, gate_size) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn is_quiet(&self, gate: &Semaphore, gate_size: usize) -> bool {
        let recent_take = self
            .last_take
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() < QUIET);
        !recent_take && gate.available_permits() >= gate_size
    }
}
