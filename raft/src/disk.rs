//! How much disk a member's data takes, and how full the filesystem holding it is.

use std::path::Path;

/// Disk figures of a data directory (zeros for what could not be read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes of the files under the directory.
    pub data_bytes: u64,
    /// Size of the filesystem holding it, as df counts it (used and available; the blocks
    /// reserved for root are left out).
    pub total_bytes: u64,
    /// Bytes free to an unprivileged user on it.
    pub free_bytes: u64,
}

fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

/// The figures of `dir`.
pub fn usage(dir: &Path) -> DiskUsage {
    let (total_bytes, free_bytes) = nix::sys::statvfs::statvfs(dir)
        .map(|s| {
            let unit = s.fragment_size();
            let (blocks, free, available) = (s.blocks(), s.blocks_free(), s.blocks_available());
            // As df counts: blocks reserved for root are neither used nor available.
            let used = blocks.saturating_sub(free);
            (
                used.saturating_add(available).saturating_mul(unit),
                available.saturating_mul(unit),
            )
        })
        .unwrap_or((0, 0));
    DiskUsage {
        data_bytes: size_of(dir),
        total_bytes,
        free_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_counts_its_files_and_its_filesystem() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("a")).unwrap_or_default();
        std::fs::write(dir.path().join("a/x"), vec![0u8; 1000]).unwrap_or_default();
        std::fs::write(dir.path().join("y"), vec![0u8; 24]).unwrap_or_default();
        let u = usage(dir.path());
        assert_eq!(u.data_bytes, 1024);
        assert!(u.total_bytes > 0 && u.free_bytes <= u.total_bytes, "{u:?}");
    }
}
