//! CronJobs (batch/v1): Kubernetes' defaults (Allow, history limits 3 and 1) and validation
//! of the schedule, time zone, policies and Job template.

use k8s_openapi::api::batch::v1::CronJob;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, CRON_JOB};

use super::Strategy;
use crate::objects::admission::{self, batch};
use crate::objects::error::Result;

/// The CronJob strategy.
pub struct CronJobStrategy;

impl Strategy for CronJobStrategy {
    fn info(&self) -> &'static KindInfo {
        &CRON_JOB
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<CronJob>(self, obj, batch::default_cron_job, batch::validate_cron_job)
    }
}
