//! The `Objects` gRPC service: request fields checked and turned into [`ObjectStore`] calls.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use skiff_proto::pb::objects_server::Objects;
use skiff_proto::pb::{self};
use tonic::{Request, Response, Status};

use super::error::ObjectError;
use super::selectors::{FieldSelector, Selector};
use super::store::{ApplyOutcome, DeleteOptions, ListOptions, ObjectStore, PatchKind, Propagation};
use super::watch::{EventType, WatchHub, WatchMetrics, WatchOptions};

/// Default period of watch bookmarks.
const DEFAULT_BOOKMARK: Duration = Duration::from_secs(1);

/// Serves the object API of one member.
pub struct ObjectService {
    store: ObjectStore,
    watches: WatchHub,
}

impl ObjectService {
    /// Serve `store`; its watches count into `watch_metrics`.
    pub fn new(store: ObjectStore, watch_metrics: WatchMetrics) -> Self {
        let watches = WatchHub::new(store.clone(), watch_metrics);
        Self { store, watches }
    }

    fn write_reply<T>(&self, msg: T) -> Response<T> {
        skiff_raft::grpc::forward::write_reply(self.store.node(), msg)
    }
}

fn request_id(bytes: &[u8]) -> Result<u128, Status> {
    skiff_raft::grpc::convert::request_id("request_id", bytes)
}

fn key_of(key: Option<pb::ObjectKey>) -> Result<pb::ObjectKey, Status> {
    let key = key.ok_or_else(|| Status::from(ObjectError::bad("key", "Required value")))?;
    if key.name.is_empty() {
        return Err(ObjectError::bad("key.name", "Required value").into());
    }
    Ok(key)
}

