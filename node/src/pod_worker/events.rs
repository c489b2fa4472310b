//! Events about pods, as the kubelet writes them: Pulling, Pulled, Created, Started, Killing,
//! Unhealthy, BackOff and Failed, from the agent (`source.component: kubelet`, the node as
//! `source.host`). One Event object per pod, reason and message (its name derived from
//! them), whose count rises when the same thing happens again.

use serde_json::{json, Value};

/// One event about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid.
    pub uid: String,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `Pulled`, `Started`, ...
    pub reason: &'static str,
    /// For people.
    pub message: String,
    /// How often it happened (1 the first time).
    pub count: u32,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

impl PodEvent {
    /// The Event object's name: the pod's, and a hash of what happened.
    pub fn name(&self) -> String {
        format!(
            "{}.{:016x}",
            self.pod,
            fnv(&format!("{}/{}/{}", self.uid, self.reason, self.message))
        )
    }

    /// The Event object, as first written, from node `node` at `now` (RFC 3339).
    pub fn object(&self, node: &str, now: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": self.name(), "namespace": self.namespace},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": self.namespace,
                               "name": self.pod, "uid": self.uid},
            "reason": self.reason, "message": self.message, "type": self.type_,
            "source": {"component": "kubelet", "host": node},
            "firstTimestamp": now, "lastTimestamp": now, "count": self.count,
        })
    }

    /// The patch that counts it again.
    pub fn recount(&self, now: &str) -> Value {
        json!({"count": self.count, "lastTimestamp": now})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_thing_on_the_same_pod_is_one_event() {
        let e = |message: &str| PodEvent {
            namespace: "default".into(),
            pod: "web".into(),
            uid: "u1".into(),
            type_: "Normal",
            reason: "Pulled",
            message: message.into(),
            count: 1,
        };
        assert_eq!(e("a").name(), e("a").name());
        assert_ne!(e("a").name(), e("b").name());
        let o = e("a").object("n1", "2026-12-06T00:00:00Z");
        assert_eq!(o["source"]["component"], "kubelet");
        assert_eq!(o["involvedObject"]["uid"], "u1");
    }
}
