//! Pods: typed, defaulted and validated as [`admission::pod`] says; a new pod starts
//! `Pending`; a pod running on a node is kept for its grace period when deleted, so the node
//! can stop its containers and finish the delete.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, POD};

use super::{StoreView, Strategy};
use crate::objects::admission::{self, pod};
use crate::objects::error::Result;
use crate::objects::patch::schema::{self, Schema};

/// A pod's grace period when it names none, as Kubernetes'.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The Pod strategy.
pub struct PodStrategy;

impl Strategy for PodStrategy {
    fn info(&self) -> &'static KindInfo {
        &POD
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::POD
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Pod>(self, obj, pod::default, pod::validate)
    }

    fn check_policy(&self, view: &dyn StoreView, obj: &Value) -> Result<()> {
        super::pod_security::check(view, obj)
    }

    fn prepare_create(&self, obj: &mut Value) {
        if obj.get("status").is_none() {
            obj["status"] = serde_json::json!({"phase": "Pending"});
        }
    }

    fn grace_on_delete(&self, obj: &Value, asked: Option<i64>) -> i64 {
        let own = obj
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        // A pod on a node gets time to stop its containers; the node finishes the delete.
        if bound && !finished {
            asked.filter(|g| *g >= 0).unwrap_or(own)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_running_pod_on_a_node_is_kept_for_its_grace_period() {
        let s = PodStrategy;
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}});
        assert_eq!(s.grace_on_delete(&bound, None), 5);
        assert_eq!(s.grace_on_delete(&bound, Some(0)), 0);
        assert_eq!(s.grace_on_delete(&bound, Some(-1)), 5);
        let pending = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(s.grace_on_delete(&pending, Some(30)), 0);
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(s.grace_on_delete(&done, None), 0);
        let mut new = json!({"metadata": {"name": "p"}});
        s.prepare_create(&mut new);
        assert_eq!(new["status"]["phase"], "Pending");
    }
}
