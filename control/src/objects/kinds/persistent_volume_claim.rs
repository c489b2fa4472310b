//! PersistentVolumeClaims (core/v1): a namespace's request for storage, bound to a volume by
//! the volume controller. A new claim gets `kubernetes.io/pvc-protection`, so it is not
//! removed while a pod uses it; its spec does not change once bound.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, PERSISTENT_VOLUME_CLAIM};

use super::Strategy;
use crate::objects::admission::{self, storage};
use crate::objects::error::Result;
use crate::objects::meta;

/// The PersistentVolumeClaim strategy.
pub struct PersistentVolumeClaimStrategy;

impl Strategy for PersistentVolumeClaimStrategy {
    fn info(&self) -> &'static KindInfo {
        &PERSISTENT_VOLUME_CLAIM
    }

    fn prepare_create(&self, obj: &mut Value) {
        if !obj.is_object() {
            return;
        }
        let mut finalizers = meta::finalizers(obj);
        if !finalizers.iter().any(|f| f == storage::PVC_PROTECTION) {
            finalizers.push(storage::PVC_PROTECTION.into());
        }
        meta::metadata_mut(obj).insert("finalizers".into(), finalizers.into());
        if obj.pointer("/status/phase").is_none() {
            obj["status"] = serde_json::json!({"phase": "Pending"});
        }
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<PersistentVolumeClaim>(
            self,
            obj,
            storage::default_claim,
            storage::validate_claim,
        )
    }

    fn check_update(&self, current: &Value, next: &Value) -> Result<()> {
        admission::typed_changes(
            &PERSISTENT_VOLUME_CLAIM,
            current,
            next,
            storage::immutable_claim_changes,
        )
    }
}
