//! Secrets: `Opaque` unless typed; `stringData` folded into `data`; valid keys, at most
//! 1 MiB of data.

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, SECRET};

use super::Strategy;
use crate::objects::admission::{self, other};
use crate::objects::error::Result;

/// The Secret strategy.
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn info(&self) -> &'static KindInfo {
        &SECRET
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Secret>(
            self,
            obj,
            |s| {
                other::default_secret(s);
                other::fold_string_data(s);
            },
            other::validate_secret,
        )
    }
}
