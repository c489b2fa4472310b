//! Joining with a token, and the tokens a new cluster starts with. A newcomer pins the CA by
//! the token's hash (`skiff_proto::tls::token`), then: a control member receives the CA (it
//! signs its own certificate, as every member does) and adds itself to the cluster; a node
//! agent receives its own certificate.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use skiff_control::objects::ObjectStore;
use skiff_proto::config_file::ConfigFile;
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;
use skiff_proto::tls::token::{self, secret_hash, JoinToken};
use skiff_proto::tls::{self, Credentials, LiveCredentials};
use skiff_proto::{Client, ClientConfig};

fn parse(token: &str) -> anyhow::Result<JoinToken> {
    token
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--token: {e}"))
}

/// Fetch the cluster's CA with `token` from `server` into `DATA-DIR/pki` for member `id`,
/// unless it is there already; the cluster's id when fetched.
pub async fn control_member(
    token: &str,
    server: &str,
    data_dir: &Path,
    id: u64,
) -> anyhow::Result<Option<String>> {
    let pki = data_dir.join("pki");
    if ClusterCa::load(&pki)?.is_some() {
        return Ok(None);
    }
    let token = parse(token)?;
    let (_, csr) = tls::signing_request(&Holder::Control(id))?;
    let joined = token::join(server, &token, &csr)
        .await
        .with_context(|| format!("joining through {server}"))?;
    ClusterCa::from_pem(joined.ca_pem, joined.ca_key_pem)
        .save(&pki)
        .with_context(|| format!("keeping the cluster CA in {}", pki.display()))?;
    tracing::info!(server, token = %token.id, "joined with a token: cluster CA received");
    Ok(Some(joined.cluster_id))
}

/// Add this member (`id` at `advertise`) to the cluster through `server`, as a voter once it
/// has caught up; retried until it is in.
pub async fn add_self(credentials: LiveCredentials, server: String, id: u64, advertise: String) {
    let client = match Client::with_config(
        std::slice::from_ref(&server),
        ClientConfig {
            tls: Some(credentials),
            ..Default::default()
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%server, "adding this member: {e}");
            return;
        }
    };
    loop {
        match client.members().await {
            Ok(list) if list.members.iter().any(|m| m.id == id && m.voter) => {
                tracing::info!(member = id, "a voting member of the cluster");
                return;
            }
            Ok(_) => match client.member_add(id, &advertise, true).await {
                Ok(_) => continue,
                Err(e) => tracing::warn!(member = id, "adding this member: {e}; retrying"),
            },
            Err(e) => tracing::warn!(%server, "reading the members: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Get a node certificate for `name` with `token` from the first of `endpoints` that answers,
/// into `NODE-DATA-DIR/pki`, unless the node holds one.
pub async fn node(
    token: &str,
    endpoints: &[String],
    data_dir: &Path,
    name: &str,
) -> anyhow::Result<()> {
    let pki = data_dir.join("pki");
    if Credentials::load(&pki, "node")?.is_some() {
        return Ok(());
    }
    let token = parse(token)?;
    let (key, csr) = tls::signing_request(&Holder::Node(name.to_string()))?;
    let mut last = None;
    for server in endpoints {
        match token::join(server, &token, &csr).await {
            Ok(joined) => {
                Credentials {
                    ca: joined.ca_pem,
                    cert: joined.certificate_pem,
                    key,
                }
                .save(&pki, "node")?;
                tracing::info!(%server, node = name, token = %token.id, "joined with a token");
                return Ok(());
            }
            Err(e) => last = Some(anyhow::Error::new(e)),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("--endpoints: none given")))
        .context("joining with the token")
}

/// For a cluster made with `--init`: once it serves, make (once) a control token and a node
/// token that never expire, keep them in `DATA-DIR/token` and `DATA-DIR/node-token` with an
/// admin's client config in `DATA-DIR/admin.json`, and print them.
pub async fn init_tokens(
    store: ObjectStore,
    ca: ClusterCa,
    data_dir: std::path::PathBuf,
    advertise: String,
) {
    let (control_file, node_file) = (data_dir.join("token"), data_dir.join("node-token"));
    if !control_file.exists() {
        loop {
            match make_tokens(
                &store,
                &ca,
                &control_file,
                &node_file,
                &data_dir,
                &advertise,
            )
            .await
            {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!("making the join tokens: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    println!("Skiff control plane initialised.");
    println!(
        "  admin client config: {} (SKIFFCONFIG={0})",
        data_dir.join("admin.json").display()
    );
    println!(
        "  join another control member: skiff control --id N --join {} --server {advertise} ...",
        read(&control_file).trim()
    );
    println!(
        "  join a node:                 skiff node --token {} --endpoints {advertise} ...",
        read(&node_file).trim()
    );
}

async fn make_tokens(
    store: &ObjectStore,
    ca: &ClusterCa,
    control_file: &Path,
    node_file: &Path,
    data_dir: &Path,
    advertise: &str,
) -> anyhow::Result<()> {
    let mut made = Vec::new();
    for role in ["control", "node"] {
        let t = JoinToken::generate(&ca.cert)?;
        let obj = json!({"apiVersion": "auth.skiff.dev/v1", "kind": "JoinToken",
                         "metadata": {"name": t.id},
                         "spec": {"role": role, "secretHash": secret_hash(&t.secret)}});
        store
            .create("jointokens", "", obj.to_string().as_bytes(), rand::random())
            .await?;
        made.push(t);
    }
    let admin = ca.issue_admin("admin")?;
    ConfigFile::single("skiff", vec![advertise.to_string()], Some(admin))
        .save(&data_dir.join("admin.json"))?;
    skiff_proto::private_file::write(node_file, made[1].to_string().as_bytes())?;
    // Written last: its presence says everything else is there.
    skiff_proto::private_file::write(control_file, made[0].to_string().as_bytes())?;
    Ok(())
}
