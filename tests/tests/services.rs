//! End-to-end tests of service forwarding: a real control plane, `skiff node` with its proxy
//! in a test host, pods on containerd, and real packets through the nftables rules.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::world::{ok, skiffctl, wait_until, world};
use skiff_e2e::node_env::{require_system_parts, TestHost};
use skiff_proto::objects::Api;
use tracing::info;

/// Tally the answers of `n` requests to `url` made by busybox sh in `host`.
fn tally_from_host(host: &TestHost, url: &str, n: usize) -> BTreeMap<String, usize> {
    let out = host.sh(&format!(
        "i=0; while [ $i -lt {n} ]; do busybox wget -q -O- {url} || echo FAILED; i=$((i+1)); done"
    ));
    tally(&out)
}

fn tally(out: &str) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *t.entry(line.to_string()).or_insert(0) += 1;
    }
    t
}

async fn ready_endpoints(api: &Api<Endpoints>, name: &str) -> Vec<String> {
    let Ok(e) = api.get(name).await else {
        return vec![];
    };
    let mut ips: Vec<String> = e
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect();
    ips.sort();
    ips
}

/// The backends the host's nftables rules balance the service port `cluster_ip:80` over.
fn rule_backends(host: &TestHost, cluster_ip: &str) -> usize {
    let table = host.exec(&["nft", "list", "table", "ip", "skiff"]);
    table
        .matches(&format!("{cluster_ip} . tcp . 80 . "))
        .count()
}

