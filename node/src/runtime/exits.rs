//! Container exits as they happen: containerd's `/tasks/exit` events in the agent's namespace,
//! so a pod worker notices a crashed container at once instead of at its next poll (every
//! 2 s). The polls stay: an exit missed while the subscription was down is found by them.

use std::time::Duration;

use containerd_client::events::TaskExit;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::SubscribeRequest;
use tokio::sync::mpsc;

use crate::ctd::Conn;

const TOPIC: &str = "/tasks/exit";

/// The ids of containers whose main process exited, as long as the receiver is kept.
pub fn watch(conn: Conn) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        while !tx.is_closed() {
            if let Err(e) = forward(&conn, &tx).await {
                tracing::debug!(error = %e, "containerd exit events ended; subscribing again");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

async fn forward(conn: &Conn, tx: &mpsc::Sender<String>) -> Result<(), tonic::Status> {
    let filters = vec![format!(
        "topic==\"{TOPIC}\",namespace==\"{}\"",
        conn.namespace()
    )];
    let mut events = EventsClient::new(conn.channel())
        .subscribe(conn.req(SubscribeRequest { filters }))
        .await?
        .into_inner();
    while let Some(envelope) = events.message().await? {
        let Some(id) = envelope
            .event
            .and_then(|any| <TaskExit as prost::Message>::decode(any.value.as_slice()).ok())
            .and_then(main_process_exit)
        else {
            continue;
        };
        if tx.send(id).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The container's id if `exit` is of its main process (an exec's exit, such as a probe's,
/// changes nothing a worker looks at).
fn main_process_exit(exit: TaskExit) -> Option<String> {
    (exit.id == exit.container_id || exit.id.is_empty()).then_some(exit.container_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(container_id: &str, id: &str) -> TaskExit {
        TaskExit {
            container_id: container_id.into(),
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_main_process_exit_counts() {
        assert_eq!(
            main_process_exit(exit("0f8e2c1a1111-web-0", "0f8e2c1a1111-web-0")),
            Some("0f8e2c1a1111-web-0".into())
        );
        assert_eq!(
            main_process_exit(exit("0f8e2c1a1111-web-0", "probe-7")),
            None
        );
    }
}
