//! The Node's `NetworkUnavailable` condition, as Kubernetes' network plugins report it:
//! `False` once the routes to every peer are programmed, `True` with the reason while they
//! cannot be (a host-gw peer off the segment, a refused device). Written by a strategic merge
//! patch of the status (conditions merge by type), only when it changes.

use skiff_proto::pb::patch_object_request::PatchType;
use skiff_proto::Client;

/// Reports the condition of one node.
pub struct Reporter {
    client: Client,
    node: String,
    last: Option<(bool, String)>,
}

impl Reporter {
    /// A reporter for `node`.
    pub fn new(client: Client, node: String) -> Self {
        Self {
            client,
            node,
            last: None,
        }
    }

    /// Report `failure` (the network is unavailable, and why) or, when `None`, that it is
    /// available with `message`.
    pub async fn report(&mut self, failure: Option<&str>, message: &str) {
        let (unavailable, message) = match failure {
            Some(why) => (true, why.to_string()),
            None => (false, message.to_string()),
        };
        if self.last.as_ref() == Some(&(unavailable, message.clone())) {
            return;
        }
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "NetworkUnavailable",
            "status": if unavailable { "True" } else { "False" },
            "reason": if unavailable { "RoutesFailed" } else { "RoutesCreated" },
            "message": message,
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        }]}});
        let bytes = serde_json::to_vec(&patch).unwrap_or_default();
        match self
            .client
            .patch_object_as("nodes", "", &self.node, bytes, PatchType::Strategic, true)
            .await
        {
            Ok(_) => self.last = Some((unavailable, message)),
            Err(e) => tracing::warn!(node = %self.node, error = %e, "reporting NetworkUnavailable"),
        }
    }
}
