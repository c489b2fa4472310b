//! The cluster CA: made once when a cluster is made, kept (certificate and key) in each control
//! node's data directory, and the one signer of every holder's certificate.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::holder::Holder;
use super::{Credentials, TlsError, CONTROL_SERVER_NAME, NODE_SERVER_NAME};

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a holder's certificate is valid, as k3s' are.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The cluster CA: its certificate and key, PEM, and how long what it issues is valid.
#[derive(Clone)]
pub struct ClusterCa {
    /// The certificate.
    pub cert: String,
    /// The private key.
    pub key: String,
    validity: Duration,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::cert(what, e)
}

impl ClusterCa {
    /// A new CA named after the cluster.
    pub fn generate(cluster_id: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(cert_err("CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("skiff-ca@{cluster_id}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).map_err(cert_err("CA"))?;
        Ok(Self::from_pem(cert.pem(), key.serialize_pem()))
    }

    /// The CA of this certificate and key (PEM), issuing for [`CERT_VALIDITY`].
    pub fn from_pem(cert: String, key: String) -> Self {
        Self {
            cert,
            key,
            validity: CERT_VALIDITY,
        }
    }

    /// Issue certificates valid for `validity` (short ones prove renewal in tests).
    pub fn with_validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// How far back what it issues is valid from, for clocks a little behind: five minutes,
    /// or a tenth of a short validity.
    fn backdating(&self) -> time::Duration {
        time::Duration::try_from(self.validity / 10)
            .unwrap_or(time::Duration::minutes(5))
            .min(time::Duration::minutes(5))
    }

    /// How long what it issues is valid.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// The CA kept in `dir` (`ca.crt`, `ca.key`), if there is one.
    pub fn load(dir: &Path) -> Result<Option<Self>, TlsError> {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if !key.exists() {
            return Ok(None);
        }
        let read = |p: &Path| std::fs::read_to_string(p).map_err(TlsError::io(p));
        Ok(Some(Self::from_pem(read(&cert)?, read(&key)?)))
    }

    /// Keep it in `dir` (the key readable by its owner only).
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(TlsError::io(dir))?;
        let cert = dir.join("ca.crt");
        std::fs::write(&cert, &self.cert).map_err(TlsError::io(&cert))?;
        super::write_private(&dir.join("ca.key"), self.key.as_bytes())
    }

    /// The credentials `name` kept in `dir` for `holder`, issued (and kept) again unless they
    /// are current: present and whole (a power cut may tear them), of this CA, naming
    /// `holder`, with more than a third of their validity left.
    pub fn current(
        &self,
        dir: &Path,
        name: &str,
        holder: &Holder,
        groups: &[&str],
        addresses: &[IpAddr],
    ) -> Result<Credentials, TlsError> {
        if let Ok(Some(creds)) = Credentials::load(dir, name) {
            let fresh = super::live::renewal_due(&creds.cert).is_ok_and(|due| !due);
            let whole = KeyPair::from_pem(&creds.key).is_ok();
            let same_groups = super::holder::groups_of_pem(&creds.cert).is_ok_and(|g| g == groups);
            if fresh
                && whole
                && same_groups
                && creds.ca == self.cert
                && creds.holder().ok().as_ref() == Some(holder)
            {
                return Ok(creds);
            }
        }
        let now = OffsetDateTime::now_utc();
        let creds = self.issue_between(
            holder,
            groups,
            addresses,
            now - self.backdating(),
            now + self.validity,
        )?;
        creds.save(dir, name)?;
        Ok(creds)
    }

    /// An admin's certificate: `user:NAME` in [`super::holder::ADMIN_GROUP`], an admin
    /// whatever the User objects say (the credentials a cluster's creator starts with).
    pub fn issue_admin(&self, name: &str) -> Result<Credentials, TlsError> {
        let now = OffsetDateTime::now_utc();
        self.issue_between(
            &Holder::User(name.into()),
            &[super::holder::ADMIN_GROUP],
            &[],
            now - self.backdating(),
            now + self.validity,
        )
    }

