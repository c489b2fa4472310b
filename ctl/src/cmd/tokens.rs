//! `skiffctl token create|list|revoke`: join tokens for nodes and control members.

use clap::Subcommand;
use serde_json::{json, Value};
use skiff_proto::objects::Selection;
use skiff_proto::tls::token::{secret_hash, JoinToken};
use skiff_proto::Client;

use crate::table;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it: `skiff node --token T` (or, for role control, `skiff
    /// control --join T`) joins with it until it expires or is revoked.
    Create {
        /// How long it works: 30m, 12h, 7d; 0 for ever.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// What it lets join: a node, or a control member (which may also join nodes).
        #[arg(long, default_value = "node", value_parser = ["node", "control"])]
        role: String,
    },
    /// The tokens: id, role, expiry (never their secrets).
    List,
    /// Revoke a token: nothing joins with it any more.
    Revoke { id: String },
}

/// `30m`, `12h`, `7d`, `90s` as seconds; `0` as none.
fn ttl_seconds(ttl: &str) -> anyhow::Result<Option<i64>> {
    let d = skiff_proto::duration::parse(ttl)
        .map_err(|e| anyhow::anyhow!("--ttl: {e} (0: no expiry)"))?;
    if d.is_zero() {
        return Ok(None);
    }
    Ok(Some(i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)))
}

pub async fn run(client: &Client, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { ttl, role } => {
            let ttl = ttl_seconds(&ttl)?;
            let creds = client.credentials().ok_or_else(|| {
                anyhow::anyhow!("the cluster serves plaintext: there is no CA for a token to pin")
            })?;
            let token = JoinToken::generate(&creds.ca)?;
            let expires = match ttl {
                Some(s) => (time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
                    .replace_nanosecond(0)?
                    .format(&time::format_description::well_known::Rfc3339)?,
                None => String::new(),
            };
            let obj = json!({"apiVersion": "auth.skiff.dev/v1", "kind": "JoinToken",
                             "metadata": {"name": token.id},
                             "spec": {"role": role, "secretHash": secret_hash(&token.secret),
                                      "expires": expires}});
            client
                .create_object("jointokens", "", serde_json::to_vec(&obj)?)
                .await?;
            println!("{token}");
            Ok(())
        }
        TokenCommand::List => {
            let list = client
                .list_objects("jointokens", &Selection::default())
                .await?;
            let mut rows = Vec::new();
            for item in &list.items {
                let t: Value = serde_json::from_slice(item)?;
                let s = |p: &str| {
                    t.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let expires = s("/spec/expires");
                rows.push(vec![
                    s("/metadata/name"),
                    s("/spec/role"),
                    if expires.is_empty() {
                        "never".into()
                    } else {
                        expires
                    },
                ]);
            }
            table::print(&["ID", "ROLE", "EXPIRES"], &rows);
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            client
                .delete_object("jointokens", "", &id, &Default::default())
                .await?;
            println!("token {id} revoked");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_an_operator_writes_them() {
        assert_eq!(ttl_seconds("30m").unwrap(), Some(1800));
        assert_eq!(ttl_seconds("7d").unwrap(), Some(604_800));
        assert_eq!(ttl_seconds("0").unwrap(), None);
        assert_eq!(ttl_seconds("1w").unwrap(), Some(604_800));
        for bad in ["", "h", "-1h", "abc"] {
            assert!(ttl_seconds(bad).is_err(), "{bad}");
        }
    }
}
