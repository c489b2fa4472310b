//! Who calls a control node and what they may do.
//!
//! ```text
//!  request ─▶ guard (one wrapper per API) ─▶ gate ─▶ handler
//!                                             ├─ caller: the certificate's holder and its role
//!                                             ├─ rules: the role's verdict on verb and kind
//!                                             └─ node_restriction: a node's own objects only
//! ```
//!
//! Roles: `admin` (everything), `edit` (namespaced objects, logs, exec), `view` (reads but
//! Secrets), `node` (the agents). Users are User objects; their certificates name them.

pub mod caller;
pub mod gate;
pub mod guard;
pub mod limits;
pub mod node_restriction;
pub mod request;
pub mod rules;
pub mod service;
