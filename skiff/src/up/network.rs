//! The host network a local cluster's node takes: its pod bridge, its nftables table, its pod
//! and service ranges. Two clusters on one host must not share any of them (an agent points
//! its ranges' routes at its own bridge, taking them from the other cluster), so the first
//! `skiff up` in a folder takes the first free slot and writes it down; later runs keep it.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use skiff_proto::cidr::Cidr;

/// The file in the cluster's folder that holds its choice.
const FILE: &str = "network.json";
/// How many clusters may run side by side on one host.
const SLOTS: u8 = 8;

/// One cluster's share of the host network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalNetwork {
    /// The pod bridge.
    pub bridge: String,
    /// The service proxy's nftables table.
    pub proxy_table: String,
    /// The pod range.
    pub cluster_cidr: String,
    /// The service range.
    pub service_cidr: String,
}

impl LocalNetwork {
    /// Slot 0 is what a lone cluster (and every earlier release) uses; the others sit beside
    /// it, outside the default ranges.
    pub(super) fn slot(i: u8) -> Self {
        if i == 0 {
            return Self {
                bridge: "skiff0".into(),
                proxy_table: "skiff".into(),
                cluster_cidr: "10.244.0.0/16".into(),
                service_cidr: "10.96.0.0/12".into(),
            };
        }
        Self {
            bridge: format!("skiff{i}"),
            proxy_table: format!("skiff{i}"),
            cluster_cidr: format!("10.{}.0.0/16", 244 + u16::from(i)),
            service_cidr: format!("10.{}.0.0/16", 111 + u16::from(i)),
        }
    }

    /// The ranges, parsed.
    fn ranges(&self) -> anyhow::Result<[Cidr; 2]> {
        let parse = |s: &str| {
            s.parse::<Cidr>()
                .with_context(|| format!("{FILE}: range {s:?}"))
        };
        Ok([parse(&self.cluster_cidr)?, parse(&self.service_cidr)?])
    }
}

/// A route of the host's main table: where it leads and through which device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination range.
    pub dst: Cidr,
    /// The device.
    pub dev: String,
}

/// Parse `ip -o -4 route show`: the default route and routes without a device are left out
/// (only ranges on a device can collide with a bridge's).
pub fn parse_routes(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let dst = if first.contains('/') {
                first.parse().ok()?
            } else {
                format!("{first}/32").parse().ok()?
            };
            let rest: Vec<&str> = words.collect();
            let dev = rest
                .windows(2)
                .find(|w| w[0] == "dev")
                .map(|w| w[1].to_string())?;
            Some(Route { dst, dev })
        })
        .collect()
}

/// What the host has: its routes and network devices.
pub struct Host {
    routes: Vec<Route>,
    has_device: Box<dyn Fn(&str) -> bool>,
}

impl Host {
    /// This host, as `ip route` and /sys/class/net show it.
    pub fn read() -> anyhow::Result<Self> {
        let out = std::process::Command::new("ip")
            .args(["-o", "-4", "route", "show"])
            .output()
            .context("running `ip route` (Debian: apt-get install iproute2)")?;
        if !out.status.success() {
            anyhow::bail!("ip route show: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self {
            routes: parse_routes(&String::from_utf8_lossy(&out.stdout)),
            has_device: Box::new(|name| Path::new("/sys/class/net").join(name).exists()),
        })
    }

    /// Why `net` cannot be used here, if it cannot: a route to one of its ranges through
    /// another device.
    fn conflict(&self, net: &LocalNetwork) -> anyhow::Result<Option<(Cidr, &Route)>> {
        for range in net.ranges()? {
            if let Some(r) = self
                .routes
                .iter()
                .find(|r| r.dev != net.bridge && r.dst.overlaps(range))
            {
                return Ok(Some((range, r)));
            }
        }
        Ok(None)
    }

    /// A route to `range` through another device than `own`, if there is one.
    pub fn routed_elsewhere(&self, range: Cidr, own: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.dev != own && r.dst.overlaps(range))
    }

    /// Whether slot `net` is free for a new cluster: its bridge does not exist and nothing
    /// routes its ranges.
    fn is_free(&self, net: &LocalNetwork) -> anyhow::Result<bool> {
        Ok(!(self.has_device)(&net.bridge) && self.conflict(net)?.is_none())
    }
}

