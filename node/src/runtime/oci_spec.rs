//! The OCI runtime spec of a pod's container, built from the pod spec and the image config
//! (a pure function, so its rules — command/args over entrypoint/cmd, `$(VAR)` expansion,
//! limits as cgroup values — have table tests).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::ImageInfo;

/// The annotation naming a container's shim group: the runc v2 shim serves every container
/// that names the same group.
pub const SHIM_GROUP: &str = "io.containerd.runc.v2.group";

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Path on the host.
    pub host_path: PathBuf,
    /// Path in the container.
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Everything a container's spec is built from.
#[derive(Debug, Clone, Default)]
pub struct SpecInput {
    /// The container's `command` (replaces the image's entrypoint).
    pub command: Option<Vec<String>>,
    /// The container's `args` (replace the image's cmd).
    pub args: Option<Vec<String>>,
    /// Environment from the pod spec, resolved, in order.
    pub env: Vec<(String, String)>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// The pod's hostname.
    pub hostname: String,
    /// The pod's network namespace.
    pub netns_path: PathBuf,
    /// The node's namespaces the pod shares.
    pub host: HostNamespaces,
    /// Bind mounts (volumes, /etc/hosts, /etc/resolv.conf, /etc/hostname).
    pub mounts: Vec<BindMount>,
    /// cgroup path (cgroupfs driver), unique per container.
    pub cgroups_path: String,
    /// cpu limit in millicores.
    pub cpu_limit_millis: Option<i64>,
    /// cpu request in millicores (cpu shares).
    pub cpu_request_millis: Option<i64>,
    /// memory limit in bytes.
    pub memory_limit_bytes: Option<i64>,
    /// Containers with the same group share one containerd shim process.
    pub shim_group: Option<String>,
    /// How the process runs: user, capabilities, privileges, root filesystem.
    pub security: Security,
}

/// The node's namespaces a pod shares (`hostNetwork`, `hostPID`, `hostIPC`). On the node's
/// network a pod also shares its host name (its UTS namespace), as Kubernetes' do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    /// The node's network (the pod's `netns_path` names it) and host name.
    pub network: bool,
    /// The node's processes.
    pub pid: bool,
    /// The node's System V IPC and POSIX message queues.
    pub ipc: bool,
}

/// The namespaces of a container's spec: its own, or the agent's (the node's) where the pod
/// shares them.
fn namespaces(input: &SpecInput) -> Vec<Value> {
    let agent = std::process::id();
    let own_or_node = |kind: &str, file: &str, shared: bool| match shared {
        true => json!({"type": kind, "path": format!("/proc/{agent}/ns/{file}")}),
        false => json!({"type": kind}),
    };
    vec![
        own_or_node("pid", "pid", input.host.pid),
        own_or_node("ipc", "ipc", input.host.ipc),
        own_or_node("uts", "uts", input.host.network),
        json!({"type": "mount"}),
        json!({"type": "network", "path": input.netns_path}),
    ]
}

/// A container's effective security settings (its `securityContext` over the pod's, over
/// the image's user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// User and group the process runs as.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups (the pod's `fsGroup` and `supplementalGroups`).
    pub additional_gids: Vec<u32>,
    /// Capabilities added to the default set (`NET_ADMIN`, without `CAP_`).
    pub add: Vec<String>,
    /// Capabilities dropped from it (`ALL` drops every one).
    pub drop: Vec<String>,
    /// Every capability, every device, no masked paths.
    pub privileged: bool,
    /// Whether the process may gain privileges (setuid binaries); off unless asked for.
    pub allow_privilege_escalation: bool,
    /// The root filesystem is mounted read-only.
    pub read_only_root: bool,
}

/// The default capabilities, as containerd's and Docker's.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability this kernel generation knows, for privileged containers.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capability set of `security`.
pub fn capabilities(security: &Security) -> Vec<String> {
    if security.privileged {
        return ALL_CAPS.iter().map(|c| c.to_string()).collect();
    }
    let full = |c: &str| {
        let c = c.to_ascii_uppercase();
        if c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let drop_all = security.drop.iter().any(|d| d.eq_ignore_ascii_case("ALL"));
    let dropped: Vec<String> = security.drop.iter().map(|d| full(d)).collect();
    let mut caps: Vec<String> = if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !dropped.contains(c))
            .collect()
    };
    for a in &security.add {
        let a = full(a);
        if !caps.contains(&a) {
            caps.push(a);
        }
    }
    caps
}

