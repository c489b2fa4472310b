//! Who is calling: the holder its verified certificate names, and the role that holder has.
//! Control nodes are admins; node agents hold the node role; a user holds the role of the
//! User object of its name, or admin when its certificate is in the admin group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use skiff_proto::tls::holder::{self, Holder, ADMIN_GROUP};
use tonic::{Request, Status};

use super::rules::Role;
use crate::objects::{ObjectError, ObjectStore};

/// A caller, authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who: `user:alice`, `node:web-1`, `control:2`; `anonymous` on a plaintext server.
    pub subject: String,
    /// What it may do.
    pub role: Role,
    /// The node a node agent speaks for.
    pub node: Option<String>,
}

impl Caller {
    /// Everyone is an admin on a plaintext server: there is nobody to tell apart.
    fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            role: Role::Admin,
            node: None,
        }
    }
}

/// Bound on remembered certificates; a cluster has far fewer holders than this.
const MAX_REMEMBERED: usize = 4096;

/// Certificates seen, by their bytes: the holder and whether it is in the admin group.
type Identities = Arc<Mutex<HashMap<Vec<u8>, (Holder, bool)>>>;

/// Finds out who calls. Parsing a certificate costs more than the rest of a small request's
/// authorisation, so each certificate's identity is remembered by its bytes.
#[derive(Clone)]
pub struct Callers {
    store: ObjectStore,
    secured: bool,
    identities: Identities,
}

impl Callers {
    /// Callers of a member whose users are in `store`; without `secured` (a plaintext
    /// server) every caller is an admin.
    pub fn new(store: ObjectStore, secured: bool) -> Self {
        Self {
            store,
            secured,
            identities: Arc::default(),
        }
    }

    /// The caller of `request`.
    pub async fn of<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if !self.secured {
            return Ok(Caller::anonymous());
        }
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let der = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?
            .as_ref();
        let (holder, admin) = self.identity(der)?;
        self.of_holder(&holder, admin).await
    }

    fn identity(&self, der: &[u8]) -> Result<(Holder, bool), Status> {
        let mut known = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = known.get(der) {
            return Ok(id.clone());
        }
        let holder = holder::of_der(der).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let admin = holder::groups_of_der(der)
            .map_err(|e| Status::unauthenticated(e.to_string()))?
            .iter()
            .any(|g| g == ADMIN_GROUP);
        if known.len() >= MAX_REMEMBERED {
            known.clear();
        }
        known.insert(der.to_vec(), (holder.clone(), admin));
        Ok((holder, admin))
    }

    /// The caller `holder` is (`admin`: its certificate is in the admin group).
    pub async fn of_holder(&self, holder: &Holder, admin: bool) -> Result<Caller, Status> {
        let subject = holder.to_string();
        Ok(match holder {
            Holder::Control(_) => Caller {
                subject,
                role: Role::Admin,
                node: None,
            },
            Holder::Node(name) => Caller {
                subject,
                role: Role::Node,
                node: Some(name.clone()),
            },
            Holder::User(_) if admin => Caller {
                subject,
                role: Role::Admin,
                node: None,
            },
            Holder::User(name) => Caller {
                role: self.user_role(name).await?,
                subject,
                node: None,
            },
        })
    }

    /// The role of the User named `name`, read from this member's state.
    pub async fn user_role(&self, name: &str) -> Result<Role, Status> {
        let unknown = || {
            Status::permission_denied(format!(
                "user:{name} is not a user of this cluster (no User object {name:?})"
            ))
        };
        let (bytes, _) = match self.store.get("users", "", name, true).await {
            Ok(found) => found,
            Err(ObjectError::NotFound { .. }) => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        let user: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("user {name}: {e}")))?;
        user.pointer("/spec/role")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| Status::internal(format!("user {name}: no valid spec.role")))
    }
}
