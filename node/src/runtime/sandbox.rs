//! Pod sandbox containers, made ahead of time by the warm pool (`crate::warm_sandboxes`). A
//! sandbox is created but never started: its OCI runtime's init process waits for a start
//! that never comes, and so holds the pod's network namespace and keeps a containerd shim
//! alive (Kubernetes' pause container does both by running). The pod's containers name the
//! sandbox as their shim group and join that shim, so a pod start does not pay for starting
//! one (two Go processes).
//!
//! A sandbox has no image: its root is one read-only folder of the agent's holding only the
//! mount points and the `pause` file the runtime checks for at create time.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The program a sandbox would run if it were started. It never is: the file only has to
/// exist and be executable, since runc and crun look it up when they create the container.
const PAUSE: &str = "/pause";

/// The `skiff.dev/kind` label of sandbox containers.
pub const KIND: &str = "sandbox";

/// Make (or keep) the sandboxes' root folder `dir`: `proc` and `dev` to mount on and an empty
/// executable `pause`. Mounted read-only, so containers never write to it.
pub fn prepare_root(dir: &Path) -> Result<PathBuf> {
    for sub in ["proc", "dev"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(Error::io(&d))?;
    }
    let pause = dir.join(PAUSE.trim_start_matches('/'));
    if !pause.exists() {
        std::fs::write(&pause, b"").map_err(Error::io(&pause))?;
    }
    std::fs::set_permissions(&pause, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io(&pause))?;
    Ok(dir.to_path_buf())
}

/// The cgroup of sandbox `id` (the cgroupfs driver's path).
pub fn cgroups_path(id: &str) -> String {
    format!("/skiff/sandboxes/{id}")
}

/// The runtime spec of sandbox `id` in network namespace `netns`, its root at `root`. Its
/// shim group is its own id: the pod's containers name the same group to join its shim.
pub fn spec(id: &str, root: &Path, netns: &Path) -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [PAUSE],
            "env": [],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": true,
        },
        "root": {"path": root, "readonly": true},
        "annotations": {super::oci_spec::SHIM_GROUP: id},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=64k"]},
        ],
        "linux": {
            "cgroupsPath": cgroups_path(id),
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "mount"},
                {"type": "network", "path": netns},
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_is_its_own_shim_group_in_the_pod_network() {
        let s = spec(
            "skiff-warm-1",
            Path::new("/var/lib/skiff/sandbox-root"),
            Path::new("/run/netns/skiff-warm-1"),
        );
        assert_eq!(
            s["annotations"][super::super::oci_spec::SHIM_GROUP],
            "skiff-warm-1"
        );
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(
            s["linux"]["namespaces"][1]["path"],
            "/run/netns/skiff-warm-1"
        );
        assert_eq!(s["process"]["args"][0], PAUSE);
    }

    #[test]
    fn the_root_has_the_mount_points_and_an_executable_pause() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("sandbox-root");
        prepare_root(&dir).expect("prepared");
        prepare_root(&dir).expect("prepared again");
        let mode = std::fs::metadata(dir.join("pause"))
            .expect("pause")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert!(dir.join("proc").is_dir() && dir.join("dev").is_dir());
    }
}