    /// Sign a certificate signing request (PEM) for the holder it names, valid from now for
    /// its validity; its subject keeps only the common name, and the holder may not be
    /// a control node (members get theirs from the CA on their own disk).
    pub fn sign_request(&self, csr_pem: &str) -> Result<(Holder, String), TlsError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(cert_err("certificate signing request"))?;
        let holder = holder_of_request(&csr)?;
        if matches!(holder, Holder::Control(_)) {
            return Err(TlsError::cert(
                "certificate signing request",
                "control nodes' certificates are not signed on request",
            ));
        }
        let now = OffsetDateTime::now_utc();
        csr.params = holder_params(
            &holder,
            &[],
            &[],
            now - self.backdating(),
            now + self.validity,
        )?;
        let issuer = self.issuer()?;
        let cert = csr.signed_by(&issuer).map_err(cert_err("certificate"))?;
        Ok((holder, cert.pem()))
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key).map_err(cert_err("CA key"))?;
        Issuer::from_ca_cert_pem(&self.cert, ca_key).map_err(cert_err("CA"))
    }

    /// The holder a certificate signing request (PEM) names, its signature checked.
    pub fn requested_holder(&self, csr_pem: &str) -> Result<Holder, TlsError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(cert_err("certificate signing request"))?;
        holder_of_request(&csr)
    }

    /// A certificate for `holder`, valid from now for the CA's validity.
    pub fn issue(&self, holder: &Holder, addresses: &[IpAddr]) -> Result<Credentials, TlsError> {
        let now = OffsetDateTime::now_utc();
        self.issue_between(
            holder,
            &[],
            addresses,
            now - self.backdating(),
            now + self.validity,
        )
    }

    /// A certificate for `holder` valid between two instants (an expired one, for tests that
    /// prove it is refused). Control nodes and agents serve as well as call: theirs name the
    /// role's server name and `addresses` too. `groups` go into the subject's organisation.
    pub fn issue_between(
        &self,
        holder: &Holder,
        groups: &[&str],
        addresses: &[IpAddr],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Credentials, TlsError> {
        let key = KeyPair::generate().map_err(cert_err("key"))?;
        let params = holder_params(holder, groups, addresses, not_before, not_after)?;
        let issuer = self.issuer()?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(cert_err("certificate"))?;
        Ok(Credentials {
            ca: self.cert.clone(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// What a holder's certificate says, whoever made its key: the holder in the common name,
/// `groups` in the organisation, client use, and for control nodes and agents (which serve
/// too) their role's server name and `addresses`.
fn holder_params(
    holder: &Holder,
    groups: &[&str],
    addresses: &[IpAddr],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, holder.to_string());
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let server_name = match holder {
        Holder::Control(_) => Some(CONTROL_SERVER_NAME),
        Holder::Node(_) => Some(NODE_SERVER_NAME),
        Holder::User(_) => None,
    };
    if let Some(name) = server_name {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        let dns = name
            .try_into()
            .map_err(|e| TlsError::cert("server name", e))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
        params
            .subject_alt_names
            .extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
    }
    Ok(params)
}

/// The holder a parsed certificate signing request names by its common name.
fn holder_of_request(csr: &rcgen::CertificateSigningRequestParams) -> Result<Holder, TlsError> {
    let cn = csr
        .params
        .distinguished_name
        .get(&DnType::CommonName)
        .and_then(|v| match v {
            rcgen::DnValue::Utf8String(s) => Some(s.clone()),
            rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
            rcgen::DnValue::Ia5String(s) => Some(s.as_str().to_string()),
            _ => None,
        })
        .ok_or_else(|| TlsError::cert("certificate signing request", "no common name"))?;
    cn.parse()
        .map_err(|e| TlsError::cert("certificate signing request", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_holder_and_outlive_now() {
        let ca = ClusterCa::generate("test").expect("CA");
        let creds = ca
            .issue(&Holder::Control(2), &["127.0.0.1".parse().expect("ip")])
            .expect("issue");
        assert_eq!(creds.holder().expect("holder"), Holder::Control(2));
        let expires = super::super::holder::not_after(&creds.cert).expect("expiry");
        assert!(expires > OffsetDateTime::now_utc().unix_timestamp() + 300 * 24 * 3600);
        let user = ca.issue(&Holder::User("alice".into()), &[]).expect("issue");
        assert_eq!(user.holder().expect("holder"), Holder::User("alice".into()));
    }

    #[test]
    fn a_ca_survives_a_round_trip_through_its_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(ClusterCa::load(dir.path()).expect("load").is_none());
        let ca = ClusterCa::generate("test").expect("CA");
        ca.save(dir.path()).expect("save");
        let again = ClusterCa::load(dir.path()).expect("load").expect("there");
        assert_eq!(again.cert, ca.cert);
        let creds = again
            .issue(&Holder::Node("n1".into()), &[])
            .expect("issue from a loaded CA");
        creds.save(dir.path(), "node").expect("save");
        let read = Credentials::load(dir.path(), "node")
            .expect("load")
            .expect("there");
        assert_eq!(read, creds);
    }
}
