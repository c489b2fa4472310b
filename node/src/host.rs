//! What the agent reads off its host: cpu count, memory, addresses, kernel and OS names.

/// The host's capacity and identity.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Logical cpus.
    pub cpus: u32,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// OS image (PRETTY_NAME).
    pub os_image: String,
}

/// Read the host.
pub fn read() -> HostInfo {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    HostInfo {
        cpus,
        memory_kib,
        kernel,
        os_image,
    }
}

/// The node's address when none is given: the first global IPv4 address of the interface
/// of the default route (as kubelet and flannel pick it), else the first global one not on
/// `skip_dev` (the pod bridge), else loopback.
pub async fn primary_ipv4(skip_dev: &str) -> String {
    let routes = crate::cni::run("ip", &["-4", "route", "show", "default"])
        .await
        .unwrap_or_default();
    let out = crate::cni::run("ip", &["-4", "-o", "addr", "show", "scope", "global"])
        .await
        .unwrap_or_default();
    default_route_device(&routes)
        .and_then(|dev| parse_primary(&out, |d| d == dev))
        .or_else(|| parse_primary(&out, |d| d != skip_dev))
        .unwrap_or_else(|| "127.0.0.1".into())
}

fn default_route_device(routes: &str) -> Option<&str> {
    routes
        .lines()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "dev").nth(1))
}

fn parse_primary(out: &str, take: impl Fn(&str) -> bool) -> Option<String> {
    out.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let dev = f.nth(1)?;
        if !take(dev) {
            return None;
        }
        let addr = f.skip_while(|w| *w != "inet").nth(1)?;
        addr.split('/').next().map(String::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_interface_or_else_the_first_global_address_is_the_node_ip() {
        let out = "3: skiff0    inet 10.244.1.1/24 scope global skiff0\\ ...\n\
                   5: eth0    inet 10.233.0.2/30 scope global eth0\\ ...\n\
                   6: eth1    inet 192.0.2.7/24 scope global eth1\\ ...\n";
        assert_eq!(
            parse_primary(out, |d| d != "skiff0").as_deref(),
            Some("10.233.0.2")
        );
        let dev = default_route_device("default via 192.0.2.1 dev eth1 proto dhcp\n");
        assert_eq!(dev, Some("eth1"));
        assert_eq!(
            parse_primary(out, |d| Some(d) == dev).as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(parse_primary("", |_| true), None);
        let h = read();
        assert!(h.cpus >= 1 && h.memory_kib > 0);
    }
}
