//! `skiff control recover`: a surviving member of a cluster that lost its quorum becomes a
//! one-member cluster with everything it holds (etcd's `--force-new-cluster`, k3s'
//! `--cluster-reset`).
//!
//! The member's data is copied and the copy worked on; the new data directory is built
//! beside the old one, which is kept (renamed) until the operator removes it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use skiff_control::bootstrap;

use crate::staging::Staging;

#[derive(Args, Debug, Clone)]
pub struct RecoverArgs {
    /// The stopped member's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// The Raft parts of a data directory; the rest (its claim, its CA) is carried over.
const RAFT_PARTS: [&str; 4] = ["log", "state", "snapshot.bin", "snapshot.tmp"];

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(drop)
    }
}

pub async fn run(args: RecoverArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    let (cluster_id, id) = bootstrap::claimed_member(dir)?.with_context(|| {
        format!(
            "--data-dir {}: holds no member's data (no member.json)",
            dir.display()
        )
    })?;
    // A running member holds its store open (locked): refuse rather than copy it mid-write,
    // and before changing anything.
    skiff_raft::engine::SledEngine::check_not_open(&dir.join("state")).map_err(|e| {
        anyhow::anyhow!(
            "--data-dir {}: its store cannot be opened ({e}); stop the member first",
            dir.display()
        )
    })?;
    // Refuses a directory of a newer format, and records this one's before the stores (the
    // copies recovered from) are brought to it.
    bootstrap::claim_data_dir(dir, &cluster_id, id)?;
    let (work, staging) = (
        Staging::beside(dir, "recover-work")?,
        Staging::beside(dir, "recovering")?,
    );
    let recovered = build(dir, work.path(), staging.path(), id, &cluster_id).await?;
    drop(work);
    let stamp = jiff::Timestamp::now().as_second();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kept = dir.with_file_name(format!("{name}.before-recover-{stamp}"));
    std::fs::rename(dir, &kept)
        .with_context(|| format!("keeping the old data as {}", kept.display()))?;
    staging.move_to(dir)?;
    println!(
        "member {id} of cluster {cluster_id} is now its only member, at {}: revision {} ({} log entries it held were applied)",
        recovered.addr, recovered.header.revision, recovered.applied_from_log
    );
    println!(
        "the old data is kept in {}; start the member as before, then add members (`skiff control --join`, `skiffctl cluster add ID ADDR`)",
        kept.display()
    );
    Ok(())
}

async fn build(
    dir: &Path,
    work: &Path,
    staging: &Path,
    id: u64,
    cluster_id: &str,
) -> anyhow::Result<skiff_raft::backup::Recovered> {
    for part in RAFT_PARTS {
        let from = dir.join(part);
        if from.exists() {
            copy_tree(&from, &work.join(part))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let recovered = skiff_raft::backup::recover(work, staging, id, cluster_id)
        .await
        .with_context(|| format!("recovering {}", dir.display()))?;
    for e in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let e = e?;
        let name = e.file_name();
        if RAFT_PARTS.iter().any(|p| name == *p) {
            continue;
        }
        copy_tree(&e.path(), &staging.join(&name))
            .with_context(|| format!("carrying over {}", e.path().display()))?;
    }
    Ok(recovered)
}
