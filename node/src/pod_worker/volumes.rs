//! Pod volumes on the node: `emptyDir` (a directory in the pod's own folder, gone with the
//! pod), `hostPath`, `configMap` / `secret` (their keys written as files, refreshed while
//! the pod runs; a Secret's on a tmpfs of its own, so its bytes never reach the node's disk),
//! and `persistentVolumeClaim` (the host folder of the claim's volume, made if missing).
//! Containers get them as bind mounts at their `volumeMounts`. An `emptyDir` is writable by
//! any user, and owned by the pod's `fsGroup` when it names one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod};

use super::api::PodApi;
use super::config_sources::{ConfigError, SourceKind};
use crate::runtime::oci_spec::BindMount;

/// Make every volume of `pod` present under `pod_dir`; returns name → host path.
pub async fn prepare(
    api: &impl PodApi,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let mut out = BTreeMap::new();
    let io = |p: &Path, e: std::io::Error| ConfigError(format!("{}: {e}", p.display()));
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = if v.empty_dir.is_some() {
            let p = pod_dir.join("volumes/empty-dir").join(&v.name);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
            share_empty_dir(&p, fs_group).map_err(|e| io(&p, e))?;
            p
        } else if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?,
                "Directory" if !p.is_dir() => {
                    return Err(ConfigError(format!(
                        "hostPath {}: is not a directory",
                        p.display()
                    )))
                }
                "File" if !p.is_file() => {
                    return Err(ConfigError(format!(
                        "hostPath {}: is not a file",
                        p.display()
                    )))
                }
                _ => {}
            }
            p
        } else if let Some(cm) = &v.config_map {
            let p = pod_dir.join("volumes/configmap").join(&v.name);
            let data = api
                .source_data(&ns, SourceKind::ConfigMap, &cm.name)
                .await?;
            match data {
                Some(d) => write_keys(&p, &d, cm.items.as_deref(), cm.default_mode)?,
                None if cm.optional.unwrap_or(false) => {
                    std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?
                }
                None => return Err(ConfigError(format!("configmap {:?} not found", cm.name))),
            }
            p
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let p = pod_dir.join("volumes/secret").join(&v.name);
            on_tmpfs(&p)?;
            match api.source_data(&ns, SourceKind::Secret, &name).await? {
                Some(d) => write_keys(&p, &d, s.items.as_deref(), s.default_mode.or(Some(0o644)))?,
                None if s.optional.unwrap_or(false) => {
                    std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?
                }
                None => return Err(ConfigError(format!("secret {name:?} not found"))),
            }
            p
        } else if let Some(c) = &v.persistent_volume_claim {
            let p = api.claim_folder(&ns, &c.claim_name).await?;
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
            p
        } else {
            return Err(ConfigError(format!(
                "volume {:?}: only emptyDir, hostPath, configMap, secret and \
                 persistentVolumeClaim are supported",
                v.name
            )));
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// An `emptyDir` is writable by whatever user the containers run as, as the kubelet makes
/// it (0777); with the pod's `fsGroup` it belongs to that group and passes it on to what is
/// made in it (setgid).
fn share_empty_dir(dir: &Path, fs_group: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match fs_group {
        Some(g) => {
            std::os::unix::fs::chown(dir, None, Some(g))?;
            0o2777
        }
        None => 0o777,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Largest Secret volume: a Secret holds at most 1 MiB, with room for its files' updates.
const SECRET_TMPFS: &str = "size=4m,mode=0755";

/// Make `dir` a tmpfs of its own (unless it is one already: the agent restarted).
fn on_tmpfs(dir: &Path) -> Result<(), ConfigError> {
    use nix::mount::{mount, MsFlags};
    use std::os::unix::fs::MetadataExt;
    let io = |e: std::io::Error| ConfigError(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let parent = dir.parent().unwrap_or(dir);
    let mounted =
        std::fs::metadata(dir).map_err(io)?.dev() != std::fs::metadata(parent).map_err(io)?.dev();
    if mounted {
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(SECRET_TMPFS),
    )
    .map_err(|e| {
        ConfigError(format!(
            "{}: mounting a tmpfs for a Secret: {e}",
            dir.display()
        ))
    })
}

/// Unmount the Secret volumes of the pod whose folder is `pod_dir`, before the folder goes.
pub fn release(pod_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("volumes/secret")) else {
        return;
    };
    for e in entries.flatten() {
        match nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(err) => {
                tracing::warn!(path = %e.path().display(), error = %err, "unmounting a Secret volume")
            }
        }
    }
}

fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |p: &Path, e: std::io::Error| ConfigError(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files: Vec<(String, &Vec<u8>, Option<i32>)> = match items {
        Some(items) => items
            .iter()
            .filter_map(|i| {
                data.get(&i.key)
                    .map(|v| (i.path.clone(), v, i.mode.or(mode)))
            })
            .collect(),
        None => data.iter().map(|(k, v)| (k.clone(), v, mode)).collect(),
    };
    for (rel, value, mode) in files {
        if rel.split('/').any(|p| p == "..") || rel.starts_with('/') {
            return Err(ConfigError(format!(
                "item path {rel:?} must be relative, without '..'"
            )));
        }
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        // Write aside, then rename: a reader never sees half a file.
        let tmp = path.with_extension("skiff-tmp");
        std::fs::write(&tmp, value).map_err(|e| io(&tmp, e))?;
        let perm = std::fs::Permissions::from_mode(mode.unwrap_or(0o644) as u32 & 0o777);
        std::fs::set_permissions(&tmp, perm).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// The bind mounts of container `c`.
pub fn mounts_for(
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<BindMount>, ConfigError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(base) = volumes.get(&m.name) else {
            return Err(ConfigError(format!(
                "volumeMounts {:?}: no volume of that name in the pod",
                m.name
            )));
        };
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if sub.split('/').any(|p| p == "..") || sub.starts_with('/') => {
                return Err(ConfigError(format!(
                    "subPath {sub:?} must be relative, without '..'"
                )))
            }
            Some(sub) => base.join(sub),
            None => base.clone(),
        };
        out.push(BindMount {
            host_path,
            container_path: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_files_with_items_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = BTreeMap::from([
            ("a".to_string(), b"one".to_vec()),
            ("b".to_string(), b"two".to_vec()),
        ]);
        write_keys(dir.path(), &data, None, Some(0o600)).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"one");
        let mode = std::fs::metadata(dir.path().join("b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/renamed".into(),
            mode: None,
        }];
        let d2 = dir.path().join("items");
        write_keys(&d2, &data, Some(&items), None).unwrap();
        assert_eq!(std::fs::read(d2.join("sub/renamed")).unwrap(), b"two");
        assert!(!d2.join("a").exists());
        let bad = [KeyToPath {
            key: "a".into(),
            path: "../escape".into(),
            mode: None,
        }];
        assert!(write_keys(&d2, &data, Some(&bad), None).is_err());
    }
}
