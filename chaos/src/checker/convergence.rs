//! After healing, every member must reach the same revision and hold the same data.

use super::Verdict;

const NAME: &str = "convergence";

/// One member's state after healing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    /// Member id.
    pub id: u64,
    /// Its store revision.
    pub revision: u64,
    /// A hash of every key and value it holds.
    pub data_hash: u64,
}

/// Check that all members agree.
pub fn check(members: &[MemberState]) -> Verdict {
    let Some(first) = members.first() else {
        return Verdict::fail(NAME, "no member answered");
    };
    for m in members {
        if m.revision != first.revision || m.data_hash != first.data_hash {
            return Verdict::fail(
                NAME,
                format!(
                    "member {} has revision {} hash {:016x}, member {} has revision {} hash {:016x}",
                    first.id, first.revision, first.data_hash, m.id, m.revision, m.data_hash
                ),
            );
        }
    }
    Verdict::pass(
        NAME,
        format!(
            "{} members at revision {} with equal data",
            members.len(),
            first.revision
        ),
    )
}

/// FNV-1a over key/value pairs in key order: stable across processes and builds.
pub fn hash_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    for (k, v) in pairs {
        feed(k);
        feed(v);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverged_member_is_rejected() {
        let a = MemberState {
            id: 1,
            revision: 5,
            data_hash: 1,
        };
        let b = MemberState {
            id: 2,
            revision: 5,
            data_hash: 2,
        };
        assert!(!check(&[a.clone(), b]).ok);
        let c = MemberState {
            id: 3,
            revision: 4,
            data_hash: 1,
        };
        assert!(!check(&[a.clone(), c]).ok);
        assert!(check(&[a.clone(), a]).ok);
    }

    #[test]
    fn hash_depends_on_boundaries() {
        assert_ne!(
            hash_pairs([(&b"ab"[..], &b"c"[..])]),
            hash_pairs([(&b"a"[..], &b"bc"[..])])
        );
    }
}
