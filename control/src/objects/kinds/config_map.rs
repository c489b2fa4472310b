//! ConfigMaps: valid keys, at most 1 MiB of data.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, CONFIG_MAP};

use super::Strategy;
use crate::objects::admission::{self, other};
use crate::objects::error::Result;

/// The ConfigMap strategy.
pub struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    fn info(&self) -> &'static KindInfo {
        &CONFIG_MAP
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<ConfigMap>(self, obj, |_| {}, other::validate_config_map)
    }
}
