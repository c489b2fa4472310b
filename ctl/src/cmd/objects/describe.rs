//! `skiffctl describe KIND NAME`: the object's main fields, readable, then its Events.

use clap::Args;
use serde_json::Value;
use skiff_proto::kinds::KindInfo;
use skiff_proto::objects::Selection;
use skiff_proto::Client;

use super::{parse, targets, NamespaceArgs};
use crate::table;

#[derive(Args)]
pub struct DescribeArgs {
    /// KIND NAME... or KIND/NAME ...
    #[arg(required = true, num_args = 1..)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

fn map_lines(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join("\n             "),
        _ => "<none>".into(),
    }
}

fn field(label: &str, value: impl std::fmt::Display) {
    println!("{:<13}{value}", format!("{label}:"));
}

fn indent_yaml(v: &Value, spaces: usize) -> String {
    let text = serde_norway::to_string(v).unwrap_or_default();
    text.lines()
        .map(|l| format!("{}{l}", " ".repeat(spaces)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe_one(kind: &KindInfo, obj: &Value) {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    field("Name", s("/metadata/name"));
    if kind.namespaced {
        field("Namespace", s("/metadata/namespace"));
    }
    field("Labels", map_lines(obj.pointer("/metadata/labels")));
    let annotations = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            // kubectl leaves the bulky last-applied manifest out.
            let mut m = m.clone();
            m.remove("kubectl.kubernetes.io/last-applied-configuration");
            Value::Object(m)
        });
    field("Annotations", map_lines(annotations.as_ref()));
    field("UID", s("/metadata/uid"));
    field(
        "Created",
        format!(
            "{} ({} ago)",
            s("/metadata/creationTimestamp"),
            table::age(
                obj.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
            )
        ),
    );
    if let Some(d) = obj
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
    {
        field("Deleting", d);
    }
    match kind.kind {
        "Pod" => {
            field("Node", or_none(s("/spec/nodeName")));
            field("Status", or_none(s("/status/phase")));
            field("IP", or_none(s("/status/podIP")));
        }
        "Deployment" | "ReplicaSet" | "ReplicationController" => {
            let n = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            // A ReplicationController's selector is its labels themselves.
            let selector = obj.pointer("/spec/selector/matchLabels").or_else(|| {
                obj.pointer("/spec/selector")
                    .filter(|s| s.get("matchLabels").is_none())
            });
            field(
                "Selector",
                map_lines(selector).replace("\n             ", ","),
            );
            field(
                "Replicas",
                format!(
                    "{} desired | {} updated | {} total | {} available",
                    n("/spec/replicas"),
                    n("/status/updatedReplicas"),
                    n("/status/replicas"),
                    n("/status/availableReplicas")
                ),
            );
            if kind.kind == "Deployment" {
                field("Strategy", or_none(s("/spec/strategy/type")));
            }
        }
        "Node" => {
            let internal_ip = obj
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|a| a["type"] == "InternalIP")
                        .and_then(|a| a["address"].as_str())
                })
                .unwrap_or("")
                .to_string();
            field("InternalIP", or_none(internal_ip));
            let pod_cidr = s("/spec/podCIDR");
            // The agent serves the cluster DNS on its pod bridge: the pod CIDR's first address.
            let dns = pod_cidr
                .parse::<skiff_proto::cidr::Cidr>()
                .map(|c| format!("{}:53", c.first_host()))
                .unwrap_or_default();
            field("PodCIDR", or_none(pod_cidr));
            field(
                "PodNetwork",
                or_none(s("/metadata/annotations/skiff.dev~1pod-network")),
            );
            field("DNS", or_none(dns));
        }
        "Service" => {
            field("Type", s("/spec/type"));
            field("IP", or_none(s("/spec/clusterIP")));
            field(
                "Selector",
                map_lines(obj.pointer("/spec/selector")).replace("\n             ", ","),
            );
        }
        _ => {}
    }
    for section in ["spec", "data", "subsets", "status"] {
        if let Some(v) = obj.get(section) {
            println!("{}{}:", section[..1].to_uppercase(), &section[1..]);
            println!("{}", indent_yaml(v, 2));
        }
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

pub async fn run(client: &Client, args: DescribeArgs) -> anyhow::Result<()> {
    for (i, (kind, name)) in targets(&args.args)?.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        let ns = args.ns.for_kind(kind);
        let obj = parse(
            &client
                .get_object(kind.plural, &ns, &name, false)
                .await?
                .object,
        )?;
        describe_one(kind, &obj);
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let events_ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let sel = Selection {
            namespace: events_ns,
            ..Default::default()
        };
        let mut events: Vec<Value> = client
            .list_objects("events", &sel)
            .await?
            .items
            .iter()
            .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
            .filter(|e| {
                let io = |f: &str| {
                    e.pointer(&format!("/involvedObject/{f}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                io("uid") == uid || (io("kind") == kind.kind && io("name") == name)
            })
            .collect();
        events.sort_by_key(|e| {
            e.get("lastTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        if events.is_empty() {
            println!("Events:      <none>");
            continue;
        }
        println!("Events:");
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let s = |p: &str| {
                    e.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
                let age = table::age(e.get("lastTimestamp").and_then(Value::as_str));
                let age = if count > 1 {
                    format!("{age} (x{count})")
                } else {
                    age
                };
                vec![
                    s("/type"),
                    s("/reason"),
                    age,
                    s("/source/component"),
                    s("/message"),
                ]
            })
            .collect();
        table::print(
            &["  Type", "Reason", "Age", "From", "Message"],
            &rows
                .into_iter()
                .map(|mut r| {
                    r[0] = format!("  {}", r[0]);
                    r
                })
                .collect::<Vec<_>>(),
        );
    }
    Ok(())
}
