//! Mounting a snapshot's mounts (as containerd's snapshotters describe them) at a folder of
//! the agent's, and taking them down again: for container roots made ahead of time.
//!
//! A root mounted here is handed to the shim as one bind mount of the folder. Once the shim
//! has bound it into the task's bundle, the agent's mount is detached: the bundle's keeps the
//! file system, and the shim's unmount at task delete is then the last one.

use std::path::Path;

use containerd_client::types::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Options that are mount flags rather than file-system data.
fn flag_of(option: &str) -> Option<MsFlags> {
    Some(match option {
        "ro" => MsFlags::MS_RDONLY,
        "rw" => MsFlags::empty(),
        "bind" => MsFlags::MS_BIND,
        "rbind" => MsFlags::MS_BIND | MsFlags::MS_REC,
        "nosuid" => MsFlags::MS_NOSUID,
        "nodev" => MsFlags::MS_NODEV,
        "noexec" => MsFlags::MS_NOEXEC,
        "noatime" => MsFlags::MS_NOATIME,
        "relatime" => MsFlags::MS_RELATIME,
        _ => return None,
    })
}

/// The flags and the data string of `options`.
fn split_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match flag_of(o) {
            Some(f) => flags |= f,
            None => data.push(o.as_str()),
        }
    }
    (flags, data.join(","))
}

/// Mount `mounts` at `dir`, in order. A snapshotter describes a root as one mount (an
/// overlay of the image's layers, or a bind of a single folder).
pub fn mount_all(mounts: &[Mount], dir: &Path) -> Result<()> {
    for m in mounts {
        let (flags, data) = split_options(&m.options);
        let source = (!m.source.is_empty()).then_some(m.source.as_str());
        let fstype = (!m.r#type.is_empty() && !flags.contains(MsFlags::MS_BIND))
            .then_some(m.r#type.as_str());
        let data = (!data.is_empty()).then_some(data.as_str());
        // A bind ignores MS_RDONLY on the first call; a read-only bind needs a remount.
        mount(source, dir, fstype, flags, data).map_err(Error::syscall(dir, "mounting a root"))?;
        if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                flags | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(Error::syscall(dir, "making a root read-only"))?;
        }
    }
    Ok(())
}

/// Detach whatever is mounted at `dir` (nothing mounted is fine).
pub fn detach(dir: &Path) -> Result<()> {
    loop {
        match umount2(dir, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::syscall(dir, "unmounting a root")(e)),
        }
    }
}

/// Whether something is mounted at `dir` (as this process sees the mount table). A root's
/// overlay and a bind of a folder on the same file system both count.
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let dir = dir.display().to_string();
    is_mount_point_in(&table, &dir)
}

fn is_mount_point_in(mountinfo: &str, dir: &str) -> bool {
    mountinfo
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(dir))
}

/// The one mount that hands the root mounted at `dir` to the shim.
pub fn bind_of(dir: &Path) -> Mount {
    Mount {
        r#type: "bind".into(),
        source: dir.display().to_string(),
        target: String::new(),
        options: vec!["rbind".into(), "rw".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_found_by_their_exact_path() {
        let table = "36 25 0:31 / /var/lib/skiff/warm-roots/k1 rw,relatime - overlay overlay rw\n\
                     37 25 0:32 / /var/lib/skiff/warm-roots/k10 rw - overlay overlay rw";
        assert!(is_mount_point_in(table, "/var/lib/skiff/warm-roots/k1"));
        assert!(is_mount_point_in(table, "/var/lib/skiff/warm-roots/k10"));
        assert!(!is_mount_point_in(table, "/var/lib/skiff/warm-roots/k2"));
        assert!(!is_mount_point_in(table, "/var/lib/skiff/warm-roots"));
    }

    #[test]
    fn flags_and_data_are_told_apart() {
        let options: Vec<String> = [
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l",
            "ro",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (flags, data) = split_options(&options);
        assert_eq!(flags, MsFlags::MS_RDONLY);
        assert_eq!(data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l");
        let (flags, data) = split_options(&["rbind".to_string(), "rw".to_string()]);
        assert_eq!(flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(data, "");
    }
}
