//! The object store: Kubernetes object semantics over the replicated key-value store.
//! Every write is a compare-and-swap transaction on the object's key (and, for a create, on
//! its namespace), so concurrent writers and leader changes never lose or double an update.
//! Reads are served by this member, after a read index unless `stale`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_proto::kinds::KindInfo;
use skiff_proto::transport::MAX_VALUE_BYTES;
use skiff_raft::mvcc::{Compare, KeyValue, Op, OpResult, Txn, TxnResult};
use skiff_raft::{RaftNode, RequestId, Write};
use tracing::Instrument;

use super::admission;
use super::encryption::{self, Sealer};
use super::error::{ObjectError, Result};
use super::kinds::{Registry, StoreView, Strategy};
use super::meta::{self, meta_str};
pub use super::patch::PatchKind;
use super::patch::{self, Patch};
use super::selectors::{FieldSelector, Selector};
use super::service_alloc::ServiceRange;

pub use super::kinds::namespace::BUILTIN_NAMESPACES;

/// Largest manifest kept as the last-applied annotation (annotations total at most 256 KiB).
const LAST_APPLIED_MAX_BYTES: usize = 200 * 1024;

/// How many times a write without a client resourceVersion is retried on a conflict.
const MAX_ATTEMPTS: u64 = 16;

/// An object as read or written, with its revision.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The object, `metadata.resourceVersion` included.
    pub object: Value,
    /// Its resourceVersion (the revision of its last write).
    pub revision: u64,
    /// The object as JSON, when already at hand (saves encoding it again).
    pub json: Option<Vec<u8>>,
}

impl Stored {
    /// The object as JSON.
    pub fn into_json(self) -> Vec<u8> {
        match self.json {
            Some(j) => j,
            None => serde_json::to_vec(&self.object).unwrap_or_default(),
        }
    }
}

/// What `delete` did.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The object's last state.
    pub object: Value,
    /// The revision of the write.
    pub revision: u64,
    /// Gone (`true`), or marked for deletion and kept for finalizers or a grace period.
    pub gone: bool,
}

/// Propagation of a delete to dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete now; the garbage collector removes dependents afterwards.
    #[default]
    Background,
    /// Keep the owner (finalizer `foregroundDeletion`) until its dependents are gone.
    Foreground,
    /// Keep the dependents, releasing them (finalizer `orphan`).
    Orphan,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Only if the object has this uid.
    pub uid: Option<String>,
    /// Only if the object is at this resourceVersion.
    pub resource_version: Option<u64>,
    /// How dependents are treated.
    pub propagation: Propagation,
    /// Pods: seconds to let containers stop; `None` = the pod's own setting.
    pub grace_period_seconds: Option<i64>,
}

/// What a list selects.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Empty = every namespace.
    pub namespace: String,
    /// Label selector.
    pub labels: Selector,
    /// Field selector.
    pub fields: FieldSelector,
    /// At most this many items (0 = all).
    pub limit: usize,
    /// Continue after this token.
    pub continue_after: String,
    /// Serve without a read index.
    pub stale: bool,
}

/// The answer of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Matching objects (JSON bytes), resourceVersion included, in key order.
    pub items: Vec<Vec<u8>>,
    /// The revision the list reflects.
    pub revision: u64,
    /// A token for the next page when more items remain.
    pub continue_token: Option<String>,
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The object did not exist.
    Created,
    /// The object changed.
    Configured,
    /// The object already was as the manifest says; nothing was written.
    Unchanged,
}

/// Whether an update replaces the spec or only the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Spec,
    Status,
}

/// The object API over one member of the store.
#[derive(Clone)]
pub struct ObjectStore {
    node: RaftNode,
    registry: Arc<Registry>,
    /// Seals Secrets at rest, when the member has an encryption key.
    sealer: Option<Arc<Sealer>>,
}

impl StoreView for ObjectStore {
    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        Ok(self
            .node
            .state()
            .range(prefix.as_bytes(), true, None, 0)
            .map_err(|e| ObjectError::Store(e.into()))?
            .kvs)
    }
}

fn parse_object(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        ObjectError::bad(
            "object",
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

fn decode(key: &[u8], kv_value: &[u8], revision: u64) -> Result<Value> {
    serde_json::from_slice(&meta::with_resource_version(kv_value, revision)).map_err(|e| {
        ObjectError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        }
    })
}

/// The stored form: JSON without resourceVersion, within the value size limit.
fn encode(kind: &KindInfo, obj: &Value) -> Result<Vec<u8>> {
    let mut obj = obj.clone();
    meta::metadata_mut(&mut obj).remove("resourceVersion");
    let bytes = serde_json::to_vec(&obj).map_err(|e| ObjectError::bad("object", e.to_string()))?;
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(ObjectError::Invalid {
            kind: kind.kind.to_string(),
            name: meta_str(&obj, "name").unwrap_or("").to_string(),
            errors: vec![super::error::FieldError::new(
                "object",
                format!("Too long: the object is {} bytes; the limit is {MAX_VALUE_BYTES} bytes (1.5 MiB)", bytes.len()),
            )],
        });
    }
    Ok(bytes)
}

