//! Endpoints: validated addresses and ports.

use k8s_openapi::api::core::v1::Endpoints;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, ENDPOINTS};

use super::Strategy;
use crate::objects::admission::{self, service};
use crate::objects::error::Result;

/// The Endpoints strategy.
pub struct EndpointsStrategy;

impl Strategy for EndpointsStrategy {
    fn info(&self) -> &'static KindInfo {
        &ENDPOINTS
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Endpoints>(self, obj, |_| {}, service::validate_endpoints)
    }
}