fn json(v: &serde_json::Value) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchObjectsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Objects for ObjectService {
    async fn create(
        &self,
        request: Request<pb::CreateObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = request.into_inner();
        let id = request_id(&req.request_id)?;
        let s = self
            .store
            .create(&req.resource, &req.namespace, &req.object, id)
            .await?;
        let revision = s.revision;
        Ok(self.write_reply(pb::ObjectResponse {
            object: s.into_json(),
            revision,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = request.into_inner();
        let key = key_of(req.key)?;
        let (object, revision) = self
            .store
            .get(&key.resource, &key.namespace, &key.name, req.stale)
            .await?;
        Ok(Response::new(pb::ObjectResponse { object, revision }))
    }

    async fn list(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let req = request.into_inner();
        let opts = ListOptions {
            namespace: req.namespace,
            labels: Selector::parse("labelSelector", &req.label_selector)?,
            fields: FieldSelector::parse("fieldSelector", &req.field_selector)?,
            limit: usize::try_from(req.limit).unwrap_or(usize::MAX),
            continue_after: req.r#continue,
            stale: req.stale,
        };
        let page = self.store.list(&req.resource, &opts).await?;
        Ok(Response::new(pb::ListObjectsResponse {
            items: page.items,
            revision: page.revision,
            r#continue: page.continue_token.unwrap_or_default(),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = request.into_inner();
        let id = request_id(&req.request_id)?;
        let s = self
            .store
            .update(&req.resource, &req.namespace, &req.object, false, id)
            .await?;
        Ok(self.write_reply(pb::ObjectResponse {
            object: json(&s.object)?,
            revision: s.revision,
        }))
    }

    async fn update_status(
        &self,
        request: Request<pb::UpdateObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = request.into_inner();
        let id = request_id(&req.request_id)?;
        let s = self
            .store
            .update(&req.resource, &req.namespace, &req.object, true, id)
            .await?;
        Ok(self.write_reply(pb::ObjectResponse {
            object: json(&s.object)?,
            revision: s.revision,
        }))
    }

    async fn patch(
        &self,
        request: Request<pb::PatchObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let req = request.into_inner();
        let id = request_id(&req.request_id)?;
        let key = key_of(req.key)?;
        let kind = match pb::patch_object_request::PatchType::try_from(req.r#type) {
            Ok(pb::patch_object_request::PatchType::Merge) => PatchKind::Merge,
            Ok(pb::patch_object_request::PatchType::Json) => PatchKind::Json,
            Ok(pb::patch_object_request::PatchType::Strategic) => PatchKind::Strategic,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "type: {} is not a patch type (merge, json or strategic)",
                    req.r#type
                )))
            }
        };
        let s = self
            .store
            .patch(
                &key.resource,
                &key.namespace,
                &key.name,
                (kind, &req.patch),
                req.status,
                id,
            )
            .await?;
        Ok(self.write_reply(pb::ObjectResponse {
            object: json(&s.object)?,
            revision: s.revision,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let req = request.into_inner();
        let id = request_id(&req.request_id)?;
        let propagation = match pb::delete_object_request::Propagation::try_from(req.propagation) {
            Ok(pb::delete_object_request::Propagation::Foreground) => Propagation::Foreground,
            Ok(pb::delete_object_request::Propagation::Orphan) => Propagation::Orphan,
            Ok(_) => Propagation::Background,
            Err(_) => {
                return Err(ObjectError::bad(
                    "propagation",
                    format!("unknown value {}", req.propagation),
                )
                .into())
            }
        };
        let opts = DeleteOptions {
            uid: Some(req.precondition_uid).filter(|u| !u.is_empty()),
            resource_version: Some(req.precondition_resource_version).filter(|r| *r != 0),
            propagation,
            grace_period_seconds: Some(req.grace_period_seconds).filter(|g| *g >= 0),
        };
        let key = key_of(req.key)?;
        let d = if req.evict {
            if self.store.kind(&key.resource)?.info().kind != "Pod" {
                return Err(ObjectError::bad("evict", "only pods are evicted").into());
            }
            super::eviction::evict(&self.store, &key.namespace, &key.name, &opts, id).await?
        } else {
            self.store
                .delete(&key.resource, &key.namespace, &key.name, &opts, id)
                .await?
        };
        Ok(self.write_reply(pb::DeleteObjectResponse {
            object: json(&d.object)?,
            revision: d.revision,
            deleted: d.gone,
        }))
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyObjectRequest>,
    ) -> Result<Response<pb::ApplyObjectResponse>, Status> {
        let req = request.into_inner();
        let id = request_id(&req.request_id)?;
        let (s, outcome, kind) = self.store.apply(&req.object, &req.namespace, id).await?;
        let outcome = match outcome {
            ApplyOutcome::Created => pb::apply_object_response::Outcome::Created,
            ApplyOutcome::Configured => pb::apply_object_response::Outcome::Configured,
            ApplyOutcome::Unchanged => pb::apply_object_response::Outcome::Unchanged,
        };
        Ok(self.write_reply(pb::ApplyObjectResponse {
            object: json(&s.object)?,
            revision: s.revision,
            outcome: outcome.into(),
            resource: kind.plural.to_string(),
        }))
    }

    async fn rotate_secrets_key(
        &self,
        _request: Request<pb::RotateSecretsKeyRequest>,
    ) -> Result<Response<pb::RotateSecretsKeyResponse>, Status> {
        let (key_id, rewritten) = self.store.rotate_secrets_key().await?;
        Ok(Response::new(pb::RotateSecretsKeyResponse {
            key_id,
            rewritten: rewritten as u64,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchObjectsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let opts = WatchOptions {
            namespace: req.namespace,
            labels: Selector::parse("labelSelector", &req.label_selector)?,
            fields: FieldSelector::parse("fieldSelector", &req.field_selector)?,
            resource_version: req.resource_version,
            bookmark_every: match req.bookmark_interval_ms {
                0 => DEFAULT_BOOKMARK,
                ms => Duration::from_millis(ms.into()),
            },
        };
        let events = self.watches.watch(&req.resource, opts)?;
        let stream = events.map(|item| {
            item.map_err(Status::from)
                .map(|events| pb::WatchObjectsResponse {
                    events: events
                        .into_iter()
                        .map(|e| pb::ObjectEvent {
                            r#type: match e.kind {
                                EventType::Added => pb::object_event::Type::Added,
                                EventType::Modified => pb::object_event::Type::Modified,
                                EventType::Deleted => pb::object_event::Type::Deleted,
                                EventType::Bookmark => pb::object_event::Type::Bookmark,
                            }
                            .into(),
                            object: e.object,
                            revision: e.revision,
                        })
                        .collect(),
                })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
