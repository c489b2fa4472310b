//! A StatefulSet's or DaemonSet's revisions: each template it has run, kept as a
//! ControllerRevision named `SET-HASH` (numbered in the order they were current), so a
//! StatefulSet's pods below a partition are made from the template they had, and `rollout
//! history|undo` can show them and go back. A template seen again (a rollback) takes its old
//! revision with a new number.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::Metadata;
use serde_json::json;
use skiff_proto::objects::{Api, ApiError};

use crate::controllers::cache::controlled_by;
use crate::controllers::context::Ctx;
use crate::controllers::deployment::template_hash;
use crate::controllers::ownership::controller_ref;

/// A workload that keeps its templates as ControllerRevisions.
pub trait Revisioned: k8s_openapi::Resource + Metadata<Ty = ObjectMeta> {
    /// Its pod template now.
    fn template(&self) -> PodTemplateSpec;
}

impl Revisioned for StatefulSet {
    fn template(&self) -> PodTemplateSpec {
        self.spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }
}

impl Revisioned for DaemonSet {
    fn template(&self) -> PodTemplateSpec {
        self.spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }
}

/// The revisions of one workload, oldest first.
pub struct Revisions {
    /// Every revision it controls.
    pub all: Vec<Arc<ControllerRevision>>,
}

impl Revisions {
    /// The revisions `set` controls.
    pub fn of(ctx: &Ctx, set: &impl Revisioned) -> Self {
        let ns = set.metadata().namespace.as_deref().unwrap_or("");
        let uid = set.metadata().uid.as_deref().unwrap_or("");
        let mut all = controlled_by(&ctx.revisions, ns, uid);
        all.sort_by_key(|r| r.revision);
        Self { all }
    }

    /// The revision named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ControllerRevision>> {
        self.all
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
    }

    fn newest(&self) -> i64 {
        self.all.last().map(|r| r.revision).unwrap_or(0)
    }
}

/// The name of the revision of `set`'s current template.
pub fn update_revision_name(set: &impl Revisioned) -> String {
    format!(
        "{}-{}",
        set.metadata().name.as_deref().unwrap_or(""),
        template_hash(&set.template())
    )
}

/// The template a revision holds.
pub fn template_of(r: &ControllerRevision) -> Option<PodTemplateSpec> {
    let data = r.data.as_ref()?.0.pointer("/spec/template")?.clone();
    serde_json::from_value(data).ok()
}

/// Make sure the revision of `set`'s template exists and is the newest; the revision's
/// store revision when this wrote.
pub async fn ensure_update_revision<W: Revisioned>(
    ctx: &Ctx,
    set: &W,
    revisions: &Revisions,
) -> Result<Option<u64>, ApiError> {
    let name = update_revision_name(set);
    let ns = set.metadata().namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::new(ctx.client.clone(), &ns);
    let newest = revisions.newest();
    if let Some(r) = revisions.get(&name) {
        if r.revision == newest {
            return Ok(None);
        }
        // A rollback to a template run before: its revision becomes the newest.
        let patch = json!({"metadata": {"resourceVersion": r.metadata.resource_version},
            "revision": newest + 1});
        let r = api.patch(&name, &patch).await?;
        return Ok(Some(crate::controllers::ownership::revision_of(
            &r.metadata,
        )));
    }
    let template = set.template();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(
        "controller.kubernetes.io/hash".into(),
        name.rsplit('-').next().unwrap_or("").to_string(),
    );
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(
                W::API_VERSION,
                W::KIND,
                set.metadata(),
            )]),
            ..Default::default()
        },
        data: Some(RawExtension(
            json!({"spec": {"template": template, "$patch": "replace"}}),
        )),
        revision: newest + 1,
    };
    match api.create(&revision).await {
        Ok(r) => Ok(Some(crate::controllers::ownership::revision_of(
            &r.metadata,
        ))),
        Err(ApiError::Client(skiff_proto::ClientError::Rejected(s)))
            if s.code() == tonic::Code::AlreadyExists =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Revisions beyond `keep` that no pod and neither the current nor the update revision
/// use, oldest first.
pub fn surplus<'a>(
    revisions: &'a Revisions,
    in_use: &std::collections::BTreeSet<String>,
    keep: usize,
) -> Vec<&'a Arc<ControllerRevision>> {
    let unused: Vec<&Arc<ControllerRevision>> = revisions
        .all
        .iter()
        .filter(|r| !r.metadata.name.as_ref().is_some_and(|n| in_use.contains(n)))
        .collect();
    let extra = unused.len().saturating_sub(keep);
    unused.into_iter().take(extra).collect()
}
