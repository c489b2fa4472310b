//! The object API client: JSON-level calls on [`Client`], typed calls over `k8s-openapi`
//! types ([`Api`]), and a watch that resumes on another control node. The informer (list,
//! then watch; a local cache with indexes) is re-exported from [`crate::informer`].

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::client::{jitter, new_request_id, Client, ClientError, Result};
use crate::pb::objects_client::ObjectsClient;
use crate::pb::{self};
use crate::status::{expired_compacted, is_retryable};
use crate::transport::MAX_MESSAGE_BYTES;

pub use crate::informer::{IndexFn, Informer, InformerBuilder, InformerEvent};

fn objects(ch: Channel) -> ObjectsClient<Channel> {
    ObjectsClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn watch_request(
    resource: &str,
    sel: &Selection,
    resource_version: u64,
) -> pb::WatchObjectsRequest {
    pb::WatchObjectsRequest {
        resource: resource.into(),
        namespace: sel.namespace.clone(),
        label_selector: sel.labels.clone(),
        field_selector: sel.fields.clone(),
        resource_version,
        bookmark_interval_ms: 0,
    }
}

/// What a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Empty = every namespace.
    pub namespace: String,
    /// Label selector, as `app=web,tier!=db`.
    pub labels: String,
    /// Field selector, as `spec.nodeName=n1`.
    pub fields: String,
}

/// One object event of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Created, or started to match the selection.
    Added(Vec<u8>),
    /// Changed.
    Modified(Vec<u8>),
    /// Deleted, or stopped matching; the last state.
    Deleted(Vec<u8>),
    /// Nothing more matched up to this revision.
    Bookmark(u64),
}

/// Delete options as the API takes them.
#[derive(Debug, Clone, Default)]
pub struct DeleteParams {
    /// Only if the object has this uid.
    pub uid: String,
    /// Only if the object is at this resourceVersion (0 = any).
    pub resource_version: u64,
    /// Propagation to dependents.
    pub propagation: pb::delete_object_request::Propagation,
    /// Pods: grace period in seconds (`None` = the pod's own).
    pub grace_period_seconds: Option<i64>,
    /// Pods: an eviction, refused when a disruption budget does not allow it.
    pub evict: bool,
}

