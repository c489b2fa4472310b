//! Skiff's node agent: registration and heartbeat, pod workers on containerd, pod networking
//! (CNI), logs, probes, and the service proxy (nftables).
//!
//! Nothing is built here yet: the agent is the subject of its own issue, after the object API.
//! The crate exists so the workspace has the layout of `DESIGN.md`.
