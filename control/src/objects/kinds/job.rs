//! Jobs (batch/v1): Kubernetes' defaults (a selector generated from the uid), validation,
//! and what may not change once a Job exists (its selector, template and completions).

use k8s_openapi::api::batch::v1::Job;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, JOB};

use super::Strategy;
use crate::objects::admission::{self, batch};
use crate::objects::error::Result;
use crate::objects::patch::schema::{self, Schema};

/// The Job strategy.
pub struct JobStrategy;

impl Strategy for JobStrategy {
    fn info(&self) -> &'static KindInfo {
        &JOB
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::REPLICATED
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Job>(self, obj, batch::default_job, batch::validate_job)
    }

    fn check_update(&self, current: &Value, next: &Value) -> Result<()> {
        admission::typed_changes(&JOB, current, next, batch::immutable_job_changes)
    }
}