/// The cluster's share of the host network: the one written down in `dir`, checked against
/// the host; else for a cluster made by an earlier release (it has data but no choice written
/// down) the default; else the first free slot, written down.
pub fn load_or_choose(dir: &Path, host: &Host) -> anyhow::Result<LocalNetwork> {
    let path = dir.join(FILE);
    let chosen = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<LocalNetwork>(&bytes)
            .with_context(|| format!("{}: not a network choice", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let net = if dir.join("control-1").exists() {
                LocalNetwork::slot(0)
            } else {
                first_free(host)?
            };
            let bytes = serde_json::to_vec_pretty(&net)?;
            std::fs::write(&path, bytes).with_context(|| path.display().to_string())?;
            return Ok(net);
        }
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    if let Some((range, route)) = host.conflict(&chosen)? {
        anyhow::bail!(
            "this cluster's node network ({}) is taken: {range} overlaps {}, routed to {} on \
             this host. Another cluster (or program) uses it; stop it first",
            path.display(),
            route.dst,
            route.dev
        );
    }
    Ok(chosen)
}

/// Remove what the node put on the host for `net`: its bridge (its routes go with it) and the
/// proxy's table. Only once its pods are stopped: they hang off that bridge.
pub fn remove(net: &LocalNetwork) {
    let run = |program: &str, args: &[&str]| {
        match std::process::Command::new(program).args(args).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                // Already gone (never made, or removed by hand) is what was wanted.
                if !err.contains("Cannot find device") && !err.contains("No such file") {
                    eprintln!("{program} {}: {}", args.join(" "), err.trim());
                }
            }
            Err(e) => eprintln!("{program} {}: {e}", args.join(" ")),
        }
    };
    run("ip", &["link", "del", &net.bridge]);
    run("nft", &["delete", "table", "ip", &net.proxy_table]);
    for suffix in ["egress", "hostports"] {
        run(
            "nft",
            &[
                "delete",
                "table",
                "ip",
                &format!("{}_{suffix}", net.proxy_table),
            ],
        );
    }
}

fn first_free(host: &Host) -> anyhow::Result<LocalNetwork> {
    for i in 0..SLOTS {
        let net = LocalNetwork::slot(i);
        if host.is_free(&net)? {
            return Ok(net);
        }
    }
    anyhow::bail!(
        "no free node network for another cluster on this host: {SLOTS} are taken (bridges \
         skiff0 to skiff{}); stop a cluster, or run this one with --no-node",
        SLOTS - 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(routes: &str, devices: &'static [&'static str]) -> Host {
        Host {
            routes: parse_routes(routes),
            has_device: Box::new(move |name| devices.contains(&name)),
        }
    }

    const ROUTES: &str = "default via 192.168.1.1 dev eth0 proto dhcp src 192.168.1.9 metric 100\n\
        10.244.0.0/16 dev skiff0 scope link\n\
        10.96.0.0/12 dev skiff0 scope link\n\
        192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.9\n\
        172.17.0.1 dev docker0 scope link\n";

    #[test]
    fn routes_are_read_with_their_devices_and_the_default_is_left_out() {
        let routes = parse_routes(ROUTES);
        assert_eq!(routes.len(), 4);
        assert_eq!(routes[0].dst.to_string(), "10.244.0.0/16");
        assert_eq!(routes[0].dev, "skiff0");
        assert_eq!(routes[3].dst.to_string(), "172.17.0.1/32");
    }

    #[test]
    fn slots_never_overlap_one_another() {
        let nets: Vec<[Cidr; 2]> = (0..SLOTS)
            .map(|i| LocalNetwork::slot(i).ranges().expect("ranges"))
            .collect();
        let all: Vec<Cidr> = nets.iter().flatten().copied().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!a.overlaps(*b), "{a} overlaps {b}");
            }
        }
    }

    #[test]
    fn a_second_cluster_takes_the_next_free_slot_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let busy = host(ROUTES, &["eth0", "skiff0"]);
        let net = load_or_choose(dir.path(), &busy).expect("a slot");
        assert_eq!(net, LocalNetwork::slot(1));
        // Written down: the same choice on the next run, even on a host where slot 0 is free.
        let idle = host("", &[]);
        assert_eq!(load_or_choose(dir.path(), &idle).expect("kept"), net);
    }

    #[test]
    fn a_cluster_of_an_earlier_release_keeps_the_default_network() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("control-1")).expect("data");
        let own = host(ROUTES, &["eth0", "skiff0"]);
        assert_eq!(
            load_or_choose(dir.path(), &own).expect("default"),
            LocalNetwork::slot(0)
        );
    }

    #[test]
    fn a_choice_whose_ranges_another_device_routes_is_refused_naming_the_route() {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = load_or_choose(dir.path(), &host("", &[])).expect("slot 0");
        assert_eq!(net, LocalNetwork::slot(0));
        let taken = host("10.244.0.0/16 dev skiff3 scope link\n", &["skiff3"]);
        let err = load_or_choose(dir.path(), &taken)
            .expect_err("taken")
            .to_string();
        assert!(
            err.contains("10.244.0.0/16") && err.contains("skiff3"),
            "{err}"
        );
    }
}
