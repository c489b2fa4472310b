//! End-to-end tests of the object API and skiffctl against a real three-node cluster.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::{binary, init_tracing, Cluster, MemberOptions};
use skiff_proto::objects::{Selection, WatchItem};
use skiff_proto::{Client, ClientError};

/// Run skiffctl against `cluster` with `stdin`, returning its output.
fn skiffctl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(binary("skiffctl"));
    cmd.args(args)
        .env("SKIFFCONFIG", cluster.config_file())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("skiffctl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("skiffctl output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn ready_cluster() -> Cluster {
    ready_cluster_with(MemberOptions::default()).await
}

async fn ready_cluster_with(opts: MemberOptions) -> Cluster {
    init_tracing();
    let cluster = Cluster::start(3, opts);
    cluster.wait_leader(Duration::from_secs(10)).await;
    // The built-in namespaces appear shortly after the first leader.
    let client = cluster.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = client
            .get_object("namespaces", "", "default", false)
            .await
            .is_ok()
            && client
                .get_object("namespaces", "", "skiff-system", false)
                .await
                .is_ok()
            && client
                .get_object("namespaces", "", "kube-system", false)
                .await
                .is_ok();
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "built-in namespaces never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: busybox:1.36
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
          name: http
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: http
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  greeting: hello
"#;

/// Each object's revision: resource, namespace, name.
async fn revisions_of(client: &Client, objects: &[(&str, &str, &str)]) -> Vec<u64> {
    let mut out = Vec::new();
    for (r, ns, n) in objects {
        out.push(
            client
                .get_object(r, ns, n, false)
                .await
                .expect("get")
                .revision,
        );
    }
    out
}

async fn revision(client: &Client) -> u64 {
    client.status().await.expect("status").revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_applies_and_reapplying_changes_nothing() {
    let cluster = ready_cluster().await;
    let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(MANIFEST));
    assert!(out.status.success(), "apply failed: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "namespace/shop created\ndeployment.apps/web created\nservice/web created\nconfigmap/settings created\n"
    );
    let client = cluster.client();
    // The controllers act on what was applied (a ReplicaSet, pods, events, endpoints); of
    // the applied objects only the Deployment's status is theirs, and it is final once it
    // counts every replica of the observed generation. Then only apply writes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d: Value = skiff_e2e::object_json(&client, "deployments", "shop", "web").await;
        let settled = d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && !d["status"]["replicas"].is_null()
            && d["status"]["replicas"] == d["spec"]["replicas"];
        if settled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deployment's status never settled: {}",
            d["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let objects = [
        ("namespaces", "", "shop"),
        ("deployments", "shop", "web"),
        ("services", "shop", "web"),
        ("configmaps", "shop", "settings"),
    ];
    let before = revisions_of(&client, &objects).await;
    let again = skiffctl(&cluster, &["apply", "-f", "-"], Some(MANIFEST));
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        text(&again.stdout),
        "namespace/shop unchanged\ndeployment.apps/web unchanged\nservice/web unchanged\nconfigmap/settings unchanged\n"
    );
    let after = revisions_of(&client, &objects).await;
    assert_eq!(after, before, "re-applying must not write");

    // Server-set fields and Kubernetes' defaults are in place.
    let d: Value = skiff_e2e::object_json(&client, "deployments", "shop", "web").await;
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(d["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(d["metadata"]["creationTimestamp"].is_string());
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    let s: Value = skiff_e2e::object_json(&client, "services", "shop", "web").await;
    assert_eq!(s["spec"]["type"], "ClusterIP");

    // A changed manifest is "configured" and bumps generation; a removed label goes.
    let changed = MANIFEST.replace("replicas: 3", "replicas: 5").replace(
        "  labels: {app: web}\nspec:\n  replicas",
        "spec:\n  replicas",
    );
    let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(&changed));
    assert!(
        text(&out.stdout).contains("deployment.apps/web configured"),
        "{}",
        text(&out.stdout)
    );
    let d: Value = skiff_e2e::object_json(&client, "deployments", "shop", "web").await;
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(
        d["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("app").is_none()),
        "{d}"
    );

    // kubectl-style reads.
    let get = skiffctl(&cluster, &["get", "deploy", "-n", "shop"], None);
    let table = text(&get.stdout);
    assert!(
        table.starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    0/5"),
        "{table}"
    );
    let names = skiffctl(
        &cluster,
        &["get", "svc,cm", "-n", "shop", "-o", "name"],
        None,
    );
    assert_eq!(text(&names.stdout), "service/web\nconfigmap/settings\n");
    let all = skiffctl(&cluster, &["get", "ns", "-o", "name"], None);
    assert_eq!(
        text(&all.stdout),
        "namespace/default\nnamespace/kube-system\nnamespace/shop\nnamespace/skiff-system\n"
    );

    // Scale, label and a namespace delete that takes its contents along.
    let out = skiffctl(
        &cluster,
        &[
            "scale",
            "deployment",
            "web",
            "-n",
            "shop",
            "--replicas",
            "2",
        ],
        None,
    );
    assert_eq!(
        text(&out.stdout),
        "deployment.apps/web scaled\n",
        "{}",
        text(&out.stderr)
    );
    let out = skiffctl(
        &cluster,
        &["label", "cm", "settings", "-n", "shop", "tier=config"],
        None,
    );
    assert_eq!(
        text(&out.stdout),
        "configmap/settings labeled\n",
        "{}",
        text(&out.stderr)
    );
    let out = skiffctl(
        &cluster,
        &["label", "cm", "settings", "-n", "shop", "tier=other"],
        None,
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("--overwrite"),
        "{}",
        text(&out.stderr)
    );
    let out = skiffctl(&cluster, &["delete", "namespace", "shop"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let left = client
        .list_objects(
            "configmaps",
            &Selection {
                namespace: "shop".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(left.items.is_empty(), "namespace contents must go with it");
    let out = skiffctl(&cluster, &["delete", "namespace", "default"], None);
    assert!(!out.status.success() && text(&out.stderr).contains("may not be deleted"));
}

fn pod(name: &str, labels: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        // Left to a scheduler that does not exist, so only the test changes these pods.
        "spec": {"schedulerName": "manual", "containers": [{"name": "c", "image": "busybox:1.36"}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_updates_conflict_and_status_updates_leave_spec_alone() {
    let cluster = ready_cluster().await;
    let client = cluster.client();
    let created = client
        .create_object("pods", "default", pod("p1", json!({"app": "a"})))
        .await
        .unwrap();
    let v1: Value = serde_json::from_slice(&created.object).unwrap();

    // Writer A updates from v1.
    let mut a = v1.clone();
    a["metadata"]["labels"]["who"] = json!("a");
    client
        .update_object("pods", "default", serde_json::to_vec(&a).unwrap(), false)
        .await
        .expect("first update wins");
    // Writer B, also from v1, is refused and stores nothing.
    let mut b = v1.clone();
    b["metadata"]["labels"]["who"] = json!("b");
    let err = client
        .update_object("pods", "default", serde_json::to_vec(&b).unwrap(), false)
        .await
        .unwrap_err();
    match &err {
        ClientError::Rejected(s) => assert_eq!(s.code(), tonic::Code::Aborted, "{s:?}"),
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err.to_string().contains("conflict"), "{err}");
    let now: Value = skiff_e2e::object_json(&client, "pods", "default", "p1").await;
    assert_eq!(now["metadata"]["labels"]["who"], "a");

    // A status update with a changed spec: the status lands, the spec does not.
    let mut s = now.clone();
    s["status"] = json!({"phase": "Running", "podIP": "10.244.0.9"});
    s["spec"]["containers"][0]["image"] = json!("evil:latest");
    let updated: Value = serde_json::from_slice(
        &client
            .update_object("pods", "default", serde_json::to_vec(&s).unwrap(), true)
            .await
            .unwrap()
            .object,
    )
    .unwrap();
    assert_eq!(updated["status"]["phase"], "Running");
    assert_eq!(updated["spec"]["containers"][0]["image"], "busybox:1.36");
    // And a plain update cannot change the status.
    let mut u = updated.clone();
    u["status"]["phase"] = json!("Failed");
    u["metadata"]["labels"]["x"] = json!("y");
    let after: Value = serde_json::from_slice(
        &client
            .update_object("pods", "default", serde_json::to_vec(&u).unwrap(), false)
            .await
            .unwrap()
            .object,
    )
    .unwrap();
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(after["metadata"]["labels"]["x"], "y");

    // Finalizers keep an object until they are removed.
    client
        .patch_object(
            "pods",
            "default",
            "p1",
            serde_json::to_vec(&json!({"metadata": {"finalizers": ["example.com/keep"]}})).unwrap(),
            false,
        )
        .await
        .unwrap();
    let d = client
        .delete_object("pods", "default", "p1", &Default::default())
        .await
        .unwrap();
    assert!(!d.deleted);
    let kept: Value = skiff_e2e::object_json(&client, "pods", "default", "p1").await;
    assert!(kept["metadata"]["deletionTimestamp"].is_string());
    client
        .patch_object(
            "pods",
            "default",
            "p1",
            serde_json::to_vec(&json!({"metadata": {"finalizers": null}})).unwrap(),
            false,
        )
        .await
        .unwrap();
    let gone = client
        .get_object("pods", "default", "p1", false)
        .await
        .unwrap_err();
    assert!(
        matches!(gone, ClientError::Rejected(ref s) if s.code() == tonic::Code::NotFound),
        "{gone}"
    );
}

async fn next_change(
    rx: &mut tokio::sync::mpsc::Receiver<Result<WatchItem, ClientError>>,
) -> (String, Value) {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an event in time")
            .expect("watch open")
            .expect("watch ok");
        let (kind, b) = match item {
            WatchItem::Added(b) => ("ADDED", b),
            WatchItem::Modified(b) => ("MODIFIED", b),
            WatchItem::Deleted(b) => ("DELETED", b),
            WatchItem::Bookmark(_) => continue,
        };
        return (kind.to_string(), serde_json::from_slice(&b).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_changes_in_order_across_a_leader_kill() {
    let mut cluster = ready_cluster().await;
    let client = cluster.client();
    let sel = Selection {
        namespace: "default".into(),
        labels: "app=web".into(),
        ..Default::default()
    };
    let mut rx = client.watch_objects("pods", &sel, 0);
    // The first bookmark says the watch is in place.
    loop {
        if let Ok(WatchItem::Bookmark(_)) = rx.recv().await.expect("watch open") {
            break;
        }
    }
    client
        .create_object("pods", "default", pod("w1", json!({"app": "web"})))
        .await
        .unwrap();
    client
        .create_object("pods", "default", pod("other", json!({"app": "db"})))
        .await
        .unwrap();
    client
        .patch_object(
            "pods",
            "default",
            "w1",
            br#"{"metadata":{"annotations":{"step":"1"}}}"#.to_vec(),
            false,
        )
        .await
        .unwrap();
    let (k, o) = next_change(&mut rx).await;
    assert_eq!(
        (k.as_str(), o["metadata"]["name"].as_str()),
        ("ADDED", Some("w1"))
    );
    let (k, o) = next_change(&mut rx).await;
    assert_eq!(
        (k.as_str(), o["metadata"]["annotations"]["step"].as_str()),
        ("MODIFIED", Some("1"))
    );

    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    cluster.kill9(leader);
    for step in 2..=4 {
        let patch = format!(r#"{{"metadata":{{"annotations":{{"step":"{step}"}}}}}}"#);
        client
            .patch_object("pods", "default", "w1", patch.into_bytes(), false)
            .await
            .unwrap();
    }
    // Relabelled out of the selection: DELETED for this watch.
    client
        .patch_object(
            "pods",
            "default",
            "w1",
            br#"{"metadata":{"labels":{"app":"gone"}}}"#.to_vec(),
            false,
        )
        .await
        .unwrap();
    client
        .create_object("pods", "default", pod("w2", json!({"app": "web"})))
        .await
        .unwrap();
    client
        .delete_object("pods", "default", "w2", &Default::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (k, o) = next_change(&mut rx).await;
        let step = o["metadata"]["annotations"]["step"]
            .as_str()
            .unwrap_or("")
            .to_string();
        seen.push(format!(
            "{k} {} {step}",
            o["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(
        seen,
        vec![
            "MODIFIED w1 2",
            "MODIFIED w1 3",
            "MODIFIED w1 4",
            "DELETED w1 4",
            "ADDED w2 ",
            "DELETED w2 "
        ]
    );
    cluster.restart(leader);

    // Field and label selectors filter lists too.
    let list = client
        .list_objects(
            "pods",
            &Selection {
                namespace: "default".into(),
                labels: "app in (web,db)".into(),
                fields: "metadata.name!=w1".into(),
            },
        )
        .await
        .unwrap();
    let names: Vec<String> = list
        .items
        .iter()
        .map(|b| {
            serde_json::from_slice::<Value>(b).unwrap()["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, vec!["other"]);
    let bad = client
        .list_objects(
            "pods",
            &Selection {
                fields: "spec.foo=1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("fieldSelector"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_refused_with_the_field_and_store_nothing() {
    let cluster = ready_cluster().await;
    let client = cluster.client();
    let deployment = |name: &str, ns: &str, replicas: i64, tmpl_app: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: {tmpl_app}}}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n"
        )
    };
    let big = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\nspec:\n  containers:\n  - name: c\n    image: i\n    env:\n    - name: A\n      value: {}\n", "x".repeat(1600 * 1024));
    let big_cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  a: {}\n",
        "x".repeat(1100 * 1024)
    );
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("bad name", deployment("Web_1", "default", 1, "web"), &["metadata.name", "DNS-1123"]),
        ("selector mismatch", deployment("web", "default", 1, "db"), &["spec.template.metadata.labels", "does not match"]),
        ("negative replicas", deployment("web", "default", -1, "web"), &["spec.replicas", "greater than or equal to 0"]),
        ("unknown kind", "apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n".to_string(), &["kind", "Widget"]),
        ("missing namespace", deployment("web", "nowhere", 1, "web"), &["metadata.namespace", "nowhere", "not found"]),
        ("too large", big, &["object", "Too long", "1.5 MiB"]),
        ("configmap data too large", big_cm, &["data", "Too long"]),
        ("malformed YAML", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n".to_string(), &["malformed YAML", "line 4"]),
        ("wrong type", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: i\n    ports:\n    - containerPort: http\n".to_string(), &["spec.containers[0].ports[0].containerPort"]),
        ("a field the agent would ignore", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  shareProcessNamespace: true\n  volumes: [{name: v, nfs: {server: s, path: /}}]\n  containers:\n  - name: c\n    image: i\n".to_string(), &["spec.shareProcessNamespace", "spec.volumes[0]", "not supported by Skiff's node agent", "persistentVolumeClaim"]),
    ];
    let before = revision(&client).await;
    for (what, manifest, wants) in cases {
        let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(&manifest));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{what}: must fail");
        for w in wants {
            assert!(err.contains(w), "{what}: error must mention {w:?}: {err}");
        }
    }
    assert_eq!(
        revision(&client).await,
        before,
        "refused manifests must store nothing"
    );
}

async fn next<K>(
    events: &mut tokio::sync::mpsc::Receiver<skiff_proto::objects::InformerEvent<K>>,
) -> skiff_proto::objects::InformerEvent<K> {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("informer event in time")
        .expect("informer open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_lists_then_follows_changes() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use skiff_proto::objects::{Api, Informer, InformerEvent};
    let cluster = ready_cluster().await;
    let client = cluster.client();
    let api: Api<ConfigMap> = Api::new(client.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("before".into());
    api.create(&cm).await.expect("typed create");
    let (informer, mut events) = Informer::<ConfigMap>::start(
        client.clone(),
        Selection {
            namespace: "default".into(),
            ..Default::default()
        },
    );
    assert!(matches!(next(&mut events).await, InformerEvent::Synced));
    assert!(
        informer.get("default", "before").is_some(),
        "the list fills the cache"
    );
    cm.metadata.name = Some("after".into());
    api.create(&cm).await.unwrap();
    match next(&mut events).await {
        InformerEvent::Applied { object: c, .. } => {
            assert_eq!(c.metadata.name.as_deref(), Some("after"))
        }
        other => panic!("expected the new object, got {other:?}"),
    }
    api.delete("before", &Default::default()).await.unwrap();
    assert!(matches!(next(&mut events).await, InformerEvent::Deleted(_)));
    assert_eq!(informer.list().len(), 1);
}

/// A Deployment as its owner applies it: the env value `mode` varies, and `helper` is a
/// second container the owner may drop.
fn shop_deployment(mode: &str, helper: bool) -> String {
    let helper = if helper {
        "      - {name: helper, image: busybox, command: [sleep, '3600']}\n"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    spec:\n      containers:\n      - name: app\n        image: busybox\n        command: [sleep, '3600']\n        env: [{{name: MODE, value: {mode}}}]\n{helper}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_keeps_list_entries_another_writer_added_and_drops_what_the_manifest_dropped() {
    init_tracing();
    let cluster = ready_cluster().await;
    let client = cluster.client();
    tracing::info!("phase: the owner applies a Deployment with two containers");
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&shop_deployment("blue", true)),
    );
    assert!(out.status.success(), "apply: {}", text(&out.stderr));

    tracing::info!("phase: another writer adds a container and an env entry to the live object");
    let ops = r#"[{"op": "add", "path": "/spec/template/spec/containers/-",
                  "value": {"name": "sidecar", "image": "busybox", "command": ["sleep", "3600"]}},
                 {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
                  "value": {"name": "INJECTED", "value": "yes"}}]"#;
    let out = skiffctl(
        &cluster,
        &["patch", "deployment/api", "--type", "json", "-p", ops],
        None,
    );
    assert!(out.status.success(), "JSON patch: {}", text(&out.stderr));

    tracing::info!("phase: the owner re-applies with MODE changed and the helper removed");
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&shop_deployment("green", false)),
    );
    assert!(out.status.success(), "re-apply: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "deployment.apps/api configured\n");
    let d = skiff_e2e::object_json(&client, "deployments", "default", "api").await;
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .clone();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["app", "sidecar"],
        "the helper the manifest dropped goes, the added sidecar stays"
    );
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "MODE", "value": "green"}, {"name": "INJECTED", "value": "yes"}]),
        "the changed value is updated and the added entry stays"
    );

    tracing::info!("phase: re-applying the same manifest changes nothing");
    let generation = d["metadata"]["generation"].clone();
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&shop_deployment("green", false)),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "deployment.apps/api unchanged\n");
    let d = skiff_e2e::object_json(&client, "deployments", "default", "api").await;
    assert_eq!(d["metadata"]["generation"], generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_exits_2_when_a_pod_cannot_be_placed() {
    let cluster = ready_cluster().await;
    let client = cluster.client();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests:\n        cpu: \"500\"\n";
    let mut cmd = Command::new(binary("skiffctl"));
    cmd.args(["apply", "--wait", "--timeout", "60s", "-f", "-"])
        .env("SKIFFCONFIG", cluster.config_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    // The control plane's own scheduler finds no node for it and says why (an earlier
    // version of this test wrote that status itself and raced the scheduler).
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("0/0 nodes are available"),
        "{}",
        text(&out.stderr)
    );
    let pod: Value = skiff_e2e::object_json(&client, "pods", "default", "huge").await;
    let scheduled = skiff_e2e::condition(&pod, "PodScheduled").unwrap_or_default();
    assert_eq!(scheduled["status"], "False", "{pod}");
    assert_eq!(scheduled["reason"], "Unschedulable", "{pod}");
}

/// Create ConfigMaps `<prefix>-0` .. `<prefix>-<n-1>`, one write each.
async fn create_config_maps(client: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        client
            .create_object(
                "configmaps",
                "default",
                config_map(&format!("{prefix}-{i}")),
            )
            .await
            .unwrap_or_else(|e| panic!("writing {prefix}-{i}: {e}"));
    }
}

fn config_map(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"k": "v"}
    }))
    .expect("json")
}

/// A client that reaches the members by other addresses than they advertise (through a NAT,
/// a gateway or DNS names; here 127.0.0.2 for the advertised 127.0.0.1) still sends its
/// writes to the leader instead of through a follower, and finds the next leader after the
/// leader dies; no write is lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_find_the_leader_through_addresses_the_members_do_not_advertise() {
    let mut cluster = ready_cluster_with(MemberOptions {
        listen_any: true,
        ..Default::default()
    })
    .await;
    let via = |cluster: &Cluster, id: u64| {
        cluster.members[&id]
            .addr
            .replacen("127.0.0.1", "127.0.0.2", 1)
    };
    let client = cluster.client_to(&cluster.endpoints_via("127.0.0.2"));
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    create_config_maps(&client, "before", 4).await;
    assert_eq!(
        client.leader_endpoint(),
        Some(via(&cluster, leader).as_str()),
        "after a few writes the client sends them to the leader"
    );

    cluster.kill9(leader);
    let next = cluster.wait_leader(Duration::from_secs(10)).await;
    create_config_maps(&client, "after", 6).await;
    assert_eq!(
        client.leader_endpoint(),
        Some(via(&cluster, next).as_str()),
        "the client found the new leader"
    );
    let names: Vec<String> = client
        .list_objects(
            "configmaps",
            &Selection {
                namespace: "default".into(),
                ..Default::default()
            },
        )
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|o| {
            serde_json::from_slice::<Value>(o)
                .ok()?
                .pointer("/metadata/name")?
                .as_str()
                .map(String::from)
        })
        .collect();
    for n in (0..4)
        .map(|i| format!("before-{i}"))
        .chain((0..6).map(|i| format!("after-{i}")))
    {
        assert!(names.contains(&n), "{n} is stored: {names:?}");
    }
}

/// One manifest of every served kind, every Service type included, each as a user writes it
/// (server-assigned fields and defaults left out).
const EVERY_KIND: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: idem}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: idem, labels: {app: solo}}
spec:
  nodeName: nowhere
  containers:
  - {name: c, image: "busybox:1.36", command: ["sleep", "3600"], ports: [{containerPort: 80}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs, namespace: idem}
spec:
  replicas: 1
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: c, image: "busybox:1.36"}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc, namespace: idem}
spec:
  replicas: 1
  selector: {app: rc}
  template:
    metadata: {labels: {app: rc}}
    spec:
      containers: [{name: c, image: "busybox:1.36"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: deploy, namespace: idem}
spec:
  replicas: 1
  selector: {matchLabels: {app: deploy}}
  template:
    metadata: {labels: {app: deploy}}
    spec:
      containers: [{name: c, image: "busybox:1.36", env: [{name: A, value: "1"}]}]
---
apiVersion: v1
kind: Service
metadata: {name: cluster-ip, namespace: idem}
spec:
  selector: {app: deploy}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: node-port, namespace: idem}
spec:
  type: NodePort
  selector: {app: deploy}
  ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: load-balancer, namespace: idem}
