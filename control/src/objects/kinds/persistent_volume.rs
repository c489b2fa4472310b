//! PersistentVolumes (core/v1): host folders (`hostPath`, `local`) of a size and access
//! modes, bound to one claim by the volume controller; where the data is never changes.

use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, PERSISTENT_VOLUME};

use super::Strategy;
use crate::objects::admission::{self, storage};
use crate::objects::error::Result;

/// The PersistentVolume strategy.
pub struct PersistentVolumeStrategy;

impl Strategy for PersistentVolumeStrategy {
    fn info(&self) -> &'static KindInfo {
        &PERSISTENT_VOLUME
    }

    fn prepare_create(&self, obj: &mut Value) {
        if obj.pointer("/status/phase").is_none() {
            obj["status"] = serde_json::json!({"phase": "Pending"});
        }
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<PersistentVolume>(
            self,
            obj,
            storage::default_volume,
            storage::validate_volume,
        )
    }

    fn check_update(&self, current: &Value, next: &Value) -> Result<()> {
        admission::typed_changes(
            &PERSISTENT_VOLUME,
            current,
            next,
            storage::immutable_volume_changes,
        )
    }
}
