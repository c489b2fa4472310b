//! ControllerRevisions (apps/v1): a template a StatefulSet has run, kept by its controller so
//! pods below a partition are made as they were, and for the rollout history. The data of a
//! revision never changes; its number may (a rollback reuses a revision).

use k8s_openapi::api::apps::v1::ControllerRevision;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, CONTROLLER_REVISION};

use super::Strategy;
use crate::objects::admission;
use crate::objects::error::{FieldError, Result};

/// The ControllerRevision strategy.
pub struct ControllerRevisionStrategy;

fn validate(r: &ControllerRevision) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if r.revision < 0 {
        errors.push(FieldError::new(
            "revision",
            format!(
                "Invalid value: {}: must be greater than or equal to 0",
                r.revision
            ),
        ));
    }
    errors
}

fn data_changes(a: &ControllerRevision, b: &ControllerRevision) -> Vec<FieldError> {
    if a.data == b.data {
        Vec::new()
    } else {
        vec![FieldError::new("data", "Invalid value: field is immutable")]
    }
}

impl Strategy for ControllerRevisionStrategy {
    fn info(&self) -> &'static KindInfo {
        &CONTROLLER_REVISION
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<ControllerRevision>(self, obj, |_| {}, validate)
    }

    fn check_update(&self, current: &Value, next: &Value) -> Result<()> {
        admission::typed_changes(&CONTROLLER_REVISION, current, next, data_changes)
    }
}
