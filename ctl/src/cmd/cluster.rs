//! `skiffctl cluster status|add|remove`.

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
    }
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
        "ID", "ADDRESS", "ROLE", "TERM", "REVISION", "APPLIED", "LAG", "SNAPSHOT",
    ]
    .map(String::from)
    .to_vec()];
    for m in &list.members {
        let role = if m.id == list.leader {
            "leader"
        } else if m.voter {
            "follower"
        } else {
            "learner"
        };
        match Client::status_of(&m.addr, client.credentials().as_ref()).await {
            Ok(st) => {
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
                    leader_last.saturating_sub(st.applied_index).to_string(),
                    st.snapshot_index.to_string(),
                ]);
            }
            Err(e) => rows.push(vec![
                m.id.to_string(),
                m.addr.clone(),
                format!("{role} (unreachable: {})", e.message()),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
        }
    }
    println!(
        "cluster {cluster_id}, leader {}, term {}",
        list.leader, list.term
    );
    let widths: Vec<usize> = (0..rows[0].len())
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
    let now = jiff::Timestamp::now().as_second();
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

/// Certificates closer than this to their expiry are warned about (k3s renews within 90 days).
const EXPIRY_WARNING_SECS: i64 = 90 * 86_400;
