//! Skiff's chaos-test suite: real `skiff control` processes on hosts in network namespaces,
//! real faults (`kill -9`, SIGSTOP, nftables partitions and packet loss), recorded histories
//! and checkers that must reject hand-made bad histories.
//!
//! - [`net`]: hosts and the bridge; fault rules.
//! - [`cluster`]: the control nodes of a run.
//! - [`nemesis`]: scenarios and fault injection.
//! - [`workload`]: register clients and watchers.
//! - [`object_workload`]: ConfigMaps updated with resourceVersion compare-and-swap.
//! - [`history`]: what is recorded.
//! - [`checker`]: linearizability, watch, convergence.
//! - [`run`]: one scenario end to end.

pub mod checker;
pub mod cluster;
pub mod delay;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod object_workload;
pub mod powercut;
pub mod run;
pub mod workload;
