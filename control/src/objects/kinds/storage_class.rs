//! StorageClasses (storage.k8s.io/v1): how claims of a class get their volumes (Skiff's own
//! provisioner is `local-path`); what a class does never changes once it exists.

use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, STORAGE_CLASS};

use super::Strategy;
use crate::objects::admission::{self, storage};
use crate::objects::error::Result;

/// The StorageClass strategy.
pub struct StorageClassStrategy;

impl Strategy for StorageClassStrategy {
    fn info(&self) -> &'static KindInfo {
        &STORAGE_CLASS
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<StorageClass>(self, obj, storage::default_class, storage::validate_class)
    }

    fn check_update(&self, current: &Value, next: &Value) -> Result<()> {
        admission::typed_changes(
            &STORAGE_CLASS,
            current,
            next,
            storage::immutable_class_changes,
        )
    }
}
