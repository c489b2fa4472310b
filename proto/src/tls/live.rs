//! rustls configurations for both ends of a connection, built from credentials that can be
//! replaced while the servers and channels made from them run: a renewed certificate is what
//! the next handshake presents, so a process renews its certificate without a restart
//! (tonic's own TLS settings are fixed once a server or channel is built).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use time::OffsetDateTime;

use super::{Credentials, TlsError};

/// The crypto of every connection: ring, as tonic's `tls-ring`. It offers no post-quantum key
/// exchange, and neither do the peers.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make ring the process's default crypto for rustls, for libraries that build their TLS
/// settings from it (the registry client); once is enough, and later calls change nothing.
pub fn install_process_provider() {
    if CryptoProvider::get_default().is_none() {
        // Another thread may have installed it meanwhile: either way one is in place.
        let _ = CryptoProvider::install_default(provider().as_ref().clone());
    }
}

fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = ::pem::parse_many(pem)
        .map_err(|e| TlsError::cert(what, e))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(TlsError::cert(what, "no certificate in the PEM text"));
    }
    Ok(certs)
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem, "CA")? {
        roots.add(cert).map_err(|e| TlsError::cert("CA", e))?;
    }
    Ok(Arc::new(roots))
}

/// The certificate chain (the holder's, then the CA's: a newcomer holding only a join token
/// pins the CA from it) and signing key of `creds`.
fn certified_key(creds: &Credentials) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut chain = certificates(&creds.cert, "certificate")?;
    chain.extend(certificates(&creds.ca, "CA")?);
    let key = ::pem::parse(&creds.key).map_err(|e| TlsError::cert("private key", e))?;
    if key.tag() != "PRIVATE KEY" {
        return Err(TlsError::cert(
            "private key",
            format!("a PKCS#8 PRIVATE KEY is needed, not {}", key.tag()),
        ));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.into_contents()));
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::cert("private key", e))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// How a client connects: what it trusts, what it presents, and the name the server must hold.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trust `ca_pem` and present no certificate (a newcomer joining with a token, or a test
    /// of what a stranger gets).
    pub fn without_certificate(ca_pem: &str, server_name: &str) -> Result<Self, TlsError> {
        Self::build(roots(ca_pem)?, None, server_name)
    }

    fn build(
        roots: Arc<RootCertStore>,
        presents: Option<Arc<dyn ResolvesClientCert>>,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::cert("TLS", e))?
            .with_root_certificates(roots);
        let mut config = match presents {
            Some(resolver) => builder.with_client_cert_resolver(resolver),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::cert("server name", e))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// How a server accepts: what it presents, and that clients must present a certificate of
/// the cluster CA (or may come without one, for the calls that allow it).
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

struct Current {
    credentials: Credentials,
    key: Arc<CertifiedKey>,
}

struct Shared {
    ca: String,
    roots: Arc<RootCertStore>,
    current: RwLock<Current>,
}

/// A holder's credentials, replaceable while in use (see the module's doc). Clones share them.
#[derive(Clone)]
pub struct LiveCredentials {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LiveCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LiveCredentials")
            .field(&self.current())
            .finish()
    }
}

impl LiveCredentials {
    /// Credentials to present until replaced.
    pub fn new(credentials: Credentials) -> Result<Self, TlsError> {
        let key = certified_key(&credentials)?;
        Ok(Self {
            shared: Arc::new(Shared {
                ca: credentials.ca.clone(),
                roots: roots(&credentials.ca)?,
                current: RwLock::new(Current { credentials, key }),
            }),
        })
    }

    fn key(&self) -> Arc<CertifiedKey> {
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        current.key.clone()
    }

    /// What is presented now.
    pub fn current(&self) -> Credentials {
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        current.credentials.clone()
    }

    /// Present `credentials` from the next handshake on. They must be of the same CA: what a
    /// process trusts does not change under it.
    pub fn replace(&self, credentials: Credentials) -> Result<(), TlsError> {
        if credentials.ca != self.shared.ca {
            return Err(TlsError::cert(
                "renewed certificate",
                "signed by another CA than the one this process trusts",
            ));
        }
        let key = certified_key(&credentials)?;
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *current = Current { credentials, key };
        Ok(())
    }

