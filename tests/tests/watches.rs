//! Watch fan-out on a real three-member cluster: every watcher gets every change it selects
//! exactly once and in order, whichever member it watches and whatever it selects; a watcher
//! that stops reading is cut off with EXPIRED while another on the same member keeps up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::{http_get, init_tracing, Cluster, MemberOptions};
use skiff_proto::objects::{Selection, WatchItem};
use skiff_proto::pb::object_event::Type;
use skiff_proto::Client;
use tracing::info;

async fn cluster_with(opts: MemberOptions) -> Cluster {
    init_tracing();
    let cluster = Cluster::start(3, opts);
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .get_object("namespaces", "", "default", false)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the default namespace never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
}

async fn namespace(client: &Client, name: &str) {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    client
        .create_object("namespaces", "", serde_json::to_vec(&ns).expect("JSON"))
        .await
        .expect("namespace created");
}

fn revision_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("a resourceVersion")
}

/// One change the test made: what each kind of watcher must see of it.
#[derive(Debug, Clone)]
struct Write {
    revision: u64,
    name: String,
    node: String,
    /// Whether the pod had `tier=front` before and after the write.
    front: (bool, bool),
    created: bool,
}

/// What a watcher selects, and so which of the writes it must see, with which type.
#[derive(Debug, Clone)]
enum Watching {
    Namespace,
    Node(String),
    Front,
}

impl Watching {
    fn selection(&self, ns: &str) -> Selection {
        let mut sel = Selection {
            namespace: ns.into(),
            ..Default::default()
        };
        match self {
            Watching::Namespace => {}
            Watching::Node(n) => sel.fields = format!("spec.nodeName={n}"),
            Watching::Front => sel.labels = "tier=front".into(),
        }
        sel
    }

