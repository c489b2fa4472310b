//! The Auth API: `can-i` questions, answered by the same rules the gate applies, and
//! certificates signed by the cluster CA for users and nodes an admin names.

use skiff_proto::pb::auth_server::Auth;
use skiff_proto::pb::{self};
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;
use tonic::{Request, Response, Status};

use super::gate::Gate;
use super::request::ObjectAsk;
use super::rules::{self, Role, Verb};
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
        if caller.role != Role::Admin {
            return Err(Status::permission_denied(format!(
                "{} ({}) may not have certificates signed: only admins may",
                caller.subject, caller.role
            )));
        }
        let ca = self.ca.as_ref().ok_or_else(|| {
            Status::failed_precondition("this member holds no cluster CA: it serves plaintext")
        })?;
        let (holder, certificate_pem) = ca
            .sign_request(&request.get_ref().csr_pem)
            .map_err(|e| bad("csr_pem", e.to_string()))?;
        tracing::info!(holder = %holder, by = %caller.subject, "certificate issued");
        Ok(Response::new(pb::IssueCertificateResponse {
            certificate_pem,
            ca_pem: ca.cert.clone(),
        }))
    }
}
