//! `skiff control restore`: the first member of a new cluster, seeded from a backup.
//!
//! The data directory is built beside the target and renamed into place only when complete,
//! so a refused or failed restore leaves the target as it was.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use skiff_control::bootstrap;

use crate::staging::Staging;

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup, as `skiffctl snapshot save` wrote it.
    pub file: PathBuf,
    /// The new member's data directory (it must not exist, or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new member's id: the first of --initial-cluster.
    #[arg(long)]
    pub id: u64,
    /// The new cluster's members, ID=HOST:PORT,... (the others start empty and receive the
    /// data from this one).
    #[arg(long)]
    pub initial_cluster: String,
    /// The new cluster's id (pass the same to every member); default: a new one, printed. A
    /// new id keeps the old cluster's members from joining the new one by mistake.
    #[arg(long)]
    pub cluster_id: Option<String>,
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
    if args.id == 0 {
        anyhow::bail!("--id: member ids start at 1");
    }
    let members = bootstrap::parse_initial_cluster(&args.initial_cluster)?;
    let first = members.keys().next().copied().unwrap_or(0);
    if first != args.id {
        anyhow::bail!(
            "--id {}: a restore seeds the first member of --initial-cluster (member {first}); \
             the others start empty and receive the data from it",
            args.id
        );
    }
    if args.data_dir.exists() && !is_empty_dir(&args.data_dir) {
        anyhow::bail!(
            "--data-dir {}: not empty; a restore writes only into a new or empty directory",
            args.data_dir.display()
        );
    }
    if matches!(&args.cluster_id, Some(c) if c.is_empty()) {
        anyhow::bail!("--cluster-id: must not be empty");
    }
    let staging = Staging::beside(&args.data_dir, "restoring")?;
    let cluster_id = args
        .cluster_id
        .clone()
        .unwrap_or_else(|| format!("skiff-{:016x}", rand::random::<u64>()));
    let header = skiff_raft::backup::restore_file(&args.file, staging.path(), args.id, &members)
        .with_context(|| args.file.display().to_string())?;
    bootstrap::claim_data_dir(staging.path(), &cluster_id, args.id)?;
    if args.data_dir.exists() {
        std::fs::remove_dir(&args.data_dir)
            .with_context(|| format!("replacing the empty {}", args.data_dir.display()))?;
    }
    staging.move_to(&args.data_dir)?;
    println!(
        "restored revision {} ({} records) of cluster {} into {}: member {} of the new cluster {cluster_id}",
        header.revision,
        header.records,
        header.cluster_id,
        args.data_dir.display(),
        args.id
    );
    println!(
        "start every member with --initial-cluster {} --cluster-id {cluster_id}; the others with empty data directories",
        args.initial_cluster
    );
    Ok(())
}
