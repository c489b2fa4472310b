//! Events: validated involved object and reason.

use k8s_openapi::api::core::v1::Event;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, EVENT};

use super::Strategy;
use crate::objects::admission::{self, other};
use crate::objects::error::Result;

/// The Event strategy.
pub struct EventStrategy;

impl Strategy for EventStrategy {
    fn info(&self) -> &'static KindInfo {
        &EVENT
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Event>(self, obj, |_| {}, other::validate_event)
    }
}
