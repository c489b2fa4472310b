//! Test hosts: one network namespace per host, joined by veth pairs to a bridge the suite
//! creates in the root namespace. Host addresses are `10.231.<net>.<host>/24`; the bridge
//! holds `.254`, so the suite reaches every host and hosts reach each other, and nothing in
//! that range follows the default route. Faults between hosts are nftables rules inside a
//! host's namespace, in a table of the suite's own.

use std::process::{Command, Stdio};

/// Errors setting up or changing the test network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed.
        stderr: String,
    },
    /// A tool is missing.
    #[error("{tool} is not installed ({package}): the chaos suite needs it")]
    Missing {
        /// The program.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The host range would leave the machine.
    #[error("{addr} routes via {route:?}, not the suite's bridge: refusing to send traffic there")]
    Unsafe {
        /// The address checked.
        addr: String,
        /// What `ip route get` said.
        route: String,
    },
}

/// Run a command, failing with its stderr.
pub fn run(args: &[&str]) -> Result<String, NetError> {
    run_input(args, None)
}

fn run_input(args: &[&str], input: Option<&str>) -> Result<String, NetError> {
    use std::io::Write as _;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Command {
            cmd: args.join(" "),
            stderr: e.to_string(),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NetError::Command {
        cmd: args.join(" "),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn require(tool: &'static str, package: &'static str) -> Result<(), NetError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(NetError::Missing { tool, package })
    }
}

/// The suite's hosts and bridge.
pub struct TestNet {
    /// Which /24 (10.231.N.0/24) and name suffix this run uses.
    pub net: u8,
    /// Number of hosts.
    pub hosts: u8,
}

impl TestNet {
    /// Names of host `i`'s namespace.
    pub fn ns(&self, i: u8) -> String {
        format!("skc{}-{}", self.net, i)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("skcbr{}", self.net)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: u8) -> String {
        format!("10.231.{}.{}", self.net, i)
    }

    /// Remove what a killed run of this suite left behind (namespaces and bridges named
    /// `skc*`), then create the bridge and `hosts` hosts.
    pub fn create(net: u8, hosts: u8) -> Result<Self, NetError> {
        require("ip", "iproute2")?;
        require("nft", "nftables")?;
        let me = Self { net, hosts };
        me.destroy();
        let br = me.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.231.{net}.254/24"),
            "dev",
            &br,
        ])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for i in 1..=hosts {
            let ns = me.ns(i);
            let outside = format!("skc{net}v{i}");
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            run(&["ip", "link", "set", &outside, "master", &br])?;
            run(&["ip", "link", "set", &outside, "up"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", me.addr(i)),
                "dev",
                "eth0",
            ])?;
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
            ])?;
        }
        for i in 1..=hosts {
            let addr = me.addr(i);
            let route = run(&["ip", "route", "get", &addr])?;
            if !route.contains(&format!("dev {br}")) {
                return Err(NetError::Unsafe { addr, route });
            }
        }
        Ok(me)
    }

    /// Delete the hosts and the bridge (and any left by an earlier run with this net).
    pub fn destroy(&self) {
        if let Ok(list) = run(&["ip", "netns", "list"]) {
            let prefix = format!("skc{}-", self.net);
            for ns in list
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(&prefix))
            {
                let _ = run(&["ip", "netns", "delete", ns]);
            }
        }
        // Deleting a namespace frees its veth pairs asynchronously; delete our ends now so a
        // new run can reuse the names at once.
        for i in 1..=self.hosts.max(9) {
            let _ = run(&["ip", "link", "delete", &format!("skc{}v{i}", self.net)]);
        }
        let _ = run(&["ip", "link", "delete", &self.bridge()]);
    }

    /// Replace host `i`'s fault rules with `rules` (nft statements for its input chain).
    pub fn set_rules(&self, i: u8, rules: &[String]) -> Result<(), NetError> {
        self.clear_rules(i);
        if rules.is_empty() {
            return Ok(());
        }
        let mut script = String::from("table inet skiff_chaos {\n chain input {\n  type filter hook input priority -10; policy accept;\n");
        for r in rules {
            script.push_str("  ");
            script.push_str(r);
            script.push('\n');
        }
        script.push_str(" }\n}\n");
        run_input(
            &["ip", "netns", "exec", &self.ns(i), "nft", "-f", "-"],
            Some(&script),
        )
        .map(|_| ())
    }

    /// The bridge's address (in the root namespace, where the delay proxy listens).
    pub fn bridge_addr(&self) -> String {
        format!("10.231.{}.254", self.net)
    }

    /// Send host `i`'s new connections to each peer's `port` through the delay proxy
    /// (listening on the bridge address at `proxy_base + peer`), and reset the ones already
    /// open, so every byte between hosts passes the proxy from now on.
    pub fn set_delay(&self, i: u8, port: u16, proxy_base: u16) -> Result<(), NetError> {
        let peers: Vec<u8> = (1..=self.hosts).filter(|p| *p != i).collect();
        let mut script = String::from(
            "table ip skiff_chaos_delay {\n chain nat_out {\n  type nat hook output priority -100; policy accept;\n",
        );
        for p in &peers {
            script.push_str(&format!(
                "  ip daddr {} tcp dport {port} dnat to {}:{}\n",
                self.addr(*p),
                self.bridge_addr(),
                proxy_base + u16::from(*p)
            ));
        }
        let addrs: Vec<String> = peers.iter().map(|p| self.addr(*p)).collect();
        script.push_str(&format!(
            " }}\n chain filter_out {{\n  type filter hook output priority 0; policy accept;\n  ip daddr {{ {} }} tcp dport {port} reject with tcp reset\n }}\n}}\n",
            addrs.join(", ")
        ));
        run_input(
            &["ip", "netns", "exec", &self.ns(i), "nft", "-f", "-"],
            Some(&script),
        )
        .map(|_| ())
    }

    /// Remove host `i`'s fault rules (filter and delay tables), in one `nft` transaction;
    /// declaring each table first makes the delete succeed when it was never set.
    pub fn clear_rules(&self, i: u8) {
        let script = "table inet skiff_chaos {}\ndelete table inet skiff_chaos\n\
                      table ip skiff_chaos_delay {}\ndelete table ip skiff_chaos_delay\n";
        let _ = run_input(
            &["ip", "netns", "exec", &self.ns(i), "nft", "-f", "-"],
            Some(script),
        );
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.destroy();
    }
}