/// Kubernetes' `$(VAR)` expansion: `$(NAME)` becomes the variable's value when it is defined,
/// `$$` escapes, and an undefined reference stays as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The process's argv, by Kubernetes' rules.
pub fn argv(input: &SpecInput, image: &ImageInfo) -> Vec<String> {
    let raw: Vec<String> = match (&input.command, &input.args) {
        (Some(cmd), Some(args)) => cmd.iter().chain(args).cloned().collect(),
        (Some(cmd), None) => cmd.clone(),
        (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    raw.iter().map(|a| expand(a, &input.env)).collect()
}

/// The environment: the image's, then the pod's (which win), plus HOSTNAME.
pub fn environment(input: &SpecInput, image: &ImageInfo) -> Vec<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| {
        if let Some(slot) = vars.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            vars.push((k, v));
        }
    };
    if !image.env.iter().any(|e| e.starts_with("PATH=")) {
        set(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    for e in &image.env {
        if let Some((k, v)) = e.split_once('=') {
            set(k.into(), v.into());
        }
    }
    set("HOSTNAME".into(), input.hostname.clone());
    for (k, v) in &input.env {
        set(k.clone(), v.clone());
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// CFS period used for cpu limits.
const CPU_PERIOD: u64 = 100_000;

/// The runtime spec.
pub fn build(input: &SpecInput, image: &ImageInfo) -> Value {
    let cwd = input
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let sec = &input.security;
    let caps = json!(capabilities(sec));
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        // A pod on the node's IPC shares its POSIX shared memory too, as the CRI gives it.
        if input.host.ipc {
            json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "rw"]})
        } else {
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
        },
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &input.mounts {
        let mode = if m.read_only { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": ["rbind", "rprivate", mode],
        }));
    }
    let mut resources = json!({"devices": [{"allow": sec.privileged, "access": "rwm"}]});
    if let Some(limit) = input.cpu_limit_millis.filter(|l| *l > 0) {
        resources["cpu"]["quota"] = json!(limit * CPU_PERIOD as i64 / 1000);
        resources["cpu"]["period"] = json!(CPU_PERIOD);
    }
    if let Some(req) = input.cpu_request_millis.filter(|r| *r > 0) {
        // Kubernetes' mapping of requests to shares (1 cpu = 1024), at least 2.
        resources["cpu"]["shares"] = json!((req * 1024 / 1000).max(2));
    }
    if let Some(mem) = input.memory_limit_bytes.filter(|m| *m > 0) {
        resources["memory"]["limit"] = json!(mem);
        // No swap beyond the limit: the limit is the limit.
        resources["memory"]["swap"] = json!(mem);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": sec.uid, "gid": sec.gid, "additionalGids": sec.additional_gids},
            "args": argv(input, image),
            "env": environment(input, image),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": !(sec.allow_privilege_escalation || sec.privileged),
        },
        "root": {"path": "rootfs", "readonly": sec.read_only_root},
        "annotations": match &input.shim_group {
            Some(g) => json!({SHIM_GROUP: g}),
            None => json!({}),
        },
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": input.cgroups_path,
            "namespaces": namespaces(input),
            "maskedPaths": if sec.privileged { json!([]) } else { json!([
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ]) },
            "readonlyPaths": if sec.privileged { json!([]) } else { json!([
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]) },
        },
    });
    if input.host.network {
        // The host name is set in a container's own UTS namespace only: in the node's it
        // would rename the node.
        if let Some(fields) = spec.as_object_mut() {
            fields.remove("hostname");
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageInfo {
        ImageInfo {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            working_dir: "/work".into(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let cases = [
            (None, None, vec!["/entry", "default"]),
            (None, s(&["x"]), vec!["/entry", "x"]),
            (s(&["sh"]), None, vec!["sh"]),
            (s(&["sh", "-c"]), s(&["echo"]), vec!["sh", "-c", "echo"]),
        ];
        for (command, args, want) in cases {
            let input = SpecInput {
                command,
                args,
                ..Default::default()
            };
            assert_eq!(argv(&input, &image()), want);
        }
    }

    #[test]
    fn variables_expand_and_escape_as_in_kubernetes() {
        let env = vec![("NAME".to_string(), "web".to_string())];
        assert_eq!(expand("hi $(NAME)!", &env), "hi web!");
        assert_eq!(expand("$$(NAME) $(MISSING)", &env), "$(NAME) $(MISSING)");
        assert_eq!(expand("cost $5 $(", &env), "cost $5 $(");
    }

    #[test]
    fn pod_env_overrides_image_env() {
        let input = SpecInput {
            env: vec![("A".into(), "pod".into())],
            hostname: "p".into(),
            ..Default::default()
        };
        let env = environment(&input, &image());
        assert!(env.contains(&"A=pod".to_string()));
        assert!(env.contains(&"PATH=/bin".to_string()));
        assert!(env.contains(&"HOSTNAME=p".to_string()));
    }

    #[test]
    fn capabilities_follow_add_drop_and_privileged() {
        let sec = |add: &[&str], drop: &[&str], privileged| Security {
            add: add.iter().map(|s| s.to_string()).collect(),
            drop: drop.iter().map(|s| s.to_string()).collect(),
            privileged,
            ..Default::default()
        };
        let caps = capabilities(&sec(&["NET_ADMIN"], &["NET_RAW"], false));
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
        assert_eq!(
            capabilities(&sec(&["NET_BIND_SERVICE"], &["ALL"], false)),
            ["CAP_NET_BIND_SERVICE"]
        );
        assert!(capabilities(&sec(&[], &[], true)).contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn a_pod_on_the_node_shares_the_agents_namespaces_and_never_renames_the_node() {
        let input = |host| SpecInput {
            hostname: "p".into(),
            netns_path: "/run/netns/p".into(),
            host,
            ..Default::default()
        };
        let own = build(&input(HostNamespaces::default()), &image());
        assert_eq!(own["hostname"], "p");
        assert!(own["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n.get("path").is_none() || n["type"] == "network"));
        let shared = build(
            &input(HostNamespaces {
                network: true,
                pid: true,
                ipc: false,
            }),
            &image(),
        );
        assert!(shared.get("hostname").is_none());
        let path_of = |kind: &str| {
            shared["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["type"] == kind)
                .map(|n| n["path"].clone())
                .unwrap()
        };
        let agent = std::process::id();
        assert_eq!(path_of("pid"), format!("/proc/{agent}/ns/pid"));
        assert_eq!(path_of("uts"), format!("/proc/{agent}/ns/uts"));
        assert!(path_of("ipc").is_null());
    }

    #[test]
    fn limits_become_cgroup_values() {
        let input = SpecInput {
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            memory_limit_bytes: Some(64 << 20),
            ..Default::default()
        };
        let spec = build(&input, &image());
        let r = &spec["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 256);
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(spec["process"]["cwd"], "/work");
    }
}
