//! A control node's operations endpoint (`skiff control --metrics-listen ADDR`, served by
//! [`skiff_proto::ops_http`]): `/metrics` with the Raft figures ([`raft_metrics`], read at
//! each scrape), the API's requests ([`api_metrics`]) and the controllers' families; `/readyz` 200 once a leader is known and this
//! member has applied its log, else 503 with the reason. The same readiness is served on the
//! gRPC port as the standard health service ([`grpc_health`]).

pub mod api_metrics;
pub mod grpc_health;
pub mod raft_metrics;

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use skiff_proto::ops_http::OpsSource;
use skiff_raft::RaftNode;

use self::api_metrics::ApiMetrics;
use self::raft_metrics::RaftFigures;
use crate::controllers::ControllerMetrics;
use crate::objects::watch::WatchMetrics;
use crate::server::ServerMetrics;

/// What the endpoint serves.
pub struct Ops {
    node: RaftNode,
    registry: Mutex<Registry>,
    raft: RaftFigures,
}

/// The families the member's parts count into, served by [`Ops`] (or counted unseen).
#[derive(Default)]
pub struct Families {
    /// The controllers' and the scheduler's.
    pub controllers: ControllerMetrics,
    /// The gRPC server's.
    pub server: ServerMetrics,
}

impl Ops {
    /// The endpoint of `node`, with the families its parts count into.
    pub fn new(node: RaftNode) -> (Arc<Self>, Families) {
        let mut registry = Registry::default();
        let raft = RaftFigures::register(&mut registry);
        raft_metrics::register_stats(&mut registry, node.stats());
        let families = Families {
            controllers: ControllerMetrics::register(&mut registry),
            server: ServerMetrics {
                watches: WatchMetrics::register(&mut registry),
                api: ApiMetrics::register(&mut registry),
            },
        };
        (
            Arc::new(Self {
                node,
                registry: Mutex::new(registry),
                raft,
            }),
            families,
        )
    }
}

impl OpsSource for Ops {
    fn metrics(&self) -> String {
        self.raft.update(&self.node);
        skiff_proto::ops_http::encode(&self.registry)
    }

    fn not_ready(&self) -> Option<String> {
        not_ready(&self.node)
    }
}

/// Why `node` cannot answer clients yet: no leader known, a leader that no majority has
/// answered lately (openraft 0.9 keeps a leader that lost its quorum leading), or its log not
/// applied; `None` when it is ready.
pub fn not_ready(node: &RaftNode) -> Option<String> {
    let m = node.raft().metrics().borrow().clone();
    if m.current_leader.is_none() {
        return Some("no leader known".into());
    }
    if m.current_leader == Some(node.id()) {
        let quorum_within = node.config().election_timeout.1 * 2;
        match m.millis_since_quorum_ack {
            Some(ms) if u128::from(ms) <= quorum_within.as_millis() => {}
            Some(ms) => {
                return Some(format!(
                    "leading without a quorum: no majority has answered for {ms} ms"
                ))
            }
            None => return Some("leading without a quorum".into()),
        }
    }
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let committed = m.last_log_index.unwrap_or(0);
    (applied < committed).then(|| format!("applied {applied} of {committed} log entries"))
}
