//! The service proxy (part of `skiff node`): it watches Services and Endpoints and programs
//! nftables so that each ClusterIP:port, and each NodePort on the node's addresses, balances
//! over the ready endpoints; a service port without one rejects connections at once.
//!
//! ```text
//! informers (Services, Endpoints) ──▶ model::desired ──▶ nft::update (only what changed)
//!                                                    └──▶ nft::full   (first sync, or after a failure)
//!                                                           │ nft -f - (one transaction)
//!                                                           ▼
//!        table ip skiff: per backend count N, sets services_N / maps backends_N_PROTO, a DNAT rule per protocol
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
    /// The cluster's pod range: ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidr: String,
    /// Each sync of the rules is timed into this.
    pub sync_timing: prometheus_client::metrics::histogram::Histogram,
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

type ServiceKey = (String, String);

fn key_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ServiceKey {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// The service a programmed port belongs to (its id is `namespace/name:port/protocol`).
fn service_of(p: &model::ServicePort) -> ServiceKey {
    let head = p.id.split(':').next().unwrap_or("");
    let (ns, name) = head.split_once('/').unwrap_or(("", head));
    (ns.to_string(), name.to_string())
}

/// The desired ports of the services in `keys` alone, from the caches.
fn compute_some(
    keys: &std::collections::BTreeSet<ServiceKey>,
    services: &Informer<Service>,
    endpoints: &Informer<Endpoints>,
) -> BTreeMap<String, model::ServicePort> {
    let mut out = BTreeMap::new();
    for k in keys {
        let Some(svc) = services.get(&k.0, &k.1) else {
            continue;
        };
        let ep = endpoints.get(&k.0, &k.1);
        let by_name: BTreeMap<ServiceKey, &Endpoints> =
            ep.iter().map(|e| (k.clone(), e.as_ref())).collect();
        out.extend(model::desired([svc.as_ref()], &by_name));
    }
    out
}

/// What the proxy has programmed.
#[derive(Default)]
struct Programmed {
    ports: BTreeMap<String, model::ServicePort>,
    declared: std::collections::BTreeSet<usize>,
    hairpin: nft::HairpinCounts,
}

impl Programmed {
    /// The programmed ports of the services in `keys`.
    fn of(
        &self,
        keys: &std::collections::BTreeSet<ServiceKey>,
    ) -> BTreeMap<String, model::ServicePort> {
        self.ports
            .iter()
            .filter(|(_, p)| keys.contains(&service_of(p)))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect()
    }
}

/// The Service and Endpoints informers of a node: the proxy follows their events, the
/// node's DNS reads their caches.
pub struct ServiceWatch {
    /// Services.
    pub services: Informer<Service>,
    /// Their events.
    pub service_events: tokio::sync::mpsc::Receiver<InformerEvent<Service>>,
    /// Endpoints.
    pub endpoints: Informer<Endpoints>,
    /// Their events.
    pub endpoint_events: tokio::sync::mpsc::Receiver<InformerEvent<Endpoints>>,
}

impl ServiceWatch {
    /// Start both informers.
    pub fn start(client: &Client) -> Self {
        let (services, service_events) =
            Informer::<Service>::start(client.clone(), Selection::default());
        let (endpoints, endpoint_events) =
            Informer::<Endpoints>::start(client.clone(), Selection::default());
        Self {
            services,
            service_events,
            endpoints,
            endpoint_events,
        }
    }

    /// Keep the caches filled with no proxy following the events.
    pub fn drain(mut self) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = self.service_events.recv() => if e.is_none() { return },
                    e = self.endpoint_events.recv() => if e.is_none() { return },
                }
            }
        });
    }
}

/// Run the proxy until the process ends. Each pass recomputes only the services whose Service
/// or Endpoints changed; a (re)list recomputes everything.
pub async fn run(watch: ServiceWatch, cfg: ProxyConfig) {
    enable_forwarding();
    let ServiceWatch {
        services,
        mut service_events,
        endpoints,
        mut endpoint_events,
    } = watch;
    let (mut services_synced, mut endpoints_synced) = (false, false);
    let mut programmed: Option<Programmed> = None;
    let mut relist = true;
    let mut dirty: std::collections::BTreeSet<ServiceKey> = Default::default();
    loop {
        tokio::select! {
            e = service_events.recv() => match e {
                Some(InformerEvent::Synced) => { services_synced = true; relist = true; }
                Some(InformerEvent::Applied { object: o, .. } | InformerEvent::Deleted(o)) => { dirty.insert(key_of(&o.metadata)); }
                None => return,
            },
            e = endpoint_events.recv() => match e {
                Some(InformerEvent::Synced) => { endpoints_synced = true; relist = true; }
                Some(InformerEvent::Applied { object: o, .. } | InformerEvent::Deleted(o)) => { dirty.insert(key_of(&o.metadata)); }
                None => return,
            },
            // A failed sync is retried without waiting for the next change.
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)), if programmed.is_none() && services_synced && endpoints_synced => {}
        }
        // Take whatever else has arrived: one pass for a burst.
        while let Ok(e) = service_events.try_recv() {
            match e {
                InformerEvent::Synced => {
                    services_synced = true;
                    relist = true;
                }
                InformerEvent::Applied { object: o, .. } | InformerEvent::Deleted(o) => {
                    dirty.insert(key_of(&o.metadata));
                }
            }
        }
        while let Ok(e) = endpoint_events.try_recv() {
            match e {
                InformerEvent::Synced => {
                    endpoints_synced = true;
                    relist = true;
                }
                InformerEvent::Applied { object: o, .. } | InformerEvent::Deleted(o) => {
                    dirty.insert(key_of(&o.metadata));
                }
            }
        }
        if !(services_synced && endpoints_synced) {
            continue;
        }
        let started = Instant::now();
        let Some(current) = programmed.as_mut().filter(|_| !relist) else {
            // First sync, or a relist: everything, atomically.
            let desired = compute(&services, &endpoints);
            let declared = nft::declared_by(&desired);
            match apply(&nft::full(&cfg, &desired)).await {
                Ok(()) => {
                    cfg.sync_timing.observe(started.elapsed().as_secs_f64());
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    tracing::info!(
                        service_ports = desired.len(),
                        ms,
                        "service rules: full sync"
                    );
                    programmed = Some(Programmed {
                        hairpin: nft::hairpin_counts(&desired),
                        ports: desired,
                        declared,
                    });
                    relist = false;
                    dirty.clear();
                }
                Err(e) => {
                    tracing::error!(error = %e, "full sync of service rules failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        if dirty.is_empty() {
            continue;
        }
        let keys = std::mem::take(&mut dirty);
        let old = current.of(&keys);
        let new = compute_some(&keys, &services, &endpoints);
        let mut declared = current.declared.clone();
        let mut hairpin = current.hairpin.clone();
        let Some(script) = nft::update(&cfg, &old, &new, &mut declared, &mut hairpin) else {
            continue;
        };
        match apply(&script).await {
            Ok(()) => {
                for k in old.keys() {
                    current.ports.remove(k);
                }
                current.ports.extend(new);
                current.declared = declared;
                current.hairpin = hairpin;
                cfg.sync_timing.observe(started.elapsed().as_secs_f64());
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::debug!(services = keys.len(), ms, "service rules: update");
            }
            Err(e) => {
                tracing::warn!(error = %e, "programming service rules; a full sync follows");
                relist = true;
                dirty.extend(keys);
                programmed = None;
            }
        }
    }
}
