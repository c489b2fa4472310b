//! `skiffctl cluster status|add|promote|remove|transfer-leader|compact`.

use clap::Subcommand;
use skiff_proto::Client;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Members with their role, term, revision, applied index and lag behind the leader.
    Status,
    /// Add a member: as a learner that catches up, then promoted to voter (unless --learner).
    Add {
        id: u64,
        addr: String,
        /// Leave it a learner (non-voting).
        #[arg(long)]
        learner: bool,
    },
    /// Promote a learner to voter.
    Promote { id: u64 },
    /// Remove a member.
    Remove { id: u64 },
    /// Hand leadership to a voter (by default the one furthest along), as before a planned
    /// stop of the leader.
    TransferLeader { id: Option<u64> },
    /// Compact every member in turn: a Raft snapshot now and the log purged behind it; shows
    /// each member's data size before and after.
    Compact,
}

pub async fn run(client: &Client, cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status => status(client).await,
        ClusterCommand::Add { id, addr, learner } => {
            let r = client.member_add(id, &addr, !learner).await?;
            println!(
                "member {id} added at {addr} as {}",
                if learner { "learner" } else { "voter" }
            );
            println!(
                "members: {}",
                r.members
                    .iter()
                    .map(|m| m.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        ClusterCommand::Promote { id } => {
            client.member_promote(id).await?;
            println!("member {id} promoted to voter");
            Ok(())
        }
        ClusterCommand::Remove { id } => {
            client.member_remove(id).await?;
            println!("member {id} removed");
            Ok(())
        }
        ClusterCommand::Compact => compact(client).await,
        ClusterCommand::TransferLeader { id } => {
            let r = client.transfer_leader(id).await?;
            println!("member {} leads (term {})", r.leader, r.term);
            Ok(())
        }
    }
}

async fn compact(client: &Client) -> anyhow::Result<()> {
    let list = client.members().await?;
    let mut rows = vec![["ID", "ADDRESS", "BEFORE", "AFTER", "SNAPSHOT", "PURGED"]
        .map(String::from)
        .to_vec()];
    let mut failed = Vec::new();
    // One at a time: each snapshot takes a member's disk and CPU for a moment.
    for m in &list.members {
        match Client::compact_member(&m.addr, client.credentials().as_ref()).await {
            Ok(r) => rows.push(vec![
                m.id.to_string(),
                m.addr.clone(),
                bytes(r.data_bytes_before),
                bytes(r.data_bytes_after),
                r.snapshot_index.to_string(),
                r.purged_index.to_string(),
            ]),
            Err(e) => failed.push(format!("member {} ({}): {}", m.id, m.addr, e.message())),
        }
    }
    print_table(&rows);
    if !failed.is_empty() {
        anyhow::bail!("not compacted: {}", failed.join("; "));
    }
    Ok(())
}

async fn status(client: &Client) -> anyhow::Result<()> {
    let list = client.members().await?;
    let leader_last = list.last_log_index;
    let mut cluster_id = String::new();
    let mut expiring: Vec<(String, i64)> = Vec::new();
    if let Some(t) = client
        .credentials()
        .and_then(|c| skiff_proto::tls::holder::not_after(&c.cert).ok())
    {
        expiring.push(("your client certificate".into(), t));
    }
    let mut rows = vec![[
        "ID", "ADDRESS", "ROLE", "TERM", "REVISION", "APPLIED", "LAG", "SNAPSHOT", "DATA", "DISK",
    ]
    .map(String::from)
    .to_vec()];
    let mut warnings: Vec<String> = Vec::new();
    let (mut voters, mut voters_up) = (0usize, 0usize);
    let (mut newest_backup, mut backup_interval) = (0i64, 0u64);
    for m in &list.members {
        let role = if m.id == list.leader {
            "leader"
        } else if m.voter {
            "follower"
        } else {
            "learner"
        };
        voters += usize::from(m.voter);
        match Client::status_of(&m.addr, client.credentials().as_ref()).await {
            Ok(st) => {
                voters_up += usize::from(m.voter);
                let lag = leader_last.saturating_sub(st.applied_index);
                if lag > LAG_WARNING {
                    warnings.push(format!(
                        "member {} lags the leader by {lag} log entries",
                        m.id
                    ));
                }
                let used = disk_used_percent(&st);
                if used > DISK_WARNING_PERCENT {
                    warnings.push(format!(
                        "member {}'s disk is {used}% full (its data: {})",
                        m.id,
                        bytes(st.data_bytes)
                    ));
                }
                newest_backup = newest_backup.max(st.newest_backup_at);
                backup_interval = backup_interval.max(st.backup_interval_seconds);
                cluster_id = st.cluster_id.clone();
                if st.certificate_not_after != 0 {
                    expiring.push((
                        format!("member {}'s certificate", m.id),
                        st.certificate_not_after,
                    ));
                }
                rows.push(vec![
                    m.id.to_string(),
                    m.addr.clone(),
                    role.to_string(),
                    st.term.to_string(),
                    st.revision.to_string(),
                    st.applied_index.to_string(),
                    lag.to_string(),
                    st.snapshot_index.to_string(),
                    bytes(st.data_bytes),
                    format!("{}%", disk_used_percent(&st)),
                ]);
            }
            Err(e) => {
                warnings.push(format!("member {} is unreachable: {}", m.id, e.message()));
                let mut row = vec![
                    m.id.to_string(),
                    m.addr.clone(),
                    format!("{role} (unreachable)"),
                ];
                row.resize(rows[0].len(), "-".into());
                rows.push(row);
            }
        }
    }
    let quorum = voters / 2 + 1;
    if voters_up < quorum {
        warnings.push(format!(
            "no quorum: {voters_up} of {voters} voters answer; writes stop until {quorum} do \
             (docs/OPERATIONS.md, \"Losing the quorum for good\")"
        ));
    } else if voters_up == quorum {
        warnings.push(format!(
            "no fault tolerance: {voters_up} of {voters} voters answer; losing one more stops writes"
        ));
    }
    let now = jiff::Timestamp::now().as_second();
    if backup_interval > 0 && newest_backup > 0 && now - newest_backup > 2 * backup_interval as i64
    {
        warnings.push(format!(
            "the newest scheduled backup is {} old (taken every {})",
            age(now - newest_backup),
            age(backup_interval as i64)
        ));
    }
    println!(
        "cluster {cluster_id}, leader {}, term {}",
        list.leader, list.term
    );
    print_table(&rows);
    for w in &warnings {
        println!("warning: {w}");
    }
    for (what, not_after) in expiring {
        let days = (not_after - now) / 86_400;
        if not_after <= now {
            println!("warning: {what} has expired");
        } else if not_after - now < EXPIRY_WARNING_SECS {
            println!("warning: {what} expires in {days} days");
        }
    }
    Ok(())
}

/// A member further behind the leader's log than this is warned about.
const LAG_WARNING: u64 = 1_000;
/// A member's disk fuller than this (percent) is warned about.
const DISK_WARNING_PERCENT: u64 = 85;

fn disk_used_percent(st: &skiff_proto::pb::StatusResponse) -> u64 {
    let total = st.disk_total_bytes.max(1);
    st.disk_total_bytes.saturating_sub(st.disk_free_bytes) * 100 / total
}

/// Rows in columns, each as wide as its widest cell.
fn print_table(rows: &[Vec<String>]) {
    let Some(first) = rows.first() else {
        return;
    };
    let widths: Vec<usize> = (0..first.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{} KiB", n.div_ceil(1024)),
    }
}

fn age(secs: i64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Certificates closer than this to their expiry are warned about (k3s renews within 90 days).
const EXPIRY_WARNING_SECS: i64 = 90 * 86_400;
