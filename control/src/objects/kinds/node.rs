//! Nodes: validated pod CIDRs, addresses and taints.

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, NODE};

use super::Strategy;
use crate::objects::admission::{self, other};
use crate::objects::error::Result;
use crate::objects::patch::schema::{self, Schema};

/// The Node strategy.
pub struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn info(&self) -> &'static KindInfo {
        &NODE
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::NODE
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Node>(self, obj, |_| {}, other::validate_node)
    }
}
