//! A LAN between test hosts: a bridge in a namespace of its own, one veth per host, and an
//! address per host in 10.235.X.0/24, so that several hosts share one L2 segment as a rack's
//! machines do (host-gw needs that; VXLAN works on it too). The root namespace, where the
//! control plane runs, is on it too (10.235.X.1): it reaches the agents at their node
//! addresses there, and never through the machine's default route. Removed with its
//! namespace (the root end of its veth goes with it).

use super::{sh, try_sh, TestHost, NETNS_PREFIX};

/// A LAN.
pub struct Lan {
    netns: String,
    net: u32,
    members: u32,
}

impl Lan {
    /// A new, empty LAN.
    pub fn create() -> Self {
        let n: u32 = rand::random::<u32>() % 250;
        // The name starts like a test host's, so a killed run's LAN is removed with its hosts.
        let netns = format!("{NETNS_PREFIX}{}x{n}lan", std::process::id());
        sh(&["ip", "netns", "add", &netns]);
        let lan = Self {
            netns,
            net: n,
            members: 0,
        };
        lan.exec(&["ip", "link", "add", "lan", "type", "bridge"]);
        lan.exec(&["ip", "link", "set", "lan", "up"]);
        let root_end = format!("sklr{n}");
        let _ = try_sh(&["ip", "link", "del", &root_end]);
        sh(&[
            "ip", "link", "add", &root_end, "type", "veth", "peer", "name", "lanp0", "netns",
            &lan.netns,
        ]);
        lan.exec(&["ip", "link", "set", "lanp0", "master", "lan"]);
        lan.exec(&["ip", "link", "set", "lanp0", "up"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &lan.root_address_cidr(),
            "dev",
            &root_end,
        ]);
        sh(&["ip", "link", "set", &root_end, "up"]);
        let route = sh(&["ip", "route", "get", &format!("10.235.{n}.2")]);
        assert!(
            route.contains(&format!("dev {root_end}")),
            "the LAN must route to its own link, never off the machine: {route}"
        );
        lan
    }

    /// The root namespace's address on the LAN (where the control plane is reached).
    pub fn root_address(&self) -> String {
        format!("10.235.{}.1", self.net)
    }

    fn root_address_cidr(&self) -> String {
        format!("{}/24", self.root_address())
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.netns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Plug `host` in: it gets `lan0` with the next address, which becomes its node address.
    pub fn attach(&mut self, host: &mut TestHost) -> String {
        self.members += 1;
        let ip = format!("10.235.{}.{}", self.net, self.members + 1);
        let port = format!("lanp{}", self.members);
        sh(&[
            "ip",
            "link",
            "add",
            "lan0",
            "netns",
            &host.netns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.netns,
        ]);
        self.exec(&["ip", "link", "set", &port, "master", "lan"]);
        self.exec(&["ip", "link", "set", &port, "up"]);
        host.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "lan0"]);
        host.exec(&["ip", "link", "set", "lan0", "up"]);
        host.node_ip = ip.clone();
        ip
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = try_sh(&["ip", "netns", "del", &self.netns]);
    }
}
