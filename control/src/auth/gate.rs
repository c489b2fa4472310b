//! The one check every request to a control node passes: who calls ([`Callers`]), whether
//! its role allows the request ([`rules::decide`]), and for node agents whether the object is
//! their own ([`node_restriction`]). The guarded services call it before their handler;
//! a refusal is PERMISSION_DENIED naming the caller, the verb and the kind, and the handler
//! never runs, so nothing changes.

use tonic::{Request, Status};

use super::caller::{Caller, Callers};
use super::limits::{LimitSettings, Limits};
use super::node_restriction;
use super::request::ObjectAsk;
use super::rules::{self, Role, Verb};
use crate::objects::kinds::Registry;
use crate::objects::ObjectStore;

/// The gate of one member.
#[derive(Clone)]
pub struct Gate {
    callers: Callers,
    store: ObjectStore,
    limits: Limits,
}

impl Gate {
    /// The gate of the member serving `store`; `secured` when it serves mutual TLS (a
    /// plaintext member lets everyone through, as it cannot tell callers apart).
    pub fn new(store: ObjectStore, secured: bool) -> Self {
        Self {
            callers: Callers::new(store.clone(), secured),
            store,
            limits: Limits::new(LimitSettings::default()),
        }
    }

    /// The same gate with `settings` for its per-caller limits.
    pub fn with_limits(mut self, settings: LimitSettings) -> Self {
        self.limits = Limits::new(settings);
        self
    }

    /// The per-caller limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The caller of `request`, within its request rate.
    async fn admitted<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.callers.of(request).await?;
        self.limits.admit(&caller)?;
        Ok(caller)
    }

    /// The kinds served, to resolve what a request names.
    pub fn registry(&self) -> &Registry {
        self.store.registry()
    }

    /// The store requests are decided on.
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// Who calls.
    pub fn callers(&self) -> &Callers {
        &self.callers
    }

    /// Any caller with a valid certificate (a member's status, the member list).
    pub async fn authenticated<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.admitted(request).await
    }

    /// A call that names no object: the raw kv API, membership, image imports.
    pub async fn call<T>(&self, request: &Request<T>, verb: Verb) -> Result<Caller, Status> {
        let caller = self.admitted(request).await?;
        let d = rules::decide(caller.role, verb, None);
        if d.allowed {
            Ok(caller)
        } else {
            Err(Status::permission_denied(format!(
                "{} ({}) may not use {verb}: {}",
                caller.subject, caller.role, d.rule
            )))
        }
    }

    /// A request on objects; `ask` describes it, and is built only when the caller's role
    /// is not enough on its own (an admin's request, the bulk of the load, skips it: an
    /// apply's manifest is then parsed once, by the store).
    pub async fn object<'a, T>(
        &self,
        request: &'a Request<T>,
        ask: impl FnOnce() -> ObjectAsk<'a>,
    ) -> Result<Caller, Status> {
        let caller = self.admitted(request).await?;
        if caller.role != Role::Admin {
            self.decide(&caller, ask()).await?;
        }
        Ok(caller)
    }

    /// Whether `caller` may do `ask`; the refusal names who, what and why.
    pub async fn decide(&self, caller: &Caller, mut ask: ObjectAsk<'_>) -> Result<(), Status> {
        let denied = |ask: &ObjectAsk<'_>, why: &str| {
            Status::permission_denied(format!(
                "{} ({}) may not {} {}: {why}",
                caller.subject,
                caller.role,
                ask.verb,
                ask.describe()
            ))
        };
        if caller.role == Role::Admin {
            return Ok(());
        }
        let d = rules::decide(caller.role, ask.verb, ask.kind);
        if !d.allowed {
            return Err(denied(&ask, d.rule));
        }
        if let (Role::Node, Some(node)) = (caller.role, &caller.node) {
            ask.named_by_body();
            node_restriction::check(&self.store, node, &ask)
                .await
                .map_err(|why| denied(&ask, &why))?;
        }
        Ok(())
    }
}