    /// The client side: present the current certificate, trust only the cluster CA, and
    /// expect the server to hold `server_name`.
    pub fn client_tls(&self, server_name: &str) -> Result<ClientTls, TlsError> {
        ClientTls::build(
            self.shared.roots.clone(),
            Some(Arc::new(Presenter(self.clone()))),
            server_name,
        )
    }

    /// The server side: present the current certificate and require one signed by the
    /// cluster CA from every client, or, with `anonymous_clients`, let a client without one
    /// through the handshake (its calls are refused but the one that allows it).
    pub fn server_tls(&self, anonymous_clients: bool) -> Result<ServerTls, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.shared.roots.clone(), provider());
        let verifier = if anonymous_clients {
            verifier.allow_unauthenticated()
        } else {
            verifier
        }
        .build()
        .map_err(|e| TlsError::cert("CA", e))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::cert("TLS", e))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Presenter(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }
}

/// Hands each handshake the certificate current at that moment.
#[derive(Debug)]
struct Presenter(LiveCredentials);

impl ResolvesServerCert for Presenter {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.key())
    }
}

impl ResolvesClientCert for Presenter {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Whether the PEM certificate is due for renewal: when a third of its validity is left, as
/// k3s renews within the last 90 days of a year.
pub fn renewal_due(cert_pem: &str) -> Result<bool, TlsError> {
    let (not_before, not_after) = super::holder::validity(cert_pem)?;
    let left = not_after - OffsetDateTime::now_utc().unix_timestamp();
    Ok(left < (not_after - not_before) / 3)
}

/// Keep `live` renewed: check now and then (a twelfth of the certificate's validity, at most
/// hourly), and when it is due, present what `renew` returns. A failed renewal is retried at
/// the next check; the current certificate stays in use until then.
pub async fn keep_renewed<F, Fut, E>(live: LiveCredentials, mut renew: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Credentials, E>>,
    E: std::fmt::Display,
{
    loop {
        let current = live.current();
        let holder = current.holder().map(|h| h.to_string()).unwrap_or_default();
        let span = super::holder::validity(&current.cert)
            .map(|(from, to)| Duration::from_secs((to - from).max(0) as u64))
            .unwrap_or(Duration::from_secs(3600));
        tokio::time::sleep((span / 12).clamp(Duration::from_secs(1), Duration::from_secs(3600)))
            .await;
        match renewal_due(&current.cert) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(%holder, error = %e, "cannot read the current certificate's validity");
                continue;
            }
        }
        match renew().await {
            Ok(fresh) => match live.replace(fresh) {
                Ok(()) => tracing::info!(%holder, "certificate renewed"),
                Err(e) => tracing::warn!(%holder, error = %e, "renewed certificate refused"),
            },
            Err(e) => tracing::warn!(%holder, error = %e, "certificate renewal failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::authority::ClusterCa;
    use super::super::holder::Holder;
    use super::*;

    #[test]
    fn replacing_checks_the_ca_and_changes_what_is_presented() {
        let ca = ClusterCa::generate("live").expect("CA");
        let first = ca.issue(&Holder::Node("n1".into()), &[]).expect("issue");
        let live = LiveCredentials::new(first.clone()).expect("live");
        let before = live.key();
        let second = ca.issue(&Holder::Node("n1".into()), &[]).expect("issue");
        live.replace(second.clone()).expect("same CA");
        assert_eq!(live.current(), second);
        assert_ne!(before.cert[0], live.key().cert[0]);

        let other = ClusterCa::generate("other").expect("CA");
        let stranger = other.issue(&Holder::Node("n1".into()), &[]).expect("issue");
        assert!(live.replace(stranger).is_err());
        assert_eq!(
            live.current(),
            second,
            "a refused replacement changes nothing"
        );
    }

    #[test]
    fn renewal_is_due_in_the_last_third() {
        let ca = ClusterCa::generate("live").expect("CA");
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let holder = Holder::Node("n1".into());
        let at = |from, to| {
            let c = ca
                .issue_between(&holder, &[], &[], from, to)
                .expect("issue");
            renewal_due(&c.cert).expect("readable")
        };
        assert!(!at(now - day, now + day * 299), "fresh");
        assert!(at(now - day * 250, now + day * 100), "in its last third");
        assert!(at(now - day * 2, now - day), "expired");
    }
}
