//! Leases (coordination.k8s.io/v1): validated durations.

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, LEASE};

use super::Strategy;
use crate::objects::admission::{self, other};
use crate::objects::error::Result;

/// The Lease strategy.
pub struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    fn info(&self) -> &'static KindInfo {
        &LEASE
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Lease>(self, obj, |_| {}, other::validate_lease)
    }
}
