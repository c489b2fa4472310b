//! Checkers over recorded histories. Each returns a [`Verdict`]; each has tests on hand-made
//! bad histories that it must reject, so a pass is never vacuous.

pub mod convergence;
pub mod linearizable;
pub mod watch;

use serde::Serialize;

/// A checker's finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The checker's name.
    pub checker: &'static str,
    /// Whether the history passed.
    pub ok: bool,
    /// What was checked, or the first violation found.
    pub detail: String,
}

impl Verdict {
    /// A pass.
    pub fn pass(checker: &'static str, detail: impl Into<String>) -> Self {
        Self {
            checker,
            ok: true,
            detail: detail.into(),
        }
    }
    /// A violation.
    pub fn fail(checker: &'static str, detail: impl Into<String>) -> Self {
        Self {
            checker,
            ok: false,
            detail: detail.into(),
        }
    }
}
