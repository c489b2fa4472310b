//! Unpacking: each layer applied by containerd's diff service onto a snapshot whose parent is
//! the layer below, committed under its chain id, so images that share base layers share
//! their snapshots.

use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::types::Descriptor as CtdDescriptor;

use super::oci::{chain_ids, Descriptor};
use crate::ctd::{Conn, Lease};
use crate::error::{Error, Result};

/// Whether snapshot `key` exists.
pub async fn snapshot_exists(conn: &Conn, key: &str) -> Result<bool> {
    match SnapshotsClient::new(conn.channel())
        .stat(conn.req(StatSnapshotRequest {
            snapshotter: conn.snapshotter.clone(),
            key: key.into(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(Error::containerd("snapshots.Stat")(s)),
    }
}

/// Unpack `layers` (whose uncompressed digests are `diff_ids`) and return the top chain id.
pub async fn unpack(
    conn: &Conn,
    lease: &Lease,
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<String> {
    let chains = chain_ids(diff_ids);
    let mut parent = String::new();
    for (layer, chain) in layers.iter().zip(&chains) {
        if !snapshot_exists(conn, chain).await? {
            apply_layer(conn, lease, layer, &parent, chain).await?;
        }
        parent = chain.clone();
    }
    Ok(parent)
}

async fn apply_layer(
    conn: &Conn,
    lease: &Lease,
    layer: &Descriptor,
    parent: &str,
    chain: &str,
) -> Result<()> {
    let mut snapshots = SnapshotsClient::new(conn.channel());
    let key = format!("extract-{}-{chain}", uuid::Uuid::new_v4().simple());
    let mounts = snapshots
        .prepare(conn.req_leased(
            PrepareSnapshotRequest {
                snapshotter: conn.snapshotter.clone(),
                key: key.clone(),
                parent: parent.into(),
                labels: Default::default(),
            },
            lease,
        ))
        .await
        .map_err(Error::containerd("snapshots.Prepare"))?
        .into_inner()
        .mounts;
    let applied = DiffClient::new(conn.channel())
        .apply(conn.req_leased(
            ApplyRequest {
                diff: Some(CtdDescriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                    annotations: Default::default(),
                }),
                mounts,
                payloads: Default::default(),
                sync_fs: true,
            },
            lease,
        ))
        .await;
    if let Err(s) = applied {
        remove_quietly(conn, &key).await;
        return Err(Error::containerd("diff.Apply")(s));
    }
    let committed = snapshots
        .commit(conn.req_leased(
            CommitSnapshotRequest {
                snapshotter: conn.snapshotter.clone(),
                name: chain.into(),
                key: key.clone(),
                labels: Default::default(),
            },
            lease,
        ))
        .await;
    match committed {
        Ok(_) => Ok(()),
        // Another unpack of the same layer won the race: theirs is as good.
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            remove_quietly(conn, &key).await;
            Ok(())
        }
        Err(s) => {
            remove_quietly(conn, &key).await;
            Err(Error::containerd("snapshots.Commit")(s))
        }
    }
}

async fn remove_quietly(conn: &Conn, key: &str) {
    let _ = SnapshotsClient::new(conn.channel())
        .remove(conn.req(RemoveSnapshotRequest {
            snapshotter: conn.snapshotter.clone(),
            key: key.into(),
        }))
        .await;
}
