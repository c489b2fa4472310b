//! One module per command group.

pub mod auth;
pub mod cluster;
pub mod kv;
pub mod objects;
pub mod pods;
pub mod snapshot;
pub mod tokens;
