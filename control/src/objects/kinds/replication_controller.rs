//! ReplicationControllers (core/v1): Kubernetes' defaults (selector from the template's
//! labels) and the ReplicaSet's validation with an equality selector.

use k8s_openapi::api::core::v1::ReplicationController;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, REPLICATION_CONTROLLER};

use super::Strategy;
use crate::objects::admission::{self, workloads};
use crate::objects::error::Result;
use crate::objects::patch::schema::{self, Schema};

/// The ReplicationController strategy.
pub struct ReplicationControllerStrategy;

impl Strategy for ReplicationControllerStrategy {
    fn info(&self) -> &'static KindInfo {
        &REPLICATION_CONTROLLER
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::REPLICATED
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<ReplicationController>(
            self,
            obj,
            workloads::default_replication_controller,
            workloads::validate_replication_controller,
        )
    }
}
