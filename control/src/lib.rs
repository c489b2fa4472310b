//! Skiff's control node.
//!
//! - [`bootstrap`]: flags checked, the data directory claimed for one cluster and member,
//!   and a fresh cluster initialised exactly once.
//! - [`server`]: the gRPC server a control node runs (Raft, Kv, Cluster, Objects, NodeAgent).
//! - [`node_proxy`]: logs, exec and image imports passed on to node agents.
//! - [`objects`]: the Kubernetes-shaped object API.
//! - [`scheduler`], [`controllers`]: placement and reconcile loops, run on the Raft leader.
//! - [`hollow`]: simulated nodes for tests and scale benchmarks.
//! - [`ops`]: the operations endpoint: metrics, health and readiness over HTTP.

pub mod auth;
pub mod bootstrap;
pub mod controllers;
pub mod hollow;
pub mod node_proxy;
pub mod objects;
pub mod ops;
pub mod scheduler;
pub mod server;
