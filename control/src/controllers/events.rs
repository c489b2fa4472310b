//! Events: controllers and the scheduler record what they did and why; repeats of the same
//! event on the same object are counted on one Event object instead of piling up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use skiff_proto::Client;

/// What an Event is about.
#[derive(Debug, Clone)]
pub struct Involved {
    /// `Pod`, `ReplicaSet`, ...
    pub kind: String,
    /// `v1`, `apps/v1`.
    pub api_version: String,
    /// Namespace (the Event lives there; `default` for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
}

impl Involved {
    /// The object `o` as an Event names it (a cluster-scoped one's Events in `default`).
    pub fn of<K>(o: &K) -> Self
    where
        K: k8s_openapi::Resource
            + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    {
        let m = o.metadata();
        Self {
            kind: K::KIND.into(),
            api_version: K::API_VERSION.into(),
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        }
    }
}

/// (object uid, reason, message): what makes two events the same.
type EventKey = (String, String, String);

/// What the recorder remembers of an event: its object's name, its count, when last seen.
type Seen = (String, i32, std::time::Instant);

/// How long an event's count is remembered after it last happened: a repeat within it
/// counts on the same Event, a later one starts a new count (the Event itself may be gone).
const REMEMBERED: std::time::Duration = std::time::Duration::from_secs(600);
/// Below this many remembered events nothing is forgotten.
const REMEMBER_AT_LEAST: usize = 4096;

/// Records Events with a count per (object, reason, message), remembered for a while so a
/// term of leadership that records an Event per pod placed does not grow without bound.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    seen: Arc<Mutex<HashMap<EventKey, Seen>>>,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

impl EventRecorder {
    /// A recorder writing through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            seen: Arc::default(),
        }
    }

    /// Record an event (`Normal` or `Warning`) from `component`; written in the background.
    pub fn record(
        &self,
        involved: &Involved,
        type_: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        if let Some(write) = self.count(involved, type_, reason, message, component) {
            tokio::spawn(write.send());
        }
    }

    /// Record an event as [`Self::record`] does, returning once it is written (or failed to
    /// be), for a writer that paces its writes.
    pub async fn record_now(
        &self,
        involved: &Involved,
        type_: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        if let Some(write) = self.count(involved, type_, reason, message, component) {
            write.send().await;
        }
    }

    /// Count the event; the write that records it.
    fn count(
        &self,
        involved: &Involved,
        type_: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) -> Option<EventWrite> {
        let key = (
            involved.uid.clone(),
            reason.to_string(),
            message.to_string(),
        );
        let (name, count) = {
            let mut seen = self.seen.lock().ok()?;
            // Forgetting is paid for by growth: at most once per doubling.
            if !seen.contains_key(&key)
                && seen.len() >= REMEMBER_AT_LEAST
                && seen.len().is_power_of_two()
            {
                seen.retain(|_, s| s.2.elapsed() < REMEMBERED);
            }
            let entry = seen.entry(key.clone()).or_insert_with(|| {
                (
                    format!(
                        "{}.{:016x}",
                        involved.name,
                        fnv(&format!("{}/{reason}/{message}", involved.uid))
                    ),
                    0,
                    std::time::Instant::now(),
                )
            });
            entry.1 += 1;
            entry.2 = std::time::Instant::now();
            (entry.0.clone(), entry.1)
        };
        let ns = if involved.namespace.is_empty() {
            "default".to_string()
        } else {
            involved.namespace.clone()
        };
        let now = crate::objects::meta::now();
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"kind": involved.kind, "apiVersion": involved.api_version, "namespace": involved.namespace, "name": involved.name, "uid": involved.uid},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component},
            "firstTimestamp": now, "lastTimestamp": now, "count": count,
        });
        Some(EventWrite {
            client: self.client.clone(),
            ns,
            name,
            count,
            now,
            event,
        })
    }
}

/// One Event to create, or to count on the existing one.
struct EventWrite {
    client: Client,
    ns: String,
    name: String,
    count: i32,
    now: String,
    event: serde_json::Value,
}

impl EventWrite {
    async fn send(self) {
        let Self {
            client,
            ns,
            name,
            count,
            now,
            event,
        } = self;
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        if count == 1 && client.create_object("events", &ns, bytes).await.is_ok() {
            return;
        }
        // Seen before (here or by an earlier leader): count it on the existing Event.
        let patch = json!({"count": count, "lastTimestamp": now, "message": event["message"]});
        if client
            .patch_object(
                "events",
                &ns,
                &name,
                serde_json::to_vec(&patch).unwrap_or_default(),
                false,
            )
            .await
            .is_err()
        {
            let _ = client
                .create_object(
                    "events",
                    &ns,
                    serde_json::to_vec(&event).unwrap_or_default(),
                )
                .await;
        }
    }
}