    fn expected(&self, w: &Write) -> Option<&'static str> {
        let created_or_modified = if w.created { "ADDED" } else { "MODIFIED" };
        match self {
            Watching::Namespace => Some(created_or_modified),
            Watching::Node(n) => (&w.node == n).then_some(created_or_modified),
            Watching::Front => match w.front {
                (false, true) => Some("ADDED"),
                (true, true) => Some("MODIFIED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_gets_every_change_it_selects_exactly_once_and_in_order_under_a_burst() {
    let cluster = cluster_with(MemberOptions::default()).await;
    let ns = "fanout";
    namespace(&cluster.client(), ns).await;
    let nodes = ["n0", "n1", "n2", "n3"];

    // On each member: two watchers of the namespace, one per node (field selector), two of a
    // label that pods gain and lose.
    let mut kinds = Vec::new();
    for _member in 1..=3 {
        kinds.push(Watching::Namespace);
        kinds.push(Watching::Namespace);
        kinds.extend(nodes.iter().map(|n| Watching::Node(n.to_string())));
        kinds.push(Watching::Front);
        kinds.push(Watching::Front);
    }
    let per_member = kinds.len() / 3;
    let mut streams = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let member = (i / per_member) as u64 + 1;
        let client = cluster.client_of(member);
        let stream = client
            .watch_objects_stream("pods", &kind.selection(ns), 0)
            .await
            .expect("watch opens");
        streams.push((kind.clone(), client, stream));
    }
    info!(
        watchers = streams.len(),
        "phase: a burst of creates and relabels"
    );
    let writer = cluster.client();
    let mut writes: Vec<Write> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..240u32 {
        let writer = writer.clone();
        let (name, node) = (
            format!("p-{i}"),
            nodes[i as usize % nodes.len()].to_string(),
        );
        let front = i % 2 == 0;
        tasks.spawn(async move {
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"tier": if front { "front" } else { "back" }}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]}
            });
            let created = writer
                .create_object("pods", "fanout", serde_json::to_vec(&pod).expect("JSON"))
                .await
                .expect("create");
            let mut writes = vec![Write {
                revision: created.revision,
                name: name.clone(),
                node: node.clone(),
                front: (false, front),
                created: true,
            }];
            // Every third pod flips its tier: in or out of the label watchers' view.
            if i % 3 == 0 {
                let tier = if front { "back" } else { "front" };
                let patch = format!(r#"{{"metadata":{{"labels":{{"tier":"{tier}"}}}}}}"#);
                let patched = writer
                    .patch_object("pods", "fanout", &name, patch.into_bytes(), false)
                    .await
                    .expect("patch");
                writes.push(Write {
                    revision: patched.revision,
                    name,
                    node,
                    front: (front, !front),
                    created: false,
                });
            }
            writes
        });
        if i % 16 == 15 {
            // Keep a few dozen writes in flight, not hundreds.
            while tasks.len() > 32 {
                if let Some(w) = tasks.join_next().await {
                    writes.extend(w.expect("writer task"));
                }
            }
        }
    }
    while let Some(w) = tasks.join_next().await {
        writes.extend(w.expect("writer task"));
    }
    writes.sort_by_key(|w| w.revision);
    let last = writes.last().expect("writes").revision;
    info!(writes = writes.len(), last, "phase: every watcher checked");

    for (n, (kind, _client, mut stream)) in streams.into_iter().enumerate() {
        let mut got: Vec<(u64, String, String)> = Vec::new();
        let mut upto = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while upto < last {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, stream.message())
                .await
                .unwrap_or_else(|_| panic!("watcher {n} ({kind:?}) stalled at revision {upto}"))
                .expect("watch ok")
                .expect("watch open");
            for e in msg.events {
                assert!(
                    e.revision >= upto,
                    "watcher {n}: revision {} after {upto}",
                    e.revision
                );
                upto = e.revision;
                let t = match Type::try_from(e.r#type).expect("event type") {
                    Type::Bookmark => continue,
                    Type::Added => "ADDED",
                    Type::Modified => "MODIFIED",
                    Type::Deleted => "DELETED",
                };
                let obj: Value = serde_json::from_slice(&e.object).expect("object JSON");
                assert_eq!(
                    revision_of(&obj),
                    e.revision,
                    "watcher {n}: resourceVersion"
                );
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                got.push((e.revision, t.to_string(), name));
            }
        }
        let want: Vec<(u64, String, String)> = writes
            .iter()
            .filter_map(|w| {
                kind.expected(w)
                    .map(|t| (w.revision, t.to_string(), w.name.clone()))
            })
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "watcher {n} ({kind:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_cut_off_with_expired_while_another_keeps_up() {
    let cluster = cluster_with(MemberOptions {
        metrics: true,
        ..Default::default()
    })
    .await;
    let ns = "slow";
    namespace(&cluster.client(), ns).await;
    let member = cluster.client_of(1);
    let sel = Selection {
        namespace: ns.into(),
        ..Default::default()
    };
    // The slow watcher reads its first message (the watch is in place), then nothing.
    let mut slow = member
        .watch_objects_stream("configmaps", &sel, 0)
        .await
        .expect("watch opens");
    slow.message().await.expect("first message").expect("open");
    let mut fast = member.watch_objects("configmaps", &sel, 0);
    loop {
        if let Ok(WatchItem::Bookmark(_)) = fast.recv().await.expect("fast watch open") {
            break;
        }
    }

    // 48 ConfigMaps of 512 KiB: 24 MiB, well past what one watcher may have queued (8 MiB)
    // plus what its connection's flow-control windows hold.
    info!("phase: writing 24 MiB while one watcher does not read");
    let writer = cluster.client();
    let blob = "x".repeat(512 << 10);
    let mut written = Vec::new();
    for i in 0..48 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("cm-{i}")}, "data": {"blob": blob}});
        let created = writer
            .create_object("configmaps", ns, serde_json::to_vec(&cm).expect("JSON"))
            .await
            .expect("create");
        written.push(created.revision);
    }

    info!("phase: the reading watcher got everything, once and in order");
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let item = tokio::time::timeout(Duration::from_secs(20), fast.recv())
            .await
            .expect("the fast watcher keeps up")
            .expect("fast watch open")
            .expect("fast watch ok");
        if let WatchItem::Added(b) = item {
            let obj: Value = serde_json::from_slice(&b).expect("JSON");
            seen.push(revision_of(&obj));
        }
    }
    assert_eq!(seen, written);

    info!("phase: the slow watcher gets what was queued, in order, then EXPIRED");
    let mut got = Vec::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(20), slow.message())
            .await
            .expect("the slow stream answers")
        {
            Ok(Some(m)) => got.extend(
                m.events
                    .iter()
                    .filter(|e| e.r#type == Type::Added as i32)
                    .map(|e| e.revision),
            ),
            Ok(None) => panic!("the slow watch ended without an error after {got:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().starts_with("EXPIRED") && status.message().contains("fell behind"),
        "{}",
        status.message()
    );
    assert!(
        got.len() < written.len(),
        "the slow watcher was not cut off"
    );
    assert_eq!(
        got[..],
        written[..got.len()],
        "what it got is a prefix, in order"
    );

    let metrics = &cluster.metrics[&1];
    let (code, body) = http_get(metrics, "/metrics");
    assert_eq!(code, 200);
    let counted: BTreeMap<&str, f64> = body
        .lines()
        .filter(|l| l.starts_with("skiff_watch"))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    assert!(
        counted
            .get("skiff_watch_cut_off_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "{counted:?}"
    );
    let open: BTreeSet<_> = counted.keys().collect();
    assert!(open.contains(&"skiff_watches_open"), "{counted:?}");
}
