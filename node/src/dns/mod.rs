//! Cluster DNS, built into the agent (as k3s ships CoreDNS, without a component of its own):
//! each agent answers the cluster domain from its own Service and Endpoints caches, on its
//! pod bridge's address (which every pod on the node reaches), and forwards other names to
//! the resolvers of the node's resolv.conf with a cache. Pods get a resolv.conf pointing at
//! it ([`resolv_conf`]).
//!
//! ```text
//! pod ──udp/tcp 53──▶ agent (hickory-server) ──▶ records: Service/Endpoints informers
//!                                            └─▶ hickory-resolver (cache) ──▶ node's resolvers
//! ```
//!
//! A change is answered as soon as the agent's watch has delivered it: nothing is cached on
//! the server side for cluster names.

mod handler;
pub mod records;
pub mod resolv_conf;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use hickory_server::ServerFuture;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use skiff_proto::objects::Informer;
use tokio::net::{TcpListener, UdpSocket};

use self::handler::ClusterDns;
use self::records::{ClusterView, Zone};
use crate::error::{Error, Result};

/// The DNS port.
pub const PORT: u16 = 53;

/// Where and what the node's DNS serves.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// The address it listens on (the pod bridge's).
    pub address: Ipv4Addr,
    /// The node's resolv.conf: the resolvers other names go to.
    pub resolv_conf: PathBuf,
}

/// The agent's caches, as DNS reads them.
pub struct Caches {
    /// Services.
    pub services: Informer<Service>,
    /// Endpoints.
    pub endpoints: Informer<Endpoints>,
}

impl ClusterView for Caches {
    fn service(&self, ns: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(ns, name)
    }

    fn endpoints(&self, ns: &str, name: &str) -> Option<Arc<Endpoints>> {
        self.endpoints.get(ns, name)
    }
}

fn bad(field: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidSpec {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Bind the DNS ports and answer until the process ends; returns once bound, so a port
/// that is taken fails the agent's start with the reason.
pub async fn start(cfg: &DnsConfig, caches: Arc<Caches>) -> Result<()> {
    let zone = Zone::new(&cfg.domain).map_err(|e| bad("--cluster-domain", e))?;
    let text = std::fs::read(&cfg.resolv_conf).map_err(Error::io(&cfg.resolv_conf))?;
    let (config, options) = hickory_resolver::system_conf::parse_resolv_conf(text)
        .map_err(|e| bad("--resolv-conf", e))?;
    let upstream = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build();
    let at = (cfg.address, PORT);
    let udp = UdpSocket::bind(at).await.map_err(|e| {
        bad(
            "cluster DNS",
            format!("binding udp {}:{PORT}: {e}", cfg.address),
        )
    })?;
    let tcp = TcpListener::bind(at).await.map_err(|e| {
        bad(
            "cluster DNS",
            format!("binding tcp {}:{PORT}: {e}", cfg.address),
        )
    })?;
    let mut server = ServerFuture::new(ClusterDns {
        zone,
        view: caches,
        upstream,
    });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5));
    tracing::info!(address = %cfg.address, domain = %cfg.domain, "cluster DNS serving");
    tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::error!(error = %e, "cluster DNS stopped");
        }
    });
    Ok(())
}