spec:
  type: LoadBalancer
  selector: {app: deploy}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: idem}
spec:
  clusterIP: None
  selector: {app: deploy}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: idem}
spec:
  type: ExternalName
  externalName: db.example.test
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual, namespace: idem}
subsets:
- addresses: [{ip: 10.0.0.1}]
  ports: [{port: 80}]
---
apiVersion: v1
kind: Node
metadata: {name: idem-node, labels: {zone: a}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: idem}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: idem}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Event
metadata: {name: noted, namespace: idem}
involvedObject: {kind: Pod, name: solo, namespace: idem}
reason: Noted
message: applied by hand
type: Normal
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: lock, namespace: idem}
spec: {holderIdentity: me, leaseDurationSeconds: 15}
"#;

/// The applied objects: resource, namespace, name.
const EVERY_KIND_OBJECTS: &[(&str, &str, &str)] = &[
    ("namespaces", "", "idem"),
    ("pods", "idem", "solo"),
    ("replicasets", "idem", "rs"),
    ("replicationcontrollers", "idem", "rc"),
    ("deployments", "idem", "deploy"),
    ("services", "idem", "cluster-ip"),
    ("services", "idem", "node-port"),
    ("services", "idem", "load-balancer"),
    ("services", "idem", "headless"),
    ("services", "idem", "external"),
    ("endpoints", "idem", "manual"),
    ("nodes", "", "idem-node"),
    ("configmaps", "idem", "settings"),
    ("secrets", "idem", "token"),
    ("events", "idem", "noted"),
    ("leases", "idem", "lock"),
];

