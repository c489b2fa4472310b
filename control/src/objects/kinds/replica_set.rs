//! ReplicaSets (apps/v1): Kubernetes' defaults and validation of the selector and template.

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, REPLICA_SET};

use super::Strategy;
use crate::objects::admission::{self, workloads};
use crate::objects::error::Result;
use crate::objects::patch::schema::{self, Schema};

/// The ReplicaSet strategy.
pub struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    fn info(&self) -> &'static KindInfo {
        &REPLICA_SET
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::REPLICATED
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<ReplicaSet>(
            self,
            obj,
            workloads::default_replica_set,
            workloads::validate_replica_set,
        )
    }
}
