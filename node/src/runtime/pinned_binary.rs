//! The OCI runtime binary, bind-mounted read-only for the shim to run.
//!
//! crun defends against CVE-2019-5736 (a container overwriting the host's runtime through
//! `/proc/self/exe`) by copying itself to a fresh file and re-executing the copy on every
//! call: create, start, kill and delete each load it twice and write half a MiB to `/tmp`.
//! A binary on a read-only mount needs no copy, since no process can open it for writing,
//! so crun runs it as it is. (runc 1.1 copies itself in `runc init` whatever the mount.)

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::error::{Error, Result};

/// Bind-mount `binary` read-only at `dir/<its file name>` and return that path. A pin left
/// by an earlier run is reused while it still shows the same file; one of a binary since
/// replaced (a package upgrade) is detached and made anew.
pub fn pin_read_only(binary: &Path, dir: &Path) -> Result<PathBuf> {
    let source = std::fs::canonicalize(binary).map_err(Error::io(binary))?;
    let name = source.file_name().ok_or_else(|| Error::InvalidSpec {
        field: "--oci-runtime".into(),
        reason: format!("{} names no file", source.display()),
    })?;
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let pin = dir.join(name);
    if pin.exists() {
        if is_read_only_view_of(&pin, &source)? {
            return Ok(pin);
        }
        if read_only(&pin)? {
            // A pin of a binary that has since been replaced: running shims that call it
            // keep the old file until they are done, new calls get the new one.
            umount2(&pin, MntFlags::MNT_DETACH).map_err(Error::syscall(&pin, "detaching"))?;
        }
    } else {
        std::fs::File::create(&pin).map_err(Error::io(&pin))?;
    }
    mount(
        Some(&source),
        &pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(Error::syscall(&pin, "bind-mounting"))?;
    let read_only_flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(e) = mount(
        None::<&str>,
        &pin,
        None::<&str>,
        read_only_flags,
        None::<&str>,
    ) {
        // A writable pin would still be copied by crun on every call; leave none behind.
        let _ = umount2(&pin, MntFlags::MNT_DETACH);
        return Err(Error::syscall(&pin, "remounting read-only")(e));
    }
    Ok(pin)
}

/// Whether `pin` is on a read-only mount and is the very file `source` is.
fn is_read_only_view_of(pin: &Path, source: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(pin).map_err(Error::io(pin))?,
        std::fs::metadata(source).map_err(Error::io(source))?,
    );
    Ok(a.dev() == b.dev() && a.ino() == b.ino() && read_only(pin)?)
}

fn read_only(path: &Path) -> Result<bool> {
    let fs = statvfs(path).map_err(|e| Error::io(path)(e.into()))?;
    Ok(fs.flags().contains(FsFlags::ST_RDONLY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_binary_runs_cannot_be_written_and_is_reused() {
        if !crate::test_support::root_or_skip("bind mounts") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("tool");
        std::fs::write(&source, "#!/bin/sh\necho pinned\n").expect("write");
        std::fs::set_permissions(&source, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let pins = dir.path().join("pins");

        let pin = pin_read_only(&source, &pins).expect("pin");
        let out = std::process::Command::new(&pin).output().expect("run pin");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "pinned\n");
        let write = std::fs::OpenOptions::new().write(true).open(&pin);
        assert_eq!(
            write.map_err(|e| e.raw_os_error()).err(),
            Some(Some(nix::libc::EROFS)),
            "the pin must refuse writes"
        );
        // A second agent start reuses the pin rather than stacking another mount on it.
        assert_eq!(pin_read_only(&source, &pins).expect("re-pin"), pin);
        let stacked = std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.split_whitespace().nth(4) == Some(&*pin.to_string_lossy()))
            .count();
        assert_eq!(stacked, 1, "one mount at the pin");

        // The binary replaced (as a package upgrade does, by rename): the pin follows.
        let next = dir.path().join("tool.new");
        std::fs::write(&next, "#!/bin/sh\necho upgraded\n").expect("write");
        std::fs::set_permissions(&next, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        std::fs::rename(&next, &source).expect("rename");
        let pin = pin_read_only(&source, &pins).expect("re-pin after upgrade");
        let out = std::process::Command::new(&pin).output().expect("run pin");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "upgraded\n");

        // The first pin was detached by the re-pin; this is the one left.
        let _ = umount2(&pin, MntFlags::MNT_DETACH);
    }
}
