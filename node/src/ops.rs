//! The agent's operations endpoint (`skiff node --metrics-listen ADDR`, served by
//! [`skiff_proto::ops_http`]): its pods by phase and its Service/Endpoints caches' sizes,
//! read at each scrape; `/readyz` 200 once its caches have listed from the control plane.

use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use skiff_proto::objects::Informer;
use skiff_proto::ops_http::OpsSource;

/// A pod phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: String,
}

/// What the agent reports.
pub struct AgentOps {
    pods: Informer<Pod>,
    services: Informer<Service>,
    endpoints: Informer<Endpoints>,
    registry: Mutex<Registry>,
    by_phase: Family<PhaseLabel, Gauge>,
    cached_services: Gauge,
    cached_endpoints: Gauge,
}

impl AgentOps {
    /// The endpoint of an agent with these caches and timings.
    pub fn new(
        pods: Informer<Pod>,
        services: Informer<Service>,
        endpoints: Informer<Endpoints>,
        stats: &crate::stats::AgentStats,
    ) -> Self {
        let mut registry = Registry::default();
        stats.register(&mut registry);
        let by_phase = Family::<PhaseLabel, Gauge>::default();
        let (cached_services, cached_endpoints) = (Gauge::default(), Gauge::default());
        registry.register(
            "skiff_node_pods",
            "Pods bound to this node, by phase",
            by_phase.clone(),
        );
        registry.register(
            "skiff_node_cached_services",
            "Services in the agent's cache (the proxy's and the DNS's)",
            cached_services.clone(),
        );
        registry.register(
            "skiff_node_cached_endpoints",
            "Endpoints in the agent's cache",
            cached_endpoints.clone(),
        );
        Self {
            pods,
            services,
            endpoints,
            registry: Mutex::new(registry),
            by_phase,
            cached_services,
            cached_endpoints,
        }
    }
}

impl OpsSource for AgentOps {
    fn metrics(&self) -> String {
        self.by_phase.clear();
        for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
            self.by_phase
                .get_or_create(&PhaseLabel {
                    phase: phase.into(),
                })
                .set(0);
        }
        for p in self.pods.list() {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into());
            self.by_phase.get_or_create(&PhaseLabel { phase }).inc();
        }
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.cached_services.set(count(self.services.list().len()));
        self.cached_endpoints
            .set(count(self.endpoints.list().len()));
        skiff_proto::ops_http::encode(&self.registry)
    }

    fn not_ready(&self) -> Option<String> {
        let unsynced: Vec<&str> = [
            ("pods", self.pods.revision()),
            ("services", self.services.revision()),
            ("endpoints", self.endpoints.revision()),
        ]
        .into_iter()
        .filter(|(_, rev)| *rev == 0)
        .map(|(what, _)| what)
        .collect();
        (!unsynced.is_empty()).then(|| format!("not yet listed: {}", unsynced.join(", ")))
    }
}
