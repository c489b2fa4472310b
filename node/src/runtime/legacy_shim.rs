//! Containers made by releases that ran `skiff-shim` name its pinned path under the agent's
//! data folder (`<data-dir>/oci-runtime/skiff-shim`) as their runtime, and containerd runs
//! that path again to stop and clean up after them. skiff-shim handed every call but a
//! container's join to containerd's runc v2 shim, so that shim serves those calls as well: a
//! path that no longer runs (its read-only pin went with a reboot) becomes a link to it, and
//! such containers are never stranded.

use std::path::{Path, PathBuf};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::ListContainersRequest;

use crate::ctd::Conn;

/// containerd's runc v2 shim, as its package installs it.
const RUNC_V2_SHIM: &str = "containerd-shim-runc-v2";

/// The runtime paths under `pins` that `names` (containers' runtime names) hold and that do
/// not run: missing, or the empty file a pin was mounted on.
pub fn stranded(names: impl IntoIterator<Item = String>, pins: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = names
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.starts_with(pins))
        .filter(|p| std::fs::metadata(p).map_or(true, |m| m.len() == 0))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Make `path` a link to `shim`.
pub fn link(path: &Path, shim: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(shim, path)
}

fn runc_v2_shim() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(RUNC_V2_SHIM))
            .find(|p| p.is_file())
    })
}

/// Point every stranded runtime path the agent's containers name at containerd's runc v2
/// shim.
pub async fn keep_runnable(conn: &Conn, pins: &Path) {
    let listed = ContainersClient::new(conn.channel())
        .list(conn.req(ListContainersRequest {
            filters: Vec::new(),
        }))
        .await;
    let names = match listed {
        Ok(r) => r.into_inner().containers,
        Err(e) => {
            tracing::warn!(error = %e, "listing containers for the shims they name");
            return;
        }
    }
    .into_iter()
    .filter_map(|c| c.runtime.map(|r| r.name));
    let paths = stranded(names, pins);
    if paths.is_empty() {
        return;
    }
    let Some(shim) = runc_v2_shim() else {
        tracing::warn!(?paths, "containers name a shim that no longer runs and {RUNC_V2_SHIM} is not in PATH; containerd cannot clean up after them");
        return;
    };
    for path in paths {
        match link(&path, &shim) {
            Ok(()) => {
                tracing::info!(path = %path.display(), shim = %shim.display(), "the shim earlier containers name now runs containerd's runc v2 shim")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "linking the shim earlier containers name")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shim_path_containers_name_that_no_longer_runs_is_linked_to_the_runc_v2_shim() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pins = dir.path().join("oci-runtime");
        std::fs::create_dir_all(&pins).expect("pins");
        let empty = pins.join("skiff-shim");
        std::fs::write(&empty, b"").expect("the file a pin was mounted on");
        let working = pins.join("other");
        std::fs::write(&working, b"#!/bin/sh\n").expect("a runnable file");
        let names = vec![
            "io.containerd.runc.v2".to_string(),
            empty.display().to_string(),
            empty.display().to_string(),
            working.display().to_string(),
            "/usr/bin/elsewhere".to_string(),
        ];
        assert_eq!(stranded(names, &pins), vec![empty.clone()]);

        let shim = dir.path().join("containerd-shim-runc-v2");
        std::fs::write(&shim, b"#!/bin/sh\necho shim\n").expect("a shim");
        link(&empty, &shim).expect("link");
        assert_eq!(std::fs::read_link(&empty).expect("a link"), shim);
        assert!(stranded(vec![empty.display().to_string()], &pins).is_empty());
    }
}
