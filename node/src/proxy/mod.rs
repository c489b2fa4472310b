//! The service proxy (part of `skiff node`): it watches Services and Endpoints and programs
//! nftables so that each ClusterIP:port, and each NodePort on the node's addresses, balances
//! over the ready endpoints; a service port without one rejects connections at once.
//!
//! ```text
//! informers (Services, Endpoints) ──▶ model::desired ──▶ nft::update (only what changed)
//!                                                    └──▶ nft::full   (first sync, or after a failure)
//!                                                           │ nft -f - (one transaction)
//!                                                           ▼
//!        table ip skiff: per backend count N, sets services_N / maps backends_N, one DNAT rule
//! ```
//!
//! The first sync after a start replaces the table atomically, so a restarted proxy removes
//! stale rules without a moment of no rules; established connections keep their conntrack
//! translations throughout.

pub mod model;
pub mod nft;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use skiff_proto::objects::{Informer, InformerEvent, Selection};
use skiff_proto::Client;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The nftables table (family `ip`) the proxy owns.
    pub table: String,
}

/// Run `script` with `nft -f -` as one transaction.
pub async fn apply(script: &str) -> Result<()> {
    let nft_err = |message: String| Error::Command {
        command: "nft -f -".into(),
        message,
    };
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| nft_err(format!("{e} (Debian: apt-get install nftables)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| nft_err(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| nft_err(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(nft_err(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn enable_forwarding() {
    // NodePort traffic from other hosts is forwarded to pods on the bridge.
    if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
        tracing::warn!(error = %e, "enabling IPv4 forwarding; NodePorts from other hosts will not reach pods");
    }
}

fn compute(
    services: &Informer<Service>,
    endpoints: &Informer<Endpoints>,
) -> BTreeMap<String, model::ServicePort> {
    let svcs = services.list();
    let eps = endpoints.list();
    let by_name: BTreeMap<(String, String), &Endpoints> = eps
        .iter()
        .map(|e| {
            (
                (
                    e.metadata.namespace.clone().unwrap_or_default(),
                    e.metadata.name.clone().unwrap_or_default(),
                ),
                e.as_ref(),
            )
        })
        .collect();
    model::desired(svcs.iter().map(|s| s.as_ref()), &by_name)
}

/// Run the proxy until the process ends.
pub async fn run(client: Client, cfg: ProxyConfig) {
    enable_forwarding();
    let (services, mut service_events) =
        Informer::<Service>::start(client.clone(), Selection::default());
    let (endpoints, mut endpoint_events) =
        Informer::<Endpoints>::start(client, Selection::default());
    let (mut services_synced, mut endpoints_synced) = (false, false);
    let mut applied: Option<BTreeMap<String, model::ServicePort>> = None;
    let mut declared = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            e = service_events.recv() => match e {
                Some(InformerEvent::Synced) => services_synced = true,
                Some(_) => {}
                None => return,
            },
            e = endpoint_events.recv() => match e {
                Some(InformerEvent::Synced) => endpoints_synced = true,
                Some(_) => {}
                None => return,
            },
        }
        // Take whatever else has arrived: one pass for a burst.
        while let Ok(e) = service_events.try_recv() {
            services_synced |= matches!(e, InformerEvent::Synced);
        }
        while let Ok(e) = endpoint_events.try_recv() {
            endpoints_synced |= matches!(e, InformerEvent::Synced);
        }
        if !(services_synced && endpoints_synced) {
            continue;
        }
        let started = Instant::now();
        let desired = compute(&services, &endpoints);
        let (script, kind) = match &applied {
            Some(a) => match nft::update(&cfg.table, a, &desired, &mut declared) {
                Some(s) => (s, "update"),
                None => continue,
            },
            None => {
                declared = nft::declared_by(&desired);
                (nft::full(&cfg.table, &desired), "full sync")
            }
        };
        match apply(&script).await {
            Ok(()) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if kind == "full sync" {
                    tracing::info!(
                        service_ports = desired.len(),
                        ms,
                        "service rules: full sync"
                    );
                } else {
                    tracing::debug!(service_ports = desired.len(), ms, "service rules: update");
                }
                applied = Some(desired);
            }
            Err(e) => {
                tracing::warn!(error = %e, kind, "programming service rules; a full sync follows");
                // Rebuild everything on the next pass, which a retry tick below triggers.
                applied = None;
                let full = nft::full(&cfg.table, &desired);
                declared = nft::declared_by(&desired);
                match apply(&full).await {
                    Ok(()) => applied = Some(desired),
                    Err(e) => tracing::error!(error = %e, "full sync of service rules failed"),
                }
            }
        }
    }
}
