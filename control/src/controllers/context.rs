//! What every controller shares: a client of this control node, the caches of the kinds they
//! reconcile (with their change feeds), settings, figures and the event recorder.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Endpoints, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use skiff_proto::Client;

use super::cache::{self, Watched};
use super::event_cleanup::EventStamp;
use super::events::EventRecorder;
use super::runner::metrics::ControllerMetrics;

/// Timing settings of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A node whose Lease is older than this turns `Ready=Unknown` and is tainted NoExecute.
    pub node_grace: Duration,
    /// Pods on such a node without their own toleration are evicted after this long.
    pub eviction_toleration: Duration,
    /// Events older than this are removed.
    pub event_ttl: Duration,
    /// Namespace of node Leases.
    pub lease_namespace: String,
    /// The cluster's pod range; each node gets a block of it.
    pub cluster_cidr: String,
    /// Prefix length of each node's block.
    pub node_cidr_prefix: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_grace: Duration::from_secs(10),
            eviction_toleration: Duration::from_secs(5),
            event_ttl: Duration::from_secs(3600),
            lease_namespace: "skiff-system".into(),
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_prefix: 24,
        }
    }
}

/// Shared state of the controllers of one leadership term.
pub struct Ctx {
    /// A client of this control node.
    pub client: Client,
    /// Pods of every namespace (indexed by owner, node, label, claim).
    pub pods: Watched<Pod>,
    /// Nodes.
    pub nodes: Watched<Node>,
    /// ReplicaSets (indexed by owner and namespace).
    pub replicasets: Watched<ReplicaSet>,
    /// ReplicationControllers (indexed by owner and namespace).
    pub replicationcontrollers: Watched<ReplicationController>,
    /// Deployments (indexed by owner and namespace).
    pub deployments: Watched<Deployment>,
    /// DaemonSets (indexed by owner).
    pub daemonsets: Watched<DaemonSet>,
    /// StatefulSets (indexed by owner).
    pub statefulsets: Watched<StatefulSet>,
    /// ControllerRevisions (indexed by owner).
    pub revisions: Watched<ControllerRevision>,
    /// PersistentVolumeClaims (indexed by owner and namespace).
    pub claims: Watched<PersistentVolumeClaim>,
    /// PersistentVolumes (indexed by the claim they are bound to).
    pub volumes: Watched<PersistentVolume>,
    /// StorageClasses.
    pub storage_classes: Watched<StorageClass>,
    /// Jobs (indexed by owner and namespace).
    pub jobs: Watched<Job>,
    /// CronJobs.
    pub cronjobs: Watched<CronJob>,
    /// PodDisruptionBudgets (indexed by namespace).
    pub pdbs: Watched<PodDisruptionBudget>,
    /// Services (indexed by namespace).
    pub services: Watched<Service>,
    /// Endpoints.
    pub endpoints: Watched<Endpoints>,
    /// Node leases.
    pub leases: Watched<Lease>,
    /// Events, as much of them as their cleanup needs.
    pub events: Watched<EventStamp>,
    /// Settings.
    pub settings: Settings,
    /// Where controllers record Events.
    pub recorder: EventRecorder,
    /// What the controllers count.
    pub metrics: ControllerMetrics,
}

impl Ctx {
    /// Start the informers and wait until each has listed once.
    pub async fn start(
        client: Client,
        settings: Settings,
        metrics: ControllerMetrics,
    ) -> Arc<Self> {
        let mut synced = Vec::new();
        let s = &mut synced;
        // Every pod of the cluster, of which each reconcile reads a few: kept compact.
        let pods = Watched::start(
            cache::with_label_index(cache::with_owner_indexes(cache::builder(&client)))
                .compact()
                .index(cache::NODE, |p: &Pod| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .filter(|n| !n.is_empty())
                        .into_iter()
                        .collect()
                })
                .index(cache::CLAIM, |p: &Pod| {
                    let ns = p.metadata.namespace.as_deref().unwrap_or("");
                    p.spec
                        .iter()
                        .flat_map(|s| s.volumes.iter().flatten())
                        .filter_map(|v| v.persistent_volume_claim.as_ref())
                        .map(|c| format!("{ns}/{}", c.claim_name))
                        .collect()
                }),
            s,
        );
        let replicasets = Watched::start(
            cache::with_namespace_index(cache::with_owner_indexes(cache::builder(&client))),
            s,
        );
        let replicationcontrollers = Watched::start(
            cache::with_namespace_index(cache::with_owner_indexes(cache::builder(&client))),
            s,
        );
        let deployments = Watched::start(
            cache::with_namespace_index(cache::with_owner_indexes(cache::builder(&client))),
            s,
        );
        let daemonsets = Watched::start(cache::with_owner_indexes(cache::builder(&client)), s);
        let jobs = Watched::start(
            cache::with_namespace_index(cache::with_owner_indexes(cache::builder(&client))),
            s,
        );
        let statefulsets = Watched::start(cache::with_owner_indexes(cache::builder(&client)), s);
        let revisions = Watched::start(cache::with_owner_indexes(cache::builder(&client)), s);
        let claims = Watched::start(
            cache::with_namespace_index(cache::with_owner_indexes(cache::builder(&client))),
            s,
        );
        let volumes = Watched::start(
            cache::builder(&client).index(cache::CLAIM, |v: &PersistentVolume| {
                v.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .map(|r| {
                        format!(
                            "{}/{}",
                            r.namespace.as_deref().unwrap_or(""),
                            r.name.as_deref().unwrap_or("")
                        )
                    })
                    .into_iter()
                    .collect()
            }),
            s,
        );
        let storage_classes = Watched::start(cache::builder(&client), s);
        let pdbs = Watched::start(cache::with_namespace_index(cache::builder(&client)), s);
        let cronjobs = Watched::start(cache::with_owner_indexes(cache::builder(&client)), s);
        let services = Watched::start(cache::with_namespace_index(cache::builder(&client)), s);
        let nodes = Watched::start(cache::builder(&client), s);
        let endpoints = Watched::start(cache::builder(&client), s);
        let leases = Watched::start(cache::builder(&client), s);
        let events = Watched::start(cache::builder(&client), s);
        for s in synced {
            let _ = s.await;
        }
        Arc::new(Self {
            recorder: EventRecorder::new(client.clone()),
            client,
            pods,
            nodes,
            replicasets,
            replicationcontrollers,
            deployments,
            daemonsets,
            statefulsets,
            revisions,
            claims,
            volumes,
            storage_classes,
            jobs,
            cronjobs,
            pdbs,
            services,
            endpoints,
            leases,
            events,
            settings,
            metrics,
        })
    }
}
