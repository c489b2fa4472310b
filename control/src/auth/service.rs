//! The Auth API: `can-i` questions, answered by the same rules the gate applies, and
//! certificates signed by the cluster CA for users and nodes an admin names.

use skiff_proto::pb::auth_server::Auth;
use skiff_proto::pb::{self};
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;
use tonic::{Request, Response, Status};

use serde_json::Value;
use skiff_proto::tls::token;

use super::gate::Gate;
use super::request::ObjectAsk;
use super::rules::{self, Role, Verb};
use crate::objects::kinds::join_token::expires_at;
use crate::objects::ObjectError;

/// Serves the Auth API of one member.
pub struct AuthService {
    gate: Gate,
    ca: Option<ClusterCa>,
}

impl AuthService {
    /// Answer with `gate`'s rules; sign with `ca` (a member without one signs nothing).
    pub fn new(gate: Gate, ca: Option<ClusterCa>) -> Self {
        Self { gate, ca }
    }
}

fn bad(field: &str, reason: impl Into<String>) -> Status {
    ObjectError::bad(field, reason).into()
}

impl AuthService {
    /// The role (`node` or `control`) of the token `id` when `secret` is its secret and it is
    /// current; read linearizably, so a revoked token is refused at once.
    async fn token_role(&self, id: &str, secret: &str) -> Result<String, Status> {
        let refused = |why: String| Status::permission_denied(format!("join token {id}: {why}"));
        let bytes = match self.gate.store().get("jointokens", "", id, false).await {
            Ok((bytes, _)) => bytes,
            Err(ObjectError::NotFound { .. }) => {
                return Err(refused(
                    "not known to this cluster (revoked, or never made)".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let t: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("join token {id}: {e}")))?;
        let field = |f: &str| {
            t.pointer(f)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if !token::secret_matches(secret, &field("/spec/secretHash")) {
            return Err(refused("the secret is wrong".into()));
        }
        let expires = field("/spec/expires");
        if let Some(at) = expires_at(&expires) {
            if at <= time::OffsetDateTime::now_utc().unix_timestamp() {
                return Err(refused(format!("expired at {expires}")));
            }
        }
        Ok(field("/spec/role"))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn can_i(
        &self,
        request: Request<pb::CanIRequest>,
    ) -> Result<Response<pb::CanIResponse>, Status> {
        let caller = self.gate.authenticated(&request).await?;
        let r = request.into_inner();
        let subject = if r.as_user.is_empty() {
            caller
        } else {
            if caller.role != Role::Admin {
                return Err(Status::permission_denied(format!(
                    "{} ({}) may not ask for another user: only admins may",
                    caller.subject, caller.role
                )));
            }
            let holder = if r.as_user.contains(':') {
                r.as_user.parse().map_err(|e: String| bad("as_user", e))?
            } else {
                Holder::User(r.as_user.clone())
            };
            self.gate.callers().of_holder(&holder, false).await?
        };
        let verb: Verb = r.verb.parse().map_err(|e: String| bad("verb", e))?;
        let kind = if r.resource.is_empty() {
            None
        } else {
            Some(
                self.gate
                    .registry()
                    .resolve(&r.resource)
                    .map_err(Status::from)?
                    .info(),
            )
        };
        let coarse = rules::decide(subject.role, verb, kind);
        let (allowed, rule) = match kind {
            Some(k) if coarse.allowed && subject.role == Role::Node => {
                let ask =
                    ObjectAsk::new(self.gate.registry(), verb, k.plural, &r.namespace, &r.name);
                match self.gate.decide(&subject, ask).await {
                    Ok(()) => (true, coarse.rule.to_string()),
                    Err(refused) => (false, refused.message().to_string()),
                }
            }
            _ => (coarse.allowed, coarse.rule.to_string()),
        };
        Ok(Response::new(pb::CanIResponse {
            allowed,
            rule,
            subject: subject.subject,
            role: subject.role.to_string(),
        }))
    }

    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        let caller = self.gate.authenticated(&request).await?;
        let ca = self.ca.as_ref().ok_or_else(|| {
            Status::failed_precondition("this member holds no cluster CA: it serves plaintext")
        })?;
        // Anyone may renew their own certificate (an agent's, before it expires); only admins
        // may have one signed for somebody else.
        let renewal = ca
            .requested_holder(&request.get_ref().csr_pem)
            .is_ok_and(|h| h.to_string() == caller.subject);
        if caller.role != Role::Admin && !renewal {
            return Err(Status::permission_denied(format!(
                "{} ({}) may not have certificates signed but its own: only admins may",
                caller.subject, caller.role
            )));
        }
        let (holder, certificate_pem) = ca
            .sign_request(&request.get_ref().csr_pem)
            .map_err(|e| bad("csr_pem", e.to_string()))?;
        tracing::info!(holder = %holder, by = %caller.subject, "certificate issued");
        Ok(Response::new(pb::IssueCertificateResponse {
            certificate_pem,
            ca_pem: ca.cert.clone(),
        }))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let ca = self.ca.as_ref().ok_or_else(|| {
            Status::failed_precondition("this member holds no cluster CA: it serves plaintext")
        })?;
        let r = request.into_inner();
        let role = self.token_role(&r.token_id, &r.token_secret).await?;
        let holder = ca
            .requested_holder(&r.csr_pem)
            .map_err(|e| bad("csr_pem", e.to_string()))?;
        let cluster_id = self.gate.store().node().config().cluster_id.clone();
        let response = match (&holder, role.as_str()) {
            (Holder::Control(_), "control") => pb::JoinResponse {
                certificate_pem: String::new(),
                ca_pem: ca.cert.clone(),
                ca_key_pem: ca.key.clone(),
                cluster_id,
            },
            (Holder::Control(_), _) => {
                return Err(Status::permission_denied(format!(
                    "join token {}: a {role} token cannot join a control member",
                    r.token_id
                )))
            }
            (Holder::Node(_), "node" | "control") => {
                let (_, certificate_pem) = ca
                    .sign_request(&r.csr_pem)
                    .map_err(|e| bad("csr_pem", e.to_string()))?;
                pb::JoinResponse {
                    certificate_pem,
                    ca_pem: ca.cert.clone(),
                    ca_key_pem: String::new(),
                    cluster_id,
                }
            }
            _ => {
                return Err(bad(
                    "csr_pem",
                    format!("{holder}: a join names node:NAME or control:ID"),
                ))
            }
        };
        tracing::info!(holder = %holder, token = %r.token_id, "joined with a token");
        Ok(Response::new(response))
    }
}
