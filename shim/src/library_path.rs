//! The library search path the shim daemon and its OCI runtime inherit.
//!
//! containerd's `opt` plugin (on by default) prepends `/opt/containerd/lib` to
//! `LD_LIBRARY_PATH`, usually leaving `/opt/containerd/lib:` — an empty folder and an empty
//! entry (the working folder). glibc's loader tries every entry, and its hardware-capability
//! subfolders, for each shared library before its cache: crun (eleven libraries, run twice per
//! container start) made ~260 failed `open`s a start, ~1.2 ms of CPU per pod on a burst.
//! Entries that cannot provide a library are dropped before the Go shim runs; the daemon it
//! starts and every runtime call it makes inherit the shorter path.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The variable's name.
pub const VAR: &str = "LD_LIBRARY_PATH";

/// `value` without the entries that name no folder with anything in it (the empty entry
/// included); `None` when no entry is left.
pub fn useful(value: &OsStr) -> Option<OsString> {
    let kept: Vec<&[u8]> = value
        .as_bytes()
        .split(|b| *b == b':')
        .filter(|entry| !entry.is_empty() && has_entries(Path::new(OsStr::from_bytes(entry))))
        .collect();
    (!kept.is_empty()).then(|| OsStr::from_bytes(&kept.join(&b':')).to_os_string())
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_cannot_provide_a_library_are_dropped() {
        let empty = tempfile::tempdir().expect("tempdir");
        let libs = tempfile::tempdir().expect("tempdir");
        std::fs::write(libs.path().join("libx.so.1"), b"").expect("lib");
        let (empty, libs) = (empty.path().display(), libs.path().display());

        // What containerd's opt plugin leaves when the variable was unset.
        assert_eq!(useful(OsStr::new(&format!("{empty}:"))), None);
        assert_eq!(
            useful(OsStr::new(&format!("{empty}::{libs}:/nonexistent"))),
            Some(OsString::from(libs.to_string()))
        );
        assert_eq!(
            useful(OsStr::new(&format!("{libs}:{libs}"))),
            Some(OsString::from(format!("{libs}:{libs}")))
        );
        assert_eq!(useful(OsStr::new("")), None);
    }
}
