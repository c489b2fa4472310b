//! The object kinds Skiff serves, and the names clients may use for them (kind, plural,
//! singular, short names — as kubectl accepts them). Server and clients share this table.

/// One served kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// `Pod`, `Deployment`, ...
    pub kind: &'static str,
    /// API group; empty for the core group.
    pub group: &'static str,
    /// `v1`.
    pub version: &'static str,
    /// Lowercase plural: the resource name (`pods`).
    pub plural: &'static str,
    /// Lowercase singular (`pod`).
    pub singular: &'static str,
    /// Short names (`po`).
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the kind has a status subresource (Update leaves status alone).
    pub has_status: bool,
}

impl KindInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployment.apps`, or `pod` for the core group, as kubectl prints it.
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }

    /// The store key prefix of this resource: `/registry/{group}/{resource}/`.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// Whether a user means this kind by `name`: kind (any case), plural, singular or short
    /// name, optionally qualified by its group (`deployments.apps`).
    pub fn is_named(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        let (base, group) = match lower.split_once('.') {
            Some((b, g)) => (b, Some(g)),
            None => (lower.as_str(), None),
        };
        let named = self.plural == base
            || self.singular == base
            || self.kind.eq_ignore_ascii_case(base)
            || self.short_names.contains(&base);
        named && group.is_none_or(|g| g == self.group)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{namespace}/{name}", self.key_prefix())
        } else {
            format!("{}{name}", self.key_prefix())
        }
    }
}

const fn kind(
    kind: &'static str,
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    has_status: bool,
) -> KindInfo {
    KindInfo {
        kind,
        group,
        version: "v1",
        plural,
        singular,
        short_names,
        namespaced,
        has_status,
    }
}

/// Namespaces.
pub const NAMESPACE: KindInfo = kind(
    "Namespace",
    "",
    "namespaces",
    "namespace",
    &["ns"],
    false,
    true,
);
/// Pods.
pub const POD: KindInfo = kind("Pod", "", "pods", "pod", &["po"], true, true);
/// ReplicaSets.
pub const REPLICA_SET: KindInfo = kind(
    "ReplicaSet",
    "apps",
    "replicasets",
    "replicaset",
    &["rs"],
    true,
    true,
);
/// ReplicationControllers: ReplicaSets' forerunner with an equality selector, still served
/// by Kubernetes and used by its examples.
pub const REPLICATION_CONTROLLER: KindInfo = kind(
    "ReplicationController",
    "",
    "replicationcontrollers",
    "replicationcontroller",
    &["rc"],
    true,
    true,
);
/// Deployments.
pub const DEPLOYMENT: KindInfo = kind(
    "Deployment",
    "apps",
    "deployments",
    "deployment",
    &["deploy"],
    true,
    true,
);
/// DaemonSets: one pod on each eligible node.
pub const DAEMON_SET: KindInfo = kind(
    "DaemonSet",
    "apps",
    "daemonsets",
    "daemonset",
    &["ds"],
    true,
    true,
);
/// StatefulSets: ordinal pods with stable names and their own volume claims.
pub const STATEFUL_SET: KindInfo = kind(
    "StatefulSet",
    "apps",
    "statefulsets",
    "statefulset",
    &["sts"],
    true,
    true,
);
/// ControllerRevisions: the templates a StatefulSet or DaemonSet has run, for its partitions
/// and its rollout history.
pub const CONTROLLER_REVISION: KindInfo = kind(
    "ControllerRevision",
    "apps",
    "controllerrevisions",
    "controllerrevision",
    &[],
    true,
    false,
);
/// Jobs: pods run to completion.
pub const JOB: KindInfo = kind("Job", "batch", "jobs", "job", &[], true, true);
/// CronJobs: Jobs made on a schedule.
pub const CRON_JOB: KindInfo = kind(
    "CronJob",
    "batch",
    "cronjobs",
    "cronjob",
    &["cj"],
    true,
    true,
);
/// PodDisruptionBudgets: how many of a set of pods voluntary evictions must leave.
pub const POD_DISRUPTION_BUDGET: KindInfo = kind(
    "PodDisruptionBudget",
    "policy",
    "poddisruptionbudgets",
    "poddisruptionbudget",
    &["pdb"],
    true,
    true,
);
/// PersistentVolumes: storage of the cluster, each bound to at most one claim.
pub const PERSISTENT_VOLUME: KindInfo = kind(
    "PersistentVolume",
    "",
    "persistentvolumes",
    "persistentvolume",
    &["pv"],
    false,
    true,
);
/// PersistentVolumeClaims: a namespace's request for storage.
pub const PERSISTENT_VOLUME_CLAIM: KindInfo = kind(
    "PersistentVolumeClaim",
    "",
    "persistentvolumeclaims",
    "persistentvolumeclaim",
    &["pvc"],
    true,
    true,
);
/// StorageClasses: how claims of a class get their volumes.
pub const STORAGE_CLASS: KindInfo = KindInfo {
    kind: "StorageClass",
    group: "storage.k8s.io",
    version: "v1",
    plural: "storageclasses",
    singular: "storageclass",
    short_names: &["sc"],
    namespaced: false,
    has_status: false,
};
/// Services.
pub const SERVICE: KindInfo = kind("Service", "", "services", "service", &["svc"], true, true);
/// Endpoints.
pub const ENDPOINTS: KindInfo = kind(
    "Endpoints",
    "",
    "endpoints",
    "endpoints",
    &["ep"],
    true,
    false,
);
/// Nodes.
pub const NODE: KindInfo = kind("Node", "", "nodes", "node", &["no"], false, true);
/// ConfigMaps.
pub const CONFIG_MAP: KindInfo = kind(
    "ConfigMap",
    "",
    "configmaps",
    "configmap",
    &["cm"],
    true,
    false,
);
/// Secrets.
pub const SECRET: KindInfo = kind("Secret", "", "secrets", "secret", &[], true, false);
/// Events.
pub const EVENT: KindInfo = kind("Event", "", "events", "event", &["ev"], true, false);
/// Leases.
pub const LEASE: KindInfo = kind(
    "Lease",
    "coordination.k8s.io",
    "leases",
    "lease",
    &[],
    true,
    false,
);
/// Users: who may call the API and with which role (`spec.role`: admin, edit or view). A
/// user's certificate names them (`user:NAME`); the object says what they may do, so a role
/// changes, or access ends, without a new certificate.
pub const USER: KindInfo = kind("User", "auth.skiff.dev", "users", "user", &[], false, false);
/// Join tokens: who may join the cluster, as a node or a control member, until when. The
/// object keeps a hash of the secret, never the secret.
pub const JOIN_TOKEN: KindInfo = kind(
    "JoinToken",
    "auth.skiff.dev",
    "jointokens",
    "jointoken",
    &["token"],
    false,
    false,
);

/// The annotation on a Node naming the folder that holds its `local-path` volumes: the node
/// agent publishes it, the volume controller provisions under it.
pub const LOCAL_PATH_ROOT_ANNOTATION: &str = "skiff.dev/local-path-root";

/// Every served kind.
pub const KINDS: &[KindInfo] = &[
    NAMESPACE,
    POD,
    REPLICA_SET,
    REPLICATION_CONTROLLER,
    DEPLOYMENT,
    DAEMON_SET,
    STATEFUL_SET,
    CONTROLLER_REVISION,
    JOB,
    CRON_JOB,
    POD_DISRUPTION_BUDGET,
    PERSISTENT_VOLUME,
    PERSISTENT_VOLUME_CLAIM,
    STORAGE_CLASS,
    SERVICE,
    ENDPOINTS,
    NODE,
    CONFIG_MAP,
    SECRET,
    EVENT,
    LEASE,
    USER,
    JOIN_TOKEN,
];

/// The kind a user names: kind (any case), plural, singular or short name, optionally
/// qualified by its group (`deployments.apps`).
pub fn lookup(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.is_named(name))
}

/// The kind a manifest declares by `apiVersion` and `kind`.
pub fn by_api_version(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
}

/// The kind served under resource name `plural`.
pub fn by_resource(plural: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.plural == plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_as_kubectl_accepts_them() {
        for (name, plural) in [
            ("po", "pods"),
            ("Pod", "pods"),
            ("pods", "pods"),
            ("deploy", "deployments"),
            ("deployments.apps", "deployments"),
            ("svc", "services"),
            ("cm", "configmaps"),
            ("ns", "namespaces"),
            ("ep", "endpoints"),
            ("rs", "replicasets"),
            ("lease", "leases"),
        ] {
            assert_eq!(lookup(name).map(|k| k.plural), Some(plural), "{name}");
        }
        assert!(lookup("deployments.core").is_none());
        assert!(lookup("widgets").is_none());
    }

    #[test]
    fn keys_follow_the_registry_layout() {
        let pod = by_resource("pods").unwrap();
        assert_eq!(pod.key("default", "web"), "/registry/core/pods/default/web");
        let node = by_resource("nodes").unwrap();
        assert_eq!(node.key("", "n1"), "/registry/core/nodes/n1");
        let dep = by_api_version("apps/v1", "Deployment").unwrap();
        assert_eq!(dep.key("a", "b"), "/registry/apps/deployments/a/b");
        assert!(by_api_version("v1", "Deployment").is_none());
    }
}
