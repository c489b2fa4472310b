//! The roles and what each may do, decided from the verb and the kind alone. A node agent's
//! finer rules, which need the object, are [`super::node_restriction`]'s.

use skiff_proto::kinds::{KindInfo, JOIN_TOKEN, SECRET, USER};

/// What a caller may do, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything: every object, the raw kv API, membership, image imports.
    Admin,
    /// Reads everything; writes objects of the namespaced kinds; logs and exec.
    Edit,
    /// Reads everything but Secrets.
    View,
    /// A node agent: its own Node and Lease, the pods bound to it, what they use.
    Node,
}

impl Role {
    /// Its name, as `spec.role` of a User says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Edit => "edit",
            Self::View => "view",
            Self::Node => "node",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The roles a User may hold (`node` belongs to node certificates only).
pub const USER_ROLES: &[&str] = &["admin", "edit", "view"];

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "edit" => Ok(Self::Edit),
            "view" => Ok(Self::View),
            _ => Err(format!(
                "unknown role {s:?}: one of {}",
                USER_ROLES.join(", ")
            )),
        }
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    /// A pod's logs.
    Logs,
    /// A command in a pod's container.
    Exec,
    /// An image import onto a node.
    Import,
    /// The raw key-value API (reads and writes).
    Kv,
    /// Changes to the control plane's membership.
    Members,
    /// A new data key for Secrets at rest.
    RotateKey,
    /// A backup of the whole store.
    Backup,
}

impl Verb {
    /// Every verb, in the order `can-i` lists them.
    pub const ALL: [Verb; 14] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::Patch,
        Verb::Delete,
        Verb::Logs,
        Verb::Exec,
        Verb::Import,
        Verb::Kv,
        Verb::Members,
        Verb::RotateKey,
        Verb::Backup,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::Logs => "logs",
            Self::Exec => "exec",
            Self::Import => "import",
            Self::Kv => "kv",
            Self::Members => "members",
            Self::RotateKey => "rotate-key",
            Self::Backup => "backup",
        }
    }

    /// Whether it only reads objects.
    pub fn is_object_read(self) -> bool {
        matches!(self, Self::Get | Self::List | Self::Watch)
    }

    /// Whether it writes objects.
    pub fn is_object_write(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Patch | Self::Delete
        )
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Verb {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                format!("unknown verb {s:?}: one of {}", all.join(", "))
            })
    }
}

/// A decision and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The rule, in words.
    pub rule: &'static str,
}

const fn allow(rule: &'static str) -> Decision {
    Decision {
        allowed: true,
        rule,
    }
}

const fn deny(rule: &'static str) -> Decision {
    Decision {
        allowed: false,
        rule,
    }
}

/// Whether `role` may do `verb` on objects of `kind` (`None` for verbs that name no kind).
/// For [`Role::Node`] this is the coarse answer; [`super::node_restriction`] narrows it to
/// the node's own objects.
pub fn decide(role: Role, verb: Verb, kind: Option<&KindInfo>) -> Decision {
    let secret = kind == Some(&SECRET) || kind == Some(&JOIN_TOKEN);
    let namespaced = kind.is_some_and(|k| k.namespaced) && kind != Some(&USER);
    match role {
        Role::Admin => allow("admin: everything"),
        Role::Edit => match verb {
            Verb::Kv | Verb::Members | Verb::Import | Verb::RotateKey | Verb::Backup => deny(
                "edit: the raw kv API, membership, backups, image imports and encryption keys are admin's",
            ),
            Verb::Logs | Verb::Exec => allow("edit: logs and exec of pods"),
            v if v.is_object_read() => allow("edit: reads every object"),
            _ if namespaced => allow("edit: writes objects of namespaced kinds"),
            _ => deny("edit: writes objects of namespaced kinds only"),
        },
        Role::View => match verb {
            v if v.is_object_read() && secret => {
                deny("view: reads every object but Secrets and join tokens")
            }
            v if v.is_object_read() => {
                allow("view: reads every object but Secrets and join tokens")
            }
            Verb::Logs => allow("view: reads pods' logs"),
            _ => deny("view: reads only"),
        },
        Role::Node => node_coarse(verb, kind),
    }
}

