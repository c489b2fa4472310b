//! StatefulSets (apps/v1): Kubernetes' defaults and validation (the template checked with its
//! claim templates' volumes), and the fields that may not change once one exists.

use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, STATEFUL_SET};

use super::Strategy;
use crate::objects::admission::{self, stateful_set};
use crate::objects::error::Result;
use crate::objects::patch::schema::{self, Schema};

/// The StatefulSet strategy.
pub struct StatefulSetStrategy;

impl Strategy for StatefulSetStrategy {
    fn info(&self) -> &'static KindInfo {
        &STATEFUL_SET
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::REPLICATED
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<StatefulSet>(
            self,
            obj,
            stateful_set::default_stateful_set,
            stateful_set::validate_stateful_set,
        )
    }

    fn check_update(&self, current: &Value, next: &Value) -> Result<()> {
        admission::typed_changes(
            &STATEFUL_SET,
            current,
            next,
            stateful_set::immutable_stateful_set_changes,
        )
    }
}
