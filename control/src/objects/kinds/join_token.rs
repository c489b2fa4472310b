//! Join tokens (`auth.skiff.dev/v1` `JoinToken`): named by the token's id, holding the role it
//! grants (`node` or `control`), the hash of its secret and when it expires.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, JOIN_TOKEN};

use super::Strategy;
use crate::objects::admission;
use crate::objects::error::{FieldError, Result};

/// A join token as the cluster keeps it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: JoinTokenSpec,
}

/// What the token grants.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenSpec {
    /// `node` or `control`.
    #[serde(default)]
    pub role: String,
    /// SHA-256 of the secret, hex.
    #[serde(default)]
    pub secret_hash: String,
    /// When it stops working (RFC 3339); empty: never.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expires: String,
}

crate::object_type!(
    JoinToken,
    "auth.skiff.dev",
    "v1",
    "JoinToken",
    "jointokens",
    ClusterResourceScope
);

fn validate(t: &JoinToken) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !matches!(t.spec.role.as_str(), "node" | "control") {
        errors.push(FieldError::new(
            "spec.role",
            format!("Unsupported value: {:?}: one of node, control", t.spec.role),
        ));
    }
    let h = &t.spec.secret_hash;
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        errors.push(FieldError::new(
            "spec.secretHash",
            "Invalid value: the SHA-256 of the secret, 64 hex digits",
        ));
    }
    if !t.spec.expires.is_empty() && expires_at(&t.spec.expires).is_none() {
        errors.push(FieldError::new(
            "spec.expires",
            format!("Invalid value: {:?}: an RFC 3339 time", t.spec.expires),
        ));
    }
    errors
}

/// `expires` as seconds since the epoch.
pub fn expires_at(expires: &str) -> Option<i64> {
    time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// The JoinToken strategy.
pub struct JoinTokenStrategy;

impl Strategy for JoinTokenStrategy {
    fn info(&self) -> &'static KindInfo {
        &JOIN_TOKEN
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<JoinToken>(self, obj, |_| {}, validate)
    }

    fn name_rule(&self, name: &str) -> Option<String> {
        (name.len() != 6
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .then(|| "a token id is six of a-z0-9".to_string())
    }
}