/// What a node agent may do at all; the object decides the rest.
fn node_coarse(verb: Verb, kind: Option<&KindInfo>) -> Decision {
    let plural = kind.map(|k| k.plural).unwrap_or("");
    match (verb, plural) {
        (v, "pods") if v.is_object_read() => allow("node: reads the pods bound to it"),
        (Verb::Update | Verb::Patch | Verb::Delete, "pods") => {
            allow("node: changes the status of pods bound to it, and ends their deletion")
        }
        (Verb::Get, "secrets" | "configmaps" | "persistentvolumeclaims") => {
            allow("node: reads the Secrets, ConfigMaps and claims its pods use")
        }
        (v, "persistentvolumes") if v.is_object_read() => {
            allow("node: reads PersistentVolumes (the folders it keeps for them)")
        }
        (v, "services" | "endpoints" | "namespaces") if v.is_object_read() => {
            allow("node: reads Services, Endpoints and Namespaces (service forwarding)")
        }
        (v, "nodes") if v.is_object_read() => allow("node: reads Nodes"),
        (Verb::Create | Verb::Update | Verb::Patch, "nodes") => {
            allow("node: registers and updates its own Node")
        }
        (Verb::Get | Verb::Create | Verb::Update | Verb::Patch, "leases") => {
            allow("node: renews its own Lease")
        }
        (Verb::Create | Verb::Patch, "events") => {
            allow("node: records events and counts their repeats")
        }
        _ => deny("node: only its own Node and Lease, the pods bound to it and what they use"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::kinds::{CONFIG_MAP, NAMESPACE, NODE, POD};

    #[test]
    fn each_role_gets_what_it_is_for() {
        assert!(decide(Role::Admin, Verb::Kv, None).allowed);
        assert!(decide(Role::Edit, Verb::Create, Some(&POD)).allowed);
        assert!(decide(Role::Edit, Verb::Get, Some(&SECRET)).allowed);
        assert!(decide(Role::Edit, Verb::Exec, Some(&POD)).allowed);
        assert!(!decide(Role::Edit, Verb::Kv, None).allowed);
        assert!(!decide(Role::Edit, Verb::Members, None).allowed);
        assert!(!decide(Role::Edit, Verb::Create, Some(&NODE)).allowed);
        assert!(!decide(Role::Edit, Verb::Delete, Some(&NAMESPACE)).allowed);
        assert!(!decide(Role::Edit, Verb::Create, Some(&USER)).allowed);
        assert!(decide(Role::View, Verb::List, Some(&CONFIG_MAP)).allowed);
        assert!(!decide(Role::View, Verb::Get, Some(&SECRET)).allowed);
        assert!(!decide(Role::View, Verb::Watch, Some(&SECRET)).allowed);
        assert!(!decide(Role::View, Verb::Create, Some(&CONFIG_MAP)).allowed);
        assert!(!decide(Role::View, Verb::Exec, Some(&POD)).allowed);
        assert!(!decide(Role::Node, Verb::List, Some(&SECRET)).allowed);
        assert!(!decide(Role::Node, Verb::Create, Some(&POD)).allowed);
        assert!(!decide(Role::Node, Verb::Kv, None).allowed);
    }

    #[test]
    fn verbs_and_roles_read_back_from_their_names() {
        for v in Verb::ALL {
            assert_eq!(v.as_str().parse::<Verb>(), Ok(v));
        }
        assert_eq!("edit".parse::<Role>(), Ok(Role::Edit));
        assert!("node".parse::<Role>().is_err(), "node is not a user's role");
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("admin, edit, view"));
    }
}
