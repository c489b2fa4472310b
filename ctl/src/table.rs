//! Tables as kubectl prints them, one row per object, with AGE.

use serde_json::Value;
use skiff_proto::kinds::KindInfo;

/// kubectl's human-readable duration (`45s`, `3m12s`, `5h`, `12d`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        _ if d < 365 * 2 => format!("{d}d"),
        _ if d < 365 * 8 => format!("{}y{}d", d / 365, d % 365),
        _ => format!("{}y", d / 365),
    }
}

/// Age of a timestamp field, or `<unknown>`.
pub fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    human_duration(jiff::Timestamp::now().as_second() - t.as_second())
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn pod_status(p: &Value) -> String {
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    for c in arr(p, "/status/containerStatuses") {
        let waiting = s(c, "/state/waiting/reason");
        if !waiting.is_empty() && waiting != "ContainerCreating" {
            return waiting.into();
        }
        let term = s(c, "/state/terminated/reason");
        if !term.is_empty() && s(p, "/status/phase") != "Succeeded" {
            return term.into();
        }
    }
    let reason = s(p, "/status/reason");
    if !reason.is_empty() {
        return reason.into();
    }
    let phase = s(p, "/status/phase");
    if phase.is_empty() {
        "Pending".into()
    } else {
        phase.into()
    }
}

fn selector_string(v: Option<&Value>) -> String {
    let Some(m) = v.and_then(Value::as_object) else {
        return String::new();
    };
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

fn service_ports(v: &Value) -> String {
    let ports: Vec<String> = arr(v, "/spec/ports")
        .iter()
        .map(|p| {
            let node = p
                .get("nodePort")
                .and_then(Value::as_i64)
                .map(|np| format!(":{np}"))
                .unwrap_or_default();
            format!(
                "{}{node}/{}",
                n(p, "/port"),
                p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
            )
        })
        .collect();
    or_none(ports.join(","))
}

fn endpoints_list(v: &Value) -> String {
    let mut out = Vec::new();
    for subset in arr(v, "/subsets") {
        for a in arr(subset, "/addresses") {
            let ports = arr(subset, "/ports");
            if ports.is_empty() {
                out.push(s(a, "/ip").to_string());
            }
            for p in ports {
                out.push(format!("{}:{}", s(a, "/ip"), n(p, "/port")));
            }
        }
    }
    let more = out.len().saturating_sub(3);
    let mut shown = out.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        shown.push_str(&format!(" + {more} more..."));
    }
    or_none(shown)
}

fn node_ready(v: &Value) -> String {
    let ready = arr(v, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready")
        .map(|c| s(c, "/status"));
    let mut st = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) | None => "NotReady".to_string(),
    };
    if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        st.push_str(",SchedulingDisabled");
    }
    st
}

