//! The ports a local cluster listens on, checked before anything starts: a second `skiff up`
//! on taken ports must refuse, not start members that cannot bind while another cluster
//! answers in their place.

use std::net::TcpListener;

/// One port the cluster will listen on and who listens there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The port.
    pub port: u16,
    /// Who takes it, as `control node 2`.
    pub holder: String,
}

/// The ports of `members` control nodes from `base` on, then the node agent's (unless there is
/// no node).
pub fn claims(base: u16, members: u64, node: bool) -> anyhow::Result<Vec<Claim>> {
    let count = members + u64::from(node);
    let last = u64::from(base) + count - 1;
    if last > u64::from(u16::MAX) {
        anyhow::bail!("--base-port {base}: the cluster takes {count} ports from there, past 65535");
    }
    let mut claims: Vec<Claim> = (1..=members)
        .map(|id| Claim {
            port: (u64::from(base) + id - 1) as u16,
            holder: format!("control node {id}"),
        })
        .collect();
    if node {
        claims.push(Claim {
            port: last as u16,
            holder: "the node agent's API".into(),
        });
    }
    Ok(claims)
}

/// Fail naming the first taken port and the ways out.
pub fn check_free(claims: &[Claim], base: u16) -> anyhow::Result<()> {
    for claim in claims {
        // Binding every address also catches a listener on loopback alone, as control
        // nodes are.
        if let Err(e) = TcpListener::bind(("0.0.0.0", claim.port)) {
            anyhow::bail!(
                "port {} ({} listens there) is not free: {e}. Another cluster or program has it: \
                 stop it, or run this cluster beside it with --base-port PORT (it takes {} ports \
                 from PORT on; this one starts at {base})",
                claim.port,
                claim.holder,
                claims.len(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_nodes_come_first_and_the_agent_takes_the_next_port() {
        let c = claims(7401, 3, true).expect("claims");
        let ports: Vec<u16> = c.iter().map(|c| c.port).collect();
        assert_eq!(ports, vec![7401, 7402, 7403, 7404]);
        assert_eq!(c[3].holder, "the node agent's API");
        assert_eq!(claims(7401, 3, false).expect("claims").len(), 3);
        let err = claims(65534, 3, true)
            .expect_err("past the end")
            .to_string();
        assert!(err.contains("--base-port 65534"), "{err}");
    }

    #[test]
    fn a_taken_port_is_named_with_the_way_out() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = taken.local_addr().expect("addr").port();
        let claim = [Claim {
            port,
            holder: "control node 1".into(),
        }];
        let err = check_free(&claim, port).expect_err("taken").to_string();
        assert!(
            err.contains(&format!("port {port} (control node 1")) && err.contains("--base-port"),
            "{err}"
        );
        drop(taken);
        check_free(&claim, port).expect("free again");
    }
}
