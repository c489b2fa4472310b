//! `skiffctl`: the command-line client of a Skiff cluster.

mod cmd;
mod endpoints;
mod jsonpath;
mod manifest;
mod table;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiffctl",
    version,
    about = "Command-line client for Skiff clusters"
)]
struct Cli {
    /// Control node addresses (host:port,...); overrides the config file.
    #[arg(long, global = true, env = "SKIFF_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Client config file; default: $SKIFFCONFIG, ./.skiff/config.json, ~/.skiff/config.json.
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// Context of the config file to use.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read and write keys of the replicated store.
    #[command(subcommand)]
    Kv(cmd::kv::KvCommand),
    /// Inspect and change the control plane's membership.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// Backups of the whole store: `snapshot save FILE`, `snapshot inspect FILE`.
    #[command(subcommand)]
    Snapshot(cmd::snapshot::SnapshotCommand),
    /// Create or update objects from manifests (kubectl-style apply).
    Apply(cmd::objects::apply::ApplyArgs),
    /// Create objects from manifests (fails if one exists), or a Job: `create job NAME
    /// --image IMG [-- CMD]`, `create job NAME --from cronjob/NAME`.
    Create(cmd::objects::create::CreateArgs),
    /// List objects, or show some.
    Get(cmd::objects::get::GetArgs),
    /// Show an object in detail, with its Events.
    Describe(cmd::objects::describe::DescribeArgs),
    /// Wait until objects show a condition (`--for condition=Complete`) or are gone
    /// (`--for delete`).
    Wait(cmd::objects::wait::WaitArgs),
    /// Delete objects.
    Delete(cmd::objects::delete::DeleteArgs),
    /// Set the replica count of a Deployment or ReplicaSet.
    Scale(cmd::objects::modify::ScaleArgs),
    /// Add, change or remove labels.
    Label(cmd::objects::modify::MetaArgs),
    /// Add, change or remove annotations.
    Annotate(cmd::objects::modify::MetaArgs),
    /// Edit an object in $EDITOR.
    Edit(cmd::objects::modify::EditArgs),
    /// Change an object with a merge patch or a JSON patch.
    Patch(cmd::objects::modify::PatchArgs),
    /// Change a workload's container images: `set image deployment/web web=IMAGE`.
    #[command(subcommand)]
    Set(cmd::objects::set_image::SetCommand),
    /// Roll out, inspect and undo Deployment changes.
    #[command(subcommand)]
    Rollout(cmd::objects::rollout::RolloutCommand),
    /// Mark nodes unschedulable.
    Cordon(cmd::objects::nodes::NodeArgs),
    /// Mark nodes schedulable again.
    Uncordon(cmd::objects::nodes::NodeArgs),
    /// Cordon nodes and evict their pods.
    Drain(cmd::objects::nodes::DrainArgs),
    /// Print a container's log.
    Logs(cmd::pods::LogsArgs),
    /// Run a command in a container.
    Exec(cmd::pods::ExecArgs),
    /// Manage images on nodes.
    #[command(subcommand)]
    Image(cmd::pods::ImageCommand),
    /// Join tokens for nodes and control members.
    #[command(subcommand)]
    Token(cmd::tokens::TokenCommand),
    /// Secrets at rest: `secrets rotate-key` seals every Secret again under a new data key.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Ask what you (or another user) may do.
    #[command(subcommand)]
    Auth(cmd::auth::AuthCommand),
    /// Manage users: `user create NAME --role admin|edit|view` writes their client config;
    /// list and delete them with `get users` and `delete user NAME`.
    #[command(subcommand)]
    User(cmd::auth::UserCommand),
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Make a new data key, seal every Secret again under it (online), delete the old keys.
    RotateKey,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let command = match cli.command {
            Command::Snapshot(c) if cmd::snapshot::is_offline(&c) => {
                return cmd::snapshot::run(None, c).await
            }
            other => other,
        };
        let (endpoints, credentials) = endpoints::resolve(
            &cli.endpoints,
            cli.config.as_deref(),
            cli.context.as_deref(),
        )?;
        let client = skiff_proto::Client::with_config(
            &endpoints,
            skiff_proto::ClientConfig {
                tls: credentials
                    .map(skiff_proto::tls::LiveCredentials::new)
                    .transpose()?,
                ..Default::default()
            },
        )?;
        match command {
            Command::Kv(c) => cmd::kv::run(&client, c).await,
            Command::Cluster(c) => cmd::cluster::run(&client, c).await,
            Command::Snapshot(c) => cmd::snapshot::run(Some(&client), c).await,
            Command::Apply(a) => cmd::objects::apply::apply(&client, a).await,
            Command::Create(a) => cmd::objects::create::run(&client, a).await,
            Command::Wait(a) => cmd::objects::wait::run(&client, a).await,
            Command::Get(a) => cmd::objects::get::run(&client, a).await,
            Command::Describe(a) => cmd::objects::describe::run(&client, a).await,
            Command::Delete(a) => cmd::objects::delete::run(&client, a).await,
            Command::Scale(a) => cmd::objects::modify::scale(&client, a).await,
            Command::Patch(a) => cmd::objects::modify::patch(&client, a).await,
            Command::Label(a) => {
                cmd::objects::modify::set_meta(&client, a, "labels", "labeled").await
            }
            Command::Annotate(a) => {
                cmd::objects::modify::set_meta(&client, a, "annotations", "annotated").await
            }
            Command::Edit(a) => cmd::objects::modify::edit(&client, a).await,
            Command::Rollout(c) => cmd::objects::rollout::run(&client, c).await,
            Command::Set(c) => cmd::objects::set_image::run(&client, c).await,
            Command::Cordon(a) => cmd::objects::nodes::cordon(&client, a, true).await,
            Command::Uncordon(a) => cmd::objects::nodes::cordon(&client, a, false).await,
            Command::Drain(a) => cmd::objects::nodes::drain(&client, a).await,
            Command::Logs(a) => cmd::pods::logs(&client, a).await,
            Command::Exec(a) => cmd::pods::exec(&client, a).await,
            Command::Image(c) => cmd::pods::image(&client, c).await,
            Command::Auth(c) => cmd::auth::auth(&client, c).await,
            Command::Token(c) => cmd::tokens::run(&client, c).await,
            Command::Secrets(SecretsCommand::RotateKey) => {
                let r = client.rotate_secrets_key().await?;
                println!(
                    "secrets sealed under data key {} ({} sealed again); older keys deleted",
                    r.key_id, r.rewritten
                );
                Ok(())
            }
            Command::User(c) => cmd::auth::user(&client, &endpoints, c).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let quiet = e
                .downcast_ref::<cmd::objects::ExitWith>()
                .is_some_and(|x| x.message.is_empty());
            if !quiet {
                eprintln!("error: {e:#}");
            }
            match e.downcast_ref::<cmd::objects::ExitWith>() {
                Some(x) => std::process::ExitCode::from(x.code),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