/// Access modes as kubectl abbreviates them: `RWO,ROX`.
fn access_modes(modes: &[Value]) -> String {
    modes
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A Job's state as kubectl prints it: Complete, Failed, Suspended or Running.
fn job_status(v: &Value) -> String {
    let is = |t: &str| {
        arr(v, "/status/conditions")
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    ["Complete", "Failed", "Suspended"]
        .into_iter()
        .find(|t| is(t))
        .unwrap_or("Running")
        .to_string()
}

/// How long a Job ran: from its start to its completion, or to now.
fn job_duration(v: &Value) -> String {
    let at = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let Some(start) = at("/status/startTime") else {
        return String::new();
    };
    let end = at("/status/completionTime").unwrap_or_else(jiff::Timestamp::now);
    human_duration(end.as_second() - start.as_second())
}

/// Header and row of one object of `kind`.
pub fn columns(kind: &KindInfo, v: &Value, wide: bool) -> (Vec<&'static str>, Vec<String>) {
    let name = s(v, "/metadata/name").to_string();
    let age = age(v
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str));
    let (mut h, mut r): (Vec<&'static str>, Vec<String>) = match kind.kind {
        "Pod" => {
            let statuses = arr(v, "/status/containerStatuses");
            let total = arr(v, "/spec/containers").len();
            let ready = statuses
                .iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
            let mut h = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
            let mut r = vec![
                name,
                format!("{ready}/{total}"),
                pod_status(v),
                restarts.to_string(),
                age,
            ];
            if wide {
                h.extend(["IP", "NODE"]);
                r.push(or_none(s(v, "/status/podIP").into()));
                r.push(or_none(s(v, "/spec/nodeName").into()));
            }
            (h, r)
        }
        "Deployment" => {
            let mut h = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
            let mut r = vec![
                name,
                format!(
                    "{}/{}",
                    n(v, "/status/readyReplicas"),
                    n(v, "/spec/replicas")
                ),
                n(v, "/status/updatedReplicas").to_string(),
                n(v, "/status/availableReplicas").to_string(),
                age,
            ];
            if wide {
                let cs = arr(v, "/spec/template/spec/containers");
                h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
                r.push(
                    cs.iter()
                        .map(|c| s(c, "/name"))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                r.push(
                    cs.iter()
                        .map(|c| s(c, "/image"))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                r.push(selector_string(v.pointer("/spec/selector/matchLabels")));
            }
            (h, r)
        }
        "DaemonSet" => (
            vec![
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE",
            ],
            vec![
                name,
                n(v, "/status/desiredNumberScheduled").to_string(),
                n(v, "/status/currentNumberScheduled").to_string(),
                n(v, "/status/numberReady").to_string(),
                n(v, "/status/updatedNumberScheduled").to_string(),
                n(v, "/status/numberAvailable").to_string(),
                or_none(selector_string(
                    v.pointer("/spec/template/spec/nodeSelector"),
                )),
                age,
            ],
        ),
        "StatefulSet" => (
            vec!["NAME", "READY", "AGE"],
            vec![
                name,
                format!(
                    "{}/{}",
                    n(v, "/status/readyReplicas"),
                    n(v, "/spec/replicas")
                ),
                age,
            ],
        ),
        "ControllerRevision" => (
            vec!["NAME", "CONTROLLER", "REVISION", "AGE"],
            vec![
                name,
                arr(v, "/metadata/ownerReferences")
                    .iter()
                    .find(|r| r["controller"] == true)
                    .map(|r| {
                        format!(
                            "{}.apps/{}",
                            s(r, "/kind").to_ascii_lowercase(),
                            s(r, "/name")
                        )
                    })
                    .unwrap_or_else(|| "<none>".into()),
                n(v, "/revision").to_string(),
                age,
            ],
        ),
        "PersistentVolumeClaim" => (
            vec![
                "NAME",
                "STATUS",
                "VOLUME",
                "CAPACITY",
                "ACCESS MODES",
                "STORAGECLASS",
                "AGE",
            ],
            vec![
                name,
                s(v, "/status/phase").to_string(),
                s(v, "/spec/volumeName").to_string(),
                s(v, "/status/capacity/storage").to_string(),
                access_modes(arr(v, "/status/accessModes")),
                or_none(s(v, "/spec/storageClassName").into()),
                age,
            ],
        ),
        "PersistentVolume" => (
            vec![
                "NAME",
                "CAPACITY",
                "ACCESS MODES",
                "RECLAIM POLICY",
                "STATUS",
                "CLAIM",
                "STORAGECLASS",
                "AGE",
            ],
            vec![
                name,
                s(v, "/spec/capacity/storage").to_string(),
                access_modes(arr(v, "/spec/accessModes")),
                s(v, "/spec/persistentVolumeReclaimPolicy").to_string(),
                s(v, "/status/phase").to_string(),
                match v.pointer("/spec/claimRef") {
                    Some(c) => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
                    None => String::new(),
                },
                s(v, "/spec/storageClassName").to_string(),
                age,
            ],
        ),
        "StorageClass" => (
            vec![
                "NAME",
                "PROVISIONER",
                "RECLAIMPOLICY",
                "VOLUMEBINDINGMODE",
                "ALLOWVOLUMEEXPANSION",
                "AGE",
            ],
            vec![
                if s(
                    v,
                    "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
                ) == "true"
                {
                    format!("{name} (default)")
                } else {
                    name
                },
                s(v, "/provisioner").to_string(),
                s(v, "/reclaimPolicy").to_string(),
                s(v, "/volumeBindingMode").to_string(),
                (v.pointer("/allowVolumeExpansion").and_then(Value::as_bool) == Some(true))
                    .to_string(),
                age,
            ],
        ),
        "Job" => (
            vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
            vec![
                name,
                job_status(v),
                match v.pointer("/spec/completions").and_then(Value::as_i64) {
                    Some(c) => format!("{}/{c}", n(v, "/status/succeeded")),
                    // A work queue: done at the first success, out of `parallelism` pods.
                    None => format!(
                        "{}/1 of {}",
                        n(v, "/status/succeeded"),
                        n(v, "/spec/parallelism")
                    ),
                },
                job_duration(v),
                age,
            ],
        ),
        "CronJob" => (
            vec![
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
                "AGE",
            ],
            vec![
                name,
                s(v, "/spec/schedule").to_string(),
                or_none(s(v, "/spec/timeZone").into()),
                if v.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
                    "True".into()
                } else {
                    "False".into()
                },
                arr(v, "/status/active").len().to_string(),
                match v
                    .pointer("/status/lastScheduleTime")
                    .and_then(Value::as_str)
                {
                    Some(t) => self::age(Some(t)),
                    None => "<none>".into(),
                },
                age,
            ],
        ),
        "ReplicaSet" | "ReplicationController" => (
            vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            vec![
                name,
                n(v, "/spec/replicas").to_string(),
                n(v, "/status/replicas").to_string(),
                n(v, "/status/readyReplicas").to_string(),
                age,
            ],
        ),
        "Service" => {
            let ext = arr(v, "/spec/externalIPs")
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",");
            let mut h = vec![
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ];
            let cluster_ip = match s(v, "/spec/clusterIP") {
                "" => "<pending>".to_string(),
                ip => ip.to_string(),
            };
            let mut r = vec![
                name,
                s(v, "/spec/type").into(),
                cluster_ip,
                or_none(ext),
                service_ports(v),
                age,
            ];
            if wide {
                h.push("SELECTOR");
                r.push(or_none(selector_string(v.pointer("/spec/selector"))));
            }
            (h, r)
        }
        "Endpoints" => (
            vec!["NAME", "ENDPOINTS", "AGE"],
            vec![name, endpoints_list(v), age],
        ),
        "Node" => {
            let roles = v
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let mut h = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
            let mut r = vec![
                name,
                node_ready(v),
                or_none(roles),
                age,
                s(v, "/status/nodeInfo/kubeletVersion").into(),
            ];
            if wide {
                h.push("INTERNAL-IP");
                let ip = arr(v, "/status/addresses")
                    .iter()
                    .find(|a| s(a, "/type") == "InternalIP")
                    .map(|a| s(a, "/address"))
                    .unwrap_or("");
                r.push(or_none(ip.into()));
            }
            (h, r)
        }
        "Namespace" => (
            vec!["NAME", "STATUS", "AGE"],
            vec![name, s(v, "/status/phase").into(), age],
        ),
        "ConfigMap" => {
            let data = v
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + v.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            (
                vec!["NAME", "DATA", "AGE"],
                vec![name, data.to_string(), age],
            )
        }
        "Secret" => {
            let data = v
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            (
                vec!["NAME", "TYPE", "DATA", "AGE"],
                vec![name, s(v, "/type").into(), data.to_string(), age],
            )
        }
        "Event" => {
            let last = v.get("lastTimestamp").and_then(Value::as_str).or(v
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str));
            let object = format!(
                "{}/{}",
                s(v, "/involvedObject/kind").to_lowercase(),
                s(v, "/involvedObject/name")
            );
            (
                vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
                vec![
                    self::age(last),
                    s(v, "/type").into(),
                    s(v, "/reason").into(),
                    object,
                    s(v, "/message").into(),
                ],
            )
        }
        "Lease" => (
            vec!["NAME", "HOLDER", "AGE"],
            vec![name, s(v, "/spec/holderIdentity").into(), age],
        ),
        _ => (vec!["NAME", "AGE"], vec![name, age]),
    };
    (std::mem::take(&mut h), std::mem::take(&mut r))
}

/// Print rows aligned in columns, as kubectl does (three spaces between columns).
pub fn print(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i != last {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        println!("{out}");
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(5 * 3600 + 60), "5h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(40 * 86400), "40d");
    }
}
