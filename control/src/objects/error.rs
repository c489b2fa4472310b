//! Errors of the object API, and how they travel as gRPC status codes.

use skiff_raft::StoreError;
use tonic::Status;

/// One invalid field: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, as `spec.template.spec.containers[0].name`.
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

impl FieldError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Errors of object operations.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object (or request) is invalid; every problem found is listed.
    #[error("{kind} {name:?} is invalid: {}", join(.errors))]
    Invalid {
        /// The object's kind.
        kind: String,
        /// The object's name (may be empty).
        name: String,
        /// What is wrong.
        errors: Vec<FieldError>,
    },
    /// A request field is invalid (not the object itself).
    #[error("{0}")]
    BadRequest(FieldError),
    /// No such object.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// Resource name (`pods`).
        resource: String,
        /// Object name.
        name: String,
    },
    /// The object exists already.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// Resource name.
        resource: String,
        /// Object name.
        name: String,
    },
    /// The object changed since the caller read it.
    #[error("conflict: {resource} {name:?} has been modified (resourceVersion {given} is not the current {current}); read it again and retry")]
    Conflict {
        /// Resource name.
        resource: String,
        /// Object name.
        name: String,
        /// The resourceVersion the caller sent.
        given: u64,
        /// The current one.
        current: u64,
    },
    /// The object kept changing under every attempt of a write that did not pin a
    /// resourceVersion.
    #[error("conflict: {resource} {name:?} kept changing; the write gave up after {attempts} attempts; retry")]
    Contended {
        /// Resource name.
        resource: String,
        /// Object name.
        name: String,
        /// Attempts made.
        attempts: u64,
    },
    /// A precondition (uid) does not hold.
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// The namespace does not exist.
    #[error("metadata.namespace: namespace {0:?} not found")]
    NamespaceMissing(String),
    /// The namespace is being deleted.
    #[error("metadata.namespace: namespace {0:?} is being terminated; no new objects may be created in it")]
    NamespaceTerminating(String),
    /// The operation is not allowed on this object.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A policy refuses the object (Pod Security): PERMISSION_DENIED, as Kubernetes' 403.
    #[error("{0}")]
    PolicyDenied(String),
    /// An eviction a disruption budget does not allow now: RESOURCE_EXHAUSTED, as
    /// Kubernetes' 429 (retry later).
    #[error("{0}")]
    DisruptionBudget(String),
    /// A stored object could not be read back.
    #[error("stored object {key} is corrupt: {reason}")]
    Corrupt {
        /// Its store key.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The watch start is older than the retained history; the client must re-list.
    #[error(
        "EXPIRED: resourceVersion {requested} is too old; history is retained after {compacted}"
    )]
    Expired {
        /// The first revision asked for.
        requested: u64,
        /// The newest compacted revision.
        compacted: u64,
    },
    /// A watcher fell further behind than its queue holds and was closed; the client must
    /// list again (as when its history is gone).
    #[error(
        "EXPIRED: this watch fell behind by more than {events} events or {mib} MiB and was closed after revision {revision}; list again"
    )]
    WatchTooSlow {
        /// The last revision it was given.
        revision: u64,
        /// The queue's bound in events.
        events: usize,
        /// The queue's bound in MiB of objects.
        mib: usize,
    },
    /// The store failed or has no leader.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ObjectError {
    /// A bad request field.
    pub fn bad(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadRequest(FieldError::new(field, reason))
    }
}

/// Result of object operations.
pub type Result<T, E = ObjectError> = std::result::Result<T, E>;

impl From<ObjectError> for Status {
    fn from(e: ObjectError) -> Self {
        let msg = e.to_string();
        match e {
            ObjectError::Invalid { .. } | ObjectError::BadRequest(_) => {
                Status::invalid_argument(msg)
            }
            ObjectError::NotFound { .. } | ObjectError::NamespaceMissing(_) => {
                Status::not_found(msg)
            }
            ObjectError::AlreadyExists { .. } => Status::already_exists(msg),
            ObjectError::Conflict { .. }
            | ObjectError::Contended { .. }
            | ObjectError::Precondition(_) => Status::aborted(msg),
            ObjectError::NamespaceTerminating(_) | ObjectError::Forbidden(_) => {
                Status::failed_precondition(msg)
            }
            ObjectError::PolicyDenied(_) => Status::permission_denied(msg),
            ObjectError::DisruptionBudget(_) => Status::resource_exhausted(msg),
            ObjectError::Corrupt { .. } => Status::internal(msg),
            ObjectError::Expired {
                requested,
                compacted,
            } => skiff_proto::status::expired(requested, compacted),
            ObjectError::WatchTooSlow { .. } => Status::out_of_range(msg),
            ObjectError::Store(s) => skiff_raft::grpc::convert::store_error(s),
        }
    }
}
