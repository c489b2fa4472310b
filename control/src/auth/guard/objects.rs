//! The Objects API behind the gate.

use futures::StreamExt as _;
use skiff_proto::pb::objects_server::Objects;
use skiff_proto::pb::{self};
use tonic::{Request, Response, Status};

use crate::auth::gate::Gate;
use crate::auth::request::ObjectAsk;
use crate::auth::rules::Verb;
use crate::objects::ObjectService;
use crate::ops::api_metrics::note_kind;

/// [`ObjectService`] behind the gate.
pub struct GuardedObjects {
    inner: ObjectService,
    gate: Gate,
}

impl GuardedObjects {
    /// `inner`, each request asked of `gate` first.
    pub fn new(inner: ObjectService, gate: Gate) -> Self {
        Self { inner, gate }
    }

    fn ask<'a>(&self, verb: Verb, resource: &str, namespace: &str, name: &str) -> ObjectAsk<'a> {
        ObjectAsk::new(self.gate.registry(), verb, resource, namespace, name)
    }

    fn ask_key<'a>(&self, verb: Verb, key: Option<&pb::ObjectKey>) -> ObjectAsk<'a> {
        let (r, ns, n) = key.map_or(("", "", ""), |k| {
            (k.resource.as_str(), k.namespace.as_str(), k.name.as_str())
        });
        self.ask(verb, r, ns, n)
    }
}

#[tonic::async_trait]
impl Objects for GuardedObjects {
    async fn create(
        &self,
        request: Request<pb::CreateObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = request.get_ref();
        let ask = || {
            self.ask(Verb::Create, &r.resource, &r.namespace, "")
                .with_body(&r.object)
        };
        note_kind(&request, resource_of(&request));
        self.gate.object(&request, ask).await?;
        self.inner.create(request).await
    }

    async fn get(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let ask = || self.ask_key(Verb::Get, request.get_ref().key.as_ref());
        note_kind(&request, resource_of(&request));
        self.gate.object(&request, ask).await?;
        self.inner.get(request).await
    }

    async fn list(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let r = request.get_ref();
        let ask = || {
            self.ask(Verb::List, &r.resource, &r.namespace, "")
                .with_fields(&r.field_selector)
        };
        note_kind(&request, resource_of(&request));
        self.gate.object(&request, ask).await?;
        self.inner.list(request).await
    }

    async fn update(
        &self,
        request: Request<pb::UpdateObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = request.get_ref();
        let ask = || {
            self.ask(Verb::Update, &r.resource, &r.namespace, "")
                .with_body(&r.object)
        };
        note_kind(&request, resource_of(&request));
        self.gate.object(&request, ask).await?;
        self.inner.update(request).await
    }

    async fn update_status(
        &self,
        request: Request<pb::UpdateObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = request.get_ref();
        let ask = || {
            self.ask(Verb::Update, &r.resource, &r.namespace, "")
                .with_body(&r.object)
                .on_status(true)
        };
        note_kind(&request, resource_of(&request));
        self.gate.object(&request, ask).await?;
        self.inner.update_status(request).await
    }

    async fn patch(
        &self,
        request: Request<pb::PatchObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = request.get_ref();
        let ask = || {
            self.ask_key(Verb::Patch, r.key.as_ref())
                .on_status(r.status)
        };
        note_kind(&request, resource_of(&request));
        self.gate.object(&request, ask).await?;
        self.inner.patch(request).await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let ask = || self.ask_key(Verb::Delete, request.get_ref().key.as_ref());
        note_kind(&request, resource_of(&request));
        self.gate.object(&request, ask).await?;
        self.inner.delete(request).await
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyObjectRequest>,
    ) -> Result<Response<pb::ApplyObjectResponse>, Status> {
        let r = request.get_ref();
        let ask = || ObjectAsk::apply(self.gate.registry(), &r.object, &r.namespace);
        note_kind(&request, resource_of(&request));
        self.gate.object(&request, ask).await?;
        self.inner.apply(request).await
    }

    async fn rotate_secrets_key(
        &self,
        request: Request<pb::RotateSecretsKeyRequest>,
    ) -> Result<Response<pb::RotateSecretsKeyResponse>, Status> {
        self.gate.call(&request, Verb::RotateKey).await?;
        self.inner.rotate_secrets_key(request).await
    }

    type WatchStream = <ObjectService as Objects>::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchObjectsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.get_ref();
        let ask = || {
            self.ask(Verb::Watch, &r.resource, &r.namespace, "")
                .with_fields(&r.field_selector)
        };
        note_kind(&request, resource_of(&request));
        let caller = self.gate.object(&request, ask).await?;
        let slot = self.gate.limits().open_watch(&caller)?;
        let events = self.inner.watch(request).await?.into_inner();
        // The watch counts against its caller for as long as its stream lives.
        let counted = events.map(move |item| {
            let _held = &slot;
            item
        });
        Ok(Response::new(Box::pin(counted)))
    }
}

/// The resource a request names, for its count.
fn resource_of<T: NamesResource>(request: &Request<T>) -> &str {
    request.get_ref().resource()
}

/// Requests that name a resource (in their body or their key).
trait NamesResource {
    fn resource(&self) -> &str;
}

macro_rules! names_resource {
    (field: $($t:ty),*) => {$(
        impl NamesResource for $t {
            fn resource(&self) -> &str {
                &self.resource
            }
        }
    )*};
    (key: $($t:ty),*) => {$(
        impl NamesResource for $t {
            fn resource(&self) -> &str {
                self.key.as_ref().map_or("", |k| k.resource.as_str())
            }
        }
    )*};
}

names_resource!(field: pb::CreateObjectRequest, pb::ListObjectsRequest, pb::UpdateObjectRequest,
    pb::WatchObjectsRequest);
names_resource!(key: pb::GetObjectRequest, pb::DeleteObjectRequest, pb::PatchObjectRequest);

impl NamesResource for pb::ApplyObjectRequest {
    fn resource(&self) -> &str {
        // The manifest names its kind; it is decoded by the store, not here.
        ""
    }
}
