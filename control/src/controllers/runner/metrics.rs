//! What the controllers and the scheduler count, per controller: queue depth, reconciles by
//! outcome, and reconcile latency. The families live in a `prometheus-client` registry that
//! outlives leadership terms, so the figures carry over when a member leads again.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a controller's figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// The controller's name (`replicaset`, `scheduler`, ...).
    pub controller: String,
}

/// Labels of a reconcile count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The controller's name.
    pub controller: String,
    /// `success` or `error`.
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// The figures of every controller.
#[derive(Clone)]
pub struct ControllerMetrics {
    depth: Family<ControllerLabel, Gauge>,
    reconciles: Family<OutcomeLabels, Counter>,
    latency: Family<ControllerLabel, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControllerMetrics")
    }
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            depth: Family::default(),
            reconciles: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl ControllerMetrics {
    /// Families registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let me = Self::default();
        registry.register(
            "skiff_controller_queue_depth",
            "Keys waiting to be reconciled (ready, held back or delayed)",
            me.depth.clone(),
        );
        registry.register(
            "skiff_controller_reconciles",
            "Reconciles by outcome",
            me.reconciles.clone(),
        );
        registry.register(
            "skiff_controller_reconcile_duration_seconds",
            "Time one reconcile took",
            me.latency.clone(),
        );
        me
    }

    /// The figures of controller `name`.
    pub fn of(&self, name: &str) -> Figures {
        let label = ControllerLabel {
            controller: name.to_string(),
        };
        let outcome = |result: &str| OutcomeLabels {
            controller: name.to_string(),
            result: result.to_string(),
        };
        // One statement each: a family's guard lives to the end of its statement, and a
        // second `get_or_create` on the same family within it would deadlock.
        let depth = self.depth.get_or_create(&label).clone();
        let successes = self.reconciles.get_or_create(&outcome("success")).clone();
        let errors = self.reconciles.get_or_create(&outcome("error")).clone();
        let latency = self.latency.get_or_create(&label).clone();
        Figures {
            depth,
            successes,
            errors,
            latency,
        }
    }
}

/// One controller's figures.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Keys waiting.
    pub depth: Gauge,
    /// Reconciles that succeeded.
    pub successes: Counter,
    /// Reconciles that failed.
    pub errors: Counter,
    /// Reconcile latency, in seconds.
    pub latency: Histogram,
}
