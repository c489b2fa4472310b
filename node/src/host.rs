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

/// The first global IPv4 address of this network namespace (`ip -4 addr`), skipping
/// `skip_dev` (the pod bridge), or loopback when there is none.
pub async fn primary_ipv4(skip_dev: &str) -> String {
    let out = crate::cni::run("ip", &["-4", "-o", "addr", "show", "scope", "global"])
        .await
        .unwrap_or_default();
    parse_primary(&out, skip_dev).unwrap_or_else(|| "127.0.0.1".into())
}

fn parse_primary(out: &str, skip_dev: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let dev = f.nth(1)?;
        if dev == skip_dev {
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
    fn the_first_global_address_not_on_the_bridge_is_the_node_ip() {
        let out = "3: skiff0    inet 10.244.1.1/24 scope global skiff0\\ ...\n\
                   5: eth0    inet 10.233.0.2/30 scope global eth0\\ ...\n";
        assert_eq!(parse_primary(out, "skiff0").as_deref(), Some("10.233.0.2"));
        assert_eq!(parse_primary("", "skiff0"), None);
        let h = read();
        assert!(h.cpus >= 1 && h.memory_kib > 0);
    }
}
