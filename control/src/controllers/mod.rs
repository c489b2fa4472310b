//! Controllers, and the leadership hand-off that runs them with the scheduler on the Raft
//! leader only.
//!
//! - [`runner`]: the one keyed runner every controller runs on (work queue, back-off,
//!   spans, figures).
//! - [`context`], [`cache`]: the informer caches (with indexes and change feeds) and
//!   settings they share.
//! - [`replicaset`], [`replicationcontroller`], [`deployment`], [`daemonset`],
//!   [`statefulset`], [`job`],
//!   [`cronjob`], [`disruption`], [`volume`],
//!   [`garbage_collector`],
//!   [`node_lifecycle`], [`node_ipam`], [`endpoints`], [`event_cleanup`], [`cluster_dns`]: one
//!   reconciler each.
//! - [`events`]: the Event recorder; [`ownership`]: owner references and pod state;
//!   [`revisions`]: the templates StatefulSets and DaemonSets ran, as ControllerRevisions.

pub mod cache;
pub mod cluster_dns;
pub mod context;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod event_cleanup;
pub mod events;
pub mod feed;
pub mod garbage_collector;
pub mod job;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod ownership;
pub mod replicaset;
pub mod replicationcontroller;
pub mod revisions;
pub mod runner;
pub mod statefulset;
pub mod volume;

use std::time::Duration;

use openraft::ServerState;
use skiff_proto::{Client, ClientConfig};
use skiff_raft::RaftNode;
use tokio::task::JoinSet;

pub use context::Settings;
pub use runner::metrics::ControllerMetrics;

fn is_leader(node: &RaftNode) -> bool {
    let m = node.raft().metrics().borrow().clone();
    m.state == ServerState::Leader && m.current_leader == Some(node.id())
}

/// Run the scheduler and the controllers whenever this member leads: they start as soon as
/// it becomes leader and are stopped the moment it is not. Their writes are
/// compare-and-swap, so a term that overlaps the next one's start never acts twice on an
/// object. `self_addr` is this member's own API address; `figures` outlive the terms.
pub async fn run_when_leader(
    node: RaftNode,
    self_addr: String,
    settings: Settings,
    figures: ControllerMetrics,
) {
    let mut metrics = node.raft().metrics();
    loop {
        while !is_leader(&node) {
            if metrics.changed().await.is_err() {
                return;
            }
        }
        let term = metrics.borrow().current_term;
        tracing::info!(term, "leading: starting the scheduler and controllers");
        let config = ClientConfig {
            random_start: false,
            call_deadline: Duration::from_secs(5),
            tls: node.config().tls.clone(),
            ..Default::default()
        };
        let client = match Client::with_config(std::slice::from_ref(&self_addr), config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach this member's own API; controllers not started");
                return;
            }
        };
        let mut tasks = JoinSet::new();
        let (settings, figures) = (settings.clone(), figures.clone());
        tasks.spawn(async move {
            let ctx = context::Ctx::start(client, settings, figures).await;
            let mut loops = JoinSet::new();
            loops.spawn(crate::scheduler::run(ctx.clone()));
            loops.spawn(replicaset::run(ctx.clone()));
            loops.spawn(replicationcontroller::run(ctx.clone()));
            loops.spawn(deployment::run(ctx.clone()));
            loops.spawn(daemonset::run(ctx.clone()));
            loops.spawn(statefulset::run(ctx.clone()));
            loops.spawn(job::run(ctx.clone()));
            loops.spawn(cronjob::run(ctx.clone()));
            loops.spawn(disruption::run(ctx.clone()));
            loops.spawn(volume::run(ctx.clone()));
            loops.spawn(garbage_collector::run(ctx.clone()));
            loops.spawn(node_lifecycle::run(ctx.clone()));
            loops.spawn(node_ipam::run(ctx.clone()));
            loops.spawn(endpoints::run(ctx.clone()));
            loops.spawn(event_cleanup::run(ctx.clone()));
            loops.spawn(cluster_dns::run(ctx.clone()));
            while loops.join_next().await.is_some() {}
        });
        while is_leader(&node) && metrics.borrow().current_term == term {
            if metrics.changed().await.is_err() {
                break;
            }
        }
        tracing::info!(
            term,
            "no longer leading: stopping the scheduler and controllers"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
