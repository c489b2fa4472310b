//! Pod traffic to addresses outside the cluster's pod and service ranges leaves with the
//! node's address (as the CNI `ipMasq` option does); pod-to-pod and pod-to-service traffic
//! keeps the pod's address. One nftables table of its own, replaced whole at start.

use super::PodNetworkConfig;
use crate::error::Result;

/// The table's script: made atomically (the table is declared, deleted and made again in one
/// transaction, so a restart never leaves pods without the rule).
pub fn script(cfg: &PodNetworkConfig) -> String {
    let (t, pods, services) = (&cfg.egress_table, cfg.cluster_cidr, cfg.service_cidr);
    format!(
        "table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat + 10; policy accept;\n    ip saddr {pods} ip daddr != {{ {pods}, {services} }} masquerade\n  }}\n}}\n"
    )
}

/// Install the egress rule.
pub async fn install(cfg: &PodNetworkConfig) -> Result<()> {
    crate::proxy::apply(&script(cfg)).await
}
