//! Scheduled backups on the leader, as k3s takes its etcd snapshots: one every interval into
//! a directory, the newest few kept.
//!
//! Files are named `skiff-<unix seconds>-r<revision>.skiff`, so they sort by age; only files
//! of that form are ever pruned.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::node::RaftNode;

/// When and where.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Between backups; zero: none.
    pub interval: Duration,
    /// Backups kept; older ones are removed.
    pub retention: usize,
    /// Where they go.
    pub dir: PathBuf,
}

const PREFIX: &str = "skiff-";
const SUFFIX: &str = ".skiff";

/// Take a backup every interval of the member's schedule ([`crate::NodeConfig::backups`])
/// while it leads, until aborted.
pub async fn run(node: RaftNode) {
    let schedule = node.config().backups.clone();
    if schedule.interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + schedule.interval,
        schedule.interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.leader().map(|(id, _)| id) != Some(node.id()) {
            continue;
        }
        match take_one(&node, &schedule).await {
            Ok(path) => tracing::info!(file = %path.display(), "scheduled backup taken"),
            Err(error) => {
                tracing::warn!(%error, dir = %schedule.dir.display(), "scheduled backup failed")
            }
        }
    }
}

async fn take_one(node: &RaftNode, schedule: &Schedule) -> Result<PathBuf, String> {
    let taken = super::take(node).await.map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = schedule.dir.clone();
    let path = dir.join(format!("{PREFIX}{now}-r{}{SUFFIX}", taken.header.revision));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    taken
        .write_to(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let retention = schedule.retention.max(1);
    tokio::task::spawn_blocking(move || {
        prune(&dir, retention).map_err(|e| format!("pruning {}: {e}", dir.display()))
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(path)
}

/// The scheduled backups in `dir`, oldest first.
pub fn scheduled_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<((u64, u64), PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let stamp = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.split_once("-r"))
            .and_then(|(secs, rev)| Some((secs.parse::<u64>().ok()?, rev.parse::<u64>().ok()?)));
        if let Some(stamp) = stamp {
            found.push((stamp, e.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// When the newest scheduled backup in `dir` was taken (seconds since the epoch).
pub fn newest_at(dir: &Path) -> Option<i64> {
    let newest = scheduled_in(dir).ok()?.pop()?;
    let name = newest.file_name()?.to_string_lossy().into_owned();
    name.strip_prefix(PREFIX)?.split_once('-')?.0.parse().ok()
}

fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let all = scheduled_in(dir)?;
    let excess = all.len().saturating_sub(keep);
    for old in &all[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_scheduled_backups_are_kept_and_other_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (secs, rev) in [(100, 5), (300, 9), (200, 7), (400, 12)] {
            let p = dir.path().join(format!("skiff-{secs}-r{rev}.skiff"));
            std::fs::write(p, b"x").unwrap_or_default();
        }
        std::fs::write(dir.path().join("mine.skiff"), b"x").unwrap_or_default();
        prune(dir.path(), 2).unwrap_or_else(|e| panic!("{e}"));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        left.sort();
        assert_eq!(
            left,
            ["mine.skiff", "skiff-300-r9.skiff", "skiff-400-r12.skiff"]
        );
    }
}
