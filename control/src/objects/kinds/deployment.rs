//! Deployments (apps/v1): Kubernetes' defaults (RollingUpdate 25%/25%, a history of 10) and
//! validation of the selector, template and strategy.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, DEPLOYMENT};

use super::Strategy;
use crate::objects::admission::{self, workloads};
use crate::objects::error::Result;
use crate::objects::patch::schema::{self, Schema};

/// The Deployment strategy.
pub struct DeploymentStrategy;

impl Strategy for DeploymentStrategy {
    fn info(&self) -> &'static KindInfo {
        &DEPLOYMENT
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::DEPLOYMENT
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Deployment>(
            self,
            obj,
            workloads::default_deployment,
            workloads::validate_deployment,
        )
    }
}
