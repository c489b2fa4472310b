//! The node's side of `local-path` volumes: the folder under the agent's data directory that
//! holds them (published on the Node, where the volume controller provisions), and the
//! removal of folders whose PersistentVolume is gone after this agent saw it with reclaim
//! policy Delete (a claim deleted), as k3s' provisioner removes them with a helper pod. A
//! folder whose volume was Retain, or that the agent never saw (the volume went while it
//! was down), is kept: data is removed only when it is known to be unwanted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use skiff_proto::objects::Api;
use skiff_proto::Client;

/// How often folders are matched against the volumes.
const CLEANUP_EVERY: Duration = Duration::from_secs(10);

/// The folder of the `local-path` volumes of an agent whose data directory is `data_dir`.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("local-path")
}

/// The volume a folder under the root belongs to: `pvc-UID_NAMESPACE_CLAIM` is `pvc-UID`'s.
fn volume_of(folder: &str) -> Option<&str> {
    let name = folder.split('_').next()?;
    name.starts_with("pvc-").then_some(name)
}

/// Remove, every little while, the folders under `root` whose volume no longer exists and
/// was last seen with reclaim policy Delete.
pub async fn clean_up(client: Client, root: PathBuf) {
    let mut tick = tokio::time::interval(CLEANUP_EVERY);
    // Volume name → its reclaim policy, as last listed.
    let mut policies: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tick.tick().await;
        if let Err(e) = clean_once(&client, &root, &mut policies).await {
            tracing::debug!(root = %root.display(), error = %e, "matching local-path folders to volumes");
        }
    }
}

async fn clean_once(
    client: &Client,
    root: &Path,
    policies: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    // The folders are read before the volumes: a folder is made only after its volume
    // exists, so a folder read here whose volume the list does not hold is truly orphaned.
    let folders: Vec<String> = match std::fs::read_dir(root) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if folders.is_empty() {
        return Ok(());
    }
    let api: Api<PersistentVolume> = Api::new(client.clone(), "");
    let volumes: BTreeMap<String, String> = api
        .list("", "")
        .await
        .map_err(|e| e.to_string())?
        .0
        .into_iter()
        .filter_map(|v| {
            let policy = v
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.clone())
                .unwrap_or_else(|| "Retain".into());
            Some((v.metadata.name?, policy))
        })
        .collect();
    let last_seen = std::mem::replace(policies, volumes);
    for folder in folders {
        let Some(volume) = volume_of(&folder) else {
            continue;
        };
        if policies.contains_key(volume) {
            continue;
        }
        if last_seen.get(volume).map(String::as_str) != Some("Delete") {
            continue; // Retain, or never seen: the data stays for an operator
        }
        let path = root.join(&folder);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), volume, "removed the folder of a deleted volume")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "removing the folder of a deleted volume")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_name_their_volume() {
        assert_eq!(volume_of("pvc-1234_default_data-web-0"), Some("pvc-1234"));
        assert_eq!(volume_of("pvc-1234"), Some("pvc-1234"));
        assert_eq!(volume_of("lost+found"), None);
    }
}
