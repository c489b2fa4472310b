//! Events are removed an hour (a setting) after they last happened.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_proto::objects::Selection;

use super::context::Ctx;

/// Run until aborted.
pub async fn run(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let Ok(list) = ctx
            .client
            .list_objects("events", &Selection::default())
            .await
        else {
            continue;
        };
        let now = jiff::Timestamp::now().as_second();
        for item in list.items {
            let Ok(e) = serde_json::from_slice::<Value>(&item) else {
                continue;
            };
            let last = e
                .get("lastTimestamp")
                .or(e.pointer("/metadata/creationTimestamp"))
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            if last.is_some_and(|t| now - t.as_second() > ctx.settings.event_ttl.as_secs() as i64) {
                let s = |p: &str| {
                    e.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let _ = ctx
                    .client
                    .delete_object(
                        "events",
                        &s("/metadata/namespace"),
                        &s("/metadata/name"),
                        &Default::default(),
                    )
                    .await;
            }
        }
    }
}
