//! IPv4 ranges (`a.b.c.d/len`) as the control plane hands them out (node pod CIDRs, the
//! service range) and the node agent routes them.
//!
//! Not `ipnet` (in the tree through reqwest): it takes `10.0.0.1/16` with host bits set, and
//! its error does not say what is wrong; the allocators need only the block arithmetic here.

use std::net::Ipv4Addr;

/// An IPv4 range `a.b.c.d/len`, host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
}

/// Why a text is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/`.
    #[error("{0:?} is not ADDRESS/PREFIX")]
    Syntax(String),
    /// The address part is not an IPv4 address.
    #[error("{0:?} is not an IPv4 address")]
    Address(String),
    /// The prefix is not 0-32.
    #[error("{0:?} is not a prefix length 0-32")]
    Prefix(String),
    /// Bits below the prefix are set.
    #[error("{0:?} has host bits set")]
    HostBits(String),
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.to_string()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| CidrError::Address(a.to_string()))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| CidrError::Prefix(l.to_string()))?;
        if u32::from(addr) & !mask(len) != 0 {
            return Err(CidrError::HostBits(s.to_string()));
        }
        Ok(Self { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Cidr {
    /// The `index`th block of prefix `block_len` inside this range, if there is one.
    pub fn nth_block(self, block_len: u8, index: u32) -> Option<Cidr> {
        if block_len < self.len || block_len > 32 {
            return None;
        }
        let count = 1u64 << (block_len - self.len);
        if u64::from(index) >= count {
            return None;
        }
        let size = 1u64 << (32 - block_len);
        let addr = u64::from(u32::from(self.addr)) + u64::from(index) * size;
        Some(Cidr {
            addr: Ipv4Addr::from(addr as u32),
            len: block_len,
        })
    }

    /// The first address after the network address (a bridge's gateway in a pod range).
    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(1))
    }

    /// Whether `ip` is inside the range.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }

    /// Whether the two ranges share an address (one holds the other).
    pub fn overlaps(self, other: Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// How many addresses the range holds.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_when_one_holds_the_other() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(c("10.96.0.0/12").overlaps(c("10.97.0.0/16")));
        assert!(c("10.97.0.0/16").overlaps(c("10.96.0.0/12")));
        assert!(!c("10.244.0.0/16").overlaps(c("10.245.0.0/16")));
        assert!(c("0.0.0.0/0").overlaps(c("10.1.0.0/16")));
    }

    #[test]
    fn blocks_are_carved_in_order() {
        let range: Cidr = "10.244.0.0/16".parse().unwrap();
        assert_eq!(range.nth_block(24, 1).unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(
            range.nth_block(24, 255).unwrap().to_string(),
            "10.244.255.0/24"
        );
        assert!(range.nth_block(24, 256).is_none());
        assert!(range.nth_block(8, 0).is_none());
        assert_eq!(range.first_host().to_string(), "10.244.0.1");
        assert!(range.contains("10.244.3.4".parse().unwrap()));
        assert!(!range.contains("10.245.0.1".parse().unwrap()));
        assert_eq!(range.size(), 65536);
    }

    #[test]
    fn malformed_ranges_are_refused_with_the_reason() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err().to_string();
        assert!(err("10.0.0.1/16").contains("host bits"));
        assert!(err("10.0.0.0").contains("ADDRESS/PREFIX"));
        assert!(err("10.0.0.0/33").contains("prefix"));
        assert!(err("10.0.0/8").contains("IPv4 address"));
    }
}