impl Client {
    /// Create an object (JSON); `namespace` applies when it names none.
    pub async fn create_object(
        &self,
        resource: &str,
        namespace: &str,
        object: Vec<u8>,
    ) -> Result<pb::ObjectResponse> {
        let req = pb::CreateObjectRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            object,
            request_id: new_request_id(),
        };
        self.call_write(|ch| {
            let req = req.clone();
            async move { objects(ch).create(req).await }
        })
        .await
    }

    /// Seal every Secret again under a new data key (admins only); the key's id and how
    /// many Secrets were sealed again.
    pub async fn rotate_secrets_key(&self) -> Result<pb::RotateSecretsKeyResponse> {
        self.call(|ch| async move {
            objects(ch)
                .rotate_secrets_key(pb::RotateSecretsKeyRequest {})
                .await
        })
        .await
    }

    /// Read an object.
    pub async fn get_object(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        stale: bool,
    ) -> Result<pb::ObjectResponse> {
        let req = pb::GetObjectRequest {
            key: Some(pb::ObjectKey {
                resource: resource.into(),
                namespace: namespace.into(),
                name: name.into(),
            }),
            stale,
        };
        self.call(|ch| {
            let req = req.clone();
            async move { objects(ch).get(req).await }
        })
        .await
    }

    /// One page of a list (`limit` 0 = everything).
    pub async fn list_objects_page(
        &self,
        resource: &str,
        sel: &Selection,
        limit: u64,
        continue_token: &str,
        stale: bool,
    ) -> Result<pb::ListObjectsResponse> {
        let req = pb::ListObjectsRequest {
            resource: resource.into(),
            namespace: sel.namespace.clone(),
            label_selector: sel.labels.clone(),
            field_selector: sel.fields.clone(),
            limit,
            r#continue: continue_token.into(),
            stale,
        };
        self.call(|ch| {
            let req = req.clone();
            async move { objects(ch).list(req).await }
        })
        .await
    }

    /// Every matching object.
    pub async fn list_objects(
        &self,
        resource: &str,
        sel: &Selection,
    ) -> Result<pb::ListObjectsResponse> {
        self.list_objects_page(resource, sel, 0, "", false).await
    }

    /// Replace an object (its resourceVersion, when set, must be current).
    pub async fn update_object(
        &self,
        resource: &str,
        namespace: &str,
        object: Vec<u8>,
        status: bool,
    ) -> Result<pb::ObjectResponse> {
        let req = pb::UpdateObjectRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            object,
            request_id: new_request_id(),
        };
        self.call_write(|ch| {
            let req = req.clone();
            async move {
                if status {
                    objects(ch).update_status(req).await
                } else {
                    objects(ch).update(req).await
                }
            }
        })
        .await
    }

    /// Apply a JSON merge patch.
    pub async fn patch_object(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch: Vec<u8>,
        status: bool,
    ) -> Result<pb::ObjectResponse> {
        self.patch_object_as(
            resource,
            namespace,
            name,
            patch,
            pb::patch_object_request::PatchType::Merge,
            status,
        )
        .await
    }

    /// Patch an object with a patch of `kind` (merge or JSON patch).
    pub async fn patch_object_as(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch: Vec<u8>,
        kind: pb::patch_object_request::PatchType,
        status: bool,
    ) -> Result<pb::ObjectResponse> {
        let req = pb::PatchObjectRequest {
            key: Some(pb::ObjectKey {
                resource: resource.into(),
                namespace: namespace.into(),
                name: name.into(),
            }),
            patch,
            r#type: kind.into(),
            status,
            request_id: new_request_id(),
        };
        self.call_write(|ch| {
            let req = req.clone();
            async move { objects(ch).patch(req).await }
        })
        .await
    }

    /// Delete an object.
    pub async fn delete_object(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        params: &DeleteParams,
    ) -> Result<pb::DeleteObjectResponse> {
        let req = pb::DeleteObjectRequest {
            key: Some(pb::ObjectKey {
                resource: resource.into(),
                namespace: namespace.into(),
                name: name.into(),
            }),
            precondition_uid: params.uid.clone(),
            precondition_resource_version: params.resource_version,
            propagation: params.propagation.into(),
            grace_period_seconds: params.grace_period_seconds.unwrap_or(-1),
            request_id: new_request_id(),
            evict: params.evict,
        };
        self.call_write(|ch| {
            let req = req.clone();
            async move { objects(ch).delete(req).await }
        })
        .await
    }

    /// kubectl-style apply of a manifest (JSON with apiVersion and kind).
    pub async fn apply_object(
        &self,
        namespace: &str,
        object: Vec<u8>,
    ) -> Result<pb::ApplyObjectResponse> {
        let req = pb::ApplyObjectRequest {
            object,
            namespace: namespace.into(),
            request_id: new_request_id(),
        };
        self.call_write(|ch| {
            let req = req.clone();
            async move { objects(ch).apply(req).await }
        })
        .await
    }

    /// One watch call on the current control node, as the server streams it: no reconnect,
    /// no buffering, nothing read ahead. For tools that read at their own pace (a reader that
    /// falls too far behind is cut off by the server with `EXPIRED`).
    pub async fn watch_objects_stream(
        &self,
        resource: &str,
        sel: &Selection,
        resource_version: u64,
    ) -> Result<tonic::Streaming<pb::WatchObjectsResponse>> {
        let req = watch_request(resource, sel, resource_version);
        let (_, ch) = self.current();
        let stream = objects(ch)
            .watch(req)
            .await
            .map_err(ClientError::Rejected)?;
        Ok(stream.into_inner())
    }

    /// Watch objects after `resource_version` (0 = from now). The watch moves to another
    /// control node when one fails, from the last revision it delivered, so events arrive
    /// once each and in order. It ends with [`ClientError::Expired`] when the history it
    /// needs is gone: re-list, then watch from the list's revision.
    pub fn watch_objects(
        &self,
        resource: &str,
        sel: &Selection,
        resource_version: u64,
    ) -> mpsc::Receiver<Result<WatchItem>> {
        let (tx, rx) = mpsc::channel(256);
        let client = self.clone();
        let req = watch_request(resource, sel, resource_version);
        tokio::spawn(async move { client.watch_objects_loop(req, tx).await });
        rx
    }

    async fn watch_objects_loop(
        &self,
        mut req: pb::WatchObjectsRequest,
        tx: mpsc::Sender<Result<WatchItem>>,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let (i, ch) = self.current();
            let status = match objects(ch).watch(req.clone()).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        let msg = tokio::select! {
                            m = stream.message() => m,
                            _ = tx.closed() => return,
                        };
                        match msg {
                            Ok(Some(resp)) => {
                                backoff = Duration::from_millis(100);
                                for e in resp.events {
                                    // Resume after the last revision delivered.
                                    req.resource_version = req.resource_version.max(e.revision);
                                    let item = match pb::object_event::Type::try_from(e.r#type) {
                                        Ok(pb::object_event::Type::Added) => {
                                            WatchItem::Added(e.object.into())
                                        }
                                        Ok(pb::object_event::Type::Modified) => {
                                            WatchItem::Modified(e.object.into())
                                        }
                                        Ok(pb::object_event::Type::Deleted) => {
                                            WatchItem::Deleted(e.object.into())
                                        }
                                        _ => WatchItem::Bookmark(e.revision),
                                    };
                                    if tx.send(Ok(item)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(None) => break tonic::Status::unavailable("watch stream ended"),
                            Err(s) => break s,
                        }
                    }
                }
                Err(s) => s,
            };
            if let Some(compacted) = expired_compacted(&status) {
                let _ = tx.send(Err(ClientError::Expired { compacted })).await;
                return;
            }
            if !is_retryable(&status) && status.code() != tonic::Code::Internal {
                let _ = tx.send(Err(ClientError::Rejected(status))).await;
                return;
            }
            self.rotate(i);
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The namespace and name of an object.
pub type ObjectName = (String, String);

/// Typed access to one kind, optionally within one namespace.
pub struct Api<K> {
    client: Client,
    namespace: String,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            _kind: PhantomData,
        }
    }
}

