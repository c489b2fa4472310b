//! The gRPC services a control node serves from its store: Raft (peer RPCs), Kv and Cluster.
//! Calls that need the leader are forwarded to it ([`forward`]).

pub mod cluster_service;
pub mod convert;
pub mod forward;
pub mod kv_service;
pub mod raft_service;
