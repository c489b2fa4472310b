//! `skiffctl snapshot save|inspect`: backups of the whole store.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use skiff_proto::Client;
use skiff_raft::backup::{self, Inspection};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent copy of the whole store (every write acknowledged before the
    /// command) into FILE, checked before it is kept.
    Save { file: PathBuf },
    /// Check FILE (length, checksum) and show what it holds.
    Inspect {
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `inspect` reads a file only: it needs no cluster.
pub fn is_offline(cmd: &SnapshotCommand) -> bool {
    matches!(cmd, SnapshotCommand::Inspect { .. })
}

pub async fn run(client: Option<&Client>, cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Save { file } => {
            let client = client.context("snapshot save: no cluster to save from")?;
            save(client, &file).await
        }
        SnapshotCommand::Inspect { file, json } => {
            let i = backup::inspect(&file).with_context(|| file.display().to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&as_json(&i))?);
            } else {
                print(&i);
            }
            Ok(())
        }
    }
}

async fn save(client: &Client, file: &Path) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let stream = client.backup_stream().await.context("taking the backup")?;
    // Written and checked as it arrives: memory does not grow with the store, and what the
    // member sent is checked as a restore checks it before it is kept.
    let v = backup::save::save(stream.map(|c| c.map(|c| c.data)), file).await?;
    let (header, checksum) = (v.header, v.checksum);
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "saved {} ({size} bytes): revision {}, {} records, checksum {checksum}",
        file.display(),
        header.revision,
        header.records,
    );
    Ok(())
}

fn print(i: &Inspection) {
    let h = &i.header;
    println!("checksum:   {} (OK)", i.checksum);
    println!("size:       {} bytes", i.size);
    println!(
        "cluster:    {} (taken on member {})",
        h.cluster_id, h.member_id
    );
    println!("taken at:   {} by skiff {}", h.taken_at, h.written_by);
    println!("revision:   {}", h.revision);
    println!("raft:       index {}, term {}", h.raft_index, h.raft_term);
    println!("records:    {} ({} keys)", h.records, i.keys);
    println!("objects:");
    for (resource, n) in &i.objects {
        println!("  {resource:<28} {n}");
    }
}

fn as_json(i: &Inspection) -> serde_json::Value {
    serde_json::json!({
        "checksum": i.checksum,
        "size": i.size,
        "clusterId": i.header.cluster_id,
        "memberId": i.header.member_id,
        "takenAt": i.header.taken_at,
        "writtenBy": i.header.written_by,
        "revision": i.header.revision,
        "raftIndex": i.header.raft_index,
        "raftTerm": i.header.raft_term,
        "records": i.header.records,
        "keys": i.keys,
        "objects": i.objects,
    })
}
