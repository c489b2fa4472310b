//! End-to-end tests of the node agent: a real three-node control plane, a real containerd
//! and runc, CNI plugins, a local registry, and `skiff node` in a test host (a network
//! namespace with no route off the machine).

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::world::{ok, skiffctl, wait_until, world};
use skiff_e2e::node_env::{prepare_host_for_crun, require_system_parts};
use skiff_proto::objects::{Api, Selection, WatchItem};
use skiff_proto::Client;
use tracing::info;

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn pod(client: &Client, name: &str) -> Option<Pod> {
    Api::<Pod>::new(client.clone(), "default")
        .get(name)
        .await
        .ok()
}

fn pod_ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("podIP")
}

fn container_ids(p: &Pod) -> Vec<String> {
    let mut ids: Vec<String> = p
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.container_id.clone())
        .collect();
    ids.sort();
    ids
}

fn restarts(p: &Pod, container: &str) -> i32 {
    p.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == container)
        .map(|c| c.restart_count)
        .unwrap_or(0)
}

fn waiting_reason(p: &Pod, container: &str) -> Option<(String, String)> {
    let c = p
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == container)?;
    let w = c.state.as_ref()?.waiting.as_ref()?;
    Some((
        w.reason.clone().unwrap_or_default(),
        w.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_container_pod_serves_survives_an_agent_restart_and_leaves_nothing_behind() {
    require_system_parts();
    let mut w = world(&[]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("one"), "skiff/busybox", "1");

    info!("phase: a pod of two containers (httpd and a loop fetching from localhost) runs");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: {image}
    command: ["sh", "-c", "echo hello from $(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: [{{containerPort: 80}}]
    readinessProbe: {{httpGet: {{path: /, port: 80}}, periodSeconds: 1}}
  - name: fetcher
    image: {image}
    command: ["sh", "-c", "while true; do wget -q -O- http://127.0.0.1/ || echo fetch failed; sleep 0.5; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: other
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 2
  containers:
  - name: sleeper
    image: {image}
    command: ["sleep", "3600"]
"#
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    wait_until(
        Duration::from_secs(60),
        "pod web Running and Ready",
        || async {
            pod(&client, "web")
                .await
                .is_some_and(|p| phase(&p) == "Running" && is_ready(&p))
                && pod(&client, "other").await.is_some_and(|p| is_ready(&p))
        },
    )
    .await;
    let p = pod(&client, "web").await.expect("pod");
    let ip = pod_ip(&p);
    assert!(
        ip.starts_with("10.244."),
        "pod IP {ip} is from the pod CIDR"
    );
    assert_eq!(
        p.status.as_ref().and_then(|s| s.host_ip.clone()).as_deref(),
        Some(w.host.ip.as_str())
    );

    info!("phase: the fetch inside the pod succeeds; skiffctl logs shows it");
    wait_until(Duration::from_secs(10), "the fetcher's log", || async {
        String::from_utf8_lossy(
            &skiffctl(&w.cluster, &["logs", "web", "-c", "fetcher"], None).stdout,
        )
        .contains("hello from web")
    })
    .await;

    info!("phase: the pod IP answers from the node");
    let body = w
        .host
        .http_get(&format!("{ip}:80"), "/")
        .unwrap_or_else(|e| panic!("the pod answers from the node: {e}"));
    assert_eq!(body.trim(), "hello from web");

    info!("phase: skiffctl exec runs in the container and passes the exit code on");
    let out = skiffctl(
        &w.cluster,
        &[
            "exec",
            "web",
            "-c",
            "httpd",
            "--",
            "cat",
            "/etc/skiff-image",
        ],
        None,
    );
    assert_eq!(ok(&out).trim(), "one");
    let out = skiffctl(
        &w.cluster,
        &["exec", "web", "--", "sh", "-c", "exit 3"],
        None,
    );
    assert_eq!(out.status.code(), Some(3));

    info!("phase: the pod keeps serving while the whole control plane is down");
    for id in 1..=3 {
        w.cluster.kill9(id);
    }
    for _ in 0..3 {
        assert!(
            w.host.http_get(&format!("{ip}:80"), "/").is_ok(),
            "pod serves while the control plane is down"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for id in 1..=3 {
        w.cluster.restart(id);
    }
    w.cluster.wait_leader(Duration::from_secs(20)).await;

    info!("phase: kill -9 of the agent; a pod deleted meanwhile; the restart re-adopts the rest and cleans that one up");
    let before = container_ids(&p);
    assert_eq!(before.len(), 2);
    let other = pod(&client, "other").await.expect("pod other");
    let other_ids = container_ids(&other);
    let all_netns = w.agent.pod_netns();
    w.agent.kill9();
    assert!(
        w.host.http_get(&format!("{ip}:80"), "/").is_ok(),
        "pod serves while the agent is down"
    );
    ok(&skiffctl(
        &w.cluster,
        &["delete", "pod", "other", "--grace-period", "0"],
        None,
    ));
    assert!(
        pod(&client, "other").await.is_none(),
        "a zero grace period deletes at once"
    );
    w.agent.restart();
    wait_until(
        Duration::from_secs(20),
        "the deleted pod's containers removed",
        || async {
            let now = w.containerd.containers();
            other_ids
                .iter()
                .all(|id| !now.iter().any(|n| id.ends_with(n.as_str())))
        },
    )
    .await;
    // The new agent has looked at web once it says it re-adopted web's containers; a restart
    // it made would show from then on.
    wait_until(
        Duration::from_secs(20),
        "web's containers re-adopted",
        || async { w.agent.log().matches("re-adopted").count() >= 2 },
    )
    .await;
    let p = pod(&client, "web").await.expect("pod");
    assert_eq!(
        container_ids(&p),
        before,
        "same containers after the restart"
    );
    assert_eq!(
        restarts(&p, "httpd") + restarts(&p, "fetcher"),
        0,
        "nothing restarted"
    );
    assert_eq!(
        w.containerd.containers().len(),
        2,
        "web's two containers, nothing else"
    );
    assert!(is_ready(&p));
    assert!(w.agent.log().contains("re-adopted"));
    // The orphan's network goes after its containers: wait for the cleanup to finish.
    let netns_left = || {
        let listed = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        all_netns
            .iter()
            .filter(|n| listed.contains(n.as_str()))
            .count()
    };
    wait_until(
        Duration::from_secs(20),
        "the deleted pod's network namespace removed",
        || async { netns_left() <= 1 },
    )
    .await;
    let namespaces = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .into_owned();
    let left: Vec<&String> = all_netns
        .iter()
        .filter(|n| namespaces.contains(n.as_str()))
        .collect();
    assert_eq!(
        left.len(),
        1,
        "only web's network namespace is left: {left:?}"
    );

    info!("phase: deleting the pod removes its containers, snapshots, network namespace and IP");
    let netns = w.agent.pod_netns();
    assert_eq!(netns.len(), 1);
    ok(&skiffctl(&w.cluster, &["delete", "pod", "web"], None));
    wait_until(Duration::from_secs(30), "pod web gone", || async {
        pod(&client, "web").await.is_none()
    })
    .await;
    assert!(
        w.containerd.containers().is_empty(),
        "containers left: {:?}",
        w.containerd.containers()
    );
    assert!(w.containerd.active_snapshots().is_empty(), "snapshots left");
    let namespaces = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .into_owned();
    assert!(
        !namespaces.contains(&netns[0]),
        "network namespace {} left",
        netns[0]
    );
    let ipam = w.agent.data_dir.join("cni/skiff").join(&ip);
    assert!(!ipam.exists(), "address {ip} still allocated");
    let uid = p.metadata.uid.clone().expect("uid");
    assert_eq!(
        pod_cgroups_left(&uid),
        Vec::<String>::new(),
        "pod cgroups left"
    );
}

#[test]
fn too_many_warm_sandboxes_or_roots_are_refused_naming_the_flag() {
    for (flag, value, said) in [
        (
            "--warm-sandboxes",
            "65",
            "--warm-sandboxes must be at most 64",
        ),
        ("--warm-roots", "257", "--warm-roots must be at most 256"),
    ] {
        let out = Command::new(skiff_e2e::binary("skiff"))
            .args(["node", "--endpoints", "127.0.0.1:1", flag, value])
            .output()
            .expect("run skiff node");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} accepted: {stderr}");
        assert!(stderr.contains(said), "{stderr}");
    }
}

/// What the test agent's warm sandboxes hold on the host.
#[derive(Debug, PartialEq)]
struct WarmState {
    /// Warm network namespaces no pod took.
    namespaces: Vec<String>,
    /// Addresses host-local has given out (warm or taken).
    addresses: usize,
    /// Sandbox containers (warm or taken).
    sandboxes: Vec<String>,
}

fn warm_state(w: &skiff_e2e::node_env::world::World) -> WarmState {
    let cni = w.agent.data_dir.join("cni");
    let prefix = skiff_node::runtime::made_ahead::sandboxes::prefix_for(&cni);
    let mut namespaces = skiff_node::netns::names_with_prefix(&prefix);
    namespaces.sort();
    let addresses = std::fs::read_dir(cni.join("skiff"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .parse::<std::net::Ipv4Addr>()
                .is_ok()
        })
        .count();
    let mut sandboxes: Vec<String> = w
        .containerd
        .containers()
        .into_iter()
        .filter(|c| c.starts_with(&prefix))
        .collect();
    sandboxes.sort();
    WarmState {
        namespaces,
        addresses,
        sandboxes,
    }
}

/// The pid of container `id`'s process and of the shim that serves it.
fn task_and_shim_pid(w: &skiff_e2e::node_env::world::World, id: &str) -> (u32, u32) {
    let tasks = w.containerd.ctr(&["tasks", "ls"]);
    let pid: u32 = tasks
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no task {id} in\n{tasks}"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // "pid (comm) state ppid ...": the comm may hold spaces, so count from its ')'.
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        .expect("ppid");
    (pid, ppid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_sandboxes_are_taken_by_pods_made_again_and_released_without_a_leak() {
    require_system_parts();
    let mut w = world(&["--warm-sandboxes", "2"]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("warm"), "skiff/busybox", "1");

    info!("phase: the agent makes two sandboxes ahead of time, each with an address");
    wait_until(Duration::from_secs(20), "two warm sandboxes", || async {
        let s = warm_state(&w);
        s.namespaces.len() == 2 && s.addresses == 2 && s.sandboxes == s.namespaces
    })
    .await;
    let first_warm = warm_state(&w).namespaces;

    info!("phase: a pod takes one; its container joins the sandbox's shim; it serves on its address from the node");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {image}
    command: ["sh", "-c", "echo warm > /www/index.html && exec httpd -f -p 80 -h /www"]
    readinessProbe: {{httpGet: {{path: /, port: 80}}, periodSeconds: 1}}
"#
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    wait_until(Duration::from_secs(60), "pod web Ready", || async {
        pod(&client, "web").await.is_some_and(|p| is_ready(&p))
    })
    .await;
    let p = pod(&client, "web").await.expect("pod");
    let ip = pod_ip(&p);
    let uid = p.metadata.uid.clone().expect("uid");
    let record =
        skiff_node::cni::PodNetwork::read_record(&w.agent.data_dir.join("pods").join(&uid))
            .expect("the pod's network record");
    let taken = record.cni_id.clone().expect("the pod took a warm sandbox");
    assert!(
        first_warm.contains(&taken),
        "{taken} was one of {first_warm:?}"
    );
    assert_eq!(record.sandbox.as_deref(), Some(taken.as_str()));
    {
        let pod_dir = w.agent.data_dir.join("pods").join(&uid);
        let hosts = std::fs::read_to_string(pod_dir.join("etc").join("hosts")).expect("hosts");
        assert!(
            hosts.contains(&ip),
            "the pod's /etc/hosts names its address:\n{hosts}"
        );
    }
    let container = container_ids(&p)
        .first()
        .and_then(|c| c.strip_prefix("containerd://").map(String::from))
        .expect("container id");
    let (_, sandbox_shim) = task_and_shim_pid(&w, &taken);
    let (_, container_shim) = task_and_shim_pid(&w, &container);
    assert_eq!(
        container_shim, sandbox_shim,
        "the pod's container runs in the sandbox's shim"
    );
    let body = w
        .host
        .http_get(&format!("{ip}:80"), "/")
        .unwrap_or_else(|e| panic!("the pod answers from the node: {e}"));
    assert_eq!(body.trim(), "warm");

    info!("phase: the pool is made up again once the node is quiet");
    wait_until(
        Duration::from_secs(20),
        "two warm sandboxes again",
        || async {
            let s = warm_state(&w);
            s.namespaces.len() == 2 && s.addresses == 3 && s.sandboxes.len() == 3
        },
    )
    .await;

    info!("phase: kill -9 and a restart: the pod keeps its sandbox, the old pool is released");
    let before = container_ids(&p);
    let old_pool = warm_state(&w).namespaces;
    w.agent.kill9();
    w.agent.restart();
    let no_old_pool_and_a_new_one = || async {
        let s = warm_state(&w);
        s.namespaces.len() == 2
            && !s.namespaces.iter().any(|n| old_pool.contains(n))
            && s.addresses == 3
            && s.sandboxes.len() == 3
            && s.sandboxes.contains(&taken)
            && !s.sandboxes.iter().any(|n| old_pool.contains(n))
    };
    wait_until(
        Duration::from_secs(30),
        "a new pool of two, the old one released",
        no_old_pool_and_a_new_one,
    )
    .await;
    let p = pod(&client, "web").await.expect("pod");
    assert_eq!(
        container_ids(&p),
        before,
        "same containers after the restart"
    );
    assert!(
        w.host.http_get(&format!("{ip}:80"), "/").is_ok(),
        "the pod still answers"
    );

    info!("phase: warm namespaces removed with the agent down (as skiff up's Ctrl-C does): their addresses and containers are released at the restart");
    let old_pool = warm_state(&w).namespaces;
    w.agent.kill9();
    skiff_node::runtime::made_ahead::sandboxes::remove_namespaces(&w.agent.data_dir.join("cni"));
    let s = warm_state(&w);
    assert_eq!(
        (s.namespaces.len(), s.addresses),
        (0, 3),
        "addresses left behind"
    );
    w.agent.restart();
    let old_pool = &old_pool;
    wait_until(
        Duration::from_secs(30),
        "a new pool of two and nothing left behind",
        || async {
            let s = warm_state(&w);
            s.namespaces.len() == 2
                && !s.namespaces.iter().any(|n| old_pool.contains(n))
                && s.addresses == 3
                && s.sandboxes.len() == 3
                && !s.sandboxes.iter().any(|n| old_pool.contains(n))
        },
    )
    .await;

    info!("phase: deleting the pod releases its sandbox: the address, the container and its shim");
    ok(&skiffctl(&w.cluster, &["delete", "pod", "web"], None));
    wait_until(Duration::from_secs(30), "pod web gone", || async {
        pod(&client, "web").await.is_none()
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "only the pool's two sandboxes left, the pod's shim gone",
        || async {
            let s = warm_state(&w);
            let shim_gone = !std::path::Path::new(&format!("/proc/{sandbox_shim}")).exists();
            s.addresses == 2 && s.sandboxes == s.namespaces && shim_gone
        },
    )
    .await;
    assert!(
        !w.agent.data_dir.join("cni/skiff").join(&ip).exists(),
        "address {ip} still allocated"
    );
    assert!(
        !skiff_node::netns::path(&skiff_node::pod_worker::sandbox_name(&uid)).exists(),
        "the pod's network namespace is left"
    );
}

/// The roots made ahead under the agent's data folder: (folder names, those mounted).
fn warm_roots(w: &skiff_e2e::node_env::world::World) -> (Vec<String>, usize) {
    let dir = w.agent.data_dir.join("warm-roots");
    let names = sorted_names(&dir);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mounted = names
        .iter()
        .filter(|n| {
            let path = dir.join(n).display().to_string();
            mountinfo
                .lines()
                .any(|l| l.split_whitespace().nth(4) == Some(path.as_str()))
        })
        .count();
    (names, mounted)
}

/// The snapshot a container runs on, as containerd records it.
fn snapshot_key_of(w: &skiff_e2e::node_env::world::World, container: &str) -> String {
    let info = w.containerd.ctr(&["containers", "info", container]);
    let v: serde_json::Value = serde_json::from_str(&info).expect("containers info is JSON");
    v["SnapshotKey"].as_str().unwrap_or_default().to_string()
}

/// Apply `manifest`, wait until pod `name` is Running, and return it with its first
/// container's id.
async fn apply_and_run(
    w: &skiff_e2e::node_env::world::World,
    client: &Client,
    name: &str,
    manifest: &str,
) -> (Pod, String) {
    ok(&skiffctl(&w.cluster, &["apply", "-f", "-"], Some(manifest)));
    wait_until(
        Duration::from_secs(60),
        &format!("pod {name} Running"),
        || async {
            pod(client, name)
                .await
                .is_some_and(|p| phase(&p) == "Running")
        },
    )
    .await;
    let p = pod(client, name).await.expect("pod");
    let container = container_ids(&p)[0]
        .trim_start_matches("containerd://")
        .to_string();
    (p, container)
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_roots_are_taken_by_containers_of_the_last_image_and_dropped_without_a_leak() {
    require_system_parts();
    let mut w = world(&["--warm-roots", "2"]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("roots"), "skiff/busybox", "1");
    let pod_of = |name: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "echo {name} > /marker && exec sleep 3600"]
"#
        )
    };

    info!("phase: a first pod starts on a snapshot of its own (no image was started before, so no root was made); then two roots of its image are made ahead and mounted");
    let (first, first_container) = apply_and_run(&w, &client, "first", &pod_of("first")).await;
    assert_eq!(snapshot_key_of(&w, &first_container), first_container);
    wait_until(
        Duration::from_secs(20),
        "two roots made ahead, mounted",
        || async { warm_roots(&w).1 == 2 && warm_roots(&w).0.len() == 2 },
    )
    .await;
    let pool = warm_roots(&w).0;
    let active = w.containerd.active_snapshots();
    assert!(
        pool.iter().all(|k| active.contains(k)),
        "each root is an active snapshot: {pool:?} in {active:?}"
    );
    let info = w.containerd.ctr(&["snapshots", "info", &pool[0]]);
    assert!(
        info.contains("containerd.io/gc.root"),
        "a root no container names yet is a gc root:\n{info}"
    );

    info!("phase: a second pod of the same image takes one: it runs and writes on it, and the pool is made up again");
    let (_, second_container) = apply_and_run(&w, &client, "second", &pod_of("second")).await;
    let taken = snapshot_key_of(&w, &second_container);
    assert!(
        pool.contains(&taken),
        "the container runs on a root made ahead: {taken} in {pool:?}"
    );
    let marker = ok(&skiffctl(
        &w.cluster,
        &["exec", "second", "--", "cat", "/marker"],
        None,
    ));
    assert_eq!(marker.trim(), "second", "the container wrote on its root");
    wait_until(
        Duration::from_secs(20),
        "the taken root's snapshot no longer a gc root (its container names it)",
        || async {
            let info = w.containerd.ctr(&["snapshots", "info", &taken]);
            info.contains(&taken) && !info.contains("containerd.io/gc.root")
        },
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "two roots again, the taken one's folder gone",
        || async {
            let (names, mounted) = warm_roots(&w);
            names.len() == 2 && mounted == 2 && !names.contains(&taken)
        },
    )
    .await;

    info!("phase: deleting the pod removes the snapshot it ran on");
    ok(&skiffctl(&w.cluster, &["delete", "pod", "second"], None));
    wait_until(
        Duration::from_secs(30),
        "pod second gone, its snapshot too",
        || async {
            pod(&client, "second").await.is_none()
                && !w.containerd.active_snapshots().contains(&taken)
        },
    )
    .await;

    info!("phase: kill -9 and a restart: the old roots are dropped, a new pool made, the first pod untouched");
    let old_pool = warm_roots(&w).0;
    w.agent.kill9();
    // One root loses its folder while the agent is down: its snapshot is found by its key.
    let orphan = w.agent.data_dir.join("warm-roots").join(&old_pool[0]);
    nix::mount::umount2(&orphan, nix::mount::MntFlags::MNT_DETACH).expect("unmounting a root");
    std::fs::remove_dir(&orphan).expect("removing a root's folder");
    w.agent.restart();
    wait_until(
        Duration::from_secs(30),
        "a new pool of two, the old one dropped",
        || async {
            let (names, mounted) = warm_roots(&w);
            let active = w.containerd.active_snapshots();
            names.len() == 2
                && mounted == 2
                && !names.iter().any(|n| old_pool.contains(n))
                && !old_pool.iter().any(|k| active.contains(k))
        },
    )
    .await;
    let active = w.containerd.active_snapshots();
    assert_eq!(
        active.len(),
        3,
        "the first pod's snapshot and the pool's two, nothing else: {active:?}"
    );
    let again = pod(&client, "first").await.expect("pod");
    assert_eq!(
        container_ids(&again),
        container_ids(&first),
        "same container"
    );
    let marker = ok(&skiffctl(
        &w.cluster,
        &["exec", "first", "--", "cat", "/marker"],
        None,
    ));
    assert_eq!(marker.trim(), "first");

    info!("phase: roots unmounted behind the agent's back: a container that takes one is made on its own snapshot instead, and the broken root's snapshot goes");
    let broken = warm_roots(&w).0;
    for key in &broken {
        let dir = w.agent.data_dir.join("warm-roots").join(key);
        nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH).expect("unmounting a root");
    }
    let (_, third_container) = apply_and_run(&w, &client, "third", &pod_of("third")).await;
    assert_eq!(
        snapshot_key_of(&w, &third_container),
        third_container,
        "made on a snapshot of its own"
    );
    assert!(
        w.agent
            .log()
            .contains("a root made ahead is not mounted; dropping it"),
        "the container took a broken root first and fell back"
    );
    let marker = ok(&skiffctl(
        &w.cluster,
        &["exec", "third", "--", "cat", "/marker"],
        None,
    ));
    assert_eq!(marker.trim(), "third");
    // A broken root is either still in the pool (folder and snapshot) or, once taken, gone
    // altogether: no folder and no snapshot.
    let active = w.containerd.active_snapshots();
    let folders = warm_roots(&w).0;
    let taken: Vec<&String> = broken.iter().filter(|k| !folders.contains(k)).collect();
    assert!(!taken.is_empty(), "a broken root was taken: {broken:?}");
    for key in &broken {
        let gone = !folders.contains(key) && !active.contains(key);
        let kept = folders.contains(key) && active.contains(key);
        assert!(
            gone || kept,
            "broken root {key}: folder {}, snapshot {}",
            folders.contains(key),
            active.contains(key)
        );
    }
}

/// The pod's parent cgroup directories still present in any hierarchy under /sys/fs/cgroup.
fn pod_cgroups_left(uid: &str) -> Vec<String> {
    let mut left = Vec::new();
    let roots = std::fs::read_dir("/sys/fs/cgroup").expect("/sys/fs/cgroup");
    for root in roots.flatten() {
        let dir = root.path().join("skiff").join(format!("pod{uid}"));
        if dir.exists() {
            left.push(dir.display().to_string());
        }
    }
    let unified = std::path::Path::new("/sys/fs/cgroup/skiff").join(format!("pod{uid}"));
    if unified.exists() {
        left.push(unified.display().to_string());
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_registry_is_trusted_with_its_own_ca_and_a_stranger_certificate_is_refused() {
    require_system_parts();
    let w = world(&[]).await;
    let client = w.cluster.client();
    w.registry
        .push(&OciImage::busybox("private"), "skiff/private", "1");
    let private = format!("{}/skiff/private:1", w.private_registry.addr);
    // A third face of the same images over TLS, with a CA the agent was never given.
    let (stranger, _) = w
        .registry
        .twin_over_tls(w.cluster.dir(), "stranger-registry");
    let unknown = format!("{}/skiff/private:1", stranger.addr);
    let pod_of = |name: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: n1\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: \"{image}\", command: [sleep, \"3600\"]}}]\n"
        )
    };

    info!("phase: an image from the registry whose CA the agent was given (--registry-ca) is pulled over TLS and runs");
    let (p, _) = apply_and_run(&w, &client, "trusted", &pod_of("trusted", &private)).await;
    let status = p.status.expect("status");
    let image_id = status.container_statuses.expect("statuses")[0]
        .image
        .clone();
    assert_eq!(
        image_id, private,
        "recorded under the name it was pulled by"
    );

    info!(
        "phase: a registry with a certificate from an unknown CA is refused: ErrImagePull says why"
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&pod_of("untrusted", &unknown)),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let why = loop {
        let waiting = pod(&client, "untrusted")
            .await
            .and_then(|p| waiting_reason(&p, "c"));
        if let Some((reason, message)) = waiting {
            if reason == "ErrImagePull" {
                break message;
            }
        }
        assert!(Instant::now() < deadline, "no ErrImagePull on the stranger");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        why.contains("certificate") || why.contains("UnknownIssuer"),
        "the refusal names the certificate: {why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_errors_crash_loops_probes_config_and_imports_show_in_status() {
    require_system_parts();
    let w = world(&["--backoff-initial-ms", "1000", "--backoff-max-ms", "8000"]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("two"), "skiff/busybox", "2");
    let missing = format!("{}/skiff/missing:1", w.registry.addr);

    info!("phase: config, pods that fail in the ways a user must be told about");
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: hello-config, mode: fast}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: missing-image}}
spec:
  nodeName: n1
  containers: [{{name: c, image: "{missing}"}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: crasher}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: "{image}", command: ["sh", "-c", "echo crashing; exit 1"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: unhealthy}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: "{image}"
    command: ["sh", "-c", "touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 3600"]
    livenessProbe: {{exec: {{command: [test, -e, /tmp/alive]}}, periodSeconds: 1, failureThreshold: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: unready}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: "{image}"
    command: ["sleep", "3600"]
    readinessProbe: {{exec: {{command: [sh, -c, "echo x >> /tmp/probed; exit 1"]}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: configured}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: prepare
    image: "{image}"
    command: ["sh", "-c", "echo prepared-by-init > /work/ready"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: c
    image: "{image}"
    command: ["sleep", "3600"]
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: COMBINED, value: "$(GREETING)-$(POD_NAME)"}}
    volumeMounts:
    - {{name: settings, mountPath: /etc/settings}}
    - {{name: creds, mountPath: /etc/creds, readOnly: true}}
    - {{name: work, mountPath: /work}}
  volumes:
  - {{name: settings, configMap: {{name: settings}}}}
  - {{name: creds, secret: {{secretName: creds}}}}
  - {{name: work, emptyDir: {{}}}}
"#
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));

    info!(
        "phase: a missing image is ErrImagePull, then ImagePullBackOff, with the registry's error"
    );
    // Every status the pod goes through, from a watch: no state is missed between polls.
    let mut watch = client.watch_objects(
        "pods",
        &Selection {
            namespace: "default".into(),
            fields: "metadata.name=missing-image".into(),
            ..Default::default()
        },
        0,
    );
    let mut seen = (false, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(seen.0 && seen.1) {
        let item = tokio::time::timeout_at(deadline.into(), watch.recv())
            .await
            .unwrap_or_else(|_| panic!("saw ErrImagePull/ImagePullBackOff: {seen:?}"))
            .expect("watch")
            .expect("watch item");
        let (WatchItem::Added(b) | WatchItem::Modified(b)) = item else {
            continue;
        };
        let p: Pod = serde_json::from_slice(&b).expect("pod");
        if let Some((reason, message)) = waiting_reason(&p, "c") {
            if reason == "ErrImagePull" {
                assert!(
                    message.contains("manifest unknown") || message.contains("not found"),
                    "{message}"
                );
                seen.0 = true;
            }
            if reason == "ImagePullBackOff" {
                seen.1 = true;
            }
        }
    }

    info!("phase: a crashing container backs off with growing delays; its restart count rises");
    let mut restart_times: Vec<(i32, Instant)> = Vec::new();
    let mut saw_backoff = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    while restart_times.last().map(|r| r.0).unwrap_or(0) < 4 {
        assert!(
            Instant::now() < deadline,
            "restarts seen: {restart_times:?}"
        );
        if let Some(p) = pod(&client, "crasher").await {
            let n = restarts(&p, "c");
            if restart_times.last().map(|r| r.0) != Some(n) {
                restart_times.push((n, Instant::now()));
            }
            saw_backoff |= waiting_reason(&p, "c").is_some_and(|w| w.0 == "CrashLoopBackOff");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_backoff, "CrashLoopBackOff was reported");
    let gaps: Vec<Duration> = restart_times.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let last = gaps.len() - 1;
    assert!(
        gaps[last] > gaps[last - 1],
        "delays grow: {gaps:?}\n{}",
        crasher_log(&w.agent.log())
    );
    assert!(
        gaps[last] >= Duration::from_millis(3500),
        "back-off doubled to ~4 s: {gaps:?}"
    );
    let log = ok(&skiffctl(
        &w.cluster,
        &["logs", "crasher", "--previous"],
        None,
    ));
    assert!(log.contains("crashing"), "the previous run's log: {log}");

    info!("phase: a failing liveness probe restarts its container");
    wait_until(
        Duration::from_secs(30),
        "unhealthy restarted by its liveness probe",
        || async {
            pod(&client, "unhealthy")
                .await
                .is_some_and(|p| restarts(&p, "c") >= 1)
        },
    )
    .await;

    info!("phase: a failing readiness probe keeps the pod Running but not Ready");
    wait_until(Duration::from_secs(20), "unready Running", || async {
        pod(&client, "unready")
            .await
            .is_some_and(|p| phase(&p) == "Running")
    })
    .await;
    // The probe leaves a line per run: after three failed runs, the verdict is in.
    wait_until(
        Duration::from_secs(20),
        "three readiness probes run",
        || async {
            let out = skiffctl(
                &w.cluster,
                &["exec", "unready", "--", "cat", "/tmp/probed"],
                None,
            );
            String::from_utf8_lossy(&out.stdout).matches('x').count() >= 3
        },
    )
    .await;
    let p = pod(&client, "unready").await.expect("pod");
    assert!(!is_ready(&p), "a failing readiness probe means not Ready");

    info!("phase: ConfigMap and Secret volumes and env vars, and an init container's work, are visible");
    wait_until(Duration::from_secs(30), "configured Ready", || async {
        pod(&client, "configured")
            .await
            .is_some_and(|p| is_ready(&p))
    })
    .await;
    let env = ok(&skiffctl(
        &w.cluster,
        &["exec", "configured", "--", "env"],
        None,
    ));
    for want in [
        "GREETING=hello-config",
        "PASSWORD=s3cret",
        "POD_NAME=configured",
        "COMBINED=hello-config-configured",
    ] {
        assert!(env.contains(want), "{want} in {env}");
    }
    let files = ok(&skiffctl(
        &w.cluster,
        &[
            "exec",
            "configured",
            "--",
            "sh",
            "-c",
            "cat /etc/settings/greeting /etc/settings/mode /etc/creds/password /work/ready",
        ],
        None,
    ));
    assert_eq!(files, "hello-configfasts3cretprepared-by-init\n");

    info!(
        "phase: the Secret volume is a tmpfs, on the node and in the container, gone with the pod"
    );
    let secret_mount = || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let agent_dir = format!("{}/", w.agent.data_dir.display());
        mounts
            .lines()
            .find(|l| l.contains(&agent_dir) && l.contains("/volumes/secret/creds"))
            .map(str::to_string)
    };
    let on_node = secret_mount();
    assert!(
        on_node.as_deref().is_some_and(|l| l.contains(" - tmpfs ")),
        "the Secret volume on the node: {on_node:?}"
    );
    let in_container = ok(&skiffctl(
        &w.cluster,
        &[
            "exec",
            "configured",
            "--",
            "sh",
            "-c",
            "grep ' /etc/creds ' /proc/mounts",
        ],
        None,
    ));
    assert!(in_container.contains("tmpfs"), "{in_container}");
    ok(&skiffctl(
        &w.cluster,
        &["delete", "pod", "configured"],
        None,
    ));
    wait_until(
        Duration::from_secs(30),
        "the Secret volume unmounted once its pod is gone",
        || async { secret_mount().is_none() },
    )
    .await;

    info!("phase: an image imported from an OCI archive runs with imagePullPolicy Never");
    let out = ok(&import_busybox(&w, "imported"));
    assert!(out.contains("example.test/imported/busybox:1"), "{out}");
    let manifest = r#"apiVersion: v1
kind: Pod
metadata: {name: from-archive}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: "example.test/imported/busybox:1", imagePullPolicy: Never, command: ["sleep", "3600"]}]
"#;
    ok(&skiffctl(&w.cluster, &["apply", "-f", "-"], Some(manifest)));
    wait_until(Duration::from_secs(30), "from-archive Running", || async {
        pod(&client, "from-archive")
            .await
            .is_some_and(|p| phase(&p) == "Running")
    })
    .await;
    let marker = ok(&skiffctl(
        &w.cluster,
        &["exec", "from-archive", "--", "cat", "/etc/skiff-image"],
        None,
    ));
    assert_eq!(marker.trim(), "imported");
}

/// `--oci-runtime crun`: the runc v2 shim runs crun instead of runc (faster pod starts; see
/// docs/BENCHMARKS.md). The pod serves, exec works, a memory limit is enforced by crun's
/// cgroups and reported as OOMKilled, and deletion leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_under_crun_with_their_limits_enforced() {
    require_system_parts();
    prepare_host_for_crun();
    let w = world(&["--oci-runtime", "crun"]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("crun"), "skiff/busybox", "crun");

    info!("phase: a serving pod and a pod that outgrows its memory limit, under crun");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: {image}
    command: ["sh", "-c", "echo hello from crun > /www/index.html && exec httpd -f -p 80 -h /www"]
    readinessProbe: {{httpGet: {{path: /, port: 80}}, periodSeconds: 1}}
    resources: {{limits: {{memory: 64Mi, cpu: 500m}}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  nodeName: n1
  restartPolicy: Never
  containers:
  - name: hog
    image: {image}
    command: ["busybox", "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=48"]
    resources: {{limits: {{memory: 16Mi}}}}
"#
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    wait_until(
        Duration::from_secs(60),
        "pod web Running and Ready",
        || async {
            pod(&client, "web")
                .await
                .is_some_and(|p| phase(&p) == "Running" && is_ready(&p))
        },
    )
    .await;
    let p = pod(&client, "web").await.expect("pod");
    let ip = pod_ip(&p);
    let body = w
        .host
        .http_get(&format!("{ip}:80"), "/")
        .unwrap_or_else(|e| panic!("the pod answers from the node: {e}"));
    assert_eq!(body.trim(), "hello from crun");
    let out = skiffctl(
        &w.cluster,
        &["exec", "web", "--", "cat", "/etc/skiff-image"],
        None,
    );
    assert_eq!(ok(&out).trim(), "crun");
    // The shim keeps each runtime's state under the agent's --oci-runtime-root (per containerd
    // namespace); only crun can read crun's.
    let id = container_ids(&p).pop().expect("web's container id");
    let id = id.trim_start_matches("containerd://");
    let root = w.containerd.oci_runtime_root.join("skiff");
    let state = Command::new("crun")
        .arg("--root")
        .arg(&root)
        .args(["state", id])
        .output()
        .expect("crun");
    assert!(
        String::from_utf8_lossy(&state.stdout).contains("\"running\""),
        "crun runs web's container {id}: {}",
        String::from_utf8_lossy(&state.stderr)
    );
    // The shim runs the installed crun itself, so a package upgrade applies at once.
    let bundle = root
        .parent()
        .and_then(|runc| runc.parent())
        .expect("containerd's state")
        .join("io.containerd.runtime.v2.task/skiff")
        .join(id);
    let options = std::fs::read_to_string(bundle.join("options.json")).expect("shim options");
    assert!(
        options.contains("\"binary_name\":\"/usr/bin/crun\""),
        "the shim runs /usr/bin/crun: {options}"
    );

    info!("phase: the memory hog is killed by its cgroup limit and reported OOMKilled");
    wait_until(
        Duration::from_secs(60),
        "pod hog Failed with OOMKilled",
        || async {
            pod(&client, "hog").await.is_some_and(|p| {
                phase(&p) == "Failed"
                    && p.status
                        .iter()
                        .flat_map(|s| s.container_statuses.iter().flatten())
                        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
                        .any(|t| t.reason.as_deref() == Some("OOMKilled") && t.exit_code == 137)
            })
        },
    )
    .await;

    info!("phase: deleting the pods removes their containers, snapshots and network");
    ok(&skiffctl(
        &w.cluster,
        &["delete", "pod", "web", "hog"],
        None,
    ));
    wait_until(Duration::from_secs(30), "pods gone", || async {
        pod(&client, "web").await.is_none() && pod(&client, "hog").await.is_none()
    })
    .await;
    assert!(
        w.containerd.containers().is_empty(),
        "containers left: {:?}",
        w.containerd.containers()
    );
    assert!(w.containerd.active_snapshots().is_empty(), "snapshots left");
    assert!(w.agent.pod_netns().is_empty(), "network namespaces left");
    let uid = p.metadata.uid.clone().expect("uid");
    assert_eq!(
        pod_cgroups_left(&uid),
        Vec::<String>::new(),
        "pod cgroups left"
    );
}

/// The agent's log lines about the crasher pod, for a failed back-off assertion.
fn crasher_log(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("crasher"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// containerd's garbage collector once deleted a fresh snapshot before the container record
/// named it, so roughly one restart in a hundred failed with CreateContainerError (and an extra
/// back-off step). A container restarted hundreds of times must start every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restarted_hundreds_of_times_starts_every_time() {
    require_system_parts();
    let w = world(&["--backoff-initial-ms", "1", "--backoff-max-ms", "2"]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("two"), "skiff/busybox", "2");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: restarter}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: "{image}", command: ["sh", "-c", "exit 1"]}}]
"#
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    wait_until(Duration::from_secs(90), "200 restarts", || async {
        pod(&client, "restarter")
            .await
            .is_some_and(|p| restarts(&p, "c") >= 200)
    })
    .await;
    let log = w.agent.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && (l.contains("creating") || l.contains("starting")))
        .collect();
    assert!(failed.is_empty(), "failed starts:\n{}", failed.join("\n"));
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The names in folder `dir`, sorted (none if it does not exist).
fn sorted_names(dir: &std::path::Path) -> Vec<String> {
    sorted(
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
    )
}

/// Run `script` in `container` of pod `name`: whether the script succeeded, and what it
/// printed (stdout and stderr). The exit status travels in the output, so an exec that could
/// not be made (a busy machine) is told apart from a script that failed, and retried.
fn exec_in(
    w: &skiff_e2e::node_env::world::World,
    name: &str,
    container: &str,
    script: &str,
) -> (bool, String) {
    let wrapped = format!("{{ {script} ; }} 2>&1; echo \"rc=$?\"");
    let mut last = String::new();
    for _ in 0..5 {
        let out = skiffctl(
            &w.cluster,
            &["exec", name, "-c", container, "--", "sh", "-c", &wrapped],
            None,
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some((printed, rc)) = text.trim_end().rsplit_once("rc=") {
            return (rc.trim() == "0", printed.to_string());
        }
        last = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("exec into {name}/{container} failed: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_as_their_security_context_says() {
    require_system_parts();
    let w = world(&[]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("secure"), "skiff/busybox", "secure");
    // An image whose USER is a name, known to its own /etc/passwd.
    let named_image = w.registry.push(
        &OciImage::busybox_as(
            "named",
            "app",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            "root:x:0:\napp:x:1001:\n",
        ),
        "skiff/busybox",
        "named",
    );
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: restricted}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  securityContext: {{fsGroup: 2000}}
  containers:
  - name: user
    image: "{image}"
    command: ["sleep", "3600"]
    securityContext: {{runAsUser: 1000, runAsGroup: 3000, readOnlyRootFilesystem: true}}
    volumeMounts: [{{name: scratch, mountPath: /data}}]
  - name: noraw
    image: "{image}"
    command: ["sleep", "3600"]
    securityContext: {{capabilities: {{drop: [NET_RAW]}}}}
  - name: plain
    image: "{image}"
    command: ["sleep", "3600"]
  - name: named
    image: "{named_image}"
    command: ["sleep", "3600"]
    securityContext: {{runAsNonRoot: true}}
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: "{image}"
    command: ["sleep", "3600"]
    securityContext: {{runAsNonRoot: true}}
"#
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    wait_until(Duration::from_secs(60), "restricted Running", || async {
        pod(&client, "restricted")
            .await
            .is_some_and(|p| phase(&p) == "Running")
    })
    .await;

    info!("phase: the user and groups, and a read-only root filesystem");
    let (_, ids) = exec_in(&w, "restricted", "user", "id -u; id -g; id -G");
    assert_eq!(
        ids.lines().take(2).collect::<Vec<_>>(),
        ["1000", "3000"],
        "{ids}"
    );
    assert!(
        ids.lines()
            .nth(2)
            .is_some_and(|g| g.split(' ').any(|x| x == "2000")),
        "fsGroup: {ids}"
    );
    let (_, ids) = exec_in(&w, "restricted", "named", "id -u; id -g");
    assert_eq!(
        ids.lines().collect::<Vec<_>>(),
        ["1000", "1001"],
        "the image's USER by name, from its /etc/passwd: {ids}"
    );
    let (wrote, why) = exec_in(&w, "restricted", "user", "touch /probe");
    assert!(!wrote, "a read-only root filesystem took a write");
    assert!(why.contains("Read-only file system"), "{why}");
    let (wrote, group) = exec_in(
        &w,
        "restricted",
        "user",
        "touch /data/x && stat -c %g /data/x",
    );
    assert!(wrote, "uid 1000 writes its emptyDir: {group}");
    assert_eq!(
        group.trim(),
        "2000",
        "what it makes there belongs to the fsGroup"
    );

    info!("phase: a dropped NET_RAW refuses a raw socket; the default set allows it");
    let (pinged, why) = exec_in(&w, "restricted", "noraw", "ping -c 1 -W 1 127.0.0.1");
    assert!(!pinged, "a raw socket without NET_RAW: {why}");
    assert!(why.contains("permitted") || why.contains("denied"), "{why}");
    let (pinged, out) = exec_in(&w, "restricted", "plain", "ping -c 1 -W 1 127.0.0.1");
    assert!(pinged, "the default set keeps NET_RAW: {out}");

    info!("phase: runAsNonRoot with a root image is refused, with its reason in the status");
    wait_until(Duration::from_secs(30), "nonroot refused", || async {
        pod(&client, "nonroot").await.is_some_and(|p| {
            waiting_reason(&p, "c").is_some_and(|(reason, message)| {
                reason == "CreateContainerConfigError"
                    && message.contains("runAsNonRoot and image will run as root")
            })
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_import_over_the_nodes_limit_is_refused_and_leaves_nothing() {
    require_system_parts();
    let w = world(&["--max-image-import-bytes", "65536"]).await;
    let out = import_busybox(&w, "too-big");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an archive over the limit was imported"
    );
    assert!(stderr.contains("import limit of 65536 bytes"), "{stderr}");
    let imports = w.agent.data_dir.join("imports");
    let left: Vec<_> = std::fs::read_dir(&imports)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial archives left: {left:?}");
}

/// `skiffctl image import` of a busybox archive named `example.test/NAME/busybox:1` to n1.
fn import_busybox(w: &skiff_e2e::node_env::world::World, name: &str) -> std::process::Output {
    let archive = w.cluster.dir().join(format!("{name}.tar"));
    std::fs::write(
        &archive,
        OciImage::busybox(name).archive(&format!("example.test/{name}/busybox:1")),
    )
    .expect("archive");
    skiffctl(
        &w.cluster,
        &[
            "image",
            "import",
            archive.to_str().expect("path"),
            "--node",
            "n1",
        ],
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_metrics_health_and_readiness() {
    require_system_parts();
    let w = world(&["--metrics-listen", "0.0.0.0:19100"]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("ops"), "skiff/busybox", "ops");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: counted}}\nspec:\n  nodeName: n1\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: \"{image}\", command: [sleep, \"3600\"]}}]\n"
    );
    apply_and_run(&w, &client, "counted", &manifest).await;

    info!("phase: the agent's endpoint, reached at the node's address as a scraper would");
    let addr = format!("{}:19100", w.host.ip);
    let get = |path: &str| {
        let out = std::process::Command::new("busybox")
            .args([
                "wget",
                "-q",
                "-S",
                "-O",
                "-",
                &format!("http://{addr}{path}"),
            ])
            .output()
            .expect("busybox wget");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(get("/healthz"), (true, "ok\n".to_string()));
    assert_eq!(get("/readyz"), (true, "ok\n".to_string()));
    let (ok, metrics) = get("/metrics");
    assert!(ok, "{metrics}");
    assert!(
        metrics.contains("skiff_node_pods{phase=\"Running\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("skiff_node_cached_services "), "{metrics}");
    let samples = skiff_e2e::prometheus_samples(&metrics);
    for (series, at_least) in [
        ("skiff_node_pod_start_duration_seconds_count", 1.0),
        ("skiff_node_image_pull_duration_seconds_count", 1.0),
        ("skiff_proxy_sync_duration_seconds_count", 1.0),
    ] {
        assert!(
            samples.get(series).is_some_and(|v| *v >= at_least),
            "{series} at least {at_least}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_stop_hook_runs_before_the_container_is_asked_to_stop() {
    require_system_parts();
    let w = world(&[]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("hooks"), "skiff/busybox", "1");
    let shared = w.cluster.dir().join("hook");
    std::fs::create_dir_all(&shared).expect("the hook's folder");
    let log = shared.join("log");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 10
  volumes:
  - name: hook
    hostPath: {{path: "{}", type: Directory}}
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "trap 'echo term >> /hook/log; exit 0' TERM; echo started >> /hook/log; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: hook, mountPath: /hook}}]
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo prestop >> /hook/log; sleep 1"]
"#,
        shared.display()
    );
    // A hostPath volume is the log the test reads after the pod is gone.
    ok(&skiffctl(
        &w.cluster,
        &[
            "label",
            "namespace",
            "default",
            "pod-security.kubernetes.io/enforce=privileged",
        ],
        None,
    ));
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    wait_until(Duration::from_secs(60), "the container started", || async {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))
    })
    .await;
    // The agent's Events, as the kubelet writes them, in `describe`.
    wait_until(Duration::from_secs(20), "the agent's events", || async {
        let out = skiffctl(&w.cluster, &["describe", "pod", "hooked"], None);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        ["Pulling", "Pulled", "Created", "Started"]
            .iter()
            .all(|r| text.contains(r))
            && text.contains("Started container main")
            && text.contains("kubelet")
    })
    .await;
    ok(&skiffctl(&w.cluster, &["delete", "pod", "hooked"], None));
    wait_until(Duration::from_secs(30), "the pod gone", || async {
        pod(&client, "hooked").await.is_none()
    })
    .await;
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("the log")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines,
        ["started", "prestop", "term"],
        "the hook ran, then the container got SIGTERM"
    );
    let events = ok(&skiffctl(
        &w.cluster,
        &[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.reason}:{.message}{\"\\n\"}{end}",
        ],
        None,
    ));
    assert!(
        events
            .lines()
            .any(|l| l == "Killing:Stopping container main"),
        "{events}"
    );
}
