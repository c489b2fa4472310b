//! Users (`auth.skiff.dev/v1`): a name a certificate may carry, and the role it holds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, USER};

use super::Strategy;
use crate::auth::rules::{Role, USER_ROLES};
use crate::objects::admission;
use crate::objects::error::{FieldError, Result};

/// A user of the cluster.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: UserSpec,
}

/// What a user may do.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// `admin`, `edit` or `view`.
    #[serde(default)]
    role: String,
}

crate::object_type!(
    User,
    "auth.skiff.dev",
    "v1",
    "User",
    "users",
    ClusterResourceScope
);

/// The User strategy.
pub struct UserStrategy;

fn validate(u: &User) -> Vec<FieldError> {
    match u.spec.role.parse::<Role>() {
        Ok(_) => Vec::new(),
        Err(_) if u.spec.role.is_empty() => vec![FieldError::new(
            "spec.role",
            format!("Required value: one of {}", USER_ROLES.join(", ")),
        )],
        Err(e) => vec![FieldError::new(
            "spec.role",
            format!("Unsupported value: {e}"),
        )],
    }
}

impl Strategy for UserStrategy {
    fn info(&self) -> &'static KindInfo {
        &USER
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<User>(self, obj, |_| {}, validate)
    }
}
