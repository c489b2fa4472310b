//! DaemonSets (apps/v1): Kubernetes' defaults (RollingUpdate, one unavailable at a time) and
//! validation of the selector, template and update strategy.

use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, DAEMON_SET};

use super::Strategy;
use crate::objects::admission::{self, workloads};
use crate::objects::error::Result;
use crate::objects::patch::schema::{self, Schema};

/// The DaemonSet strategy.
pub struct DaemonSetStrategy;

impl Strategy for DaemonSetStrategy {
    fn info(&self) -> &'static KindInfo {
        &DAEMON_SET
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::REPLICATED
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<DaemonSet>(
            self,
            obj,
            workloads::default_daemon_set,
            workloads::validate_daemon_set,
        )
    }
}
