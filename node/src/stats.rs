//! What the agent times, as `prometheus-client` histograms its `/metrics` serves: a pod's
//! start (first seen until it runs, as kubelet's pod start duration), an image pull, and a
//! sync of the service rules.

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The agent's timings; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct AgentStats {
    /// A pod from first seen by this agent until Running.
    pub pod_start: Histogram,
    /// One image pull from a registry.
    pub image_pull: Histogram,
    /// One sync of the service rules into nftables.
    pub proxy_sync: Histogram,
}

/// Buckets from 1 ms to ~65 s: rule syncs take milliseconds, pulls and starts seconds.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for AgentStats {
    fn default() -> Self {
        Self {
            pod_start: duration_histogram(),
            image_pull: duration_histogram(),
            proxy_sync: duration_histogram(),
        }
    }
}

impl AgentStats {
    /// Register the families in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "skiff_node_pod_start_duration_seconds",
            "A pod from first seen by this agent until Running",
            self.pod_start.clone(),
        );
        registry.register(
            "skiff_node_image_pull_duration_seconds",
            "One image pull from a registry",
            self.image_pull.clone(),
        );
        registry.register(
            "skiff_proxy_sync_duration_seconds",
            "One sync of the service rules into nftables",
            self.proxy_sync.clone(),
        );
    }
}
