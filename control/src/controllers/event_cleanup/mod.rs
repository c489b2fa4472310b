//! Events are removed an hour (a setting) after they last happened.
//!
//! Keyed by Event: each is looked at when it is recorded or repeated, and again when it
//! would expire.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;
use skiff_proto::ClientError;

use super::context::Ctx;
use super::runner::{Action, ObjectKey, ReconcileError, Reconciler, Runner, RunnerSettings};

/// The controller's name.
pub const NAME: &str = "event-cleanup";

/// An Event as the cleanup needs it: its metadata and when it last happened. The rest of the
/// object is not decoded, so the leader's cache holds little per Event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventStamp {
    /// The Event's metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// When it last happened.
    #[serde(default)]
    pub last_timestamp: Option<Time>,
}

impl k8s_openapi::Resource for EventStamp {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Event";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "events";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for EventStamp {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    Runner::new(
        EventCleanup { ctx: ctx.clone() },
        ctx.metrics.of(NAME),
        RunnerSettings {
            workers: 4,
            ..Default::default()
        },
    )
    .watches(ctx.events.subscribe(), |e: &EventStamp| {
        vec![ObjectKey::of(e)]
    })
    .run()
    .await
}

/// When an event last happened, as Unix seconds.
pub fn last_seen(e: &EventStamp) -> Option<i64> {
    e.last_timestamp
        .as_ref()
        .or(e.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_second())
}

/// How long until an event last seen at `last` (Unix seconds) expires, at `now`; zero when
/// it has.
pub fn time_left(last: i64, now: i64, ttl: Duration) -> Duration {
    let expires = last.saturating_add(ttl.as_secs() as i64);
    Duration::from_secs(expires.saturating_sub(now).max(0) as u64)
}

/// Removes expired Events.
pub struct EventCleanup {
    ctx: Arc<Ctx>,
}

impl Reconciler for EventCleanup {
    type Key = ObjectKey;
    const NAME: &'static str = NAME;

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(event) = self.ctx.events.get(&key.namespace, &key.name) else {
            return Ok(Action::done());
        };
        let Some(last) = last_seen(&event) else {
            return Ok(Action::done());
        };
        let left = time_left(
            last,
            jiff::Timestamp::now().as_second(),
            self.ctx.settings.event_ttl,
        );
        if !left.is_zero() {
            return Ok(Action::requeue_after(left + Duration::from_secs(1)));
        }
        match self
            .ctx
            .client
            .delete_object("events", &key.namespace, &key.name, &Default::default())
            .await
        {
            Ok(_) => Ok(Action::done()),
            Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => {
                Ok(Action::done())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn all_keys(&self) -> Vec<ObjectKey> {
        self.ctx.events.object_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_expires_its_time_to_live_after_it_last_happened() {
        let ttl = Duration::from_secs(3600);
        assert_eq!(time_left(1000, 1000, ttl), ttl);
        assert_eq!(time_left(1000, 4000, ttl), Duration::from_secs(600));
        assert_eq!(time_left(1000, 4600, ttl), Duration::ZERO);
        assert_eq!(time_left(1000, 9999, ttl), Duration::ZERO);
    }
}
