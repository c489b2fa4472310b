//! What the object watch counts: watches open, changes fanned out and events delivered to
//! queues, and watchers cut off for falling behind (each of those re-lists).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The watch families; cheap to clone (the figures are shared).
#[derive(Clone, Default)]
pub struct WatchMetrics {
    /// Object watches open on this member.
    pub open: Gauge,
    /// Store changes decoded and offered to watchers.
    pub changes: Counter,
    /// Events queued for watchers.
    pub deliveries: Counter,
    /// Watchers cut off with EXPIRED because they fell too far behind.
    pub cut_off: Counter,
}

impl std::fmt::Debug for WatchMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchMetrics")
    }
}

impl WatchMetrics {
    /// Families registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let me = Self::default();
        registry.register(
            "skiff_watches_open",
            "Object watches open on this member",
            me.open.clone(),
        );
        registry.register(
            "skiff_watch_changes",
            "Store changes decoded once and offered to the watchers that may want them",
            me.changes.clone(),
        );
        registry.register(
            "skiff_watch_deliveries",
            "Object events queued for watchers",
            me.deliveries.clone(),
        );
        registry.register(
            "skiff_watch_cut_off",
            "Watchers closed with EXPIRED because they fell too far behind (they list again)",
            me.cut_off.clone(),
        );
        me
    }
}
