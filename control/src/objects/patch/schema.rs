//! Merge schemas: the patch strategies and merge keys of the Kubernetes API types
//! (`patchStrategy` / `patchMergeKey` in their Go definitions), which strategic merge patch
//! and `apply` follow. A field not named here merges as in a JSON merge patch: objects field
//! by field, lists replaced whole (tolerations, for one, have no merge key in Kubernetes
//! either).
//!
//! Each kind's strategy names its top-level schema ([`super::super::kinds::Strategy::merge_schema`]),
//! built from the shared types below.

/// How the fields of one object type merge.
#[derive(Debug)]
pub struct Schema {
    /// Fields with a rule of their own.
    pub fields: &'static [(&'static str, Field)],
    /// `patchStrategy:"retainKeys"`: an apply clears the fields its manifest no longer sets
    /// (a Deployment strategy switched to `Recreate` loses its `rollingUpdate`).
    pub retain_keys: bool,
}

/// How one field merges.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// An object whose own fields have rules.
    Object(&'static Schema),
    /// A list of objects merged by the value of `key` (containers by `name`).
    MergeList {
        /// The merge key.
        key: &'static str,
        /// The entries' schema.
        item: &'static Schema,
    },
    /// A list of scalars merged as a set (finalizers).
    Set,
}

impl Schema {
    /// The rule of `name`, if it has one.
    pub fn field(&self, name: &str) -> Option<Field> {
        self.fields
            .iter()
            .find_map(|(n, f)| (*n == name).then_some(*f))
    }

    /// The schema of the object at `name` (the empty one when it has no rules).
    pub fn object(&self, name: &str) -> &'static Schema {
        match self.field(name) {
            Some(Field::Object(s)) => s,
            _ => &EMPTY,
        }
    }
}

/// No rules: a JSON merge patch.
pub static EMPTY: Schema = Schema {
    fields: &[],
    retain_keys: false,
};

const fn object(fields: &'static [(&'static str, Field)]) -> Schema {
    Schema {
        fields,
        retain_keys: false,
    }
}

/// ObjectMeta.
pub static OBJECT_META: Schema = object(&[
    ("finalizers", Field::Set),
    (
        "ownerReferences",
        Field::MergeList {
            key: "uid",
            item: &EMPTY,
        },
    ),
]);

/// Any kind with no rules past its metadata.
pub static OBJECT: Schema = object(&[("metadata", Field::Object(&OBJECT_META))]);

static CONTAINER: Schema = object(&[
    (
        "ports",
        Field::MergeList {
            key: "containerPort",
            item: &EMPTY,
        },
    ),
    (
        "env",
        Field::MergeList {
            key: "name",
            item: &EMPTY,
        },
    ),
    (
        "volumeMounts",
        Field::MergeList {
            key: "mountPath",
            item: &EMPTY,
        },
    ),
    (
        "volumeDevices",
        Field::MergeList {
            key: "devicePath",
            item: &EMPTY,
        },
    ),
]);

static VOLUME: Schema = Schema {
    fields: &[],
    retain_keys: true,
};

const fn by_name(item: &'static Schema) -> Field {
    Field::MergeList { key: "name", item }
}

static POD_SPEC: Schema = object(&[
    ("containers", by_name(&CONTAINER)),
    ("initContainers", by_name(&CONTAINER)),
    ("ephemeralContainers", by_name(&CONTAINER)),
    ("volumes", by_name(&VOLUME)),
    ("imagePullSecrets", by_name(&EMPTY)),
    ("schedulingGates", by_name(&EMPTY)),
    (
        "hostAliases",
        Field::MergeList {
            key: "ip",
            item: &EMPTY,
        },
    ),
    (
        "topologySpreadConstraints",
        Field::MergeList {
            key: "topologyKey",
            item: &EMPTY,
        },
    ),
]);

const fn by_type() -> Field {
    Field::MergeList {
        key: "type",
        item: &EMPTY,
    }
}

const fn by_ip() -> Field {
    Field::MergeList {
        key: "ip",
        item: &EMPTY,
    }
}

static POD_STATUS: Schema = object(&[
    ("conditions", by_type()),
    ("podIPs", by_ip()),
    ("hostIPs", by_ip()),
]);

/// Pod.
pub static POD: Schema = object(&[
    ("metadata", Field::Object(&OBJECT_META)),
    ("spec", Field::Object(&POD_SPEC)),
    ("status", Field::Object(&POD_STATUS)),
]);

static POD_TEMPLATE: Schema = object(&[
    ("metadata", Field::Object(&OBJECT_META)),
    ("spec", Field::Object(&POD_SPEC)),
]);

static CONDITIONS_STATUS: Schema = object(&[("conditions", by_type())]);

static DEPLOYMENT_STRATEGY: Schema = Schema {
    fields: &[],
    retain_keys: true,
};

static DEPLOYMENT_SPEC: Schema = object(&[
    ("template", Field::Object(&POD_TEMPLATE)),
    ("strategy", Field::Object(&DEPLOYMENT_STRATEGY)),
]);

/// Deployment.
pub static DEPLOYMENT: Schema = object(&[
    ("metadata", Field::Object(&OBJECT_META)),
    ("spec", Field::Object(&DEPLOYMENT_SPEC)),
    ("status", Field::Object(&CONDITIONS_STATUS)),
]);

static WITH_TEMPLATE_SPEC: Schema = object(&[("template", Field::Object(&POD_TEMPLATE))]);

/// ReplicaSet and ReplicationController.
pub static REPLICATED: Schema = object(&[
    ("metadata", Field::Object(&OBJECT_META)),
    ("spec", Field::Object(&WITH_TEMPLATE_SPEC)),
    ("status", Field::Object(&CONDITIONS_STATUS)),
]);

static SERVICE_SPEC: Schema = object(&[(
    "ports",
    Field::MergeList {
        key: "port",
        item: &EMPTY,
    },
)]);

/// Service.
pub static SERVICE: Schema = object(&[
    ("metadata", Field::Object(&OBJECT_META)),
    ("spec", Field::Object(&SERVICE_SPEC)),
]);

static NODE_SPEC: Schema = object(&[("podCIDRs", Field::Set)]);

static NODE_STATUS: Schema = object(&[("conditions", by_type()), ("addresses", by_type())]);

/// Node.
pub static NODE: Schema = object(&[
    ("metadata", Field::Object(&OBJECT_META)),
    ("spec", Field::Object(&NODE_SPEC)),
    ("status", Field::Object(&NODE_STATUS)),
]);
