//! Named network namespaces laid out as `ip netns` lays them out (`/run/netns/<name>`, a bind
//! mount of the namespace, so `ip netns exec` and the CNI plugins find them), but made and
//! removed in-process: a pod start no longer pays for an `ip` process.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{Error, Result};

/// Where named namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const RUN_DIR: &str = "/run/netns";

/// The path of namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// Whether `path` holds a namespace (its file system is nsfs) rather than a bare mount target
/// that a crash between the two steps of [`create`] left behind.
fn is_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Make the run folder a shared mount point, as `ip netns add` does, so that removing a
/// namespace here also unmounts it in mount namespaces that copied it (containers made since).
fn share_run_dir() -> Result<()> {
    let dir = Path::new(RUN_DIR);
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        // Not a mount point yet: make it one, then share it.
        Err(nix::Error::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(Error::syscall(dir, "bind-mounting"))?;
            mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)
                .map_err(Error::syscall(dir, "sharing"))
        }
        Err(e) => Err(Error::syscall(dir, "sharing")(e)),
    }
}

/// The empty file a namespace is bind-mounted on.
fn make_mount_target(target: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map(drop)
        .map_err(Error::io(target))
}

/// Create namespace `name` (an existing one is kept); returns its path.
pub fn create(name: &str) -> Result<PathBuf> {
    let target = path(name);
    if is_namespace(&target) {
        return Ok(target);
    }
    share_run_dir()?;
    make_mount_target(&target)?;
    // A thread of its own: unshare moves only the calling thread into the new namespace, and
    // this one ends right after, so no other work ever runs in it.
    let bind_target = target.clone();
    let made = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(Error::syscall(&bind_target, "unshare for"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &bind_target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(Error::syscall(
            &bind_target,
            "bind-mounting the namespace on",
        ))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(Error::Command {
            command: format!("creating {}", target.display()),
            message: "the namespace thread panicked".into(),
        })
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&target);
        return Err(e);
    }
    Ok(target)
}

/// Give namespace `from` the name `to` (bind-mounted under the new name, then unmounted from
/// the old); the namespace and what is wired in it stay as they are.
pub fn rename(from: &str, to: &str) -> Result<PathBuf> {
    let (source, target) = (path(from), path(to));
    if !is_namespace(&source) {
        return Err(Error::io(&source)(io::Error::new(
            io::ErrorKind::NotFound,
            "no network namespace here",
        )));
    }
    make_mount_target(&target)?;
    if let Err(e) = mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(&target);
        return Err(Error::syscall(&target, "bind-mounting the namespace on")(e));
    }
    delete(from)?;
    Ok(target)
}

/// The names of the namespaces that start with `prefix`.
pub fn names_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir(RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Remove namespace `name`; a missing one is fine.
pub fn delete(name: &str) -> Result<()> {
    let target = path(name);
    if !target.exists() {
        return Ok(());
    }
    match umount2(&target, MntFlags::MNT_DETACH) {
        // EINVAL: a bare mount target, nothing mounted on it.
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(e) => return Err(Error::syscall(&target, "unmounting")(e)),
    }
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&target)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_made_like_ip_netns_add_and_removed_without_trace_as_root() {
        crate::test_support::require_root("namespaces");
        let name = format!("skiff-unit-{}", std::process::id());
        let own_before = std::fs::read_link("/proc/thread-self/ns/net").expect("own ns");
        let p = create(&name).expect("create");
        assert!(is_namespace(&p));
        // `ip` sees it and can run in it; it has only a loopback interface.
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &name, "ip", "-o", "link"])
            .output()
            .expect("ip");
        let links = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:"), "{links}");
        // The calling thread stayed in its own namespace.
        let own_after = std::fs::read_link("/proc/thread-self/ns/net").expect("own ns");
        assert_eq!(own_before, own_after);
        // Creating it again keeps it.
        assert_eq!(create(&name).expect("again"), p);
        // Renamed, it is the same namespace under the new name only.
        let inode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .ok()
        };
        let before = inode(&p);
        let renamed = format!("{name}-r");
        let q = rename(&name, &renamed).expect("rename");
        assert!(!p.exists());
        assert!(is_namespace(&q));
        assert_eq!(inode(&q), before);
        assert_eq!(names_with_prefix(&name), vec![renamed.clone()]);
        assert!(
            rename(&name, "skiff-unit-nothing").is_err(),
            "renaming a missing namespace"
        );
        delete(&renamed).expect("delete");
        assert!(!q.exists());
        delete(&name).expect("deleting a missing one is fine");
    }
}