/// Whether what the controllers write into the applied objects themselves is final: the
/// workloads' status counts their pods of the observed generation, the node has its pod
/// range and, without a Lease, the unreachable taint.
async fn controllers_settled(client: &Client) -> bool {
    for (resource, name) in [
        ("replicasets", "rs"),
        ("replicationcontrollers", "rc"),
        ("deployments", "deploy"),
    ] {
        let o: Value = skiff_e2e::object_json(client, resource, "idem", name).await;
        let settled = o["status"]["observedGeneration"] == o["metadata"]["generation"]
            && o["status"]["replicas"] == o["spec"]["replicas"];
        if !settled {
            return false;
        }
    }
    let node: Value = skiff_e2e::object_json(client, "nodes", "", "idem-node").await;
    let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable")
    });
    tainted && node["spec"]["podCIDR"].is_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_an_unchanged_manifest_of_every_kind_and_service_type_writes_nothing() {
    let cluster = ready_cluster_with(MemberOptions {
        extra_args: vec!["--node-grace-seconds".into(), "1".into()],
        ..Default::default()
    })
    .await;
    let client = cluster.client();
    let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(EVERY_KIND));
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).matches(" created\n").count(),
        EVERY_KIND_OBJECTS.len(),
        "{}",
        text(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !controllers_settled(&client).await {
        assert!(Instant::now() < deadline, "the controllers never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = revisions_of(&client, EVERY_KIND_OBJECTS).await;
    let start = revision(&client).await;

    let again = skiffctl(&cluster, &["apply", "-f", "-"], Some(EVERY_KIND));
    assert!(again.status.success(), "{}", text(&again.stderr));
    let lines: Vec<String> = text(&again.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), EVERY_KIND_OBJECTS.len(), "{lines:?}");
    for line in &lines {
        assert!(line.ends_with(" unchanged"), "re-applied: {line}");
    }
    let end = revision(&client).await;

    // Nothing the apply wrote: no change to any applied object's key from `start` to `end`
    // (the controllers may write elsewhere meanwhile: events, their pods).
    let keys: Vec<String> = EVERY_KIND_OBJECTS
        .iter()
        .map(|(r, ns, n)| skiff_proto::kinds::by_resource(r).expect("kind").key(ns, n))
        .collect();
    for (key, at) in skiff_e2e::keys_written_between(&client, "/registry/", start, end).await {
        assert!(
            !keys.contains(&key),
            "{key} was written at revision {at} by a re-apply"
        );
    }
    let after = revisions_of(&client, EVERY_KIND_OBJECTS).await;
    assert_eq!(after, before, "re-applying must not write");

    // The defaults Kubernetes gives Services are in place.
    let lb: Value = skiff_e2e::object_json(&client, "services", "idem", "load-balancer").await;
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(lb["spec"]["ipFamilyPolicy"], "SingleStack");
    assert!(lb["spec"]["ports"][0]["nodePort"].as_i64().is_some());
    let external: Value = skiff_e2e::object_json(&client, "services", "idem", "external").await;
    assert_eq!(external["spec"]["sessionAffinity"], "None");
    assert!(external["spec"]["ipFamilies"].is_null());
}

/// The names of the pods of `namespace` with label `app=<app>` that are not being deleted.
async fn live_pods(client: &Client, namespace: &str, app: &str) -> Vec<String> {
    let sel = Selection {
        namespace: namespace.into(),
        labels: format!("app={app}"),
        fields: String::new(),
    };
    let mut names: Vec<String> = client
        .list_objects("pods", &sel)
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

async fn wait_pod_count(client: &Client, app: &str, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = live_pods(client, "default", app).await;
        if pods.len() == want {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "{app}: {} pods, want {want}: {pods:?}",
            pods.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_keeps_its_pods_scales_and_takes_them_when_deleted() {
    let cluster = ready_cluster().await;
    let client = cluster.client();
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ReplicationController\nmetadata: {name: nginx}\nspec:\n  replicas: 3\n  selector: {app: nginx}\n  template:\n    metadata: {name: nginx, labels: {app: nginx}}\n    spec:\n      containers: [{name: nginx, image: nginx, ports: [{containerPort: 80}]}]\n"),
    );
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "replicationcontroller/nginx created\n");
    let pods = wait_pod_count(&client, "nginx", 3).await;
    // Owned by it, as a ReplicaSet's pods are by theirs.
    let pod: Value = skiff_e2e::object_json(&client, "pods", "default", &pods[0]).await;
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["kind"],
        "ReplicationController"
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);

    // A deleted pod is replaced.
    client
        .delete_object("pods", "default", &pods[0], &Default::default())
        .await
        .expect("delete pod");
    let replaced = wait_pod_count(&client, "nginx", 3).await;
    assert!(!replaced.contains(&pods[0]), "{replaced:?}");

    for (n, want) in [("5", 5), ("1", 1)] {
        let out = skiffctl(&cluster, &["scale", "rc", "nginx", "--replicas", n], None);
        assert!(out.status.success(), "scale: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "replicationcontroller/nginx scaled\n");
        wait_pod_count(&client, "nginx", want).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rc: Value =
            skiff_e2e::object_json(&client, "replicationcontrollers", "default", "nginx").await;
        if rc["status"]["replicas"] == 1
            && rc["status"]["observedGeneration"] == rc["metadata"]["generation"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "status: {}", rc["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let table = skiffctl(&cluster, &["get", "rc"], None);
    let table = text(&table.stdout);
    assert!(
        table.starts_with("NAME") && table.contains("DESIRED"),
        "{table}"
    );

    // Its pods go with it.
    let out = skiffctl(&cluster, &["delete", "rc", "nginx"], None);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    wait_pod_count(&client, "nginx", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_ask_for_the_host_need_a_namespace_labelled_privileged() {
    let cluster = ready_cluster().await;
    let client = cluster.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let kube_system = loop {
        if let Ok(r) = client
            .get_object("namespaces", "", "kube-system", false)
            .await
        {
            break serde_json::from_slice::<Value>(&r.object).expect("JSON");
        }
        assert!(Instant::now() < deadline, "no kube-system namespace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        kube_system["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let pod = |ns: &str| {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "host-reader", "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "i",
                                     "securityContext": {"privileged": true},
                                     "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
                     "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}))
        .unwrap()
    };
    match client
        .create_object("pods", "default", pod("default"))
        .await
    {
        Err(ClientError::Rejected(s)) => {
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
            let m = s.message();
            assert!(
                m.contains("violates PodSecurity")
                    && m.contains("privileged (containers \"c\"")
                    && m.contains("hostPath volumes (\"root\")"),
                "{m}"
            );
        }
        other => panic!("a privileged pod in default: {other:?}"),
    }
    assert!(
        client
            .get_object("pods", "default", "host-reader", false)
            .await
            .is_err(),
        "nothing was written"
    );
    client
        .create_object("pods", "kube-system", pod("kube-system"))
        .await
        .expect("kube-system allows it");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "node-tools", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
    client
        .create_object("namespaces", "", serde_json::to_vec(&ns).unwrap())
        .await
        .expect("namespace");
    client
        .create_object("pods", "node-tools", pod("node-tools"))
        .await
        .expect("a namespace labelled privileged allows it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiffctl_patch_takes_strategic_merge_and_json_patches_and_a_failed_one_changes_nothing() {
    let cluster = ready_cluster().await;
    let client = cluster.client();
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n"),
    );
    assert!(out.status.success(), "apply: {}", text(&out.stderr));

    let out = skiffctl(
        &cluster,
        &[
            "patch",
            "deployment",
            "web",
            "--type",
            "merge",
            "-p",
            "{spec: {replicas: 2}}",
        ],
        None,
    );
    assert!(out.status.success(), "merge patch: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "deployment.apps/web patched\n");
    let d = skiff_e2e::object_json(&client, "deployments", "default", "web").await;
    assert_eq!(d["spec"]["replicas"], 2);

    let ops = r#"[{"op": "replace", "path": "/spec/replicas", "value": 4},
                 {"op": "add", "path": "/metadata/labels", "value": {"team": "a"}},
                 {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "log", "image": "busybox"}}]"#;
    let out = skiffctl(
        &cluster,
        &["patch", "deployment/web", "--type", "json", "-p", ops],
        None,
    );
    assert!(out.status.success(), "JSON patch: {}", text(&out.stderr));
    let d = skiff_e2e::object_json(&client, "deployments", "default", "web").await;
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["labels"]["team"], "a");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][1]["name"],
        "log"
    );

    tracing::info!("phase: a strategic merge patch (the default) merges containers by name");
    let out = skiffctl(
        &cluster,
        &[
            "patch",
            "deployment",
            "web",
            "-p",
            "{spec: {template: {spec: {containers: [{name: web, image: 'nginx:1.27'}]}}}}",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "strategic patch: {}",
        text(&out.stderr)
    );
    let d = skiff_e2e::object_json(&client, "deployments", "default", "web").await;
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "nginx:1.27", "{containers}");
    assert_eq!(
        containers[1]["name"], "log",
        "the other container stays: {containers}"
    );
    let out = skiffctl(
        &cluster,
        &[
            "patch",
            "deployment",
            "web",
            "--type",
            "strategic",
            "-p",
            "{spec: {template: {spec: {containers: [{name: log, $patch: delete}]}}}}",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "$patch: delete: {}",
        text(&out.stderr)
    );
    let d = skiff_e2e::object_json(&client, "deployments", "default", "web").await;
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .clone();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0]["name"], "web");

    // All or nothing: the first operation would apply, the second fails its test, and the
    // refusal names it; the spec is not written (its generation stays).
    let generation = d["metadata"]["generation"].clone();
    let ops = r#"[{"op": "replace", "path": "/spec/replicas", "value": 9},
                 {"op": "test", "path": "/spec/paused", "value": true}]"#;
    let out = skiffctl(
        &cluster,
        &["patch", "deployment", "web", "--type", "json", "-p", ops],
        None,
    );
    assert!(!out.status.success(), "a failing JSON patch was taken");
    let why = text(&out.stderr);
    assert!(
        why.contains("patch") && why.contains("/spec/paused"),
        "{why}"
    );
    let d = skiff_e2e::object_json(&client, "deployments", "default", "web").await;
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["generation"], generation);

    // A malformed patch names what is wrong.
    let out = skiffctl(
        &cluster,
        &[
            "patch",
            "deployment",
            "web",
            "--type",
            "json",
            "-p",
            "{spec: {}}",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a JSON patch"),
        "{}",
        text(&out.stderr)
    );
}

/// Kubernetes reads YAML as YAML 1.1 (go-yaml v2): a manifest found in the wild means the same
/// here as with kubectl.
const YAML_1_1_MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: yaml-one-one
  annotations:
    quoted-mode: '0644'
    quoted-answer: "yes"
spec:
  containers:
  - name: c
    image: busybox
    env:
    - name: ANSWER
      value: "on"
    volumeMounts:
    - {name: config, mountPath: /etc/config, readOnly: yes}
  volumes:
  - name: config
    configMap:
      name: settings
      defaultMode: 0644
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_reads_as_kubectl_reads_it_octal_modes_and_yes_booleans() {
    let cluster = ready_cluster().await;
    let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(YAML_1_1_MANIFEST));
    assert!(out.status.success(), "apply failed: {}", text(&out.stderr));
    let pod: Value =
        skiff_e2e::object_json(&cluster.client(), "pods", "default", "yaml-one-one").await;
    assert_eq!(
        pod["spec"]["volumes"][0]["configMap"]["defaultMode"], 420,
        "0644 is octal, as kubectl reads it"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["readOnly"], true,
        "yes is a boolean"
    );
    assert_eq!(pod["metadata"]["annotations"]["quoted-mode"], "0644");
    assert_eq!(pod["metadata"]["annotations"]["quoted-answer"], "yes");
    assert_eq!(pod["spec"]["containers"][0]["env"][0]["value"], "on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_corpus_applies_and_reapplies_unchanged() {
    let cluster = ready_cluster().await;
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/manifests");
    let dir = corpus.to_str().expect("a path");
    let first = skiffctl(&cluster, &["apply", "-f", dir], None);
    assert!(
        first.status.success(),
        "apply failed: {}",
        text(&first.stderr)
    );
    let created: Vec<String> = text(&first.stdout).lines().map(String::from).collect();
    assert!(
        created.len() == 19 && created.iter().all(|l| l.ends_with(" created")),
        "{created:?}"
    );
    for kind in [
        "namespace/",
        "configmap/",
        "secret/",
        "deployment.apps/",
        "service/",
        "poddisruptionbudget.policy/",
        "replicaset.apps/",
        "replicationcontroller/",
        "daemonset.apps/",
        "statefulset.apps/",
        "storageclass.storage.k8s.io/",
        "persistentvolume/",
        "persistentvolumeclaim/",
        "job.batch/",
        "cronjob.batch/",
        "pod/",
    ] {
        assert!(
            created.iter().any(|l| l.starts_with(kind)),
            "no {kind} in {created:?}"
        );
    }
    // Whatever the server and the controllers added since, the same files change nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = skiffctl(&cluster, &["apply", "-f", dir], None);
    assert!(
        again.status.success(),
        "re-apply failed: {}",
        text(&again.stderr)
    );
    let outcomes: Vec<String> = text(&again.stdout).lines().map(String::from).collect();
    assert_eq!(outcomes.len(), created.len());
    assert!(
        outcomes.iter().all(|l| l.ends_with(" unchanged")),
        "{outcomes:?}"
    );
}