/// The non-empty element lists of an `nft list table` output, by set or map name (the running
/// proxy may also hold empty sets of backend counts no service has any more).
fn elements(listing: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut object = String::new();
    let mut collecting: Option<String> = None;
    for line in listing.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("set ").or_else(|| t.strip_prefix("map ")) {
            object = rest.trim_end_matches('{').trim().to_string();
        }
        if let Some(rest) = t.strip_prefix("elements = {") {
            collecting = Some(rest.to_string());
        } else if let Some(c) = &mut collecting {
            c.push(' ');
            c.push_str(t);
        }
        if collecting.as_ref().is_some_and(|c| c.contains('}')) {
            out.insert(object.clone(), collecting.take().unwrap_or_default());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_balance_over_ready_endpoints_and_node_ports_answer_from_another_host() {
    require_system_parts();
    let mut w = world(&[]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("svc"), "skiff/busybox", "svc");

    info!("phase: three replicas of busybox httpd answering with their pod name, behind a NodePort Service");
    let manifest = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: "{image}"
        command: ["sh", "-c", "hostname > /www/index.html && touch /www/ready.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /ready.html, port: http}}, periodSeconds: 1, failureThreshold: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nobody}}
spec:
  selector: {{app: nothing-matches}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: "{image}", command: ["sleep", "3600"]}}]
"#
    );
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    let services: Api<Service> = Api::new(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::new(client.clone(), "default");
    let svc = services.get("web").await.expect("service");
    let spec = svc.spec.clone().expect("spec");
    let cluster_ip = spec.cluster_ip.clone().expect("a ClusterIP is allocated");
    assert!(
        cluster_ip.starts_with("10."),
        "{cluster_ip} is from the service range"
    );
    let node_port = spec
        .ports
        .as_ref()
        .and_then(|p| p[0].node_port)
        .expect("a NodePort is allocated");
    assert!((30000..=32767).contains(&node_port));
    wait_until(
        Duration::from_secs(60),
        "3 ready endpoints and 3 backends in the rules",
        || async {
            ready_endpoints(&endpoints, "web").await.len() == 3
                && rule_backends(&w.host, &cluster_ip) == 3
        },
    )
    .await;
    let pods: Api<Pod> = Api::new(client.clone(), "default");
    let (list, _) = pods.list("app=web", "").await.expect("pods");
    let names: Vec<String> = list
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();

    info!("phase: 300 requests to the ClusterIP from the node reach all three and nothing else");
    let url = format!("http://{cluster_ip}/");
    let route = w.host.exec(&["ip", "route", "get", &cluster_ip]);
    assert!(
        route.contains("dev skiff0"),
        "the service range routes to the pod bridge: {route}"
    );
    let t = tally_from_host(&w.host, &url, 300);
    assert_eq!(t.values().sum::<usize>(), 300, "{t:?}");
    assert_eq!(t.len(), 3, "exactly the three pods answer: {t:?}");
    for n in &names {
        assert!(
            t.get(n).copied().unwrap_or(0) >= 40,
            "{n} gets its share: {t:?}"
        );
    }

    info!(
        "phase: 300 requests from a pod reach all three; a pod reaches its own Service (hairpin)"
    );
    wait_until(Duration::from_secs(30), "client Running", || async {
        pods.get("client")
            .await
            .is_ok_and(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Running"))
    })
    .await;
    let out = ok(&skiffctl(
        &w.cluster,
        &[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            &format!("for i in $(seq 300); do wget -q -O- {url} || echo FAILED; done"),
        ],
        None,
    ));
    let t = tally(&out);
    assert_eq!(t.len(), 3, "exactly the three pods answer a pod: {t:?}");
    let own = ok(&skiffctl(
        &w.cluster,
        &[
            "exec",
            &names[0],
            "--",
            "sh",
            "-c",
            &format!("for i in $(seq 20); do wget -q -O- {url}; done"),
        ],
        None,
    ));
    assert_eq!(tally(&own).values().sum::<usize>(), 20, "hairpin: {own}");

    info!("phase: a pod whose readiness fails leaves the rotation, and returns when ready");
    let sick = names[1].clone();
    ok(&skiffctl(
        &w.cluster,
        &["exec", &sick, "--", "rm", "/www/ready.html"],
        None,
    ));
    let left = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the unready pod out of the rules",
        || async { rule_backends(&w.host, &cluster_ip) == 2 },
    )
    .await;
    info!(
        ms = left.elapsed().as_millis() as u64,
        "unready pod left the rotation"
    );
    let t = tally_from_host(&w.host, &url, 100);
    assert!(!t.contains_key(&sick) && t.len() == 2, "{t:?}");
    ok(&skiffctl(
        &w.cluster,
        &["exec", &sick, "--", "touch", "/www/ready.html"],
        None,
    ));
    wait_until(
        Duration::from_secs(10),
        "the pod back in the rules",
        || async { rule_backends(&w.host, &cluster_ip) == 3 },
    )
    .await;

    info!("phase: the NodePort answers from another host");
    let other = TestHost::create();
    let (node_addr, _) = w.host.link(&other);
    let out = other.sh(&format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do busybox wget -q -O- http://{node_addr}:{node_port}/ || echo FAILED; done"
    ));
    let t = tally(&out);
    assert!(
        !t.contains_key("FAILED") && t.keys().all(|k| names.contains(k)),
        "{t:?}"
    );

    info!("phase: a Service without endpoints refuses at once instead of hanging");
    let nobody = services
        .get("nobody")
        .await
        .expect("svc")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("ip");
    let started = Instant::now();
    let out = w.host.try_exec(&[
        "timeout",
        "5",
        "busybox",
        "wget",
        "-q",
        "-O-",
        &format!("http://{nobody}/"),
    ]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused, not timed out: {:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    info!("phase: restarting the proxy drops no rule: requests go on throughout");
    let before = w.host.exec(&["nft", "list", "table", "ip", "skiff"]);
    // The loop marks each request in a file (`.` answered, `x` failed) until told to stop,
    // so the test waits for requests on each side of the restart instead of timing them.
    let marks = w.cluster.dir().join("request-marks");
    let stop = w.cluster.dir().join("stop-requests");
    let script = format!(
        "while [ ! -e {stop} ]; do if busybox wget -q -O /dev/null {url}; then echo -n . >> {marks}; else echo -n x >> {marks}; fi; busybox sleep 0.02; done",
        stop = stop.display(),
        marks = marks.display(),
    );
    let loop_host = w.host.netns.clone();
    let requests = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &loop_host, "busybox", "sh", "-c", &script])
            .status()
            .expect("request loop")
    });
    let answered = || {
        std::fs::read(&marks)
            .unwrap_or_default()
            .iter()
            .filter(|b| **b == b'.')
            .count()
    };
    wait_until(
        Duration::from_secs(10),
        "requests answered before the restart",
        || async { answered() >= 10 },
    )
    .await;
    w.agent.kill9();
    w.agent.restart();
    wait_until(
        Duration::from_secs(10),
        "the restarted proxy's full sync",
        || async { w.agent.log().matches("service rules: full sync").count() >= 2 },
    )
    .await;
    let after_sync = answered();
    wait_until(
        Duration::from_secs(10),
        "requests answered after the restart",
        || async { answered() >= after_sync + 10 },
    )
    .await;
    std::fs::write(&stop, b"").expect("stop file");
    tokio::task::spawn_blocking(move || requests.join().expect("loop"))
        .await
        .expect("join");
    let marks = String::from_utf8_lossy(&std::fs::read(&marks).expect("marks")).into_owned();
    assert!(
        !marks.contains('x'),
        "requests failed across the proxy restart: {marks}"
    );
    let after = w.host.exec(&["nft", "list", "table", "ip", "skiff"]);
    assert_eq!(
        elements(&before),
        elements(&after),
        "the rebuilt rules forward the same"
    );

    info!("phase: after scaling to 1, only one pod answers");
    ok(&skiffctl(
        &w.cluster,
        &["scale", "deployment", "web", "--replicas", "1"],
        None,
    ));
    wait_until(
        Duration::from_secs(30),
        "1 endpoint and 1 backend",
        || async {
            ready_endpoints(&endpoints, "web").await.len() == 1
                && rule_backends(&w.host, &cluster_ip) == 1
        },
    )
    .await;
    let t = tally_from_host(&w.host, &url, 100);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t.values().sum::<usize>(), 100);
    assert!(names.contains(t.keys().next().expect("one")));

    info!("phase: a taken ClusterIP and NodePort are refused with a clear error");
    let taken = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: copy}}\nspec:\n  clusterIP: {cluster_ip}\n  ports: [{{port: 80}}]\n"
    );
    let out = skiffctl(&w.cluster, &["apply", "-f", "-"], Some(&taken));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.clusterIP") && err.contains("already allocated"),
        "{err}"
    );
    let taken = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: copy}}\nspec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {node_port}}}]\n"
    );
    let out = skiffctl(&w.cluster, &["apply", "-f", "-"], Some(&taken));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.ports[0].nodePort") && err.contains("already allocated"),
        "{err}"
    );
    assert!(services.get("copy").await.is_err(), "nothing stored");
}
