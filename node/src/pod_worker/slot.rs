//! A container slot of a pod: one name of the pod spec, whichever containerd container
//! currently fills it, its restart attempt, back-offs and probes.

use std::time::Instant;

use super::backoff::Backoff;
use super::probes::ProbeState;
use super::status::Observed;

/// One container name of a pod, across its restarts.
#[derive(Debug, Default)]
pub struct Slot {
    /// The containerd container now filling it.
    pub current: Option<String>,
    /// Its restart attempt (0 = first run); the next container gets `attempt + 1`.
    pub attempt: u32,
    /// Digest of the image in use.
    pub image_id: String,
    /// When the current container started (Unix seconds).
    pub started_at: i64,
    /// When the current container started, on this agent's clock.
    pub started_instant: Option<Instant>,
    /// Why nothing runs (reason, message), when nothing does.
    pub waiting: Option<(String, String)>,
    /// The current container's exit, while it is not replaced.
    pub terminated: Option<Observed>,
    /// The previous container's exit.
    pub last_terminated: Option<Observed>,
    /// Restart back-off.
    pub crash: Backoff,
    /// The container whose exit armed `crash` (so one exit counts once).
    pub crash_armed_for: Option<String>,
    /// Pull back-off.
    pub pull: Backoff,
    /// Its probes.
    pub probes: Vec<ProbeState>,
}

impl Slot {
    /// Whether the startup probe (if any) has passed.
    pub fn started(&self) -> bool {
        self.probes
            .iter()
            .filter(|p| p.kind == super::probes::Kind::Startup)
            .all(|p| p.passing)
    }

    /// Whether the readiness probe (if any) passes.
    pub fn ready(&self) -> bool {
        self.probes
            .iter()
            .filter(|p| p.kind == super::probes::Kind::Readiness)
            .all(|p| p.passing)
    }

    /// Whether it ran to a successful end.
    pub fn succeeded(&self) -> bool {
        matches!(self.terminated, Some(Observed::Terminated { code: 0, .. }))
    }
}

/// containerd id of attempt `attempt` of container `name` in pod `uid`: readable, unique, and
/// within containerd's identifier syntax.
pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    format!("{}-{name}-{attempt}", short_uid(uid))
}

/// Whether container `id` is one of pod `uid`'s (by [`container_id`]'s prefix).
pub fn is_container_of(uid: &str, id: &str) -> bool {
    id.strip_prefix(short_uid(uid).as_str())
        .is_some_and(|rest| rest.starts_with('-'))
}

fn short_uid(uid: &str) -> String {
    uid.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_and_distinct_per_attempt() {
        let uid = "0f8e2c1a-1111-2222-3333-444455556666";
        assert_eq!(container_id(uid, "web", 0), "0f8e2c1a1111-web-0");
        assert_ne!(container_id(uid, "web", 0), container_id(uid, "web", 1));
        assert!(is_container_of(uid, &container_id(uid, "web", 3)));
        assert!(!is_container_of(
            "9a8e2c1a-1111-2222-3333-444455556666",
            &container_id(uid, "web", 3)
        ));
    }
}
