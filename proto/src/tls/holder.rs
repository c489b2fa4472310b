//! Who a certificate names. The subject's common name says it: `control:ID` for a control
//! node, `node:NAME` for a node agent, `user:NAME` for a person or tool. Only the cluster CA
//! issues certificates, so a name read from a verified peer certificate is who called.

use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

/// The holder of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A control node, by member id.
    Control(u64),
    /// A node agent, by node name.
    Node(String),
    /// A user.
    User(String),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Control(id) => write!(f, "control:{id}"),
            Self::Node(name) => write!(f, "node:{name}"),
            Self::User(name) => write!(f, "user:{name}"),
        }
    }
}

impl std::str::FromStr for Holder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("control", id)) => id
                .parse()
                .map(Self::Control)
                .map_err(|_| format!("{s:?}: a control node's id is a number")),
            Some(("node", name)) if !name.is_empty() => Ok(Self::Node(name.to_string())),
            Some(("user", name)) if !name.is_empty() => Ok(Self::User(name.to_string())),
            _ => Err(format!("{s:?} is not control:ID, node:NAME or user:NAME")),
        }
    }
}

/// The group that makes a user an admin whatever the User objects say, as Kubernetes'
/// `system:masters`: held by the admin credentials a cluster starts with, so its creator is
/// never locked out by a User object deleted or not yet written.
pub const ADMIN_GROUP: &str = "skiff:admins";

/// The holder a DER certificate names.
pub fn of_der(der: &[u8]) -> Result<Holder, TlsError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::cert("certificate", e))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| TlsError::cert("certificate", "no common name"))?;
    cn.parse().map_err(|e| TlsError::cert("certificate", e))
}

/// The groups a DER certificate's subject names (its organisation attributes).
pub fn groups_of_der(der: &[u8]) -> Result<Vec<String>, TlsError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::cert("certificate", e))?;
    Ok(cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect())
}

/// The groups a PEM certificate's subject names.
pub fn groups_of_pem(pem: &str) -> Result<Vec<String>, TlsError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| TlsError::cert("certificate", e))?;
    groups_of_der(&pem.contents)
}

/// The holder a PEM certificate names.
pub fn of_pem(pem: &str) -> Result<Holder, TlsError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| TlsError::cert("certificate", e))?;
    of_der(&pem.contents)
}

/// The holder of a request's verified client certificate; `None` on a connection without one
/// (a plaintext server).
pub fn of_request<T>(request: &tonic::Request<T>) -> Option<Holder> {
    let certs = request.peer_certs()?;
    of_der(certs.first()?.as_ref()).ok()
}

/// An interceptor that lets through only control nodes' calls when `secured` (a server with
/// mutual TLS); `service` names what is guarded in the refusal. Without TLS it lets all through.
pub fn only_control_nodes(
    secured: bool,
    service: &'static str,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request| {
        if !secured {
            return Ok(request);
        }
        match of_request(&request) {
            Some(Holder::Control(_)) => Ok(request),
            Some(other) => Err(tonic::Status::permission_denied(format!(
                "{other} may not call {service}; only control nodes may"
            ))),
            None => Err(tonic::Status::unauthenticated(format!(
                "{service} needs a control node's certificate"
            ))),
        }
    }
}

/// When the PEM certificate expires, in seconds since the epoch.
pub fn not_after(pem: &str) -> Result<i64, TlsError> {
    Ok(validity(pem)?.1)
}

/// When the PEM certificate becomes valid and when it expires, in seconds since the epoch.
pub fn validity(pem: &str) -> Result<(i64, i64), TlsError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| TlsError::cert("certificate", e))?;
    let (_, cert) =
        X509Certificate::from_der(&pem.contents).map_err(|e| TlsError::cert("certificate", e))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        for h in [
            Holder::Control(3),
            Holder::Node("web-1".into()),
            Holder::User("alice".into()),
        ] {
            assert_eq!(h.to_string().parse::<Holder>(), Ok(h));
        }
        assert!("control:x".parse::<Holder>().is_err());
        assert!("node:".parse::<Holder>().is_err());
        assert!("admin".parse::<Holder>().is_err());
    }
}
