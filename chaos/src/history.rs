//! Operation histories as the workloads record them: every operation is invoked, then ends
//! `ok`, `fail` (certainly had no effect) or `unknown` (may or may not have taken effect —
//! a timeout or a lost connection), with times relative to the start of the run.

use serde::{Deserialize, Serialize};

/// What a register operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum RegisterOp {
    /// Read the register; `value` is what was read (`None` = absent), known when ok.
    Read {
        /// The value read.
        value: Option<String>,
    },
    /// Write `value`.
    Write {
        /// The value written.
        value: String,
    },
    /// Compare-and-set from `from` to `to`; `swapped` says whether it did, known when ok.
    Cas {
        /// Expected value.
        from: String,
        /// New value.
        to: String,
        /// Whether the compare held.
        swapped: bool,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Completed; its result is known.
    Ok,
    /// Certainly had no effect.
    Fail,
    /// May or may not have taken effect.
    Unknown,
}

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client (process) that ran it.
    pub process: u32,
    /// The key.
    pub key: String,
    /// What it did.
    pub op: RegisterOp,
    /// Invocation time, µs since the run started.
    pub invoke_us: u64,
    /// Completion time, µs since the run started (for unknown: when the client gave up).
    pub complete_us: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The store revision the response carried, if any.
    pub revision: Option<u64>,
}

/// One watch event as a watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenEvent {
    /// The watcher.
    pub watcher: u32,
    /// Revision of the change.
    pub revision: u64,
    /// The key.
    pub key: String,
    /// The value (`None` for a delete).
    pub value: Option<String>,
}
