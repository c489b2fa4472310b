//! Skiff's gRPC contracts and the one place transport settings live.
//!
//! - [`pb`]: code generated from `proto/skiff/v1/*.proto`.
//! - [`transport`]: the channel constructor and server builder every connection uses.
//! - [`status`]: how errors travel as `tonic::Status`, both ways.
//! - [`client`]: the client with an endpoint list and fail-over.
//! - [`objects`]: object API calls and typed [`objects::Api`].
//! - [`informer`]: list+watch caches with indexes, for controllers and agents.
//! - [`node_agent`]: logs, exec and image imports through the control plane.
//! - [`config_file`]: the file of named contexts that `skiff up` writes and `skiffctl` reads.
//! - [`private_file`]: owner-only files (keys, credentials) replaced whole.
//! - [`cidr`]: IPv4 ranges, shared by node IPAM, the service range and the node agent.
//! - [`kinds`]: the served object kinds and the names clients use for them.
//! - [`quantity`]: Kubernetes resource quantities.

pub mod cidr;
pub mod client;
pub mod config_file;
pub mod duration;
pub mod informer;
pub mod kinds;
pub mod node_agent;
pub mod objects;
pub mod ops_http;
pub mod private_file;
pub mod quantity;
pub mod status;
pub mod tls;
pub mod transport;

/// Generated protobuf and gRPC code of package `skiff.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("skiff.v1");
}

pub use client::{Client, ClientConfig, ClientError, WatchEvent};
