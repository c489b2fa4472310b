//! The connection to containerd: one channel over its unix socket, and requests that carry the
//! agent's containerd namespace (and, during a pull, its lease) as gRPC metadata.

use std::path::Path;

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{CreateRequest, DeleteRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::error::{Error, Result};

/// containerd's metadata key for the namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// containerd's metadata key for the lease.
const LEASE_HEADER: &str = "containerd-lease";

/// A containerd connection scoped to one namespace.
#[derive(Clone)]
pub struct Conn {
    channel: Channel,
    namespace: MetadataValue<tonic::metadata::Ascii>,
    /// The snapshotter images are unpacked into and containers run on.
    pub snapshotter: String,
}

impl Conn {
    /// Connect to the socket at `socket`, for `namespace`.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self> {
        if namespace.is_empty()
            || !namespace
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        {
            return Err(Error::InvalidSpec {
                field: "--containerd-namespace".into(),
                reason: format!("{namespace:?} must be lower-case letters, digits, '-', '_', '.'"),
            });
        }
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|source| Error::Connect {
                    socket: socket.to_path_buf(),
                    source,
                })?;
        let namespace = namespace.parse().map_err(|_| Error::InvalidSpec {
            field: "--containerd-namespace".into(),
            reason: "not a valid header value".into(),
        })?;
        Ok(Self {
            channel,
            namespace,
            snapshotter: "overlayfs".into(),
        })
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        self.namespace.to_str().unwrap_or_default()
    }

    /// The channel, for a service client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A request in the agent's namespace.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        r
    }

    /// A request in the agent's namespace, under `lease`.
    pub fn req_leased<T>(&self, msg: T, lease: &Lease) -> tonic::Request<T> {
        let mut r = self.req(msg);
        if let Ok(v) = lease.id.parse() {
            r.metadata_mut().insert(LEASE_HEADER, v);
        }
        r
    }

    /// Take a lease that expires by itself after `ttl`, so what a crashed agent was pulling is
    /// collected eventually; [`Lease::release`] ends it at once.
    pub async fn lease(&self, ttl: std::time::Duration) -> Result<Lease> {
        let id = format!("skiff-pull-{}", uuid::Uuid::new_v4().simple());
        let expire = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(ttl.as_secs() as i64))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let labels = [("containerd.io/gc.expire".to_string(), expire.to_string())]
            .into_iter()
            .collect();
        LeasesClient::new(self.channel())
            .create(self.req(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(Error::containerd("leases.Create"))?;
        Ok(Lease {
            id,
            conn: self.clone(),
        })
    }
}

/// A containerd lease: what is written under it is not garbage-collected while it lasts.
pub struct Lease {
    /// The lease id.
    pub id: String,
    conn: Conn,
}

impl Lease {
    /// End the lease; what nothing else references becomes collectable.
    pub async fn release(self) {
        let r = LeasesClient::new(self.conn.channel())
            .delete(self.conn.req(DeleteRequest {
                id: self.id.clone(),
                sync: false,
            }))
            .await;
        if let Err(e) = r {
            tracing::warn!(lease = %self.id, error = %e.message(), "releasing a containerd lease; it expires by itself");
        }
    }
}
