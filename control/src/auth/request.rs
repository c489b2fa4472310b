//! An object request as authorisation sees it: the verb, the kind, where and which object.

use serde::Deserialize;
use skiff_proto::kinds::KindInfo;

use super::rules::Verb;
use crate::objects::kinds::Registry;

/// What an object request asks for.
#[derive(Debug, Clone)]
pub struct ObjectAsk<'a> {
    /// What it does.
    pub verb: Verb,
    /// The kind, when the server serves the one named (an unknown one is the handler's to
    /// refuse, and touches nothing).
    pub kind: Option<&'static KindInfo>,
    /// The resource as the caller named it, for messages.
    pub resource: String,
    /// The namespace (a namespaced kind's empty one is `default`, as the store reads it;
    /// empty for every namespace on a list or watch).
    pub namespace: String,
    /// The object's name; empty for lists, watches and creates that name it in the body.
    pub name: String,
    /// A list's or watch's field selector.
    pub field_selector: &'a str,
    /// Whether it writes the status subresource.
    pub status: bool,
    /// The object sent, for creates, updates and applies.
    pub body: Option<&'a [u8]>,
}

/// The part of a manifest that names it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Named {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: NamedMeta,
}

#[derive(Debug, Default, Deserialize)]
struct NamedMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

impl<'a> ObjectAsk<'a> {
    /// A request naming `resource` in `namespace` and the object `name`.
    pub fn new(
        registry: &Registry,
        verb: Verb,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        let kind = registry.resolve(resource).ok().map(|s| s.info());
        let mut ask = Self {
            verb,
            kind,
            resource: kind.map_or_else(|| resource.to_string(), |k| k.plural.to_string()),
            namespace: namespace.to_string(),
            name: name.to_string(),
            field_selector: "",
            status: false,
            body: None,
        };
        ask.default_namespace();
        ask
    }

    /// An apply of `manifest`: its kind and name come from the manifest.
    pub fn apply(registry: &Registry, manifest: &'a [u8], namespace: &str) -> Self {
        let named: Named = serde_json::from_slice(manifest).unwrap_or_default();
        let kind = registry
            .by_api_version(&named.api_version, &named.kind)
            .map(|s| s.info());
        let ns = if named.metadata.namespace.is_empty() {
            namespace
        } else {
            &named.metadata.namespace
        };
        let mut ask = Self {
            verb: Verb::Patch,
            kind,
            resource: kind.map_or_else(|| named.kind.clone(), |k| k.plural.to_string()),
            namespace: ns.to_string(),
            name: named.metadata.name,
            field_selector: "",
            status: false,
            body: Some(manifest),
        };
        ask.default_namespace();
        ask
    }

    /// With the object sent.
    pub fn with_body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    /// With a list's or watch's field selector.
    pub fn with_fields(mut self, selector: &'a str) -> Self {
        self.field_selector = selector;
        self
    }

    /// Writing the status subresource.
    pub fn on_status(mut self, status: bool) -> Self {
        self.status = status;
        self
    }

    /// Name and namespace from the body where the request left them out (a create names its
    /// object only there).
    pub fn named_by_body(&mut self) {
        let Some(body) = self.body else { return };
        let named: Named = serde_json::from_slice(body).unwrap_or_default();
        if self.name.is_empty() {
            self.name = named.metadata.name;
        }
        if !named.metadata.namespace.is_empty() {
            self.namespace = named.metadata.namespace;
        }
        self.default_namespace();
    }

    fn default_namespace(&mut self) {
        let whole_list = matches!(self.verb, Verb::List | Verb::Watch);
        match self.kind {
            Some(k) if !k.namespaced => self.namespace.clear(),
            Some(_) if self.namespace.is_empty() && !whole_list => {
                self.namespace = "default".into()
            }
            _ => {}
        }
    }

    /// `configmaps in namespace "default"`, `nodes`, as a refusal says it.
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            self.resource.clone()
        } else {
            format!("{} in namespace {:?}", self.resource, self.namespace)
        }
    }
}
