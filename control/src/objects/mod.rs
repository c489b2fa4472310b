//! The object API: Kubernetes-shaped objects over the replicated store.
//!
//! ```text
//!   gRPC (service) ─▶ store: admission (decode, default, validate) ─▶ CAS txn via Raft
//!                        └─ watch: key events ─▶ ADDED / MODIFIED / DELETED / BOOKMARK
//! ```
//!
//! - [`store`]: create, get, list, update, status, patch, apply, delete.
//! - [`eviction`]: a pod's delete that its disruption budget must allow.
//! - [`kinds`]: the kind registry: one strategy per kind (defaults, validation,
//!   allocations, what happens on delete).
//! - [`admission`]: typed admission and the defaults and checks of each kind family.
//! - [`watch`]: object events with selectors.
//! - [`selectors`]: label and field selectors.
//! - [`patch`]: merge, JSON and strategic merge patches, and apply's three-way patch.
//! - [`meta`], [`names`]: metadata helpers and name syntax.
//! - [`service`]: the gRPC service.
//! - [`service_alloc`]: ClusterIP and NodePort allocation, claimed in the Service's own write.

pub mod admission;
pub mod encryption;
pub mod error;
pub mod eviction;
pub mod kinds;
pub mod meta;
pub mod names;
pub mod patch;
pub mod selectors;
pub mod service;
pub mod service_alloc;
pub mod store;
pub mod watch;

pub use error::{FieldError, ObjectError};
pub use service::ObjectService;
pub use store::ObjectStore;
