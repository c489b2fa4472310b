//! Each API of a control node behind the [`Gate`](super::gate::Gate): one wrapper per
//! service that asks the gate and then hands the request, untouched, to the service itself.
//! The compiler makes every method of a service pass through its wrapper.

mod cluster;
mod kv;
mod node_agent;
mod objects;

pub use cluster::GuardedCluster;
pub use kv::GuardedKv;
pub use node_agent::GuardedNodeAgent;
pub use objects::GuardedObjects;
