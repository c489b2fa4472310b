//! containerd's content store: blobs (manifests, configs, layers) by digest. Writes stream in
//! chunks and commit against the expected digest, so a corrupt download is refused by
//! containerd itself.

use std::collections::HashMap;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use futures::{Stream, StreamExt};
use prost_types::FieldMask;
use sha2::{Digest, Sha256};

use crate::ctd::{Conn, Lease};
use crate::error::{Error, Result};

/// Bytes per write message (containerd's gRPC limit is 16 MiB).
const CHUNK: usize = 1 << 20;

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Whether the store holds `digest`.
pub async fn exists(conn: &Conn, digest: &str) -> Result<bool> {
    match ContentClient::new(conn.channel())
        .info(conn.req(InfoRequest {
            digest: digest.into(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(Error::containerd("content.Info")(s)),
    }
}

/// The whole blob `digest`.
pub async fn read(conn: &Conn, digest: &str) -> Result<Vec<u8>> {
    let mut stream = ContentClient::new(conn.channel())
        .read(conn.req(ReadContentRequest {
            digest: digest.into(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(Error::containerd("content.Read"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.next().await {
        out.extend_from_slice(&msg.map_err(Error::containerd("content.Read"))?.data);
    }
    Ok(out)
}

/// Replace the labels of blob `digest` (garbage-collection references to its children).
pub async fn set_labels(conn: &Conn, digest: &str, labels: HashMap<String, String>) -> Result<()> {
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    ContentClient::new(conn.channel())
        .update(conn.req(UpdateRequest {
            info: Some(Info {
                digest: digest.into(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths }),
        }))
        .await
        .map_err(Error::containerd("content.Update"))?;
    Ok(())
}

/// Write `data` as blob `digest` under `lease`, unless it is there already.
pub async fn write_bytes(
    conn: &Conn,
    lease: &Lease,
    digest: &str,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<()> {
    let size = data.len() as i64;
    let chunks: Vec<Result<Vec<u8>>> = data.chunks(CHUNK).map(|c| Ok(c.to_vec())).collect();
    write_stream(
        conn,
        lease,
        digest,
        size,
        futures::stream::iter(chunks),
        labels,
    )
    .await
}

/// Write a stream of chunks as blob `digest` of `size` bytes under `lease`, unless present.
pub async fn write_stream<S>(
    conn: &Conn,
    lease: &Lease,
    digest: &str,
    size: i64,
    chunks: S,
    labels: HashMap<String, String>,
) -> Result<()>
where
    S: Stream<Item = Result<Vec<u8>>> + Send + 'static,
{
    if exists(conn, digest).await? {
        if !labels.is_empty() {
            set_labels(conn, digest, labels).await?;
        }
        return Ok(());
    }
    // Unique per write: two pulls sharing a layer must not lock each other's ref.
    let reference = format!(
        "skiff-{}-{}",
        digest.replace(':', "-"),
        uuid::Uuid::new_v4().simple()
    );
    let send_err = || Error::Containerd {
        call: "content.Write",
        status: tonic::Status::unavailable("write stream closed by containerd"),
    };
    // The messages: WRITE chunks at their offsets, then COMMIT against the digest. containerd
    // answers the call's headers only once it has read a first message, so the messages are
    // produced by their own task while this one opens the call and reads the answers.
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
    let commit = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference.clone(),
        total: size,
        expected: digest.into(),
        offset: 0,
        data: Vec::new(),
        labels,
    };
    let producer = tokio::spawn(async move {
        let mut chunks = Box::pin(chunks);
        let mut offset = 0i64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            let len = chunk.len() as i64;
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total: size,
                expected: String::new(),
                offset,
                data: chunk,
                labels: HashMap::new(),
            };
            if tx.send(msg).await.is_err() {
                return Ok(());
            }
            offset += len;
        }
        let _ = tx.send(WriteContentRequest { offset, ..commit }).await;
        Ok::<(), Error>(())
    });
    let answered = async {
        let mut responses = ContentClient::new(conn.channel())
            .write(conn.req_leased(tokio_stream::wrappers::ReceiverStream::new(rx), lease))
            .await
            .map_err(Error::containerd("content.Write"))?
            .into_inner();
        loop {
            match responses.next().await {
                Some(Ok(r)) if r.action == WriteAction::Commit as i32 => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(s)) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
                Some(Err(s)) => return Err(Error::containerd("content.Write")(s)),
                None => return Err(send_err()),
            }
        }
    }
    .await;
    let produced = producer.await.map_err(|_| send_err())?;
    produced?;
    answered
}
