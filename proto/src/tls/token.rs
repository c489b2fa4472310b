//! Join tokens, as k3s' (`K10<ca-hash>::...`) and kubeadm's (`id.secret`): `K10<CA hash>::<id>.<secret>`.
//! The CA hash lets a newcomer that holds nothing yet pin the cluster's CA: it takes the
//! certificate chain a control node presents, keeps the CA whose SHA-256 is the token's, and
//! accepts the server only if that CA signed it. The id names the token in the cluster (it can
//! be listed and revoked); the secret proves the newcomer was given it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as RustlsError, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

use super::{TlsError, CONTROL_SERVER_NAME};

const PREFIX: &str = "K10";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA's certificate (DER), hex.
    pub ca_hash: String,
    /// The token's id: six of `[a-z0-9]`.
    pub id: String,
    /// The secret: sixteen of `[a-z0-9]`.
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

fn of_alphabet(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl std::str::FromStr for JoinToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = "a join token is K10<64 hex digits>::<6 of a-z0-9>.<16 of a-z0-9>";
        let rest = s.trim().strip_prefix(PREFIX).ok_or(shape)?;
        let (hash, cred) = rest.split_once("::").ok_or(shape)?;
        let (id, secret) = cred.split_once('.').ok_or(shape)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{shape}: the CA hash is not 64 hex digits"));
        }
        if !of_alphabet(id, ID_LEN) || !of_alphabet(secret, SECRET_LEN) {
            return Err(shape.to_string());
        }
        Ok(Self {
            ca_hash: hash.to_ascii_lowercase(),
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }
}

fn random(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

impl JoinToken {
    /// A new token for the cluster whose CA certificate is `ca_pem`.
    pub fn generate(ca_pem: &str) -> Result<Self, TlsError> {
        Ok(Self {
            ca_hash: ca_hash(ca_pem)?,
            id: random(ID_LEN),
            secret: random(SECRET_LEN),
        })
    }
}

/// SHA-256 of a PEM certificate's DER, hex.
pub fn ca_hash(ca_pem: &str) -> Result<String, TlsError> {
    let pem = pem::parse(ca_pem).map_err(|e| TlsError::cert("CA certificate", e))?;
    Ok(hex::encode(Sha256::digest(pem.contents())))
}

/// SHA-256 of a token's secret, hex: what the cluster keeps instead of the secret.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` is the one `hash` was made from (in time independent of where they differ).
pub fn secret_matches(secret: &str, hash: &str) -> bool {
    let got = secret_hash(secret);
    got.len() == hash.len()
        && got
            .bytes()
            .zip(hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Accepts a server whose chain holds the CA of the expected hash, and which that CA signed.
#[derive(Debug)]
struct PinnedCa {
    want: String,
    found: Mutex<Option<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let ca = intermediates
            .iter()
            .find(|c| hex::encode(Sha256::digest(c.as_ref())) == self.want)
            .ok_or_else(|| {
                RustlsError::General(
                    "the server presents no CA with the token's hash: not this token's cluster"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| RustlsError::General(e.to_string()))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| RustlsError::General(e.to_string()))?;
        let verified = verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)?;
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca.clone().into_owned());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The cluster CA (PEM) of the control node at `addr`, pinned by `token`'s hash: the node must
/// present that CA in its chain and a certificate it signed.
pub async fn fetch_ca(addr: &str, token: &JoinToken) -> Result<String, TlsError> {
    let provider = super::live::provider();
    let verifier = Arc::new(PinnedCa {
        want: token.ca_hash.clone(),
        found: Mutex::new(None),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::cert("TLS", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let host = crate::transport::host_port(addr);
    let io = |e: std::io::Error| TlsError::Connect {
        addr: host.into(),
        source: e,
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(host).await.map_err(io)?;
        let name = ServerName::try_from(CONTROL_SERVER_NAME)
            .map_err(|e| TlsError::cert("server name", e))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(io)
    };
    let stream = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| {
            io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no TLS handshake within 10s",
            ))
        })??;
    drop(stream);
    let found = verifier
        .found
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| TlsError::cert("CA", "the server's CA was not seen"))?;
    Ok(pem::encode(&pem::Pem::new(
        "CERTIFICATE",
        found.as_ref().to_vec(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_bad_ones_say_their_shape() {
        let ca = super::super::authority::ClusterCa::generate("t").expect("CA");
        let t = JoinToken::generate(&ca.cert).expect("token");
        assert_eq!(t.to_string().parse::<JoinToken>(), Ok(t.clone()));
        assert!(t.to_string().starts_with("K10"));
        assert!(!format!("{t:?}").contains(&t.secret));
        for bad in [
            "",
            "K10abc::abcdef.0123456789abcdef",
            "abcdef.0123456789abcdef",
        ] {
            assert!(
                bad.parse::<JoinToken>().unwrap_err().contains("K10"),
                "{bad}"
            );
        }
        assert!(secret_matches(&t.secret, &secret_hash(&t.secret)));
        assert!(!secret_matches("x", &secret_hash(&t.secret)));
    }
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The CA could not be fetched or pinned, or a certificate could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The channel could not be set up.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    /// The control node refused.
    #[error("{addr}: {}", .status.message())]
    Refused {
        /// Which control node.
        addr: String,
        /// Its answer.
        status: tonic::Status,
    },
}

/// Join the cluster at `addr` with `token`, asking for the holder `csr_pem` names: pin the CA
/// by the token's hash, then call `Auth.Join` over TLS verified against it.
pub async fn join(
    addr: &str,
    token: &JoinToken,
    csr_pem: &str,
) -> Result<crate::pb::JoinResponse, JoinError> {
    let ca = fetch_ca(addr, token).await?;
    let tls = super::ClientTls::without_certificate(&ca, CONTROL_SERVER_NAME)?;
    let channel = crate::transport::channel(addr, Some(&tls))?;
    crate::pb::auth_client::AuthClient::new(channel)
        .join(crate::pb::JoinRequest {
            token_id: token.id.clone(),
            token_secret: token.secret.clone(),
            csr_pem: csr_pem.to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| JoinError::Refused {
            addr: addr.to_string(),
            status,
        })
}
