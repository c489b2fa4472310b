//! PodDisruptionBudgets (policy/v1): validation; the disruption controller keeps their status
//! and evictions ([`crate::objects::eviction`]) ask them.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, POD_DISRUPTION_BUDGET};

use super::Strategy;
use crate::objects::admission::{self, policy};
use crate::objects::error::Result;

/// The PodDisruptionBudget strategy.
pub struct PodDisruptionBudgetStrategy;

impl Strategy for PodDisruptionBudgetStrategy {
    fn info(&self) -> &'static KindInfo {
        &POD_DISRUPTION_BUDGET
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<PodDisruptionBudget>(
            self,
            obj,
            |_| {},
            policy::validate_pod_disruption_budget,
        )
    }
}