/// The request id of one attempt of a call: the same on every retry of the same attempt,
/// different between attempts (a failed compare is remembered too).
fn attempt_id(base: RequestId, attempt: u64) -> RequestId {
    if base == 0 {
        return 0;
    }
    match base.wrapping_add(u128::from(attempt)) {
        0 => 1,
        id => id,
    }
}

fn random_suffix() -> String {
    // The alphabet Kubernetes uses for generated names: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect()
}

fn uid_from(request_id: RequestId) -> String {
    if request_id == 0 {
        uuid::Uuid::new_v4().to_string()
    } else {
        uuid::Uuid::from_u128(request_id).to_string()
    }
}

impl ObjectStore {
    /// The object API over `node`, serving the built-in kinds.
    pub fn new(node: RaftNode) -> Self {
        Self {
            node,
            registry: Arc::new(Registry::builtin(ServiceRange::default())),
            sealer: None,
        }
    }

    /// The same store, keeping Secrets sealed by `sealer`.
    pub fn with_sealer(mut self, sealer: Option<Arc<Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    /// The stored value of `plain` for an object of `kind`: sealed for a Secret when this
    /// member has an encryption key.
    async fn at_rest(&self, kind: &KindInfo, plain: Vec<u8>) -> Result<Vec<u8>> {
        match &self.sealer {
            Some(s) if kind.plural == "secrets" => s.seal(&plain).await,
            _ => Ok(plain),
        }
    }

    /// A watch event with its values in plain form.
    pub(crate) fn open_event(&self, ev: &mut skiff_raft::mvcc::Event) -> Result<()> {
        if encryption::is_sealed(&ev.kv.value) {
            ev.kv.value = self.opened(&ev.kv.key, &ev.kv.value)?.into_owned();
        }
        if let Some(prev) = ev.prev.as_mut() {
            if encryption::is_sealed(&prev.value) {
                prev.value = self.opened(&prev.key, &prev.value)?.into_owned();
            }
        }
        Ok(())
    }

    /// The plain form of the stored value of `key`.
    fn opened<'a>(&self, key: &[u8], value: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>> {
        if !encryption::is_sealed(value) {
            return Ok(std::borrow::Cow::Borrowed(value));
        }
        match &self.sealer {
            Some(s) => s.open(key, value).map(std::borrow::Cow::Owned),
            None => Err(ObjectError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "encrypted at rest, and this member has no --encryption-key-file".into(),
            }),
        }
    }

    /// Seal every Secret again under a new data key, online, then delete the old keys: a
    /// copy of an old key opens nothing the store holds. Returns the new key's id and how
    /// many Secrets were sealed again.
    pub async fn rotate_secrets_key(&self) -> Result<(u32, usize)> {
        let sealer = self.sealer.clone().ok_or_else(|| {
            ObjectError::bad(
                "encryption",
                "this member has no --encryption-key-file: Secrets are not encrypted",
            )
        })?;
        let id = sealer.new_key().await?;
        let prefix = skiff_proto::kinds::SECRET.key_prefix();
        let mut rewritten = 0;
        loop {
            let r = self
                .node
                .state()
                .range(prefix.as_bytes(), true, None, 0)
                .map_err(|e| ObjectError::Store(e.into()))?;
            let stale: Vec<KeyValue> = r
                .kvs
                .into_iter()
                .filter(|kv| !Sealer::sealed_under(&kv.value, id))
                .collect();
            if stale.is_empty() {
                break;
            }
            for kv in stale {
                let plain = self.opened(&kv.key, &kv.value)?.into_owned();
                let txn = Txn {
                    compares: vec![Compare::ModRevision {
                        key: kv.key.clone(),
                        revision: kv.mod_revision,
                    }],
                    success: vec![Op::PutNoPrev {
                        key: kv.key.clone(),
                        value: sealer.seal(&plain).await?,
                    }],
                    failure: vec![],
                };
                // A Secret written meanwhile is sealed under the new key already, or is
                // taken on the next pass.
                if self.commit(rand::random(), txn).await?.succeeded {
                    rewritten += 1;
                }
            }
        }
        sealer.delete_keys_but(id).await?;
        tracing::info!(
            key = id,
            secrets = rewritten,
            "Secrets sealed under a new data key"
        );
        Ok((id, rewritten))
    }

    /// The same store, serving the built-in kinds with ClusterIPs from `range`.
    pub fn with_service_range(self, range: ServiceRange) -> Self {
        self.with_registry(Registry::builtin(range))
    }

    /// The same store, serving the kinds of `registry`.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Arc::new(registry);
        self
    }

    /// The served kinds.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The strategy of the kind `resource` names.
    pub fn kind(&self, resource: &str) -> Result<&dyn Strategy> {
        self.registry.resolve(resource)
    }

    /// Admit `obj` as an object of `strategy`'s kind: typed, defaulted, validated.
    fn admit(strategy: &dyn Strategy, mut obj: Value) -> Result<Value> {
        admission::check_type(strategy.info(), &mut obj)?;
        strategy.admit(obj)
    }

    /// The member this store runs on.
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    async fn read_index(&self, stale: bool) -> Result<()> {
        // Planted for the chaos suite's self-test: skip the read index everywhere.
        if !stale && !cfg!(feature = "planted-bug-stale-read") {
            self.node.linearizable_read().await?;
        }
        Ok(())
    }

    fn load_raw(&self, key: &str) -> Result<Option<KeyValue>> {
        let r = self
            .node
            .state()
            .range(key.as_bytes(), false, None, 0)
            .map_err(|e| ObjectError::Store(e.into()))?;
        Ok(r.kvs.into_iter().next())
    }

    fn load(&self, key: &str) -> Result<Option<Stored>> {
        self.load_raw(key)?
            .map(|kv| {
                Ok(Stored {
                    object: decode(&kv.key, &self.opened(&kv.key, &kv.value)?, kv.mod_revision)?,
                    revision: kv.mod_revision,
                    json: None,
                })
            })
            .transpose()
    }

    async fn commit(&self, request_id: RequestId, txn: Txn) -> Result<TxnResult> {
        Ok(self.node.propose(Write { request_id, txn }).await?)
    }

    fn namespace_for(kind: &KindInfo, request_ns: &str, obj: &mut Value) -> Result<String> {
        if !kind.namespaced {
            meta::metadata_mut(obj).remove("namespace");
            return Ok(String::new());
        }
        let ns = match (meta_str(obj, "namespace").filter(|n| !n.is_empty()), request_ns) {
            (Some(o), r) if !r.is_empty() && o != r => {
                return Err(ObjectError::bad(
                    "metadata.namespace",
                    format!("the namespace of the object ({o:?}) does not match the namespace of the request ({r:?})"),
                ))
            }
            (Some(o), _) => o.to_string(),
            (None, r) if !r.is_empty() => r.to_string(),
            (None, _) => "default".to_string(),
        };
        meta::metadata_mut(obj).insert("namespace".into(), ns.clone().into());
        Ok(ns)
    }

    /// Read one object as JSON, with its resourceVersion (served without parsing it).
    pub async fn get(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        stale: bool,
    ) -> Result<(Vec<u8>, u64)> {
        let kind = self.kind(resource)?.info();
        let ns = if kind.namespaced && namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        self.read_index(stale).await?;
        let kv = self
            .load_raw(&kind.key(ns, name))?
            .ok_or_else(|| ObjectError::NotFound {
                resource: kind.plural.to_string(),
                name: name.to_string(),
            })?;
        Ok((
            meta::with_resource_version(&self.opened(&kv.key, &kv.value)?, kv.mod_revision),
            kv.mod_revision,
        ))
    }

    /// List objects of `resource`.
    pub async fn list(&self, resource: &str, opts: &ListOptions) -> Result<ListPage> {
        let kind = self.kind(resource)?.info();
        let prefix = if kind.namespaced && !opts.namespace.is_empty() {
            format!("{}{}/", kind.key_prefix(), opts.namespace)
        } else {
            kind.key_prefix()
        };
        let mut after = if opts.continue_after.is_empty() {
            None
        } else if opts.continue_after.starts_with(&prefix) {
            Some(opts.continue_after.clone().into_bytes())
        } else {
            return Err(ObjectError::bad(
                "continue",
                "the token does not belong to this list; start the list again",
            ));
        };
        self.read_index(opts.stale).await?;
        let filtered = !opts.labels.is_empty() || opts.fields != FieldSelector::default();
        // Unlimited lists are one read at one revision; a limited one reads a page at a time.
        let page = if opts.limit == 0 {
            0
        } else {
            (opts.limit + 1).max(256)
        };
        let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut revision = None;
        let mut more_items = false;
        'scan: loop {
            let r = self
                .node
                .state()
                .range(prefix.as_bytes(), true, after.as_deref(), page)
                .map_err(|e| ObjectError::Store(e.into()))?;
            revision.get_or_insert(r.revision);
            for kv in r.kvs {
                let value = self.opened(&kv.key, &kv.value)?;
                let keep = !filtered || {
                    let v = decode(&kv.key, &value, kv.mod_revision)?;
                    opts.labels.matches_object(&v) && opts.fields.matches(&v)
                };
                after = Some(kv.key.clone());
                if keep {
                    if opts.limit != 0 && items.len() == opts.limit {
                        more_items = true;
                        break 'scan;
                    }
                    let bytes = meta::with_resource_version(&value, kv.mod_revision);
                    items.push((kv.key, bytes));
                }
            }
            if !r.more {
                break;
            }
        }
        let continue_token = more_items
            .then(|| {
                items
                    .last()
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            })
            .flatten();
        Ok(ListPage {
            items: items.into_iter().map(|(_, b)| b).collect(),
            revision: revision.unwrap_or(0),
            continue_token,
        })
    }

    /// Create an object; `namespace` applies when the object names none.
    pub async fn create(
        &self,
        resource: &str,
        namespace: &str,
        obj: &[u8],
        request_id: RequestId,
    ) -> Result<Stored> {
        let strategy = self.kind(resource)?;
        let obj = parse_object(obj)?;
        self.create_value(strategy, namespace, obj, request_id)
            .await
    }

    async fn create_value(
        &self,
        strategy: &dyn Strategy,
        namespace: &str,
        mut obj: Value,
        request_id: RequestId,
    ) -> Result<Stored> {
        let kind = strategy.info();
        admission::check_type(kind, &mut obj)?;
        let ns = Self::namespace_for(kind, namespace, &mut obj)?;
        meta::strip_server_owned(&mut obj);
        let generate = meta_str(&obj, "name").is_none_or(str::is_empty)
            && meta_str(&obj, "generateName").is_some_and(|g| !g.is_empty());
        let uid = uid_from(request_id);
        let span = tracing::debug_span!("create", resource = kind.plural, namespace = %ns, name = meta_str(&obj, "name").unwrap_or(""));
        async move {
            for attempt in 0..MAX_ATTEMPTS {
                // The first attempt reads locally; a compare catches a stale read.
                if attempt > 0 {
                    self.read_index(false).await?;
                }
                let mut obj = obj.clone();
                if generate {
                    let name = format!(
                        "{}{}",
                        meta_str(&obj, "generateName").unwrap_or(""),
                        random_suffix()
                    );
                    meta::metadata_mut(&mut obj).insert("name".into(), name.into());
                }
                let m = meta::metadata_mut(&mut obj);
                m.insert("uid".into(), uid.clone().into());
                m.insert("creationTimestamp".into(), meta::now().into());
                if obj.get("spec").is_some() {
                    meta::metadata_mut(&mut obj).insert("generation".into(), 1.into());
                }
                strategy.prepare_create(&mut obj);
                let mut obj = Self::admit(strategy, obj)?;
                let name = meta_str(&obj, "name").unwrap_or("").to_string();
                let key = kind.key(&ns, &name);
                strategy.check_policy(self, &obj)?;
                let claims = strategy.claims(self, None, &mut obj, &format!("{ns}/{name}"))?;
                let bytes = encode(kind, &obj)?;
                let stored = self.at_rest(kind, bytes.clone()).await?;
                let mut compares = vec![Compare::Absent {
                    key: key.clone().into_bytes(),
                }];
                compares.extend(claims.compares);
                if kind.namespaced {
                    let ns_key = skiff_proto::kinds::NAMESPACE.key("", &ns);
                    // A stale read is enough: the compare pins the namespace as read.
                    let Some(current) = self.load(&ns_key)? else {
                        if attempt == 0 {
                            continue;
                        }
                        return Err(ObjectError::NamespaceMissing(ns.clone()));
                    };
                    if current
                        .object
                        .pointer("/metadata/deletionTimestamp")
                        .is_some()
                    {
                        return Err(ObjectError::NamespaceTerminating(ns.clone()));
                    }
                    compares.push(Compare::ModRevision {
                        key: ns_key.into_bytes(),
                        revision: current.revision,
                    });
                }
                let txn = Txn {
                    compares,
                    success: std::iter::once(Op::PutNoPrev {
                        key: key.clone().into_bytes(),
                        value: stored,
                    })
                    .chain(claims.ops)
                    .collect(),
                    failure: vec![Op::Get {
                        key: key.clone().into_bytes(),
                    }],
                };
                let result = self.commit(attempt_id(request_id, attempt), txn).await?;
                if result.succeeded {
                    tracing::debug!(revision = result.revision, "created");
                    let mut object = obj;
                    meta::metadata_mut(&mut object)
                        .insert("resourceVersion".into(), result.revision.to_string().into());
                    return Ok(Stored {
                        object,
                        revision: result.revision,
                        json: Some(meta::with_resource_version(&bytes, result.revision)),
                    });
                }
                if let Some(OpResult::Get { kv: Some(_) }) = result.ops.first() {
                    if !generate {
                        return Err(ObjectError::AlreadyExists {
                            resource: kind.plural.to_string(),
                            name,
                        });
                    }
                }
            }
            Err(ObjectError::Contended {
                resource: kind.plural.to_string(),
                name: meta_str(&obj, "name").unwrap_or("").to_string(),
                attempts: MAX_ATTEMPTS,
            })
        }
        .instrument(span)
        .await
    }

    /// Change an object by `change`, which maps the current object to the wanted one; the
    /// result is admitted and written with compare-and-swap, retried on a concurrent change
    /// unless the caller pinned `expected` (then a change is a conflict).
    async fn modify<F>(
        &self,
        (strategy, ns, name): (&dyn Strategy, &str, &str),
        expected: u64,
        part: Part,
        request_id: RequestId,
        mut change: F,
    ) -> Result<(Stored, bool)>
    where
        F: FnMut(&Value) -> Result<Value>,
    {
        let kind = strategy.info();
        let key = kind.key(ns, name);
        let span =
            tracing::debug_span!("update", resource = kind.plural, namespace = %ns, name = %name);
        async move {
            for attempt in 0..MAX_ATTEMPTS {
                // The first attempt reads locally; the compare catches a stale read.
                if attempt > 0 {
                    self.read_index(false).await?;
                }
                let Some(current) = self.load(&key)? else {
                    // A local miss may only mean this member is behind: ask again after a
                    // read index before saying "not found".
                    if attempt == 0 {
                        continue;
                    }
                    return Err(ObjectError::NotFound {
                        resource: kind.plural.to_string(),
                        name: name.to_string(),
                    });
                };
                if expected != 0 && expected != current.revision {
                    if attempt == 0 && expected > current.revision {
                        // Our copy may be behind the caller's: read again.
                        continue;
                    }
                    // The retry of a write that took effect finds the object past `expected`.
                    // The store remembers the request id: a probe with it tells the two apart,
                    // so the caller is never told "conflict" for its own applied write.
                    let probe = Txn {
                        compares: vec![Compare::ModRevision {
                            key: key.clone().into_bytes(),
                            revision: expected,
                        }],
                        ..Default::default()
                    };
                    let id = attempt_id(request_id, 0);
                    if id != 0 {
                        let remembered = self.commit(id, probe).await?;
                        if remembered.succeeded {
                            if let Some(mut now) = self.load(&key)? {
                                // The answer carries the revision of the write this call
                                // made, not of whatever changed the object since.
                                now.revision = remembered.revision;
                                meta::metadata_mut(&mut now.object).insert(
                                    "resourceVersion".into(),
                                    remembered.revision.to_string().into(),
                                );
                                return Ok((now, true));
                            }
                        }
                    }
                    return Err(ObjectError::Conflict {
                        resource: kind.plural.to_string(),
                        name: name.to_string(),
                        given: expected,
                        current: current.revision,
                    });
                }
                let mut wanted = change(&current.object)?;
                admission::check_type(kind, &mut wanted)?;
                for field in ["name", "namespace"] {
                    let (a, b) = (
                        meta_str(&wanted, field).unwrap_or(""),
                        meta_str(&current.object, field).unwrap_or(""),
                    );
                    if (kind.namespaced || field != "namespace") && !a.is_empty() && a != b {
                        return Err(ObjectError::bad(
                            format!("metadata.{field}"),
                            format!(
                                "Invalid value: {a:?}: field is immutable (the object is {b:?})"
                            ),
                        ));
                    }
                }
                if let Some(uid) = meta_str(&wanted, "uid").filter(|u| !u.is_empty()) {
                    if Some(uid) != meta_str(&current.object, "uid") {
                        return Err(ObjectError::Precondition(format!(
                            "metadata.uid {uid:?} does not match the object's uid"
                        )));
                    }
                }
                let mut next = match part {
                    Part::Spec => {
                        let mut w = wanted;
                        if kind.has_status {
                            match current.object.get("status") {
                                Some(s) => w["status"] = s.clone(),
                                None => {
                                    if let Some(m) = w.as_object_mut() {
                                        m.remove("status");
                                    }
                                }
                            }
                        }
                        w
                    }
                    Part::Status => {
                        let mut c = current.object.clone();
                        match wanted.get("status") {
                            Some(s) => c["status"] = s.clone(),
                            None => {
                                if let Some(m) = c.as_object_mut() {
                                    m.remove("status");
                                }
                            }
                        }
                        c
                    }
                };
                meta::keep_server_owned(&current.object, &mut next);
                meta::metadata_mut(&mut next).insert("namespace".into(), ns.into());
                if !kind.namespaced {
                    meta::metadata_mut(&mut next).remove("namespace");
                }
                let mut next = Self::admit(strategy, next)?;
                let deleting = next.pointer("/metadata/deletionTimestamp").is_some();
                let gone = deleting && meta::finalizers(&next).is_empty();
                // Allocations first: what the server assigned (a node port a manifest leaves
                // out) is back in place before anything is compared, so it never counts as
                // a change.
                if !gone && part == Part::Spec && meta::spec_differs(&current.object, &next) {
                    strategy.check_update(&current.object, &next)?;
                    strategy.check_policy(self, &next)?;
                }
                let claims = if !gone && part == Part::Spec {
                    strategy.claims(
                        self,
                        Some(&current.object),
                        &mut next,
                        &format!("{ns}/{name}"),
                    )?
                } else {
                    Default::default()
                };
                if meta::spec_differs(&current.object, &next) {
                    let generation = current
                        .object
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    meta::metadata_mut(&mut next)
                        .insert("generation".into(), (generation + 1).into());
                }
                meta::metadata_mut(&mut next).insert(
                    "resourceVersion".into(),
                    current.revision.to_string().into(),
                );
                if next == current.object {
                    return Ok((current, false));
                }
                let mut ops = vec![if gone {
                    // The last finalizer is gone: the object goes.
                    Op::Delete {
                        key: key.clone().into_bytes(),
                    }
                } else {
                    Op::PutNoPrev {
                        key: key.clone().into_bytes(),
                        value: self.at_rest(kind, encode(kind, &next)?).await?,
                    }
                }];
                if gone {
                    ops.extend(strategy.release(&current.object));
                    ops.extend(strategy.cascade(self, &self.registry, &current.object)?);
                }
                ops.extend(claims.ops);
                let mut compares = vec![Compare::ModRevision {
                    key: key.clone().into_bytes(),
                    revision: current.revision,
                }];
                compares.extend(claims.compares);
                let txn = Txn {
                    compares,
                    success: ops,
                    failure: vec![],
                };
                let result = self
                    .commit(
                        attempt_id(request_id, if expected != 0 { 0 } else { attempt }),
                        txn,
                    )
                    .await?;
                if result.succeeded {
                    meta::metadata_mut(&mut next)
                        .insert("resourceVersion".into(), result.revision.to_string().into());
                    return Ok((
                        Stored {
                            object: next,
                            revision: result.revision,
                            json: None,
                        },
                        true,
                    ));
                }
                if expected != 0 {
                    let now = self.load(&key)?.map(|s| s.revision).unwrap_or(0);
                    return Err(ObjectError::Conflict {
                        resource: kind.plural.to_string(),
                        name: name.to_string(),
                        given: expected,
                        current: now,
                    });
                }
            }
            Err(ObjectError::Contended {
                resource: kind.plural.to_string(),
                name: name.to_string(),
                attempts: MAX_ATTEMPTS,
            })
        }
        .instrument(span)
        .await
    }

    fn target(kind: &KindInfo, request_ns: &str, obj: &mut Value) -> Result<(String, String)> {
        let ns = Self::namespace_for(kind, request_ns, obj)?;
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        if name.is_empty() {
            return Err(ObjectError::bad("metadata.name", "Required value"));
        }
        Ok((ns, name))
    }

    /// Replace an object's spec (and metadata); its status is left alone when the kind has a
    /// status subresource. With `status`, only the status is taken.
    pub async fn update(
        &self,
        resource: &str,
        namespace: &str,
        obj: &[u8],
        status: bool,
        request_id: RequestId,
    ) -> Result<Stored> {
        let strategy = self.kind(resource)?;
        let mut obj = parse_object(obj)?;
        let (ns, name) = Self::target(strategy.info(), namespace, &mut obj)?;
        let expected = meta::resource_version(&obj)?;
        let part = if status { Part::Status } else { Part::Spec };
        let (stored, _) = self
            .modify((strategy, &ns, &name), expected, part, request_id, |_| {
                Ok(obj.clone())
            })
            .await?;
        Ok(stored)
    }

    /// Apply a JSON merge patch (RFC 7386), a strategic merge patch (by the kind's merge
    /// keys) or a JSON patch (RFC 6902, all its operations or none). A merge patch's
    /// `metadata.resourceVersion`, when set, must be current; a JSON patch says so with a
    /// `test` operation.
    pub async fn patch(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        (patch_kind, patch): (PatchKind, &[u8]),
        status: bool,
        request_id: RequestId,
    ) -> Result<Stored> {
        let strategy = self.kind(resource)?;
        let kind = strategy.info();
        let patch = Patch::parse(patch_kind, patch)?;
        let expected = match patch.object() {
            Some(p) => meta::resource_version(p)?,
            None => 0,
        };
        let ns = if kind.namespaced {
            if namespace.is_empty() {
                "default"
            } else {
                namespace
            }
        } else {
            ""
        };
        let part = if status { Part::Status } else { Part::Spec };
        let (stored, _) = self
            .modify(
                (strategy, ns, name),
                expected,
                part,
                request_id,
                |current| {
                    let mut next = current.clone();
                    patch.apply(&mut next, strategy.merge_schema())?;
                    Ok(next)
                },
            )
            .await?;
        Ok(stored)
    }

    /// kubectl-style apply of a manifest.
    pub async fn apply(
        &self,
        manifest: &[u8],
        namespace: &str,
        request_id: RequestId,
    ) -> Result<(Stored, ApplyOutcome, &'static KindInfo)> {
        let mut manifest = parse_object(manifest)?;
        let api_version = manifest
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind_name = manifest.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind_name.is_empty() {
            return Err(ObjectError::bad(
                "kind",
                "Required value: a manifest must name its kind",
            ));
        }
        if api_version.is_empty() {
            return Err(ObjectError::bad(
                "apiVersion",
                "Required value: a manifest must name its apiVersion",
            ));
        }
        let strategy = self
            .registry
            .by_api_version(api_version, kind_name)
            .ok_or_else(|| {
                let hint = self
                    .registry
                    .iter()
                    .map(|s| s.info())
                    .find(|k| k.kind == kind_name)
                    .map(|k| format!("; {} is served as {}", k.kind, k.api_version()))
                    .unwrap_or_default();
                ObjectError::bad(
                    "kind",
                    format!("no matches for kind {kind_name:?} in version {api_version:?}{hint}"),
                )
            })?;
        let kind = strategy.info();
        let (ns, name) = Self::target(kind, namespace, &mut manifest)?;
        meta::strip_server_owned(&mut manifest);
        if let Some(a) = manifest
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(meta::LAST_APPLIED);
        }
        let last_applied = serde_json::to_string(&manifest)
            .map_err(|e| ObjectError::bad("object", e.to_string()))?;
        // A manifest too big for an annotation is applied without one (as with kubectl
        // create): later applies then merge without removing fields it dropped.
        if last_applied.len() <= LAST_APPLIED_MAX_BYTES {
            let annotations = meta::metadata_mut(&mut manifest)
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(meta::LAST_APPLIED.into(), last_applied.into());
            }
        }
        for attempt in 0..MAX_ATTEMPTS {
            let id = attempt_id(request_id, attempt * 1000);
            if attempt > 0 {
                self.read_index(false).await?;
            }
            if self.load_raw(&kind.key(&ns, &name))?.is_none() {
                match self.create_value(strategy, &ns, manifest.clone(), id).await {
                    Ok(s) => return Ok((s, ApplyOutcome::Created, kind)),
                    Err(ObjectError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            let result = self
                .modify((strategy, &ns, &name), 0, Part::Spec, id, |current| {
                    let last = current
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(meta::LAST_APPLIED))
                        .and_then(Value::as_str)
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or(Value::Object(Default::default()));
                    let schema = strategy.merge_schema();
                    let mut next = current.clone();
                    patch::strategic::apply(
                        &mut next,
                        &patch::three_way::patch(&last, &manifest, schema)?,
                        schema,
                    )?;
                    Ok(next)
                })
                .await;
            match result {
                Ok((s, true)) => return Ok((s, ApplyOutcome::Configured, kind)),
                Ok((s, false)) => return Ok((s, ApplyOutcome::Unchanged, kind)),
                Err(ObjectError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ObjectError::Contended {
            resource: kind.plural.to_string(),
            name,
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Delete an object, or mark it for deletion when finalizers or a pod's grace period
    /// keep it for now.
    pub async fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
        request_id: RequestId,
    ) -> Result<Deleted> {
        let strategy = self.kind(resource)?;
        let kind = strategy.info();
        let ns = if kind.namespaced {
            if namespace.is_empty() {
                "default"
            } else {
                namespace
            }
        } else {
            ""
        };
        strategy.check_delete(name)?;
        let key = kind.key(ns, name);
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.read_index(false).await?;
            }
            let Some(current) = self.load(&key)? else {
                // A local miss may only mean this member is behind.
                if attempt == 0 {
                    continue;
                }
                return Err(ObjectError::NotFound {
                    resource: kind.plural.to_string(),
                    name: name.to_string(),
                });
            };
            if let Some(uid) = &opts.uid {
                if meta_str(&current.object, "uid") != Some(uid.as_str()) {
                    return Err(ObjectError::Precondition(format!(
                        "the uid in the precondition ({uid}) does not match the object's uid ({})",
                        meta_str(&current.object, "uid").unwrap_or("")
                    )));
                }
            }
            if let Some(rv) = opts.resource_version.filter(|rv| *rv != current.revision) {
                return Err(ObjectError::Conflict {
                    resource: kind.plural.to_string(),
                    name: name.to_string(),
                    given: rv,
                    current: current.revision,
                });
            }
            let mut finalizers = meta::finalizers(&current.object);
            let add = match opts.propagation {
                Propagation::Background => None,
                Propagation::Foreground => Some("foregroundDeletion"),
                Propagation::Orphan => Some("orphan"),
            };
            if let Some(f) = add {
                if !finalizers.iter().any(|x| x == f)
                    && current
                        .object
                        .pointer("/metadata/deletionTimestamp")
                        .is_none()
                {
                    finalizers.push(f.to_string());
                }
            }
            let grace = strategy.grace_on_delete(&current.object, opts.grace_period_seconds);
            let keep = !finalizers.is_empty() || grace > 0;
            let mut txn = Txn {
                compares: vec![Compare::ModRevision {
                    key: key.clone().into_bytes(),
                    revision: current.revision,
                }],
                ..Default::default()
            };
            let mut object = current.object.clone();
            if keep {
                let m = meta::metadata_mut(&mut object);
                let already = m.get("deletionTimestamp").is_some();
                let shorter = m
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .is_none_or(|g| grace < g);
                if already && !shorter && meta::finalizers(&current.object) == finalizers {
                    return Ok(Deleted {
                        object,
                        revision: current.revision,
                        gone: false,
                    });
                }
                if !already || shorter {
                    let at = jiff::Timestamp::now()
                        .checked_add(jiff::SignedDuration::from_secs(grace))
                        .unwrap_or_else(|_| jiff::Timestamp::now());
                    m.insert(
                        "deletionTimestamp".into(),
                        at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into(),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), grace.into());
                }
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), finalizers.into());
                }
                txn.success.push(Op::PutNoPrev {
                    key: key.clone().into_bytes(),
                    value: self.at_rest(kind, encode(kind, &object)?).await?,
                });
            } else {
                txn.success.push(Op::Delete {
                    key: key.clone().into_bytes(),
                });
                txn.success.extend(strategy.release(&current.object));
                txn.success
                    .extend(strategy.cascade(self, &self.registry, &current.object)?);
            }
            let result = self.commit(attempt_id(request_id, attempt), txn).await?;
            if result.succeeded {
                meta::metadata_mut(&mut object)
                    .insert("resourceVersion".into(), result.revision.to_string().into());
                tracing::debug!(resource = kind.plural, namespace = %ns, name = %name, gone = !keep, "deleted");
                return Ok(Deleted {
                    object,
                    revision: result.revision,
                    gone: !keep,
                });
            }
            if opts.resource_version.is_some() {
                return Err(ObjectError::Conflict {
                    resource: kind.plural.to_string(),
                    name: name.to_string(),
                    given: current.revision,
                    current: 0,
                });
            }
        }
        Err(ObjectError::Contended {
            resource: kind.plural.to_string(),
            name: name.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Create the built-in namespaces and the default StorageClass (`local-path`, as k3s
    /// ships it) if they are missing; retried until it works. A class an operator removed
    /// comes back at the next start, as k3s' does.
    pub async fn ensure_builtin_objects(&self) {
        self.ensure_builtin_namespaces().await;
        let Ok(strategy) = self.kind("storageclasses") else {
            return;
        };
        use super::admission::storage;
        let class = serde_json::json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": storage::LOCAL_PATH_CLASS,
                         "annotations": {storage::DEFAULT_CLASS_ANNOTATION: "true"}},
            "provisioner": storage::LOCAL_PATH_PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        });
        loop {
            match self.create_value(strategy, "", class.clone(), 0).await {
                Ok(_) | Err(ObjectError::AlreadyExists { .. }) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "creating the default StorageClass; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn ensure_builtin_namespaces(&self) {
        let Ok(strategy) = self.kind("namespaces") else {
            return;
        };
        for ns in BUILTIN_NAMESPACES {
            loop {
                let mut obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                // System namespaces host what needs the host (log shippers, node agents).
                if *ns != "default" {
                    obj["metadata"]["labels"] = serde_json::json!({
                        super::kinds::pod_security::ENFORCE_LABEL: "privileged"
                    });
                }
                // The create's compare lets one member's attempt win; the others see it exists.
                match self.create_value(strategy, "", obj, 0).await {
                    Ok(_) | Err(ObjectError::AlreadyExists { .. }) => break,
                    Err(e) => {
                        tracing::debug!(namespace = ns, error = %e, "creating built-in namespace; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}
