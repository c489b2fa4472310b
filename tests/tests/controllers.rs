//! End-to-end tests of the scheduler and controllers: a three-node control plane and hollow
//! nodes (simulated, in their own processes), driven through skiffctl and the client.

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::{binary, init_tracing, Cluster, MemberOptions};
use skiff_proto::objects::{Selection, WatchItem};
use skiff_proto::Client;

/// Hollow-node processes, killed on drop.
struct Hollow(Vec<(String, Child)>);

impl Hollow {
    /// One process per node, so a test can silence one node.
    fn start(cluster: &Cluster, names: &[&str], cpu: &str) -> Self {
        let procs = names
            .iter()
            .map(|n| {
                let log = std::fs::File::create(cluster.dir().join(format!("hollow-{n}.log")))
                    .expect("log file");
                let child = Command::new(binary("skiff"))
                    .args([
                        "hollow-node",
                        "--count",
                        "1",
                        "--prefix",
                        n,
                        "--cpu",
                        cpu,
                        "--renew-seconds",
                        "1",
                    ])
                    .env("SKIFFCONFIG", cluster.config_file())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("hollow-node starts");
                (format!("{n}-0"), child)
            })
            .collect();
        Self(procs)
    }

    fn kill(&mut self, node: &str) {
        for (n, c) in &mut self.0 {
            if n == node {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn skiffctl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(binary("skiffctl"))
        .args(args)
        .env("SKIFFCONFIG", cluster.config_file())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skiffctl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("stdin written");
    }
    child.wait_with_output().expect("skiffctl output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn cluster_with_nodes(nodes: &[&str], extra: &[&str]) -> (Cluster, Hollow) {
    init_tracing();
    let cluster = Cluster::start(
        3,
        MemberOptions {
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    wait_until(Duration::from_secs(10), "built-in namespaces", || async {
        client
            .get_object("namespaces", "", "default", false)
            .await
            .is_ok()
    })
    .await;
    let hollow = Hollow::start(&cluster, nodes, "4");
    let want = nodes.len();
    wait_until(
        Duration::from_secs(20),
        "nodes registered and Ready",
        || async {
            let nodes = objects(&client, "nodes", Selection::default()).await;
            nodes.len() == want
                && nodes.iter().all(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
        },
    )
    .await;
    (cluster, hollow)
}

async fn wait_until<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn objects(client: &Client, resource: &str, sel: Selection) -> Vec<Value> {
    match client.list_objects(resource, &sel).await {
        Ok(l) => l
            .items
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect(),
        Err(_) => vec![],
    }
}

/// The pods of a selection as a history: their list when it starts, then every change in
/// order, so a test checks every state they went through rather than samples of them.
struct PodHistory {
    client: Client,
    start: BTreeMap<String, Value>,
    changes: tokio::sync::mpsc::Receiver<skiff_proto::client::Result<WatchItem>>,
}

fn name_of(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn revision_of(p: &Value) -> u64 {
    p["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

impl PodHistory {
    async fn start(client: &Client, sel: Selection) -> Self {
        let list = client.list_objects("pods", &sel).await.expect("list pods");
        let start = list
            .items
            .iter()
            .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
            .map(|p| (name_of(&p), p))
            .collect();
        let changes = client.watch_objects("pods", &sel, list.revision);
        Self {
            client: client.clone(),
            start,
            changes,
        }
    }

    /// Every state, the first and one after each change, up to the store's revision now.
    async fn states_until_now(mut self) -> Vec<Vec<Value>> {
        let now = self.client.status().await.expect("status").revision;
        let mut state = self.start;
        let mut states = vec![state.values().cloned().collect::<Vec<_>>()];
        loop {
            let item = tokio::time::timeout(Duration::from_secs(30), self.changes.recv())
                .await
                .expect("the watch reaches the store's revision")
                .expect("the watch runs")
                .expect("the watch delivers");
            let seen = match item {
                WatchItem::Added(b) | WatchItem::Modified(b) => {
                    let p: Value = serde_json::from_slice(&b).expect("a pod");
                    let rev = revision_of(&p);
                    state.insert(name_of(&p), p);
                    rev
                }
                WatchItem::Deleted(b) => {
                    let p: Value = serde_json::from_slice(&b).expect("a pod");
                    state.remove(&name_of(&p));
                    revision_of(&p)
                }
                WatchItem::Bookmark(rev) => {
                    if rev >= now {
                        return states;
                    }
                    continue;
                }
            };
            states.push(state.values().cloned().collect());
            if seen >= now {
                return states;
            }
        }
    }
}

fn in_ns(ns: &str, labels: &str) -> Selection {
    Selection {
        namespace: ns.into(),
        labels: labels.into(),
        ..Default::default()
    }
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn deployment(name: &str, replicas: u32, image: &str, extra_spec: Value) -> String {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": image, "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
    });
    if let (Some(spec), Some(extra)) = (d["spec"].as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_string(&d).expect("json")
}

fn spread(pods: &[Value]) -> Vec<usize> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods {
        *per.entry(p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let mut v: Vec<usize> = per.into_values().collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_of_ten_spreads_over_three_nodes_and_rolls_without_losing_readiness() {
    let (cluster, _hollow) = cluster_with_nodes(&["a", "b", "c"], &[]).await;
    let client = cluster.client();
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-", "--wait", "--timeout", "60s"],
        Some(&deployment(
            "web",
            10,
            "web:1",
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0}}}),
        )),
    );
    assert!(
        out.status.success(),
        "apply --wait: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let pods = objects(&client, "pods", in_ns("default", "app=web")).await;
    assert_eq!(pods.len(), 10);
    assert!(pods.iter().all(is_ready));
    assert_eq!(
        spread(&pods),
        vec![3, 3, 4],
        "10 pods on 3 nodes spread 4/3/3"
    );

    // A rolling update with maxUnavailable=0 never drops below 10 ready pods: every state
    // the pods go through is checked.
    let history = PodHistory::start(&client, in_ns("default", "app=web")).await;
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&deployment(
            "web",
            10,
            "web:2",
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0}}}),
        )),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = skiffctl(
        &cluster,
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
        None,
    );
    assert!(
        text(&status.stdout).contains("successfully rolled out"),
        "{}{}",
        text(&status.stdout),
        text(&status.stderr)
    );
    let states = history.states_until_now().await;
    let min = states
        .iter()
        .map(|pods| pods.iter().filter(|p| is_ready(p)).count())
        .min()
        .unwrap_or(0);
    assert!(
        min >= 10,
        "ready pods fell to {min} during a maxUnavailable=0 rollout ({} states)",
        states.len()
    );
    let pods = objects(&client, "pods", in_ns("default", "app=web")).await;
    assert!(pods
        .iter()
        .filter(|p| is_ready(p))
        .all(|p| p["spec"]["containers"][0]["image"] == "web:2"));

    // Undo brings the previous template back.
    let history = skiffctl(&cluster, &["rollout", "history", "deployment/web"], None);
    assert!(
        text(&history.stdout).contains("1 ") && text(&history.stdout).contains("2 "),
        "{}",
        text(&history.stdout)
    );
    let undo = skiffctl(&cluster, &["rollout", "undo", "deployment/web"], None);
    assert!(undo.status.success(), "{}", text(&undo.stderr));
    let status = skiffctl(
        &cluster,
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
        None,
    );
    assert!(status.status.success(), "{}", text(&status.stderr));
    wait_until(
        Duration::from_secs(30),
        "all pods back on web:1",
        || async {
            let pods = objects(&client, "pods", in_ns("default", "app=web")).await;
            let active: Vec<_> = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            active.len() == 10
                && active
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == "web:1" && is_ready(p))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_too_big_for_any_node_stays_pending_with_the_reason() {
    let (cluster, _hollow) = cluster_with_nodes(&["a", "b", "c"], &[]).await;
    let client = cluster.client();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge"},
                     "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "64"}}}]}});
    client
        .create_object("pods", "default", serde_json::to_vec(&pod).unwrap())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(15),
        "the FailedScheduling event",
        || async {
            objects(&client, "events", in_ns("default", ""))
                .await
                .iter()
                .any(|e| {
                    e["reason"] == "FailedScheduling"
                        && e["involvedObject"]["name"] == "huge"
                        && e["message"] == "0/3 nodes are available: 3 Insufficient cpu."
                })
        },
    )
    .await;
    // The scheduler records the event and the pod's condition as two writes, in that order.
    wait_until(
        Duration::from_secs(15),
        "PodScheduled=False (Unschedulable) on the pod",
        || async {
            let p: Value = skiff_e2e::object_json(&client, "pods", "default", "huge").await;
            skiff_e2e::condition(&p, "PodScheduled").is_some_and(|c| {
                (c["status"].as_str(), c["reason"].as_str())
                    == (Some("False"), Some("Unschedulable"))
            })
        },
    )
    .await;
    let p: Value = skiff_e2e::object_json(&client, "pods", "default", "huge").await;
    assert!(p["spec"]["nodeName"].is_null(), "{p}");
    let describe = skiffctl(&cluster, &["describe", "pod", "huge"], None);
    assert!(
        text(&describe.stdout).contains("FailedScheduling"),
        "{}",
        text(&describe.stdout)
    );

    // A taint that nothing tolerates is named too; cordoned nodes take nothing.
    let out = skiffctl(&cluster, &["cordon", "a-0"], None);
    assert_eq!(text(&out.stdout), "node/a-0 cordoned\n");
    let small = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "small"}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "a-0"}, "containers": [{"name": "c", "image": "i"}]}});
    client
        .create_object("pods", "default", serde_json::to_vec(&small).unwrap())
        .await
        .unwrap();
    wait_until(Duration::from_secs(15), "small to be refused by every node", || async {
        objects(&client, "events", in_ns("default", "")).await.iter().any(|e| {
            e["involvedObject"]["name"] == "small" && e["message"] == "0/3 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable."
        })
    })
    .await;
    skiffctl(&cluster, &["uncordon", "a-0"], None);
    wait_until(
        Duration::from_secs(15),
        "small to be placed once a-0 is uncordoned",
        || async {
            client
                .get_object("pods", "default", "small", false)
                .await
                .ok()
                .and_then(|r| serde_json::from_slice::<Value>(&r.object).ok())
                .is_some_and(|p| p["spec"]["nodeName"] == "a-0")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_silent_node_are_replaced_elsewhere() {
    let grace = 4u64;
    let toleration = 2u64;
    let (cluster, mut hollow) = cluster_with_nodes(
        &["a", "b", "c"],
        &[
            "--node-grace-seconds",
            "4",
            "--eviction-toleration-seconds",
            "2",
        ],
    )
    .await;
    let client = cluster.client();
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-", "--wait", "--timeout", "60s"],
        Some(&deployment("api", 6, "api:1", json!({}))),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let victim = "b-0";
    let on_victim = objects(&client, "pods", in_ns("default", "app=api"))
        .await
        .iter()
        .filter(|p| p["spec"]["nodeName"] == victim)
        .count();
    assert!(on_victim > 0, "the spread put nothing on {victim}");
    hollow.kill(victim);
    let killed = Instant::now();
    // A new leader's node-lifecycle controller starts its grace clock afresh (as Kubernetes'
    // does: it trusts only what it observed itself), and a loaded 2-core CI machine has been
    // seen to move leadership twice in such a run: allow two restarts of grace + toleration.
    wait_until(
        Duration::from_secs(3 * (grace + toleration) + 5),
        "6 ready pods on the remaining nodes",
        || async {
            let pods = objects(&client, "pods", in_ns("default", "app=api")).await;
            pods.iter()
                .filter(|p| is_ready(p) && p["spec"]["nodeName"] != victim)
                .count()
                == 6
        },
    )
    .await;
    tracing::info!(after = ?killed.elapsed(), "replaced");
    let node: Value = skiff_e2e::object_json(&client, "nodes", "", victim).await;
    assert!(
        node["spec"]["taints"].as_array().is_some_and(|ts| ts
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")),
        "{node}"
    );
    let ready = skiff_e2e::condition(&node, "Ready").unwrap_or_default();
    assert_eq!(ready["status"], "Unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_completes_under_a_new_leader() {
    let (mut cluster, _hollow) = cluster_with_nodes(&["a", "b", "c"], &[]).await;
    let client = cluster.client();
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-", "--wait", "--timeout", "60s"],
        Some(&deployment("web", 10, "web:1", json!({}))),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&deployment("web", 10, "web:2", json!({}))),
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    cluster.kill9(leader);
    let status = skiffctl(
        &cluster,
        &["rollout", "status", "deploy/web", "--timeout", "60s"],
        None,
    );
    assert!(
        status.status.success(),
        "{}{}",
        text(&status.stdout),
        text(&status.stderr)
    );
    wait_until(
        Duration::from_secs(30),
        "10 ready pods of web:2 and nothing else",
        || async {
            let pods = objects(&client, "pods", in_ns("default", "app=web")).await;
            let active: Vec<_> = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            active.len() == 10
                && active
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == "web:2" && is_ready(p))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_removes_its_replicasets_and_pods() {
    let (cluster, _hollow) = cluster_with_nodes(&["a", "b"], &[]).await;
    let client = cluster.client();
    for (name, cascade) in [("bg", "background"), ("fg", "foreground")] {
        let out = skiffctl(
            &cluster,
            &["apply", "-f", "-", "--wait", "--timeout", "60s"],
            Some(&deployment(name, 3, "x:1", json!({}))),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = skiffctl(
            &cluster,
            &[
                "delete",
                "deployment",
                name,
                &format!("--cascade={cascade}"),
            ],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        wait_until(
            Duration::from_secs(20),
            &format!("{cascade} cascade to remove everything"),
            || async {
                objects(&client, "pods", in_ns("default", &format!("app={name}")))
                    .await
                    .is_empty()
                    && objects(
                        &client,
                        "replicasets",
                        in_ns("default", &format!("app={name}")),
                    )
                    .await
                    .is_empty()
                    && client
                        .get_object("deployments", "default", name, false)
                        .await
                        .is_err()
            },
        )
        .await;
    }
    // Orphan: the ReplicaSet and pods stay, released.
    skiffctl(
        &cluster,
        &["apply", "-f", "-", "--wait", "--timeout", "60s"],
        Some(&deployment("keep", 2, "x:1", json!({}))),
    );
    let out = skiffctl(
        &cluster,
        &["delete", "deployment", "keep", "--cascade=orphan"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(
        Duration::from_secs(20),
        "the deployment gone, its ReplicaSet released",
        || async {
            let rs = objects(&client, "replicasets", in_ns("default", "app=keep")).await;
            client
                .get_object("deployments", "default", "keep", false)
                .await
                .is_err()
                && rs.len() == 1
                && rs[0]["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|r| r.is_empty())
        },
    )
    .await;
    assert_eq!(
        objects(&client, "pods", in_ns("default", "app=keep"))
            .await
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_ready_pods_and_drain_moves_them() {
    let (cluster, _hollow) = cluster_with_nodes(&["a", "b"], &[]).await;
    let client = cluster.client();
    let mut d: Value = serde_json::from_str(&deployment("web", 3, "web:1", json!({}))).unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"name": "http", "containerPort": 8080}]);
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                     "spec": {"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}});
    let manifest = format!(
        "{}\n---\n{}",
        serde_json::to_string(&d).unwrap(),
        serde_json::to_string(&svc).unwrap()
    );
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-", "--wait", "--timeout", "60s"],
        Some(&manifest),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ready_ips = |pods: &[Value]| {
        let mut ips: Vec<String> = pods
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        ips.sort();
        ips
    };
    wait_until(
        Duration::from_secs(15),
        "endpoints with the 3 ready pod IPs on the named port",
        || async {
            let pods = objects(&client, "pods", in_ns("default", "app=web")).await;
            let Ok(ep) = client
                .get_object("endpoints", "default", "web", false)
                .await
            else {
                return false;
            };
            let ep: Value = serde_json::from_slice(&ep.object).unwrap();
            let mut ips: Vec<String> = ep["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["ip"].as_str().map(str::to_string))
                .collect();
            ips.sort();
            let port_ok = ep["subsets"][0]["ports"][0]["port"] == 8080
                && ep["subsets"][0]["ports"][0]["name"] == "web";
            ips.len() == 3 && ips == ready_ips(&pods) && port_ok
        },
    )
    .await;
    let get = skiffctl(&cluster, &["get", "endpoints", "web"], None);
    assert!(text(&get.stdout).contains(":8080"), "{}", text(&get.stdout));

    // Drain: the node is cordoned, its pods go and are replaced on the other node.
    let out = skiffctl(&cluster, &["drain", "a-0", "--timeout", "30s"], None);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("node/a-0 drained"));
    wait_until(
        Duration::from_secs(20),
        "3 ready pods, all on b-0",
        || async {
            let pods = objects(&client, "pods", in_ns("default", "app=web")).await;
            let ready: Vec<_> = pods.iter().filter(|p| is_ready(p)).collect();
            ready.len() == 3 && ready.iter().all(|p| p["spec"]["nodeName"] == "b-0")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_pause_resume_and_restart() {
    let (cluster, _hollow) = cluster_with_nodes(&["a", "b"], &[]).await;
    let client = cluster.client();
    let recreate = json!({"strategy": {"type": "Recreate"}});
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-", "--wait", "--timeout", "60s"],
        Some(&deployment("db", 3, "db:1", recreate.clone())),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Paused: a template change is recorded but not rolled out.
    let out = skiffctl(&cluster, &["rollout", "pause", "deploy/db"], None);
    assert_eq!(
        text(&out.stdout),
        "deployment.apps/db paused\n",
        "{}",
        text(&out.stderr)
    );
    skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&deployment("db", 3, "db:2", recreate.clone())),
    );
    // The controller has looked at the new template once the status says so.
    wait_until(
        Duration::from_secs(10),
        "the paused deployment's new generation observed",
        || async {
            let d: Value = serde_json::from_slice(
                &client
                    .get_object("deployments", "default", "db", false)
                    .await
                    .expect("deployment")
                    .object,
            )
            .expect("JSON");
            d["status"]["observedGeneration"] == d["metadata"]["generation"]
        },
    )
    .await;
    let pods = objects(&client, "pods", in_ns("default", "app=db")).await;
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "db:1"),
        "a paused deployment rolled out"
    );

    // Resumed with Recreate: the old pods all go before new ones come, in every state.
    let history = PodHistory::start(&client, in_ns("default", "app=db")).await;
    let out = skiffctl(&cluster, &["rollout", "resume", "deploy/db"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = skiffctl(
        &cluster,
        &["rollout", "status", "deploy/db", "--timeout", "60s"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let running = |pods: &[Value], image: &str| {
        pods.iter()
            .filter(|p| is_ready(p) && p["spec"]["containers"][0]["image"] == image)
            .count()
    };
    let states = history.states_until_now().await;
    assert!(
        states
            .iter()
            .all(|pods| running(pods, "db:1") == 0 || running(pods, "db:2") == 0),
        "Recreate ran old and new pods side by side"
    );

    // Restart replaces every pod.
    let before: Vec<String> = objects(&client, "pods", in_ns("default", "app=db"))
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    let out = skiffctl(&cluster, &["rollout", "restart", "deploy/db"], None);
    assert_eq!(
        text(&out.stdout),
        "deployment.apps/db restarted\n",
        "{}",
        text(&out.stderr)
    );
    wait_until(
        Duration::from_secs(30),
        "3 ready pods, none of them from before the restart",
        || async {
            let pods = objects(&client, "pods", in_ns("default", "app=db")).await;
            let ready: Vec<_> = pods.iter().filter(|p| is_ready(p)).collect();
            ready.len() == 3
                && ready
                    .iter()
                    .all(|p| !before.iter().any(|b| p["metadata"]["name"] == b.as_str()))
        },
    )
    .await;
}

/// Unix seconds of `t`, an RFC 3339 time.
fn unix_seconds(t: &str) -> i64 {
    t.parse::<k8s_openapi::jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or(0)
}

/// The scheduled times (Unix seconds) of the Jobs CronJob `cron_job` made, sorted.
async fn scheduled_runs(client: &Client, cron_job: &str) -> Vec<i64> {
    let mut times: Vec<i64> = objects(client, "jobs", in_ns("default", ""))
        .await
        .iter()
        .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cron_job)
        .filter_map(|j| {
            j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
                .as_str()
                .map(unix_seconds)
        })
        .collect();
    times.sort();
    times
}

fn cron_job(name: &str, extra_spec: &str, run_seconds: u32) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {{name: {name}}}
spec:
  schedule: "* * * * *"
{extra_spec}  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {{hollow.skiff.dev/run-seconds: "{run_seconds}"}}
        spec:
          restartPolicy: Never
          containers: [{{name: c, image: "{name}:1"}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_run_every_minute_across_a_leader_kill_and_forbid_skips_while_one_runs() {
    let (mut cluster, _hollow) = cluster_with_nodes(&["a"], &[]).await;
    let client = cluster.client();
    let manifests = [
        cron_job("tick", "", 3),
        cron_job(
            "long",
            "  concurrencyPolicy: Forbid\n  startingDeadlineSeconds: 10\n",
            90,
        ),
    ]
    .join("---\n");
    let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(&manifests));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let now = || k8s_openapi::jiff::Timestamp::now().as_second();
    let first = (now() / 60 + 1) * 60;
    let second = first + 60;

    // The first scheduled time: both run.
    let until_first = Duration::from_secs((first - now()).max(0) as u64 + 20);
    wait_until(until_first, "the first runs of both CronJobs", || async {
        scheduled_runs(&client, "tick").await == [first]
            && scheduled_runs(&client, "long").await == [first]
    })
    .await;

    // The leader dies two seconds before the second time; the next one keeps the schedule.
    let before_second = (second - 2 - now()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(before_second)).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    cluster.kill9(leader);
    wait_until(
        Duration::from_secs(30),
        "tick's second run under the new leader",
        || async { scheduled_runs(&client, "tick").await == [first, second] },
    )
    .await;

    // Forbid: the first run of `long` still runs at the second time, which is skipped and
    // not caught up once its starting deadline has passed.
    let past_deadline = (second + 15 - now()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(past_deadline)).await;
    assert_eq!(
        scheduled_runs(&client, "long").await,
        [first],
        "Forbid skipped the second time while the first ran"
    );
    assert_eq!(
        scheduled_runs(&client, "tick").await,
        [first, second],
        "no time missed and none doubled"
    );
    wait_until(
        Duration::from_secs(20),
        "tick's runs complete and its status current",
        || async {
            let jobs = objects(&client, "jobs", in_ns("default", "")).await;
            let ticks: Vec<&Value> = jobs
                .iter()
                .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == "tick")
                .collect();
            let cj = objects(&client, "cronjobs", in_ns("default", "")).await;
            let tick = cj.iter().find(|c| name_of(c) == "tick");
            ticks.len() == 2
                && ticks.iter().all(|j| {
                    j["status"]["conditions"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Complete"))
                })
                && tick.is_some_and(|t| {
                    t["status"]["lastScheduleTime"].as_str().map(unix_seconds) == Some(second)
                })
        },
    )
    .await;

    // A run by hand, outside the schedule.
    let out = skiffctl(
        &cluster,
        &["create", "job", "tick-now", "--from", "cronjob/tick"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made = objects(&client, "jobs", in_ns("default", ""))
        .await
        .into_iter()
        .find(|j| name_of(j) == "tick-now")
        .expect("the job made by hand");
    assert_eq!(
        made["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(made["metadata"]["ownerReferences"][0]["name"], "tick");
}

fn daemon_set(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      containers: [{{name: agent, image: "{image}"}}]
"#
    )
}

/// The nodes with a ready, not deleting pod of `pods`, and how many such pods each has.
fn ready_by_node(pods: &[Value]) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for p in pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
    {
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        *by_node.entry(node).or_insert(0) += 1;
    }
    by_node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_set_runs_on_each_eligible_node_follows_new_nodes_and_rolls_within_max_unavailable(
) {
    let (cluster, _hollow) = cluster_with_nodes(&["a", "b", "c"], &[]).await;
    let client = cluster.client();
    // c is reserved for something else: the DaemonSet does not tolerate its taint.
    let out = skiffctl(
        &cluster,
        &[
            "patch",
            "node",
            "c-0",
            "-p",
            r#"{"spec":{"taints":[{"key":"dedicated","value":"db","effect":"NoSchedule"}]}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&daemon_set("agent:1")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let one_each = |nodes: &[&str], pods: &[Value]| {
        let by_node = ready_by_node(pods);
        by_node.len() == nodes.len() && nodes.iter().all(|n| by_node.get(*n) == Some(&1))
    };
    wait_until(
        Duration::from_secs(20),
        "one ready pod on a-0 and b-0, none on the tainted c-0",
        || async {
            one_each(
                &["a-0", "b-0"],
                &objects(&client, "pods", in_ns("default", "app=agent")).await,
            )
        },
    )
    .await;

    // A node joining gets its pod within seconds.
    let _joined = Hollow::start(&cluster, &["d"], "4");
    wait_until(Duration::from_secs(20), "d-0 joins with a pod", || async {
        one_each(
            &["a-0", "b-0", "d-0"],
            &objects(&client, "pods", in_ns("default", "app=agent")).await,
        )
    })
    .await;
    let table = skiffctl(&cluster, &["get", "ds"], None);
    let row = text(&table.stdout);
    assert!(
        row.lines()
            .any(|l| l.split_whitespace().take(6).collect::<Vec<_>>()
                == ["agent", "3", "3", "3", "3", "3"]),
        "{row}"
    );

    // A rolling update: never more than maxUnavailable=1 of the 3 nodes without a ready pod,
    // never two pods on a node; every state the pods go through is checked.
    let history = PodHistory::start(&client, in_ns("default", "app=agent")).await;
    let out = skiffctl(
        &cluster,
        &["set", "image", "ds/agent", "agent=agent:2"],
        None,
    );
    assert_eq!(
        text(&out.stdout),
        "daemonset.apps/agent image updated\n",
        "{}",
        text(&out.stderr)
    );
    let status = skiffctl(
        &cluster,
        &["rollout", "status", "ds/agent", "--timeout", "60s"],
        None,
    );
    assert!(
        text(&status.stdout).contains("successfully rolled out"),
        "{}{}",
        text(&status.stdout),
        text(&status.stderr)
    );
    let states = history.states_until_now().await;
    for pods in &states {
        let by_node = ready_by_node(pods);
        let covered = ["a-0", "b-0", "d-0"]
            .iter()
            .filter(|n| by_node.contains_key(**n))
            .count();
        assert!(
            covered >= 2,
            "two nodes without a ready pod at once: {by_node:?}"
        );
        assert!(
            by_node.values().all(|n| *n == 1),
            "two pods on a node: {by_node:?}"
        );
        assert!(!by_node.contains_key("c-0"), "a pod on the tainted node");
    }
    let template =
        r#"jsonpath={range .items[*]}{.spec.nodeName}={.spec.containers[0].image}{"\n"}{end}"#;
    let images = skiffctl(
        &cluster,
        &["get", "pods", "-l", "app=agent", "-o", template],
        None,
    );
    let listed = text(&images.stdout);
    for node in ["a-0", "b-0", "d-0"] {
        assert!(
            listed.lines().any(|l| l == format!("{node}=agent:2")),
            "{listed}{}",
            text(&images.stderr)
        );
    }
    assert!(
        three_live_agents_on(&client, "agent:2").await,
        "{:?}",
        objects(&client, "pods", in_ns("default", "app=agent")).await
    );

    // Each template is a revision: history shows both, undo goes back to agent:1.
    let history = skiffctl(&cluster, &["rollout", "history", "ds/agent"], None);
    let listed = text(&history.stdout);
    assert!(
        listed.starts_with("daemonset.apps/agent\n")
            && listed.lines().any(|l| l.starts_with("1 "))
            && listed.lines().any(|l| l.starts_with("2 ")),
        "{listed}{}",
        text(&history.stderr)
    );
    let undo = skiffctl(&cluster, &["rollout", "undo", "ds/agent"], None);
    assert_eq!(
        text(&undo.stdout),
        "daemonset.apps/agent rolled back to revision 1\n",
        "{}",
        text(&undo.stderr)
    );
    wait_until(Duration::from_secs(60), "every pod back on agent:1", || {
        three_live_agents_on(&client, "agent:1")
    })
    .await;
    let history = skiffctl(&cluster, &["rollout", "history", "ds/agent"], None);
    let numbers: Vec<String> = text(&history.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(
        numbers.last().map(String::as_str),
        Some("3"),
        "the template put back is the newest revision: {numbers:?}"
    );
}

/// Exactly three live daemon pods, all of `image`.
async fn three_live_agents_on(client: &Client, image: &str) -> bool {
    let pods = objects(client, "pods", in_ns("default", "app=agent")).await;
    let live: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    live.len() == 3
        && live
            .iter()
            .all(|p| p["spec"]["containers"][0]["image"] == image)
}

fn ready_live(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
        .count()
}

async fn pdb_allows(client: &Client, n: i64) -> bool {
    objects(client, "poddisruptionbudgets", in_ns("default", ""))
        .await
        .iter()
        .any(|b| {
            b["status"]["disruptionsAllowed"] == n
                && b["status"]["observedGeneration"] == b["metadata"]["generation"]
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_two_nodes_never_breaks_a_budget_of_two_of_three_and_a_full_budget_refuses() {
    let (cluster, _hollow) = cluster_with_nodes(&["a", "b", "c"], &[]).await;
    let client = cluster.client();
    let out = skiffctl(
        &cluster,
        &["apply", "-f", "-", "--wait", "--timeout", "60s"],
        Some(&deployment("web", 3, "web:1", json!({}))),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let budget = |min: u32| {
        format!(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web}}\nspec:\n  minAvailable: {min}\n  selector: {{matchLabels: {{app: web}}}}\n"
        )
    };
    let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(&budget(2)));
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(Duration::from_secs(20), "the budget allows 1", || async {
        pdb_allows(&client, 1).await
    })
    .await;

    // Two nodes drained one after the other: every state the pods go through keeps 2 ready.
    let history = PodHistory::start(&client, in_ns("default", "app=web")).await;
    let out = skiffctl(&cluster, &["drain", "a-0", "b-0", "--timeout", "60s"], None);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_until(Duration::from_secs(30), "3 ready pods on c-0", || async {
        let pods = objects(&client, "pods", in_ns("default", "app=web")).await;
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        live.len() == 3
            && live
                .iter()
                .all(|p| is_ready(p) && p["spec"]["nodeName"] == "c-0")
    })
    .await;
    let states = history.states_until_now().await;
    let least = states.iter().map(|s| ready_live(s)).min().unwrap_or(0);
    assert!(
        least >= 2,
        "ready pods fell to {least} during the drain ({} states)",
        states.len()
    );

    // A budget of all three: the drain is refused with the reason, and nothing is deleted.
    let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(&budget(3)));
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(Duration::from_secs(20), "the budget allows 0", || async {
        pdb_allows(&client, 0).await
    })
    .await;
    let before: Vec<String> = objects(&client, "pods", in_ns("default", "app=web"))
        .await
        .iter()
        .map(name_of)
        .collect();
    let out = skiffctl(&cluster, &["drain", "c-0", "--timeout", "3s"], None);
    assert!(!out.status.success(), "a drain past the budget fails");
    let err = text(&out.stderr);
    assert!(err.contains("disruption budget"), "{err}");
    let after = objects(&client, "pods", in_ns("default", "app=web")).await;
    assert_eq!(after.iter().map(name_of).collect::<Vec<_>>(), before);
    assert!(after
        .iter()
        .all(|p| p["metadata"]["deletionTimestamp"].is_null()));
}

fn stateful_set(image: &str, partition: u32) -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 3, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "db", "image": image,
                             "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    })
    .to_string()
}

/// Pod name → image, of the live pods of the StatefulSet `db`.
async fn db_images(client: &Client) -> BTreeMap<String, String> {
    objects(client, "pods", in_ns("default", "app=db"))
        .await
        .iter()
        .filter(|p| is_ready(p))
        .map(|p| {
            (
                name_of(p),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn images(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_set_rolls_down_to_its_partition_undoes_and_takes_its_claims_when_asked() {
    let (cluster, _hollow) = cluster_with_nodes(&["a", "b"], &[]).await;
    let client = cluster.client();
    let apply = |m: String| {
        let out = skiffctl(&cluster, &["apply", "-f", "-"], Some(&m));
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    apply(stateful_set("db:1", 0));
    let v1 = [("db-0", "db:1"), ("db-1", "db:1"), ("db-2", "db:1")];
    wait_until(Duration::from_secs(30), "three ready pods", || async {
        db_images(&client).await == images(&v1)
    })
    .await;
    // Each claim is bound to a local-path volume on its pod's node.
    wait_until(Duration::from_secs(20), "three claims bound", || async {
        objects(&client, "persistentvolumeclaims", in_ns("default", ""))
            .await
            .iter()
            .filter(|c| c["status"]["phase"] == "Bound")
            .count()
            == 3
    })
    .await;
    for p in objects(&client, "pods", in_ns("default", "app=db")).await {
        let claim = format!("data-{}", name_of(&p));
        let c = client
            .get_object("persistentvolumeclaims", "default", &claim, false)
            .await
            .expect("claim");
        let c: Value = serde_json::from_slice(&c.object).expect("json");
        assert_eq!(c["status"]["phase"], "Bound", "{claim}");
        let pv = client
            .get_object(
                "persistentvolumes",
                "",
                c["spec"]["volumeName"].as_str().unwrap_or(""),
                false,
            )
            .await
            .expect("volume");
        let pv: Value = serde_json::from_slice(&pv.object).expect("json");
        let node = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
            ["matchExpressions"][0]["values"][0];
        assert_eq!(
            node, &p["spec"]["nodeName"],
            "{claim}'s volume is on its pod's node"
        );
    }

    // Partition 2: only db-2 moves to db:2; db-0, deleted meanwhile, comes back as it was.
    apply(stateful_set("db:2", 2));
    let partitioned = [("db-0", "db:1"), ("db-1", "db:1"), ("db-2", "db:2")];
    wait_until(
        Duration::from_secs(30),
        "db-2 updated, not below",
        || async { db_images(&client).await == images(&partitioned) },
    )
    .await;
    let out = skiffctl(&cluster, &["delete", "pod", "db-0"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_until(Duration::from_secs(30), "db-0 back at db:1", || async {
        db_images(&client).await == images(&partitioned)
    })
    .await;

    // Partition 0: the rest, from the top down; then undone back to db:1.
    let history = PodHistory::start(&client, in_ns("default", "app=db")).await;
    apply(stateful_set("db:2", 0));
    let out = skiffctl(
        &cluster,
        &["rollout", "status", "sts/db", "--timeout", "60s"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        db_images(&client).await,
        images(&[("db-0", "db:2"), ("db-1", "db:2"), ("db-2", "db:2")])
    );
    let mut updated_order: Vec<String> = Vec::new();
    for state in history.states_until_now().await {
        for p in state.iter().filter(|p| is_ready(p)) {
            let name = name_of(p);
            if p["spec"]["containers"][0]["image"] == "db:2" && !updated_order.contains(&name) {
                updated_order.push(name);
            }
        }
        let ready = state.iter().filter(|p| is_ready(p)).count();
        assert!(ready >= 2, "one pod at a time: {ready} ready");
    }
    assert_eq!(updated_order, ["db-2", "db-1", "db-0"]);
    let out = skiffctl(&cluster, &["rollout", "history", "sts/db"], None);
    let listed = text(&out.stdout);
    assert!(
        listed.contains("\n1 ") && listed.contains("\n2 "),
        "{listed}"
    );
    let out = skiffctl(&cluster, &["rollout", "undo", "sts/db"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(Duration::from_secs(60), "all back at db:1", || async {
        db_images(&client).await == images(&v1)
    })
    .await;

    // whenScaled: Delete takes the claims scaled away; whenDeleted: Delete the rest, and
    // volumes of reclaim policy Delete go with their claims.
    let out = skiffctl(&cluster, &["scale", "sts/db", "--replicas", "1"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let claims = || async {
        let mut names: Vec<String> =
            objects(&client, "persistentvolumeclaims", in_ns("default", ""))
                .await
                .iter()
                .map(name_of)
                .collect();
        names.sort();
        names
    };
    wait_until(Duration::from_secs(30), "only data-db-0 left", || async {
        claims().await == ["data-db-0"]
    })
    .await;
    let out = skiffctl(&cluster, &["delete", "sts", "db"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(
        Duration::from_secs(30),
        "claims and volumes gone",
        || async {
            claims().await.is_empty()
                && objects(&client, "persistentvolumes", Selection::default())
                    .await
                    .is_empty()
        },
    )
    .await;
}
