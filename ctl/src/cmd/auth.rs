//! `skiffctl auth can-i` and `skiffctl user create`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;
use skiff_proto::config_file::ConfigFile;
use skiff_proto::pb;
use skiff_proto::tls::holder::Holder;
use skiff_proto::tls::{self, Credentials};
use skiff_proto::{Client, ClientError};

use super::objects::ExitWith;

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Whether you (or, for an admin, --as USER) may do VERB on RESOURCE: `yes` or `no` with
    /// the rule that decided; exits 1 on `no`. Verbs: get, list, watch, create, update,
    /// patch, delete, logs, exec, import, kv, members.
    CanI {
        verb: String,
        /// A kind by any name kubectl accepts (pods, deploy, secret); none for kv, members
        /// and import.
        resource: Option<String>,
        /// One object's name (a node's own objects depend on it).
        name: Option<String>,
        #[arg(short, long, default_value = "")]
        namespace: String,
        /// Ask for another user (user NAME, or node:NAME).
        #[arg(long = "as")]
        as_user: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user with a role (admin, edit or view) and write a client config holding a
    /// new certificate for it; the private key is made here and never leaves this machine.
    Create {
        name: String,
        #[arg(long)]
        role: String,
        /// Where the client config goes (refused if it exists).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn auth(client: &Client, cmd: AuthCommand) -> anyhow::Result<()> {
    let AuthCommand::CanI {
        verb,
        resource,
        name,
        namespace,
        as_user,
    } = cmd;
    let answer = client
        .can_i(pb::CanIRequest {
            verb,
            resource: resource.unwrap_or_default(),
            namespace,
            name: name.unwrap_or_default(),
            as_user: as_user.unwrap_or_default(),
        })
        .await?;
    let word = if answer.allowed { "yes" } else { "no" };
    println!(
        "{word} ({} as {}: {})",
        answer.subject, answer.role, answer.rule
    );
    if answer.allowed {
        Ok(())
    } else {
        Err(ExitWith {
            code: 1,
            message: String::new(),
        }
        .into())
    }
}

pub async fn user(client: &Client, endpoints: &[String], cmd: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create { name, role, out } = cmd;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("skiffconfig-{name}.json")));
    if out.exists() {
        anyhow::bail!(
            "--out: {} exists; name another file (it would hold {name}'s key)",
            out.display()
        );
    }
    let user = json!({"apiVersion": "auth.skiff.dev/v1", "kind": "User",
                      "metadata": {"name": name}, "spec": {"role": role}});
    match client
        .create_object("users", "", serde_json::to_vec(&user)?)
        .await
    {
        Ok(_) => {}
        Err(ClientError::Rejected(s)) if s.code() == tonic::Code::AlreadyExists => {
            anyhow::bail!(
                "user {name:?} exists: delete it first (skiffctl delete user {name}) to issue new credentials, or change its role with skiffctl edit user {name}"
            )
        }
        Err(e) => return Err(e.into()),
    }
    let (key, csr) = tls::signing_request(&Holder::User(name.clone()))?;
    let signed = client.issue_certificate(&csr).await?;
    let credentials = Credentials {
        ca: signed.ca_pem,
        cert: signed.certificate_pem,
        key,
    };
    ConfigFile::single(&name, endpoints.to_vec(), Some(credentials)).save(&out)?;
    println!("user/{name} created with role {role}");
    println!(
        "client config: {} (use it with SKIFFCONFIG={0} or --config {0})",
        out.display()
    );
    Ok(())
}
