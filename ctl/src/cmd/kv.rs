//! `skiffctl kv get|put|del|watch`.

use std::io::Read as _;

use clap::Subcommand;
use skiff_proto::pb;
use skiff_proto::{Client, WatchEvent};

#[derive(Subcommand)]
pub enum KvCommand {
    /// Read a key (or every key with a prefix). Linearizable unless --stale.
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Serve from whichever member answers, without a read index.
        #[arg(long)]
        stale: bool,
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Print JSON with revisions.
        #[arg(long)]
        json: bool,
    },
    /// Set a key. VALUE `-` reads standard input.
    Put { key: String, value: String },
    /// Delete a key (or every key with a prefix).
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Watch a key or prefix and print each change.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (0 = now).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        /// Also print progress bookmarks.
        #[arg(long)]
        progress: bool,
    },
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn kv_json(kv: &pb::KeyValue) -> serde_json::Value {
    serde_json::json!({
        "key": text(&kv.key),
        "value": text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    })
}

pub async fn run(client: &Client, cmd: KvCommand) -> anyhow::Result<()> {
    match cmd {
        KvCommand::Get {
            key,
            prefix,
            stale,
            limit,
            keys_only,
            json,
        } => {
            let r = client
                .range(pb::RangeRequest {
                    key: key.into_bytes(),
                    prefix,
                    limit,
                    stale,
                    start_after: vec![],
                })
                .await?;
            if json {
                let revision = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
                let kvs: Vec<_> = r.kvs.iter().map(kv_json).collect();
                println!(
                    "{}",
                    serde_json::json!({ "revision": revision, "kvs": kvs, "more": r.more })
                );
                return Ok(());
            }
            for kv in &r.kvs {
                println!("{}", text(&kv.key));
                if !keys_only {
                    println!("{}", text(&kv.value));
                }
            }
            if !prefix && r.kvs.is_empty() {
                anyhow::bail!("key not found");
            }
        }
        KvCommand::Put { key, value } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                buf
            } else {
                value.into_bytes()
            };
            let r = client.put(key, value).await?;
            println!(
                "OK (revision {})",
                r.header.map(|h| h.revision).unwrap_or(0)
            );
        }
        KvCommand::Del { key, prefix } => {
            let r = client.delete(key, prefix).await?;
            println!("{}", r.deleted);
        }
        KvCommand::Watch {
            key,
            prefix,
            rev,
            progress,
        } => {
            let mut rx = client.watch(key, prefix, rev);
            while let Some(item) = rx.recv().await {
                match item? {
                    WatchEvent::Events(events) => {
                        for ev in events {
                            let kind = if ev.r#type == pb::event::EventType::Delete as i32 {
                                "DELETE"
                            } else {
                                "PUT"
                            };
                            let kv = ev.kv.unwrap_or_default();
                            println!(
                                "{kind} {} {} (revision {})",
                                text(&kv.key),
                                text(&kv.value),
                                kv.mod_revision
                            );
                        }
                    }
                    WatchEvent::Progress(r) if progress => println!("PROGRESS (revision {r})"),
                    WatchEvent::Progress(_) => {}
                }
            }
        }
    }
    Ok(())
}
