//! Mutual TLS for every gRPC connection (rustls under tonic): a cluster CA signs each
//! holder's certificate — a control node, a node agent, a user — and both ends of every
//! connection present one and check the other's against the CA. A client without a
//! certificate, with one of another CA, or with an expired one is refused in the handshake.
//!
//! - [`authority`]: the cluster CA (made once, kept in each control node's data directory)
//!   and the certificates it issues.
//! - [`holder`]: who a certificate names (`control:1`, `node:web-1`, `user:alice`), read from
//!   a request's peer certificate.
//! - [`live`]: the rustls settings of both ends, following a holder's renewed certificate.
//! - [`token`]: join tokens, and joining with one.
//!
//! A server presents the name its role is known by ([`CONTROL_SERVER_NAME`],
//! [`NODE_SERVER_NAME`]) as well as its addresses, so a client checks that it reached a control
//! node (or an agent) of its cluster whatever address it dialled.

pub mod authority;
pub mod holder;
pub mod live;
pub mod token;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use live::{ClientTls, LiveCredentials, ServerTls};

/// The name every control node's certificate holds, which clients check.
pub const CONTROL_SERVER_NAME: &str = "skiff-control";
/// The name every node agent's certificate holds, which control nodes check.
pub const NODE_SERVER_NAME: &str = "skiff-node";

/// Why credentials could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A control node could not be reached, or its handshake failed.
    #[error("{addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key could not be made or parsed.
    #[error("{what}: {reason}")]
    Certificate {
        /// Which certificate or key.
        what: String,
        /// Why.
        reason: String,
    },
}

impl TlsError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn cert(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Certificate {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// What one holder needs for mutual TLS: the cluster CA's certificate it trusts, and its own
/// certificate and private key. All PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The cluster CA's certificate.
    pub ca: String,
    /// The holder's certificate, signed by the CA.
    pub cert: String,
    /// The holder's private key.
    pub key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Credentials")
            .field("holder", &holder::of_pem(&self.cert).ok())
            .finish_non_exhaustive()
    }
}

/// Write `bytes` to `path`, readable and writable by its owner only (a private key).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::private_file::write(path, bytes).map_err(TlsError::io(path))
}

/// The files of a holder's credentials in a folder: `ca.crt`, `NAME.crt`, `NAME.key`.
fn paths(dir: &Path, name: &str) -> [PathBuf; 3] {
    [
        dir.join("ca.crt"),
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    ]
}

impl Credentials {
    /// Read the credentials `name` from `dir`; `None` when there are none.
    pub fn load(dir: &Path, name: &str) -> Result<Option<Self>, TlsError> {
        let [ca, cert, key] = paths(dir, name);
        if !cert.exists() {
            return Ok(None);
        }
        let read = |p: &Path| std::fs::read_to_string(p).map_err(TlsError::io(p));
        Ok(Some(Self {
            ca: read(&ca)?,
            cert: read(&cert)?,
            key: read(&key)?,
        }))
    }

    /// Write them as `name` into `dir` (the key readable by its owner only).
    pub fn save(&self, dir: &Path, name: &str) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(TlsError::io(dir))?;
        let [ca, cert, key] = paths(dir, name);
        std::fs::write(&ca, &self.ca).map_err(TlsError::io(&ca))?;
        std::fs::write(&cert, &self.cert).map_err(TlsError::io(&cert))?;
        write_private(&key, self.key.as_bytes())
    }

    /// Who the certificate names.
    pub fn holder(&self) -> Result<holder::Holder, TlsError> {
        holder::of_pem(&self.cert)
    }

    /// The client side, fixed to these credentials (see [`LiveCredentials::client_tls`]).
    pub fn client_tls(&self, server_name: &str) -> Result<ClientTls, TlsError> {
        LiveCredentials::new(self.clone())?.client_tls(server_name)
    }
}

/// A new private key and a certificate signing request for `holder` (both PEM); the key stays
/// with the caller, the request goes to the cluster's `IssueCertificate`.
pub fn signing_request(holder: &holder::Holder) -> Result<(String, String), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::cert("key", e))?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, holder.to_string());
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| TlsError::cert("certificate signing request", e))?;
    let pem = csr
        .pem()
        .map_err(|e| TlsError::cert("certificate signing request", e))?;
    Ok((key.serialize_pem(), pem))
}
