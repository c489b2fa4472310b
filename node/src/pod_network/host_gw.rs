//! The host-gw data path, as flannel's `host-gw` backend: a route to each peer's pod CIDR
//! with the peer's node address as the next hop. The nodes must share an L2 segment; a
//! peer that is not on one is refused by the kernel ("Nexthop has invalid gateway") and the
//! error names the peer.

use super::peer::Peer;
use super::{run_absent_ok, ROUTE_PROTOCOL};
use crate::cni::run;
use crate::error::{Error, Result};

/// Route to `peer`'s pods via its node address.
pub async fn add(peer: &Peer) -> Result<()> {
    run(
        "ip",
        &[
            "route",
            "replace",
            &peer.pod_cidr.to_string(),
            "via",
            &peer.ip.to_string(),
            "proto",
            ROUTE_PROTOCOL,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::Command {
        command: format!(
            "routing node {}'s pods ({}) via {} (host-gw needs the nodes on one L2 segment)",
            peer.name, peer.pod_cidr, peer.ip
        ),
        message: e.to_string(),
    })
}

/// Stop routing to `peer`'s pods.
pub async fn remove(peer: &Peer) -> Result<()> {
    run_absent_ok(
        "ip",
        &[
            "route",
            "del",
            &peer.pod_cidr.to_string(),
            "proto",
            ROUTE_PROTOCOL,
        ],
    )
    .await
}
