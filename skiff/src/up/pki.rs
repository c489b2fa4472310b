//! The local cluster's CA and the credentials `skiff up` hands out: the CA is made at the first
//! `skiff up` in a folder (kept in `.skiff/pki/`) and copied into each control node's data
//! directory, which then issues itself a member certificate; the node agent gets a node
//! certificate and the client config an admin's. A certificate is issued again when it is
//! missing, of another CA, or past two thirds of its life.

use std::path::Path;

use anyhow::Context as _;
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::{Holder, ADMIN_GROUP};
use skiff_proto::tls::Credentials;

/// The admin user `skiff up` writes into the client config.
const ADMIN: &str = "admin";

/// A node agent's credentials to make: its name, its pki folder and the addresses it serves on.
pub struct NodeCredentials {
    /// The node's name.
    pub name: String,
    /// Where its agent keeps them (`<data dir>/pki`).
    pub pki: std::path::PathBuf,
    /// Its addresses.
    pub addresses: Vec<std::net::IpAddr>,
}

/// Make (or find) the CA and everything issued from it; returns the admin's credentials. The
/// nodes' certificates are valid for `validity` (they renew themselves); the admin's for a year.
pub fn prepare(
    dir: &Path,
    cluster: &str,
    members: &[u64],
    nodes: &[NodeCredentials],
    validity: std::time::Duration,
) -> anyhow::Result<Credentials> {
    let pki = dir.join("pki");
    let ca = match ClusterCa::load(&pki)? {
        Some(ca) => ca,
        None => {
            let ca = ClusterCa::generate(cluster)?;
            ca.save(&pki)
                .with_context(|| format!("keeping the cluster CA in {}", pki.display()))?;
            ca
        }
    };
    for id in members {
        let member_pki = dir.join(format!("control-{id}")).join("pki");
        let kept = ClusterCa::load(&member_pki)?;
        if kept.is_none_or(|k| k.cert != ca.cert) {
            ca.save(&member_pki)?;
        }
    }
    for node in nodes {
        ca.clone().with_validity(validity).current(
            &node.pki,
            "node",
            &Holder::Node(node.name.clone()),
            &[],
            &node.addresses,
        )?;
    }
    Ok(ca.current(
        &pki,
        ADMIN,
        &Holder::User(ADMIN.into()),
        &[ADMIN_GROUP],
        &[std::net::Ipv4Addr::LOCALHOST.into()],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

    #[test]
    fn one_ca_for_every_member_and_credentials_kept_across_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = || {
            vec![NodeCredentials {
                name: "local".into(),
                pki: dir.path().join("node/pki"),
                addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            }]
        };
        let admin = prepare(dir.path(), "c", &[1, 2, 3], &nodes(), YEAR).expect("prepare");
        assert_eq!(
            admin.holder().expect("holder"),
            Holder::User("admin".into())
        );
        for id in 1..=3 {
            let ca = ClusterCa::load(&dir.path().join(format!("control-{id}/pki")))
                .expect("load")
                .expect("a CA in each member's folder");
            assert_eq!(ca.cert, admin.ca);
        }
        let node = Credentials::load(&dir.path().join("node/pki"), "node")
            .expect("load")
            .expect("node credentials");
        assert_eq!(node.holder().expect("holder"), Holder::Node("local".into()));
        let again = prepare(dir.path(), "c", &[1, 2, 3], &nodes(), YEAR).expect("again");
        assert_eq!(again, admin, "current credentials are kept");
    }
}
