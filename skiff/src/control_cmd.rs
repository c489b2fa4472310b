//! `skiff control`: one control node.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use skiff_control::bootstrap::{self, BootstrapError};
use skiff_control::server;
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;
use skiff_proto::tls::{live, Credentials, LiveCredentials};
use skiff_raft::{NodeConfig, RaftNode};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ControlArgs {
    /// Instead of running a member: prepare a data directory.
    #[command(subcommand)]
    pub action: Option<ControlAction>,
    /// This member's id (a positive integer, unique in the cluster).
    #[arg(long, required = true)]
    pub id: Option<u64>,
    /// Directory for this member's log, state and snapshots.
    #[arg(long, required = true)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on for peers and clients (host:port).
    #[arg(long, required = true)]
    pub listen: Option<String>,
    /// Address others reach this member at; defaults to --listen.
    #[arg(long)]
    pub advertise: Option<String>,
    /// The founding members, ID=HOST:PORT,... Needed to initialise a new cluster; omit it
    /// (and pass --join) to start a member that will be added with `skiffctl cluster add`.
    #[arg(long, conflicts_with = "join")]
    pub initial_cluster: Option<String>,
    /// Make a new cluster of this one member: its CA, an admin's client config and join
    /// tokens (printed, and kept in the data directory).
    #[arg(long, conflicts_with_all = ["join", "initial_cluster"])]
    pub init: bool,
    /// Join an existing cluster: with a TOKEN (from `--init` or `skiffctl token create --role
    /// control`) and --server, fetch and pin its CA and add this member by itself; without
    /// one, start empty and wait to be added with `skiffctl cluster add`.
    #[arg(long, value_name = "TOKEN", num_args = 0..=1, default_missing_value = "")]
    pub join: Option<String>,
    /// A member of the cluster to join through (with --join TOKEN).
    #[arg(long)]
    pub server: Option<String>,
    /// The cluster's id; members of different clusters refuse each other. Defaults to one
    /// derived from --initial-cluster; required with --join.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Build a snapshot and purge the log behind it every N entries (etcd's --snapshot-count).
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot.
    #[arg(long, default_value_t = 1_000)]
    pub keep_behind_snapshot: u64,
    /// Revisions of change history kept for watchers.
    #[arg(long, default_value_t = 50_000)]
    pub history_revisions: u64,
    /// Page cache of the state store, in MiB: reads of the objects and history it holds
    /// decode no page from disk.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub store_cache_mib: u64,
    /// Leader heartbeat period in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` over plain HTTP on this
    /// address (host:port); none when not given.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Seconds without a Lease renewal before a node is marked unreachable and tainted.
    #[arg(long, default_value_t = 10)]
    pub node_grace_seconds: u64,
    /// Seconds a pod tolerates an unreachable node (unless it says otherwise) before eviction.
    #[arg(long, default_value_t = 5)]
    pub eviction_toleration_seconds: u64,
    /// The cluster's pod range; each node agent gets a /24 of it (spec.podCIDR).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The service range Services get their ClusterIPs from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// How requests are authorised: `roles` (each caller's role decides) or `always-allow`
    /// (every holder of a cluster certificate is an admin; for measuring what roles cost).
    #[arg(long, default_value = "roles", value_parser = ["roles", "always-allow"])]
    pub authorization: String,
    /// The key that wraps the cluster's data keys for Secrets at rest: 32 random bytes in
    /// base64, the same on every member, kept outside the data directory (`--init` makes it
    /// when missing). Without it Secrets are stored in plain text.
    #[arg(long)]
    pub encryption_key_file: Option<PathBuf>,
    /// Requests per second each caller may make (bursts of twice as many); admins are not
    /// limited; 0 turns the limit off.
    #[arg(long, default_value_t = 200)]
    pub user_requests_per_second: u32,
    /// Watches each caller may hold open at once; admins are not limited; 0: no limit.
    #[arg(long, default_value_t = 100)]
    pub max_watches_per_user: usize,
    /// How long the certificates this member issues are valid (its own, agents', users'):
    /// `365d`, `12h`, `90s`. Members and agents renew theirs, without a restart, when a third
    /// is left.
    #[arg(long, default_value = "365d", value_parser = skiff_proto::duration::parse)]
    pub cert_validity: Duration,
    /// Take a backup this often while this member leads (as k3s' etcd snapshots): `6h`,
    /// `30m`; `0` takes none.
    #[arg(long, default_value = "6h", value_parser = skiff_proto::duration::parse)]
    pub snapshot_interval: Duration,
    /// Scheduled backups kept; older ones are removed.
    #[arg(long, default_value_t = 5)]
    pub snapshot_retention: usize,
    /// Where scheduled backups go; default: `backups` in the data directory.
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    /// Remove a voter that has not answered the leader for this long (`10m`, `1h`), once that
    /// leaves at least three voters with a live quorum; a member of a three-voter cluster is
    /// so removed when its replacement has joined. Off unless given.
    #[arg(long, value_parser = skiff_proto::duration::parse)]
    pub dead_member_timeout: Option<Duration>,
    /// How long a new member must keep up with the leader before it becomes a voter.
    #[arg(long, default_value = "10s", value_parser = skiff_proto::duration::parse)]
    pub member_stabilization: Duration,
    /// Election timeout range in milliseconds, MIN-MAX.
    #[arg(long, default_value = "120-240")]
    pub election_timeout_ms: String,
}

