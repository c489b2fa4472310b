//! The pod's parent cgroup. Each container's cgroup (`/skiff/pod<uid>/<container>`) is made
//! and removed by the OCI runtime, but the pod's parent directory is the agent's: left alone
//! it would stay behind in every cgroup hierarchy after the pod is gone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The cgroup that holds every pod's parent, in each hierarchy.
const PODS: &str = "skiff";

/// The cgroup under which all of a pod's containers sit, relative to each hierarchy's root.
pub fn pod_parent(uid: &str) -> String {
    format!("/{PODS}/pod{uid}")
}

/// The controllers on the cgroup2 hierarchy of a host that also mounts v1 hierarchies
/// ("hybrid" mode); empty on a pure v1 or pure v2 host. crun 1.8 refuses to run containers
/// unless this is empty.
pub fn hybrid_controllers() -> Vec<String> {
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The mounted cgroup hierarchies.
fn mounted_roots() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string(Path::new("/proc/self/mountinfo")).unwrap_or_default();
    hierarchy_roots(&mountinfo)
}

/// The uids of the pods that have a parent cgroup in some hierarchy.
pub fn pod_uids() -> BTreeSet<String> {
    mounted_roots()
        .iter()
        .filter_map(|root| std::fs::read_dir(root.join(PODS)).ok())
        .flatten()
        .flatten()
        .filter_map(|e| Some(e.file_name().to_str()?.strip_prefix("pod")?.to_string()))
        .collect()
}

/// Mount points of the cgroup hierarchies (v1 and v2) in `mountinfo`'s text.
fn hierarchy_roots(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "id parent major:minor root mountpoint options... - fstype source superopts"
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// Remove the cgroup `dir` and the cgroups below it, deepest first. A cgroup directory can be
/// removed (its control files need no removing) only when no process is in it, so one that
/// still runs something stays, and so do its parents.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Remove the pod's cgroups from every hierarchy under `roots`; returns how many pod
/// parents were removed. The runtime removes a container's cgroups on delete, but not in
/// every hierarchy (crun 1.8 leaves hugetlb's on hybrid hosts), so empty ones left below the
/// parent go with it.
fn remove_under(roots: &[PathBuf], uid: &str) -> usize {
    let relative = pod_parent(uid);
    let relative = relative.trim_start_matches('/');
    roots
        .iter()
        .map(|root| root.join(relative))
        .filter(|dir| match remove_tree(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::debug!(cgroup = %dir.display(), error = %e, "pod cgroup kept");
                false
            }
        })
        .count()
}

/// Remove the pod's parent cgroup from every mounted hierarchy, once its containers are gone.
pub fn remove_pod_parent(uid: &str) {
    let removed = remove_under(&mounted_roots(), uid);
    tracing::debug!(pod_uid = %uid, removed, "pod cgroups removed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_and_v2_hierarchies_only() {
        let mountinfo = "\
25 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
27 25 0:24 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
28 1 0:25 / /proc rw - proc proc rw";
        assert_eq!(
            hierarchy_roots(mountinfo),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
    }

    #[test]
    fn removes_empty_pod_cgroups_and_keeps_one_still_in_use() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (memory, cpu, hugetlb) = (
            dir.path().join("memory"),
            dir.path().join("cpu"),
            dir.path().join("hugetlb"),
        );
        std::fs::create_dir_all(memory.join("skiff/podA")).expect("mkdir");
        // An empty container cgroup the runtime left behind.
        std::fs::create_dir_all(hugetlb.join("skiff/podA/c1")).expect("mkdir");
        // A container cgroup still in use: here a directory that cannot be removed.
        std::fs::create_dir_all(cpu.join("skiff/podA/c2")).expect("mkdir");
        std::fs::write(cpu.join("skiff/podA/c2/busy"), b"").expect("write");
        let roots = vec![
            memory.clone(),
            cpu.clone(),
            hugetlb.clone(),
            dir.path().join("absent"),
        ];
        assert_eq!(remove_under(&roots, "A"), 2);
        assert!(!memory.join("skiff/podA").exists());
        assert!(!hugetlb.join("skiff/podA").exists());
        assert!(memory.join("skiff").exists(), "the shared parent stays");
        assert!(cpu.join("skiff/podA/c2").exists());
    }
}