/// Errors of typed calls: the client's, or a payload that is not the expected type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server's answer could not be decoded, or the object could not be encoded.
    #[error("object JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl<K> Api<K>
where
    K: k8s_openapi::Resource + Serialize + DeserializeOwned,
{
    /// Objects of kind `K` in `namespace` (empty: every namespace, or cluster-scoped).
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            _kind: PhantomData,
        }
    }

    fn resource() -> &'static str {
        K::URL_PATH_SEGMENT
    }

    /// Read one object.
    pub async fn get(&self, name: &str) -> Result<K, ApiError> {
        let r = self
            .client
            .get_object(Self::resource(), &self.namespace, name, false)
            .await?;
        Ok(serde_json::from_slice(&r.object)?)
    }

    /// List objects, with the list's revision.
    pub async fn list(&self, labels: &str, fields: &str) -> Result<(Vec<K>, u64), ApiError> {
        let sel = Selection {
            namespace: self.namespace.clone(),
            labels: labels.into(),
            fields: fields.into(),
        };
        let r = self.client.list_objects(Self::resource(), &sel).await?;
        let items = r
            .items
            .iter()
            .map(|i| serde_json::from_slice(i))
            .collect::<Result<_, _>>()?;
        Ok((items, r.revision))
    }

    /// Create an object.
    pub async fn create(&self, obj: &K) -> Result<K, ApiError> {
        let r = self
            .client
            .create_object(Self::resource(), &self.namespace, serde_json::to_vec(obj)?)
            .await?;
        Ok(serde_json::from_slice(&r.object)?)
    }

    /// Replace an object (compare-and-swap on its resourceVersion when set).
    pub async fn update(&self, obj: &K) -> Result<K, ApiError> {
        let r = self
            .client
            .update_object(
                Self::resource(),
                &self.namespace,
                serde_json::to_vec(obj)?,
                false,
            )
            .await?;
        Ok(serde_json::from_slice(&r.object)?)
    }

    /// Replace an object's status.
    pub async fn update_status(&self, obj: &K) -> Result<K, ApiError> {
        let r = self
            .client
            .update_object(
                Self::resource(),
                &self.namespace,
                serde_json::to_vec(obj)?,
                true,
            )
            .await?;
        Ok(serde_json::from_slice(&r.object)?)
    }

    /// Apply a JSON merge patch.
    pub async fn patch(&self, name: &str, patch: &serde_json::Value) -> Result<K, ApiError> {
        let r = self
            .client
            .patch_object(
                Self::resource(),
                &self.namespace,
                name,
                serde_json::to_vec(patch)?,
                false,
            )
            .await?;
        Ok(serde_json::from_slice(&r.object)?)
    }

    /// Delete an object; `true` if it is gone, `false` if it is only marked for deletion.
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<bool, ApiError> {
        Ok(self
            .client
            .delete_object(Self::resource(), &self.namespace, name, params)
            .await?
            .deleted)
    }
}
