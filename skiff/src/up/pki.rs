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

/// Make (or find) the CA and everything issued from it; returns the admin's credentials. The
/// node's certificate is valid for `validity` (it renews itself); the admin's for a year.
pub fn prepare(
    dir: &Path,
    cluster: &str,
    members: &[u64],
    node: Option<&str>,
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
    if let Some(name) = node {
        current(
            &ca.clone().with_validity(validity),
            &dir.join("node").join("pki"),
            "node",
            &Holder::Node(name.into()),
            &[],
        )?;
    }
    current(
        &ca,
        &pki,
        ADMIN,
        &Holder::User(ADMIN.into()),
        &[ADMIN_GROUP],
    )
}

/// The credentials `name` in `dir` for `holder` in `groups`, issued again unless they are
/// current.
fn current(
    ca: &ClusterCa,
    dir: &Path,
    name: &str,
    holder: &Holder,
    groups: &[&str],
) -> anyhow::Result<Credentials> {
    Ok(ca.current(
        dir,
        name,
        holder,
        groups,
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
        let admin = prepare(dir.path(), "c", &[1, 2, 3], Some("local"), YEAR).expect("prepare");
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
        let again = prepare(dir.path(), "c", &[1, 2, 3], Some("local"), YEAR).expect("again");
        assert_eq!(again, admin, "current credentials are kept");
    }
}