/// The member's credentials when its data directory holds the cluster CA (`pki/ca.crt`,
/// `pki/ca.key`): its own certificate, issued by that CA on first start and again when a third
/// of its validity is left; the CA comes back too, to sign what admins ask for. Without a CA
/// the member serves plaintext, and says so.
fn member_credentials(
    data_dir: &std::path::Path,
    id: u64,
    advertise: &str,
    validity: Duration,
) -> anyhow::Result<Option<(Credentials, ClusterCa)>> {
    let pki = data_dir.join("pki");
    let Some(ca) =
        ClusterCa::load(&pki).with_context(|| format!("the cluster CA in {}", pki.display()))?
    else {
        tracing::warn!(
            pki = %pki.display(),
            "no cluster CA: serving plaintext; anyone who reaches this member owns the cluster"
        );
        return Ok(None);
    };
    let mut addresses: Vec<std::net::IpAddr> = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    if let Some(ip) = advertise
        .rsplit_once(':')
        .and_then(|(host, _)| host.trim_matches(['[', ']']).parse().ok())
    {
        addresses.push(ip);
    }
    let ca = ca.with_validity(validity);
    let creds = ca.current(&pki, "member", &Holder::Control(id), &[], &addresses)?;
    Ok(Some((creds, ca)))
}

fn parse_range(v: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| format!("--election-timeout-ms: {v:?} is not MIN-MAX"))?;
    let a: u64 = a
        .parse()
        .map_err(|_| format!("--election-timeout-ms: {a:?} is not a number"))?;
    let b: u64 = b
        .parse()
        .map_err(|_| format!("--election-timeout-ms: {b:?} is not a number"))?;
    if a == 0 || b <= a {
        return Err(format!(
            "--election-timeout-ms: need 0 < MIN < MAX, got {a}-{b}"
        ));
    }
    Ok((Duration::from_millis(a), Duration::from_millis(b)))
}

/// What `skiff control` does instead of running a member.
#[derive(Subcommand, Debug, Clone)]
pub enum ControlAction {
    /// Seed the first member of a new cluster from a backup (`skiffctl snapshot save`).
    Restore(crate::restore_cmd::RestoreArgs),
    /// After losing a quorum: make this stopped member the only member of its cluster, with
    /// every change it holds (then add new members).
    Recover(crate::recover_cmd::RecoverArgs),
}

pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    match args.action {
        Some(ControlAction::Restore(r)) => return crate::restore_cmd::run(r),
        Some(ControlAction::Recover(r)) => return crate::recover_cmd::run(r).await,
        None => {}
    }
    let (Some(id), Some(data_dir), Some(listen)) =
        (args.id, args.data_dir.clone(), args.listen.clone())
    else {
        anyhow::bail!("--id, --data-dir and --listen are required to run a member");
    };
    if id == 0 {
        anyhow::bail!("--id: member ids start at 1");
    }
    bootstrap::parse_addr("--listen", &listen)?;
    let advertise = args.advertise.clone().unwrap_or_else(|| listen.clone());
    bootstrap::parse_addr("--advertise", &advertise)?;
    let election = parse_range(&args.election_timeout_ms).map_err(anyhow::Error::msg)?;
    args.cluster_cidr
        .parse::<skiff_proto::cidr::Cidr>()
        .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    let service_range: skiff_control::objects::service_alloc::ServiceRange = args
        .service_cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("--service-cidr: {e}"))?;
    let token = args.join.clone().filter(|t| !t.is_empty());
    let mut joined_cluster = None;
    if let Some(token) = &token {
        let server = args.server.as_deref().ok_or_else(|| {
            anyhow::anyhow!("--server: required with --join TOKEN (a member to join through)")
        })?;
        joined_cluster = crate::join::control_member(token, server, &data_dir, id).await?;
    }
    let initial_cluster = if args.init {
        Some(format!("{}={advertise}", id))
    } else {
        args.initial_cluster.clone()
    };
    let members = match &initial_cluster {
        Some(v) => {
            let m = bootstrap::parse_initial_cluster(v)?;
            if !m.contains_key(&id) {
                let ids: Vec<String> = m.keys().map(|k| k.to_string()).collect();
                return Err(BootstrapError::UnknownMember { id, members: ids.join(",") }.into());
            }
            Some(m)
        }
        None if args.join.is_some() => None,
        None => anyhow::bail!("--initial-cluster: required to start a member of a new cluster (or pass --join to be added later)"),
    };
    let cluster_id = match (&args.cluster_id, &members) {
        (Some(c), _) if c.is_empty() => anyhow::bail!("--cluster-id: must not be empty"),
        (Some(c), _) => c.clone(),
        (None, _) if joined_cluster.is_some() => joined_cluster.clone().unwrap_or_default(),
        (None, _) if token.is_some() => {
            bootstrap::claimed_cluster_id(&data_dir)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "--cluster-id: not known; the data directory holds a CA but no claim"
                )
            })?
        }

        (None, Some(m)) => bootstrap::derived_cluster_id(m),
        (None, None) => {
            anyhow::bail!("--cluster-id: required with --join (see `skiffctl cluster status`)")
        }
    };
    bootstrap::claim_data_dir(&data_dir, &cluster_id, id)?;
    if args.init {
        let pki = data_dir.join("pki");
        if ClusterCa::load(&pki)?.is_none() {
            ClusterCa::generate(&cluster_id)?
                .save(&pki)
                .with_context(|| format!("keeping the cluster CA in {}", pki.display()))?;
        }
    }

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("--listen {}", listen))?;
    let mut config = NodeConfig::new(id, advertise.clone(), data_dir.clone(), cluster_id.clone());
    config.snapshot_every = args.snapshot_every;
    config.keep_behind_snapshot = args.keep_behind_snapshot;
    config.history_revisions = args.history_revisions;
    config.state_cache_bytes = args.store_cache_mib << 20;
    config.heartbeat = Duration::from_millis(args.heartbeat_ms);
    config.election_timeout = election;
    config.backups = skiff_raft::backup::schedule::Schedule {
        interval: args.snapshot_interval,
        retention: args.snapshot_retention,
        dir: args
            .snapshot_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("backups")),
    };
    config.autopilot = skiff_raft::autopilot::AutopilotConfig {
        dead_member_timeout: args.dead_member_timeout.filter(|d| !d.is_zero()),
        stabilization: args.member_stabilization,
    };
    let (credentials, ca) =
        member_credentials(&data_dir, id, &advertise, args.cert_validity)?.unzip();
    let credentials = credentials.map(LiveCredentials::new).transpose()?;
    if let Some(live) = &credentials {
        let (data_dir, id, validity) = (data_dir.clone(), id, args.cert_validity);
        let advertise = advertise.clone();
        tokio::spawn(live::keep_renewed(live.clone(), move || {
            let renewed = member_credentials(&data_dir, id, &advertise, validity)
                .and_then(|c| c.map(|(c, _)| c).context("the cluster CA is gone"));
            std::future::ready(renewed)
        }));
    }
    config.tls = credentials;
    let node = RaftNode::open(config).await?;
    tracing::info!(member = id, listen = %listen, cluster = %cluster_id, "control node started");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    if let (true, Some(path)) = (args.init, &args.encryption_key_file) {
        if !path.exists() {
            skiff_proto::private_file::write(
                path,
                skiff_control::objects::encryption::new_key_file_content().as_bytes(),
            )
            .with_context(|| format!("--encryption-key-file {}", path.display()))?;
            tracing::info!(path = %path.display(), "made the encryption key: copy it to every control member");
        }
    }
    let sealer = match &args.encryption_key_file {
        Some(path) => Some(std::sync::Arc::new(
            skiff_control::objects::encryption::Sealer::from_key_file(path, node.clone())?,
        )),
        None => {
            tracing::warn!("no --encryption-key-file: Secrets are stored in plain text");
            None
        }
    };
    let authorize = args.authorization == "roles";
    if !authorize {
        tracing::warn!(
            "--authorization always-allow: every holder of a cluster certificate is an admin"
        );
    }
    // Counted from the start; served on the metrics endpoint when there is one.
    let families = match &args.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}"))?;
            let (ops, families) = skiff_control::ops::Ops::new(node.clone());
            tokio::spawn(skiff_proto::ops_http::serve(listener, ops));
            families
        }
        None => skiff_control::ops::Families::default(),
    };
    let mut server = tokio::spawn(server::serve(
        node.clone(),
        service_range,
        server::Security {
            ca: ca.clone(),
            authorize,
            sealer,
            limits: skiff_control::auth::limits::LimitSettings {
                requests_per_second: args.user_requests_per_second,
                max_watches: args.max_watches_per_user,
            },
        },
        families.server,
        listener,
        async {
            let _ = stop_rx.await;
        },
    ));

    if let Some(m) = &members {
        bootstrap::initialize_once(&node, m).await?;
    }
    if let (true, Some(ca)) = (args.init, ca.clone()) {
        tokio::spawn(crate::join::init_tokens(
            skiff_control::objects::ObjectStore::new(node.clone()),
            ca,
            data_dir.clone(),
            advertise.clone(),
        ));
    }
    // Until it is a voter: a member that stopped half-way through adds itself on restart.
    if let (Some(_), Some(server), Some(creds)) = (&token, &args.server, node.config().tls.clone())
    {
        tokio::spawn(crate::join::add_self(
            creds,
            server.clone(),
            id,
            advertise.clone(),
        ));
    }
    // The built-in namespaces exist from the start; each member makes sure, once a leader is
    // there (the create is a compare-and-swap, so only one attempt takes effect).
    let objects = skiff_control::objects::ObjectStore::new(node.clone());
    tokio::spawn(async move { objects.ensure_builtin_objects().await });
    // The scheduler and controllers run here whenever this member leads.
    let settings = skiff_control::controllers::Settings {
        node_grace: Duration::from_secs(args.node_grace_seconds),
        eviction_toleration: Duration::from_secs(args.eviction_toleration_seconds),
        cluster_cidr: args.cluster_cidr.clone(),
        ..Default::default()
    };
    tokio::spawn(skiff_control::controllers::run_when_leader(
        node.clone(),
        advertise.clone(),
        settings,
        families.controllers,
    ));

    tokio::spawn(skiff_raft::backup::schedule::run(node.clone()));
    tokio::spawn(skiff_raft::autopilot::run(node.clone()));

    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        removed = skiff_raft::autopilot::removal::wait_removed(node.clone()) => {
            let _ = stop_tx.send(());
            node.shutdown().await;
            return Err(removed.into());
        }
        r = &mut server => {
            node.shutdown().await;
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e).context("gRPC server"),
                Err(e) => Err(e).context("gRPC server task"),
            };
        }
    }
    tracing::info!(member = id, "stopping");
    hand_over_before_stop(&node).await;
    let _ = stop_tx.send(());
    node.shutdown().await;
    // Everything applied is made durable before exit; the log already is.
    if let Err(e) = node.state().sync() {
        tracing::warn!("final sync of the state: {e}");
    }
    Ok(())
}

/// A leader asked to stop first hands leadership to the voter furthest along, so the others
/// need not wait out an election timeout. Stopping goes on whatever the outcome.
async fn hand_over_before_stop(node: &skiff_raft::RaftNode) {
    if node.leader().map(|(l, _)| l) != Some(node.id()) {
        return;
    }
    match tokio::time::timeout(Duration::from_secs(3), node.hand_over(None)).await {
        Ok(Ok(to)) => tracing::info!(to, "leadership handed over before stopping"),
        Ok(Err(skiff_raft::handover::HandoverError::NoOtherVoter)) => {}
        Ok(Err(e)) => tracing::warn!("leadership not handed over before stopping: {e}"),
        Err(_) => tracing::warn!("leadership not handed over before stopping: timed out"),
    }
}
